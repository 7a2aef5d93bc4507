//! Engine tests: a stored tree plus a real counter MO mounted at `./Counter`.

mod atomic;
mod counter_mo;
mod handlers;
mod persist;
mod robustness;
mod std_objects;
mod stored;

use std::sync::{Arc, Mutex};

use self::counter_mo::{CounterMo, CounterState};
use super::*;
use crate::status::StatusCode;

const S1: Requester<'static> = Requester::Server("srv1");
const S2: Requester<'static> = Requester::Server("srv2");

fn tree() -> DmTree {
    let root_acl: Acl = "Add=*&Get=*&Replace=srv1".parse().unwrap();
    DmTree::new(root_acl, TreeLimits::default())
        .unwrap()
        .with_clock(|| 1_000)
}

fn tree_with_counter(atomic_capable: bool) -> (DmTree, Arc<Mutex<CounterState>>) {
    let mut t = tree();
    let counter_acl: Acl = "Get=*&Replace=srv1&Exec=srv1&Add=srv1&Delete=srv1"
        .parse()
        .unwrap();
    let mount = DmUri::from_segments(["Counter"]);
    t.put_node(
        &mount,
        Node::interior(Scope::Permanent, 0).with_acl(counter_acl),
    )
    .unwrap();
    let (mo, state) = CounterMo::new(atomic_capable);
    t.mount(&mount, Box::new(mo)).unwrap();
    (t, state)
}

fn data(t: &DmTree, who: Requester<'_>, uri: &str) -> Result<String, StatusCode> {
    let results = t.get(who, uri)?;
    assert_eq!(results.len(), 1);
    Ok(String::from_utf8(results[0].data.clone().unwrap_or_default()).unwrap())
}

fn chr(v: &str) -> Item {
    Item::leaf(Format::Chr, v)
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("omadm-tree-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The cached byte count matches a full recount.
fn assert_bytes_consistent(t: &DmTree) {
    assert_eq!(
        t.stored_bytes,
        t.root.stored_bytes(),
        "cached stored bytes drifted"
    );
}
