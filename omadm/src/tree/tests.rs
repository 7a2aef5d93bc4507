//! Engine tests: a stored tree plus a real counter MO mounted at `./Counter`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::atomic::{ATOMIC_FAILED, ATOMIC_ROLLBACK_FAILED};
use super::std_objects::{
    account_auth, install_standard_objects, set_account_nonce, AppAuthConfig, AuthLevel,
    DevDetailConfig, DevInfoConfig, DeviceConfig, DmAccountConfig,
};
use super::*;
use crate::status::StatusCode;

const S1: Requester<'static> = Requester::Server("srv1");
const S2: Requester<'static> = Requester::Server("srv2");

/// The state of the counter MO, shared with the test to observe side effects.
#[derive(Debug, Default, Clone, PartialEq)]
struct CounterState {
    value: i64,
    step: i64,
    /// Named counters added by servers under `Items/<x>`.
    items: BTreeMap<String, i64>,
    /// Hash of the last unlock code set (never readable back).
    code_len: usize,
    /// Async Execs accepted: (uri, correlator).
    pending: Vec<(String, Option<String>)>,
}

/// `./Counter/{Value int Get+Replace, Step int Get+Replace, Increment Exec (sync),
/// Reset Exec (async, 202), Code chr Replace-only, Items/<x> int (Add/Delete)}`.
struct CounterMo {
    state: Arc<Mutex<CounterState>>,
    saved: Option<CounterState>,
    atomic_capable: bool,
}

impl CounterMo {
    fn new(atomic_capable: bool) -> (Self, Arc<Mutex<CounterState>>) {
        let state = Arc::new(Mutex::new(CounterState {
            step: 1,
            ..Default::default()
        }));
        (
            Self {
                state: state.clone(),
                saved: None,
                atomic_capable,
            },
            state,
        )
    }
}

fn path(rel: &[String]) -> Vec<&str> {
    rel.iter().map(String::as_str).collect()
}

impl NodeHandler for CounterMo {
    fn describe(&self, rel: &[String]) -> Option<HandlerNode> {
        let st = self.state.lock().unwrap();
        let rw = AccessTypes::GET.union(AccessTypes::REPLACE);
        Some(match path(rel).as_slice() {
            ["Value"] | ["Step"] => HandlerNode::leaf(Format::Int, rw),
            ["Increment"] | ["Reset"] => HandlerNode::leaf(Format::Null, AccessTypes::EXEC),
            ["Code"] => HandlerNode::leaf(Format::Chr, AccessTypes::REPLACE),
            // A node with its own ACL, overriding the mount's.
            ["Limit"] => HandlerNode {
                acl: "Get=srv2".parse().ok()?,
                ..HandlerNode::leaf(Format::Int, AccessTypes::GET)
            },
            ["Items"] => {
                HandlerNode::interior(AccessTypes::GET.union(AccessTypes::ADD), Scope::Permanent)
            }
            ["Items", x] if st.items.contains_key(*x) => HandlerNode {
                scope: Scope::Dynamic,
                ..HandlerNode::leaf(Format::Int, rw.union(AccessTypes::DELETE))
            },
            _ => return None,
        })
    }

    fn children(&self, rel: &[String]) -> Result<Vec<String>, StatusCode> {
        match path(rel).as_slice() {
            [] => Ok([
                "Code",
                "Increment",
                "Items",
                "Limit",
                "Reset",
                "Step",
                "Value",
            ]
            .map(String::from)
            .to_vec()),
            ["Items"] => Ok(self.state.lock().unwrap().items.keys().cloned().collect()),
            _ => Err(StatusCode::NOT_FOUND),
        }
    }

    fn get(&self, rel: &[String]) -> Result<Vec<u8>, StatusCode> {
        let st = self.state.lock().unwrap();
        let v = match path(rel).as_slice() {
            ["Value"] => st.value,
            ["Step"] => st.step,
            ["Limit"] => 100,
            ["Items", x] => *st.items.get(*x).ok_or(StatusCode::NOT_FOUND)?,
            _ => return Err(StatusCode::NOT_FOUND),
        };
        Ok(v.to_string().into_bytes())
    }

    fn add(&mut self, rel: &[String], format: Format, value: &[u8]) -> Result<(), StatusCode> {
        let parts = path(rel);
        let ["Items", x] = parts.as_slice() else {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        };
        if format != Format::Int {
            return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        let v = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
        self.state
            .lock()
            .unwrap()
            .items
            .insert((*x).to_owned(), v.unwrap_or(0));
        Ok(())
    }

    fn replace(&mut self, rel: &[String], value: &[u8]) -> Result<(), StatusCode> {
        let mut st = self.state.lock().unwrap();
        let parsed = || {
            std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or(StatusCode::BAD_REQUEST)
        };
        match path(rel).as_slice() {
            ["Value"] => st.value = parsed()?,
            ["Step"] => st.step = parsed()?,
            ["Code"] => st.code_len = value.len(),
            ["Items", x] => {
                let v = parsed()?;
                *st.items.get_mut(*x).ok_or(StatusCode::NOT_FOUND)? = v;
            }
            _ => return Err(StatusCode::COMMAND_NOT_ALLOWED),
        }
        Ok(())
    }

    fn delete(&mut self, rel: &[String]) -> Result<(), StatusCode> {
        let parts = path(rel);
        let ["Items", x] = parts.as_slice() else {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        };
        self.state
            .lock()
            .unwrap()
            .items
            .remove(*x)
            .map(|_| ())
            .ok_or(StatusCode::NOT_FOUND)
    }

    fn exec(&mut self, rel: &[String], request: ExecRequest<'_>) -> StatusCode {
        let mut st = self.state.lock().unwrap();
        match path(rel).as_slice() {
            ["Increment"] => {
                st.value += st.step;
                StatusCode::OK
            }
            ["Reset"] => {
                st.pending
                    .push(("Reset".into(), request.correlator.map(String::from)));
                StatusCode::ACCEPTED_FOR_PROCESSING
            }
            _ => StatusCode::COMMAND_NOT_ALLOWED,
        }
    }

    fn atomic_begin(&mut self) -> Result<(), StatusCode> {
        if !self.atomic_capable {
            return Err(StatusCode::COMMAND_FAILED);
        }
        self.saved = Some(self.state.lock().unwrap().clone());
        Ok(())
    }

    fn atomic_commit(&mut self) {
        self.saved = None;
    }

    fn atomic_rollback(&mut self) -> Result<(), StatusCode> {
        let saved = self.saved.take().ok_or(StatusCode::COMMAND_FAILED)?;
        *self.state.lock().unwrap() = saved;
        Ok(())
    }
}

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

#[test]
fn get_leaf_value_and_interior_child_list() {
    let mut t = tree();
    assert_eq!(t.add(S1, "./A/B", &chr("hello")), Ok(StatusCode::OK));
    assert_eq!(t.add(S1, "./A/C", &Item::interior()), Ok(StatusCode::OK));
    assert_eq!(data(&t, S1, "./A/B").unwrap(), "hello");
    let r = t.get(S1, "./A").unwrap();
    assert_eq!(r[0].format, Format::Node);
    assert_eq!(r[0].data.as_deref(), Some(&b"B/C"[..]));
    assert_eq!(r[0].uri, "./A");
    assert_eq!(t.get(S1, "./Nope"), Err(StatusCode::NOT_FOUND));
    assert_eq!(t.get(S1, "./A//B"), Err(StatusCode::BAD_REQUEST));
}

#[test]
fn add_creates_missing_parents_and_refuses_duplicates() {
    let mut t = tree();
    assert_eq!(
        t.add(S1, "X/Y/Z", &Item::leaf(Format::Int, "5")),
        Ok(StatusCode::OK)
    );
    assert_eq!(t.get(S1, "./X/Y").unwrap()[0].format, Format::Node);
    assert_eq!(
        t.add(S1, "./X/Y/Z", &chr("again")),
        Err(StatusCode::ALREADY_EXISTS)
    );
    assert_eq!(
        t.add(S1, ".", &Item::interior()),
        Err(StatusCode::ALREADY_EXISTS)
    );
    // Under a leaf: not allowed.
    assert_eq!(
        t.add(S1, "./X/Y/Z/W", &chr("")),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    // Missing data for a format whose empty value is invalid: incomplete.
    let no_data = Item {
        format: Some(Format::Int),
        ..Item::default()
    };
    assert_eq!(
        t.add(S1, "./X/N", &no_data),
        Err(StatusCode::INCOMPLETE_COMMAND)
    );
    // No format, no data: an empty chr leaf.
    assert_eq!(t.add(S1, "./X/E", &Item::default()), Ok(StatusCode::OK));
    assert_eq!(t.get(S1, "./X/E").unwrap()[0].format, Format::Chr);
    // Interior with data is malformed; invalid int data too.
    let bad_node = Item {
        format: Some(Format::Node),
        data: Some(b"x".to_vec()),
        ..Item::default()
    };
    assert_eq!(t.add(S1, "./X/I", &bad_node), Err(StatusCode::BAD_REQUEST));
    assert_eq!(
        t.add(S1, "./X/I", &Item::leaf(Format::Int, "x")),
        Err(StatusCode::BAD_REQUEST)
    );
    // A query on Add makes no sense.
    assert_eq!(
        t.add(S1, "./X/Q?prop=ACL", &chr("")),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
}

#[test]
fn acl_is_inherited_and_enforced() {
    let mut t = tree();
    t.add(S1, "./A/B", &chr("v")).unwrap();
    // Root: Add=*&Get=*&Replace=srv1. srv1 created A (inheriting gives it no Delete), so A got
    // srv1's full rights; srv2 falls under A's ACL now.
    assert_eq!(
        data(&t, S1, "./A?prop=ACL").unwrap(),
        "Add=srv1&Delete=srv1&Get=srv1&Replace=srv1"
    );
    assert_eq!(data(&t, S1, "./A/B?prop=ACL").unwrap(), "", "B inherits");
    assert_eq!(t.get(S2, "./A/B"), Err(StatusCode::PERMISSION_DENIED));
    assert_eq!(
        t.replace(S2, "./A/B", &chr("w")),
        Err(StatusCode::PERMISSION_DENIED)
    );
    assert_eq!(t.delete(S2, "./A/B"), Err(StatusCode::PERMISSION_DENIED));
    assert_eq!(
        t.add(S2, "./A/C", &chr("w")),
        Err(StatusCode::PERMISSION_DENIED)
    );
    // The device itself is not subject to ACLs.
    assert_eq!(data(&t, Requester::Device, "./A/B").unwrap(), "v");
    // Open B to everyone for Get: an ACL applies as a whole, so Replace is now refused even to srv1.
    assert_eq!(
        t.replace(S1, "./A/B?prop=ACL", &chr("Get=*")),
        Ok(StatusCode::OK)
    );
    assert_eq!(data(&t, S2, "./A/B").unwrap(), "v");
    assert_eq!(
        t.replace(S1, "./A/B", &chr("x")),
        Err(StatusCode::PERMISSION_DENIED)
    );
}

#[test]
fn acl_changes_need_replace_on_parent_for_leaves_and_on_self_for_interior() {
    let mut t = tree();
    let device = Requester::Device;
    t.add(device, "./P/L", &chr("v")).unwrap();
    t.replace(device, "./P?prop=ACL", &chr("Get=*&Replace=srv2"))
        .unwrap();
    t.replace(device, "./P/L?prop=ACL", &chr("Get=*&Replace=srv1"))
        .unwrap();
    // srv1 may Replace L's value but not its ACL (needs Replace on P).
    assert_eq!(t.replace(S1, "./P/L", &chr("w")), Ok(StatusCode::OK));
    assert_eq!(
        t.replace(S1, "./P/L?prop=ACL", &chr("Get=*")),
        Err(StatusCode::PERMISSION_DENIED)
    );
    assert_eq!(
        t.replace(S2, "./P/L?prop=ACL", &chr("Get=*")),
        Ok(StatusCode::OK)
    );
    // P is interior: its own Replace right controls its ACL, and so does Replace on its parent
    // (the root grants Replace to srv1). srv3 has neither.
    let s3 = Requester::Server("srv3");
    assert_eq!(
        t.replace(s3, "./P?prop=ACL", &chr("Get=*")),
        Err(StatusCode::PERMISSION_DENIED)
    );
    assert_eq!(
        t.replace(S2, "./P?prop=ACL", &chr("Get=*&Replace=srv3")),
        Ok(StatusCode::OK)
    );
    assert_eq!(
        t.replace(s3, "./P?prop=ACL", &chr("Get=*")),
        Ok(StatusCode::OK)
    );
    assert_eq!(
        t.replace(S2, "./P?prop=ACL", &chr("Get=*")),
        Err(StatusCode::PERMISSION_DENIED)
    );
    assert_eq!(
        t.replace(S1, "./P?prop=ACL", &chr("Get=*&Replace=srv1")),
        Ok(StatusCode::OK)
    );
    // Bad ACL syntax; empty root ACL; a root ACL without Add=*.
    assert_eq!(
        t.replace(S1, "./P?prop=ACL", &chr("Get")),
        Err(StatusCode::BAD_REQUEST)
    );
    assert_eq!(
        t.replace(S1, ".?prop=ACL", &chr("")),
        Err(StatusCode::BAD_REQUEST)
    );
    assert_eq!(
        t.replace(S1, ".?prop=ACL", &chr("Add=srv1&Get=*&Replace=srv1")),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    assert_eq!(
        t.replace(S2, ".?prop=ACL", &chr("Add=*&Get=*")),
        Err(StatusCode::PERMISSION_DENIED)
    );
    assert_eq!(
        t.replace(S1, ".?prop=ACL", &chr("Add=*&Get=*&Replace=srv1")),
        Ok(StatusCode::OK)
    );
}

#[test]
fn replace_statuses() {
    let limits = TreeLimits {
        max_leaf_size: 8,
        max_stored_bytes: 12,
        ..TreeLimits::default()
    };
    let mut t = DmTree::new("Add=*&Get=*&Replace=*&Delete=*".parse().unwrap(), limits).unwrap();
    t.add(S1, "./N", &Item::leaf(Format::Int, "1")).unwrap();
    t.add(S1, "./I", &Item::interior()).unwrap();
    assert_eq!(
        t.replace(S1, "./Missing", &chr("x")),
        Err(StatusCode::NOT_FOUND)
    );
    assert_eq!(
        t.replace(S1, "./I", &chr("x")),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    let no_data = Item {
        format: Some(Format::Int),
        ..Item::default()
    };
    assert_eq!(
        t.replace(S1, "./N", &no_data),
        Err(StatusCode::INCOMPLETE_COMMAND)
    );
    assert_eq!(
        t.replace(S1, "./N", &Item::leaf(Format::Int, "abc")),
        Err(StatusCode::BAD_REQUEST)
    );
    let sized = Item {
        declared_size: Some(3),
        ..Item::leaf(Format::Int, "12")
    };
    assert_eq!(t.replace(S1, "./N", &sized), Err(StatusCode::SIZE_MISMATCH));
    assert_eq!(
        t.replace(S1, "./N", &Item::leaf(Format::Int, "123456789")),
        Err(StatusCode::REQUEST_ENTITY_TOO_LARGE)
    );
    // Format omitted: the node's own format applies.
    let untyped = Item {
        data: Some(b"42".to_vec()),
        ..Item::default()
    };
    assert_eq!(t.replace(S1, "./N", &untyped), Ok(StatusCode::OK));
    // A dynamic stored leaf may change format; not to `node`.
    assert_eq!(
        t.replace(S1, "./N", &Item::leaf(Format::Bool, "true")),
        Ok(StatusCode::OK)
    );
    assert_eq!(t.get(S1, "./N").unwrap()[0].format, Format::Bool);
    let as_node = Item {
        format: Some(Format::Node),
        data: Some(Vec::new()),
        ..Item::default()
    };
    assert_eq!(
        t.replace(S1, "./N", &as_node),
        Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
    );
    // Device full: 12 bytes in total.
    t.add(S1, "./F", &chr("12345678")).unwrap();
    assert_eq!(
        t.add(S1, "./G", &chr("12345")),
        Err(StatusCode::DEVICE_FULL)
    );
    assert_eq!(t.replace(S1, "./F", &chr("1234567")), Ok(StatusCode::OK));
    // Large-object pre-check from the announced size.
    assert_eq!(t.accepts_size(9), Err(StatusCode::REQUEST_ENTITY_TOO_LARGE));
    assert_eq!(
        t.accepts_size(u64::MAX),
        Err(StatusCode::REQUEST_ENTITY_TOO_LARGE)
    );
    assert_eq!(t.accepts_size(8), Err(StatusCode::DEVICE_FULL));
    assert_eq!(t.accepts_size(1), Ok(()), "4 + 7 + 1 bytes fit in 12");
}

#[test]
fn permanent_leaf_refuses_other_formats() {
    let mut t = tree();
    let uri = DmUri::from_segments(["P"]);
    t.put_node(
        &uri,
        Node::leaf(Scope::Permanent, Format::Int, b"1".to_vec(), 0),
    )
    .unwrap();
    assert_eq!(
        t.replace(S1, "./P", &chr("x")),
        Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
    );
    assert_eq!(
        t.replace(S1, "./P", &Item::leaf(Format::Int, "2")),
        Ok(StatusCode::OK)
    );
    assert_eq!(t.delete(S1, "./P"), Err(StatusCode::COMMAND_NOT_ALLOWED));
}

#[test]
fn delete_statuses() {
    let mut t = tree();
    t.add(S1, "./A/B/C", &chr("v")).unwrap();
    assert_eq!(t.delete(S1, "."), Err(StatusCode::COMMAND_NOT_ALLOWED));
    assert_eq!(t.delete(S1, "./Z"), Err(StatusCode::NOT_FOUND));
    assert_eq!(t.delete(S2, "./A/B"), Err(StatusCode::PERMISSION_DENIED));
    assert_eq!(t.delete(S1, "./A/B"), Ok(StatusCode::OK));
    assert_eq!(t.get(S1, "./A/B/C"), Err(StatusCode::NOT_FOUND));
    assert_eq!(data(&t, S1, "./A").unwrap(), "");
    // A dynamic node holding a permanent one cannot be deleted.
    t.add(S1, "./A/D", &Item::interior()).unwrap();
    let perm = DmUri::from_segments(["A", "D", "P"]);
    t.put_node(&perm, Node::leaf(Scope::Permanent, Format::Chr, vec![], 0))
        .unwrap();
    assert_eq!(t.delete(S1, "./A/D"), Err(StatusCode::COMMAND_NOT_ALLOWED));
}

#[test]
fn uri_limits_give_414() {
    let limits = TreeLimits {
        uri: UriLimits {
            max_depth: 3,
            max_total_len: 40,
            max_segment_len: 8,
        },
        ..TreeLimits::default()
    };
    let mut t = DmTree::new("Add=*&Get=*".parse().unwrap(), limits).unwrap();
    assert_eq!(
        t.add(S1, "./A/B/C/D", &chr("")),
        Err(StatusCode::URI_TOO_LONG)
    );
    assert_eq!(
        t.add(S1, "./ABCDEFGHI", &chr("")),
        Err(StatusCode::URI_TOO_LONG)
    );
    assert_eq!(
        t.get(S1, &format!("./{}", "A/".repeat(20))),
        Err(StatusCode::URI_TOO_LONG)
    );
    assert_eq!(t.add(S1, "./A/B/C", &chr("")), Ok(StatusCode::OK));
}

#[test]
fn properties_and_verno() {
    let mut t = tree();
    t.add(
        S1,
        "./A/L",
        &Item {
            mime_type: Some("text/x-test".into()),
            ..chr("abc")
        },
    )
    .unwrap();
    assert_eq!(data(&t, S1, "./A/L?prop=Format").unwrap(), "chr");
    assert_eq!(data(&t, S1, "./A/L?prop=Type").unwrap(), "text/x-test");
    assert_eq!(data(&t, S1, "./A/L?prop=Name").unwrap(), "L");
    assert_eq!(data(&t, S1, "./A/L?prop=Size").unwrap(), "3");
    assert_eq!(
        data(&t, S1, "./A/L?prop=TStamp").unwrap(),
        "19700101T001640Z"
    );
    assert_eq!(data(&t, S1, "./A/L?prop=VerNo").unwrap(), "0");
    assert_eq!(
        t.get(S1, "./A?prop=Size"),
        Err(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)
    );
    assert_eq!(
        t.get(S1, "./A?prop=Colour"),
        Err(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)
    );
    assert_eq!(
        t.get(S1, "./A/L?prop=VerNo").unwrap()[0].uri,
        "./A/L?prop=VerNo"
    );
    t.replace(S1, "./A/L", &chr("abcd")).unwrap();
    t.replace(S1, "./A/L", &chr("abcde")).unwrap();
    assert_eq!(data(&t, S1, "./A/L?prop=VerNo").unwrap(), "2");
    assert_eq!(data(&t, S1, "./A/L?prop=Size").unwrap(), "5");
    // Adding a child changes the parent.
    let before: u16 = data(&t, S1, "./A?prop=VerNo").unwrap().parse().unwrap();
    t.add(S1, "./A/M", &chr("")).unwrap();
    assert_eq!(
        data(&t, S1, "./A?prop=VerNo").unwrap(),
        (before + 1).to_string()
    );
    // Title, Name (rename), read-only properties.
    assert_eq!(
        t.replace(S1, "./A/L?prop=Title", &chr("The L")),
        Ok(StatusCode::OK)
    );
    assert_eq!(data(&t, S1, "./A/L?prop=Title").unwrap(), "The L");
    assert_eq!(
        t.replace(S1, "./A/L?prop=Name", &chr("M")),
        Err(StatusCode::ALREADY_EXISTS)
    );
    assert_eq!(
        t.replace(S1, "./A/L?prop=Name", &chr("K")),
        Ok(StatusCode::OK)
    );
    assert_eq!(data(&t, S1, "./A/K").unwrap(), "abcde");
    assert_eq!(t.get(S1, "./A/L"), Err(StatusCode::NOT_FOUND));
    assert_eq!(
        t.replace(S1, "./A/K?prop=Size", &chr("1")),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    assert_eq!(
        t.replace(S1, "./A/K?prop=Name", &chr("a/b")),
        Err(StatusCode::BAD_REQUEST)
    );
}

#[test]
fn list_struct_and_struct_data() {
    let mut t = tree();
    t.add(S1, "./A/B", &chr("b")).unwrap();
    t.add(S1, "./A/C/D", &Item::leaf(Format::Int, "4")).unwrap();
    let r = t.get(S1, "./A?list=Struct").unwrap();
    let uris: Vec<&str> = r.iter().map(|g| g.uri.as_str()).collect();
    assert_eq!(uris, ["./A", "./A/B", "./A/C", "./A/C/D"]);
    assert!(r.iter().all(|g| g.data.is_none()));
    let r = t.get(S1, "./A?list=StructData").unwrap();
    assert_eq!(r[1].data.as_deref(), Some(&b"b"[..]));
    assert_eq!(r[3].data.as_deref(), Some(&b"4"[..]));
    assert_eq!(r[2].data, None);
    assert_eq!(
        t.get(S1, "./A?list=TNDS"),
        Err(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)
    );
    // Nodes srv2 may not read are left out.
    t.replace(S1, "./A/C?prop=ACL", &chr("Get=srv1")).unwrap();
    t.replace(S1, "./A?prop=ACL", &chr("Get=*&Replace=srv1"))
        .unwrap();
    let uris: Vec<String> = t
        .get(S2, "./A?list=Struct")
        .unwrap()
        .into_iter()
        .map(|g| g.uri)
        .collect();
    assert_eq!(uris, ["./A", "./A/B"]);
}

#[test]
fn copy_leaf_and_subtree() {
    let mut t = tree();
    t.add(S1, "./A/B", &Item::leaf(Format::Int, "7")).unwrap();
    t.add(S1, "./A/C/D", &chr("d")).unwrap();
    assert_eq!(t.copy(S1, "./A/B", "./Z/B2"), Ok(StatusCode::OK));
    assert_eq!(data(&t, S1, "./Z/B2").unwrap(), "7");
    assert_eq!(t.get(S1, "./Z/B2").unwrap()[0].format, Format::Int);
    // Existing target: replaced.
    t.add(S1, "./Z/E", &Item::leaf(Format::Int, "1")).unwrap();
    assert_eq!(t.copy(S1, "./A/B", "./Z/E"), Ok(StatusCode::OK));
    assert_eq!(data(&t, S1, "./Z/E").unwrap(), "7");
    // Subtree.
    assert_eq!(t.copy(S1, "./A/C", "./Y"), Ok(StatusCode::OK));
    assert_eq!(data(&t, S1, "./Y/D").unwrap(), "d");
    assert_eq!(t.copy(S1, "./A/C", "./Y"), Err(StatusCode::ALREADY_EXISTS));
    assert_eq!(t.copy(S1, "./A", "./A/C/X"), Err(StatusCode::BAD_REQUEST));
    assert_eq!(
        t.copy(S2, "./A/B", "./W"),
        Err(StatusCode::PERMISSION_DENIED)
    );
    assert_eq!(t.copy(S1, "./Nope", "./W"), Err(StatusCode::NOT_FOUND));
}

#[test]
fn handler_values_exec_and_dynamic_nodes() {
    let (mut t, state) = tree_with_counter(true);
    assert_eq!(data(&t, S2, "./Counter/Value").unwrap(), "0");
    assert_eq!(
        data(&t, S2, "./Counter").unwrap(),
        "Code/Increment/Items/Limit/Reset/Step/Value"
    );
    // A handler-provided ACL overrides the inherited one.
    assert_eq!(data(&t, S2, "./Counter/Limit").unwrap(), "100");
    assert_eq!(
        t.get(S1, "./Counter/Limit"),
        Err(StatusCode::PERMISSION_DENIED)
    );
    assert_eq!(
        data(&t, S2, "./Counter/Limit?prop=ACL").unwrap(),
        "Get=srv2"
    );
    assert_eq!(
        t.replace(S1, "./Counter/Step", &Item::leaf(Format::Int, "5")),
        Ok(StatusCode::OK)
    );
    assert_eq!(
        t.exec(S1, "./Counter/Increment", None, None),
        StatusCode::OK
    );
    assert_eq!(
        t.exec(S1, "./Counter/Increment", None, None),
        StatusCode::OK
    );
    assert_eq!(data(&t, S2, "./Counter/Value").unwrap(), "10");
    // Async Exec keeps the correlator for the later Generic Alert.
    assert_eq!(
        t.exec(S1, "./Counter/Reset", Some(b""), Some("corr-1")),
        StatusCode::ACCEPTED_FOR_PROCESSING
    );
    assert_eq!(
        state.lock().unwrap().pending,
        [("Reset".to_owned(), Some("corr-1".to_owned()))]
    );
    // The engine enforces ACLs, access types and formats before the handler sees anything.
    assert_eq!(
        t.exec(S2, "./Counter/Increment", None, None),
        StatusCode::PERMISSION_DENIED
    );
    assert_eq!(
        t.exec(S1, "./Counter/Value", None, None),
        StatusCode::COMMAND_NOT_ALLOWED
    );
    assert_eq!(
        t.exec(S1, "./Counter/Nope", None, None),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.replace(S2, "./Counter/Step", &Item::leaf(Format::Int, "1")),
        Err(StatusCode::PERMISSION_DENIED)
    );
    assert_eq!(
        t.replace(S1, "./Counter/Step", &chr("x")),
        Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
    );
    assert_eq!(
        t.replace(S1, "./Counter/Step", &Item::leaf(Format::Int, "1.5")),
        Err(StatusCode::BAD_REQUEST)
    );
    assert_eq!(state.lock().unwrap().step, 5);
    // A write-only leaf: Replace works, Get is not allowed by its access type (405).
    assert_eq!(
        t.replace(S1, "./Counter/Code", &chr("1234")),
        Ok(StatusCode::OK)
    );
    assert_eq!(state.lock().unwrap().code_len, 4);
    assert_eq!(
        t.get(S1, "./Counter/Code"),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    // Dynamic nodes under the handler.
    assert_eq!(
        t.add(S1, "./Counter/Items/a", &Item::leaf(Format::Int, "3")),
        Ok(StatusCode::OK)
    );
    assert_eq!(
        t.add(S1, "./Counter/Items/a", &Item::leaf(Format::Int, "3")),
        Err(StatusCode::ALREADY_EXISTS)
    );
    assert_eq!(
        t.add(S1, "./Counter/Items/x/y", &Item::leaf(Format::Int, "3")),
        Err(StatusCode::NOT_FOUND)
    );
    assert_eq!(
        t.add(S1, "./Counter/Other", &Item::leaf(Format::Int, "3")),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    assert_eq!(data(&t, S2, "./Counter/Items").unwrap(), "a");
    assert_eq!(
        t.delete(S1, "./Counter/Value"),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    assert_eq!(t.delete(S1, "./Counter/Items/a"), Ok(StatusCode::OK));
    assert!(state.lock().unwrap().items.is_empty());
    // Properties of handler nodes.
    assert_eq!(data(&t, S2, "./Counter/Value?prop=Format").unwrap(), "int");
    assert_eq!(data(&t, S2, "./Counter/Value?prop=Size").unwrap(), "2");
    assert_eq!(
        t.get(S2, "./Counter/Value?prop=VerNo"),
        Err(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)
    );
    assert_eq!(
        t.replace(S1, "./Counter/Value?prop=ACL", &chr("Get=*")),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    // The whole structure, through the handler.
    let listed = t.get(S2, "./Counter?list=Struct").unwrap();
    let uris: Vec<&str> = listed.iter().map(|g| g.uri.as_str()).collect();
    // Code, Increment and Reset have no Get access type: left out.
    assert_eq!(
        uris,
        [
            "./Counter",
            "./Counter/Items",
            "./Counter/Limit",
            "./Counter/Step",
            "./Counter/Value"
        ]
    );
    // srv1 may not read Limit (its own ACL): left out for srv1.
    let listed = t.get(S1, "./Counter?list=StructData").unwrap();
    assert!(listed.iter().all(|g| g.uri != "./Counter/Limit"));
    let step = listed.iter().find(|g| g.uri == "./Counter/Step").unwrap();
    assert_eq!(step.data.as_deref(), Some(&b"5"[..]));
    // Copy a stored leaf into the handler (an Add through the handler), and back out.
    t.add(S1, "./Src", &Item::leaf(Format::Int, "8")).unwrap();
    assert_eq!(t.copy(S1, "./Src", "./Counter/Items/b"), Ok(StatusCode::OK));
    assert_eq!(state.lock().unwrap().items.get("b"), Some(&8));
    assert_eq!(t.copy(S1, "./Counter/Value", "./Dst"), Ok(StatusCode::OK));
    assert_eq!(data(&t, S1, "./Dst").unwrap(), "10");
    assert_eq!(
        t.copy(S1, "./Counter/Items", "./Dst2"),
        Err(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)
    );
    // Exec data over the leaf cap.
    let big = vec![b'x'; TreeLimits::default().max_leaf_size + 1];
    assert_eq!(
        t.exec(S1, "./Counter/Reset", Some(&big), None),
        StatusCode::REQUEST_ENTITY_TOO_LARGE
    );
    // The mount point itself cannot be deleted or renamed.
    assert_eq!(
        t.delete(S1, "./Counter"),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
}

#[test]
fn mount_rules() {
    let (mut t, _) = tree_with_counter(true);
    let (mo, _) = CounterMo::new(true);
    assert!(matches!(
        t.mount(&DmUri::from_segments(["Counter"]), Box::new(mo)),
        Err(TreeError::MountOverlap(_))
    ));
    let (mo, _) = CounterMo::new(true);
    assert!(matches!(
        t.mount(&DmUri::from_segments(["Missing"]), Box::new(mo)),
        Err(TreeError::NotAnInteriorNode(_))
    ));
    assert!(t
        .put_node(
            &DmUri::from_segments(["Counter", "X"]),
            Node::interior(Scope::Permanent, 0)
        )
        .is_err());
    let counter = DmUri::from_segments(["Counter"]);
    assert!(t.unmount(&counter).is_some());
    assert_eq!(t.get(S1, "./Counter/Value"), Err(StatusCode::NOT_FOUND));
    assert_eq!(
        data(&t, S1, "./Counter").unwrap(),
        "",
        "the stored mount node stays"
    );
}

#[test]
fn atomic_rolls_back_stored_and_handler_changes() {
    let (mut t, state) = tree_with_counter(true);
    let ops = vec![
        DmOp::Add {
            target: "./A".into(),
            item: chr("a"),
        },
        DmOp::Replace {
            target: "./Counter/Value".into(),
            item: Item::leaf(Format::Int, "99"),
        },
        DmOp::Get {
            target: "./Missing".into(),
        },
        DmOp::Add {
            target: "./B".into(),
            item: chr("b"),
        },
    ];
    let outcome = t.run_atomic(S1, &ops);
    assert_eq!(outcome.status, ATOMIC_FAILED);
    let statuses: Vec<u16> = outcome.commands.iter().map(|c| c.status.0).collect();
    assert_eq!(statuses, [216, 216, 404, 215]);
    assert_eq!(t.get(S1, "./A"), Err(StatusCode::NOT_FOUND));
    assert_eq!(state.lock().unwrap().value, 0);
    assert!(!t.in_atomic());
    // All good: committed.
    let outcome = t.run_atomic(S1, &ops[..2]);
    assert_eq!(outcome.status, StatusCode::OK);
    assert_eq!(data(&t, S1, "./A").unwrap(), "a");
    assert_eq!(state.lock().unwrap().value, 99);
}

#[test]
fn atomic_fails_on_a_handler_that_cannot_roll_back() {
    let (mut t, state) = tree_with_counter(false);
    let ops = vec![
        DmOp::Add {
            target: "./A".into(),
            item: chr("a"),
        },
        DmOp::Exec {
            target: "./Counter/Increment".into(),
            data: None,
            correlator: None,
        },
    ];
    let outcome = t.run_atomic(S1, &ops);
    assert_eq!(outcome.status, ATOMIC_FAILED);
    assert_eq!(outcome.commands[0].status, StatusCode::ATOMIC_ROLLBACK_OK);
    assert_eq!(outcome.commands[1].status, StatusCode::COMMAND_FAILED);
    assert_eq!(
        state.lock().unwrap().value,
        0,
        "the handler was never called"
    );
    assert_eq!(t.get(S1, "./A"), Err(StatusCode::NOT_FOUND));
    // Nested Atomic is refused; manual API.
    t.begin_atomic().unwrap();
    assert_eq!(t.begin_atomic(), Err(StatusCode::COMMAND_FAILED));
    t.add(S1, "./C", &chr("c")).unwrap();
    t.commit_atomic();
    assert_eq!(data(&t, S1, "./C").unwrap(), "c");
}

/// A handler whose rollback fails (e.g. the VM operation cannot be undone).
struct NoUndo;

impl NodeHandler for NoUndo {
    fn describe(&self, rel: &[String]) -> Option<HandlerNode> {
        (rel == ["Go"]).then(|| HandlerNode::leaf(Format::Null, AccessTypes::EXEC))
    }
    fn children(&self, _rel: &[String]) -> Result<Vec<String>, StatusCode> {
        Ok(vec!["Go".into()])
    }
    fn get(&self, _rel: &[String]) -> Result<Vec<u8>, StatusCode> {
        Err(StatusCode::NOT_FOUND)
    }
    fn exec(&mut self, _rel: &[String], _request: ExecRequest<'_>) -> StatusCode {
        StatusCode::OK
    }
    fn atomic_begin(&mut self) -> Result<(), StatusCode> {
        Ok(())
    }
}

#[test]
fn atomic_reports_516_when_rollback_fails() {
    let mut t = tree();
    let mount = DmUri::from_segments(["N"]);
    t.put_node(
        &mount,
        Node::interior(Scope::Permanent, 0).with_acl("Exec=*&Get=*".parse().unwrap()),
    )
    .unwrap();
    t.mount(&mount, Box::new(NoUndo)).unwrap();
    let ops = vec![
        DmOp::Exec {
            target: "./N/Go".into(),
            data: None,
            correlator: None,
        },
        DmOp::Delete {
            target: "./Missing".into(),
        },
    ];
    let outcome = t.run_atomic(S1, &ops);
    assert_eq!(outcome.status, ATOMIC_FAILED);
    assert_eq!(outcome.commands[0].status, ATOMIC_ROLLBACK_FAILED);
}

#[test]
fn sequence_runs_everything_in_order() {
    let mut t = tree();
    let ops = vec![
        DmOp::Add {
            target: "./A".into(),
            item: chr("1"),
        },
        DmOp::Delete {
            target: "./Missing".into(),
        },
        DmOp::Replace {
            target: "./A".into(),
            item: chr("2"),
        },
        DmOp::Get {
            target: "./A".into(),
        },
    ];
    let out = t.run_sequence(S1, &ops);
    let statuses: Vec<u16> = out.iter().map(|o| o.status.0).collect();
    assert_eq!(statuses, [200, 404, 200, 200]);
    assert_eq!(out[3].results[0].data.as_deref(), Some(&b"2"[..]));
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("omadm-tree-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn persistence_round_trip_and_corruption() {
    let dir = temp_dir("persist");
    let file = dir.join("tree.json");
    let (mut t, _state) = tree_with_counter(true);
    t.add(S1, "./A/B", &Item::leaf(Format::Bin, vec![0u8, 1, 255]))
        .unwrap();
    t.replace(S1, "./A/B?prop=Title", &chr("bytes")).unwrap();
    t.replace(S1, "./Counter/Value", &Item::leaf(Format::Int, "5"))
        .unwrap();
    t.save(&file).unwrap();
    let loaded = DmTree::load(&file, TreeLimits::default()).unwrap();
    assert_eq!(loaded.root, t.root);
    assert_eq!(
        loaded.get(S1, "./A/B").unwrap()[0].data.as_deref(),
        Some(&[0u8, 1, 255][..])
    );
    // Handler values are not in the file; only the mount node is.
    assert_eq!(
        loaded.get(S1, "./Counter/Value"),
        Err(StatusCode::NOT_FOUND)
    );
    assert!(loaded.stored(&DmUri::from_segments(["Counter"])).is_some());

    // Second save keeps the first as .prev; then the current file gets corrupted.
    t.add(S1, "./A/C", &chr("c")).unwrap();
    t.save(&file).unwrap();
    std::fs::write(&file, b"{\"magic\": \"virmo-dmtree\", \"vers").unwrap();
    let err = DmTree::load(&file, TreeLimits::default()).unwrap_err();
    assert!(
        matches!(err, persist::PersistError::Corrupt { .. }),
        "{err}"
    );
    // A failed reload leaves the live tree as it was.
    let before = t.root.clone();
    assert!(t.reload(&file).is_err());
    assert_eq!(t.root, before);
    let (fallback, why) = DmTree::load_or_previous(&file, TreeLimits::default()).unwrap();
    assert!(why.is_some());
    assert!(fallback.get(S1, "./A/B").is_ok());
    assert_eq!(
        fallback.get(S1, "./A/C"),
        Err(StatusCode::NOT_FOUND),
        "the older good file"
    );

    std::fs::write(&file, br#"{"magic":"other","version":1,"root":{}}"#).unwrap();
    assert!(DmTree::load(&file, TreeLimits::default()).is_err());
    t.save(&file).unwrap();
    let mut other = tree();
    other.reload(&file).unwrap();
    assert_eq!(data(&other, S1, "./A/C").unwrap(), "c");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn save_refused_during_atomic() {
    let dir = temp_dir("atomic-save");
    let mut t = tree();
    t.begin_atomic().unwrap();
    assert!(matches!(
        t.save(&dir.join("t.json")),
        Err(persist::PersistError::InAtomic)
    ));
    assert_eq!(t.rollback_atomic(), StatusCode::ATOMIC_ROLLBACK_OK);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn device_config() -> DeviceConfig {
    DeviceConfig {
        dev_info: DevInfoConfig {
            dev_id: "IMEI:0001".into(),
            manufacturer: "virmo".into(),
            model: "agent".into(),
            dm_version: "1.3".into(),
            lang: "en-US".into(),
        },
        dev_detail: DevDetailConfig {
            dev_type: "hypervisor".into(),
            oem: "virmo".into(),
            fw_version: "1".into(),
            sw_version: "0.1.0".into(),
            hw_version: "x86_64".into(),
            large_object: true,
        },
        accounts: vec![DmAccountConfig {
            account: "srv1acc".into(),
            server_id: "srv1".into(),
            name: "VirMO server".into(),
            pref_con_ref: String::new(),
            addr: "https://dm.example/dm".into(),
            addr_type: "URI".into(),
            port: Some(443),
            auth_pref: "DIGEST".into(),
            auths: vec![
                AppAuthConfig {
                    level: AuthLevel::Client,
                    auth_type: "DIGEST".into(),
                    name: "dev1".into(),
                    secret: "clientpw".into(),
                    nonce: b"cn".to_vec(),
                },
                AppAuthConfig {
                    level: AuthLevel::Server,
                    auth_type: "DIGEST".into(),
                    name: "srv1".into(),
                    secret: "serverpw".into(),
                    nonce: b"sn".to_vec(),
                },
            ],
        }],
    }
}

#[test]
fn standard_objects() {
    let mut t = DmTree::new("Add=*&Get=*".parse().unwrap(), TreeLimits::default()).unwrap();
    install_standard_objects(&mut t, &device_config()).unwrap();
    assert_eq!(data(&t, S2, "./DevInfo/DevId").unwrap(), "IMEI:0001");
    assert_eq!(data(&t, S2, "./DevInfo/DmV").unwrap(), "1.3");
    assert_eq!(data(&t, S2, "./DevInfo").unwrap(), "DevId/DmV/Lang/Man/Mod");
    assert_eq!(data(&t, S2, "./DevDetail/LrgObj").unwrap(), "true");
    assert_eq!(data(&t, S2, "./DevDetail/URI/MaxDepth").unwrap(), "16");
    assert_eq!(
        t.add(S2, "./DevInfo/X", &chr("x")),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    assert_eq!(
        t.delete(S2, "./DevInfo/DevId"),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    // The account belongs to srv1.
    let acc = "./DMAcc/srv1acc";
    assert_eq!(
        data(&t, S1, &format!("{acc}/AppAddr/1/Addr")).unwrap(),
        "https://dm.example/dm"
    );
    assert_eq!(
        data(&t, S1, &format!("{acc}/AppAddr/1/Port/1/PortNbr")).unwrap(),
        "443"
    );
    assert_eq!(
        t.get(S2, &format!("{acc}/ServerID")),
        Err(StatusCode::PERMISSION_DENIED)
    );
    let secret = format!("{acc}/AppAuth/1/AAuthSecret");
    assert_eq!(t.get(S1, &secret), Err(StatusCode::COMMAND_NOT_ALLOWED));
    assert_eq!(t.replace(S1, &secret, &chr("newpw")), Ok(StatusCode::OK));
    assert_eq!(
        t.copy(S1, &secret, "./Leak"),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    let clcred = account_auth(&t, "srv1", AuthLevel::Client).unwrap();
    assert_eq!(
        (clcred.name.as_str(), clcred.secret.as_str()),
        ("dev1", "newpw")
    );
    assert!(set_account_nonce(
        &mut t,
        "srv1",
        AuthLevel::Server,
        b"next"
    ));
    assert_eq!(
        account_auth(&t, "srv1", AuthLevel::Server).unwrap().nonce,
        b"next"
    );
    assert!(account_auth(&t, "srv9", AuthLevel::Server).is_none());
    // A Pkg#0 from srv1 verifies with the SRVCRED secret and nonce stored in the tree.
    let n = crate::notification::Notification {
        version: crate::notification::VERSION_1_2,
        ui_mode: crate::notification::UiMode::Background,
        initiator: crate::notification::Initiator::Server,
        session_id: 7,
        server_id: "srv1".into(),
        vendor_specific: Vec::new(),
    };
    let msg = crate::notification::encode(&n, "serverpw", b"next").unwrap();
    let lookup =
        |id: &str| account_auth(&t, id, AuthLevel::Server).map(|a| (a.secret, vec![a.nonce]));
    assert_eq!(crate::notification::verify(&msg, lookup), Ok(n));
    // The server may delete its own account.
    assert_eq!(t.delete(S1, acc), Ok(StatusCode::OK));
    assert!(account_auth(&t, "srv1", AuthLevel::Client).is_none());
}

/// Timing of the engine on a 10 000-leaf stored tree (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn bench_stored_tree() {
    use std::time::Instant;
    let limits = TreeLimits {
        max_stored_bytes: usize::MAX,
        ..TreeLimits::default()
    };
    let mut t = DmTree::new("Add=*&Get=*&Replace=*".parse().unwrap(), limits).unwrap();
    let uris: Vec<String> = (0..100)
        .flat_map(|i| (0..100).map(move |j| format!("./Bench/{i}/{j}")))
        .collect();
    let start = Instant::now();
    for uri in &uris {
        assert_eq!(
            t.add(S1, uri, &Item::leaf(Format::Int, "12345")),
            Ok(StatusCode::OK)
        );
    }
    let add = start.elapsed();
    let start = Instant::now();
    for uri in &uris {
        assert_eq!(t.get(S1, uri).unwrap().len(), 1);
    }
    let get = start.elapsed();
    let start = Instant::now();
    for uri in &uris {
        assert_eq!(
            t.replace(S1, uri, &Item::leaf(Format::Int, "54321")),
            Ok(StatusCode::OK)
        );
    }
    let replace = start.elapsed();
    let dir = temp_dir("bench");
    let file = dir.join("tree.json");
    let start = Instant::now();
    t.save(&file).unwrap();
    let save = start.elapsed();
    let start = Instant::now();
    let loaded = DmTree::load(&file, limits).unwrap();
    let load = start.elapsed();
    assert_eq!(loaded.root, t.root);
    let size = std::fs::metadata(&file).unwrap().len();
    println!(
        "10000 leaves: add {:?}/op, get {:?}/op, replace {:?}/op, save {save:?}, load {load:?}, file {size} bytes",
        add / 10_000,
        get / 10_000,
        replace / 10_000
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Outside input never panics: URIs, ACLs, Pkg#0 messages and ops from a simple PRNG.
#[test]
fn garbage_input_never_panics() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"./%?=&+*AaZz09 -_\xc3\xa9";
    let (mut t, _) = tree_with_counter(true);
    for _ in 0..3000 {
        let len = (next() % 24) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let _ = text.parse::<Acl>();
        let _ = t.get(S1, &text);
        let _ = t.add(S1, &text, &Item::leaf(Format::Int, bytes.clone()));
        let _ = t.replace(
            S1,
            &format!("{text}?prop=ACL"),
            &Item::leaf(Format::Chr, bytes.clone()),
        );
        let _ = t.exec(S1, &format!("./Counter/{text}"), Some(&bytes), None);
        let _ = crate::notification::decode(&bytes);
        let _ = crate::auth::parse_hmac_header(&text);
        let _ = crate::auth::parse_basic(&text);
    }
    // The tree still works.
    assert!(t.get(S1, ".").is_ok());
}
