//! Atomic and Sequence.

use super::super::atomic::{ATOMIC_FAILED, ATOMIC_ROLLBACK_FAILED};
use super::*;

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
    assert_bytes_consistent(&t);
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
    assert_bytes_consistent(&t);
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
    assert_bytes_consistent(&t);
}
