//! The rules one message can break, as the sessions apply them: those of [`crate::rules`] (a
//! message with a repeated CmdID or CmdID 0 is refused whole, 400, and the session ends; a nested
//! Atomic, 500, and an item URI beyond the device's limits, 414, are refused command by command,
//! and the session goes on), and the session's own (MsgID order, chunks inside groups, a package
//! ending mid-object).

use super::*;
use crate::model::Container;
use crate::tree::UriLimits;

fn atomic(cmd_id: u32, commands: Vec<Command>) -> Command {
    Command::Atomic(Container::new(cmd_id, commands))
}

fn sequence(cmd_id: u32, commands: Vec<Command>) -> Command {
    Command::Sequence(Container::new(cmd_id, commands))
}

/// A client whose device has `limits` for its URIs, past package 1.
fn client_with_uri_limits(limits: UriLimits, now: Instant) -> ClientSession {
    let mut config = client_config();
    config.limits.uri = limits;
    let mut session = client_with(config, Vec::new(), now);
    session.poll_message(now).expect("package 1");
    session
}

const SMALL: UriLimits = UriLimits {
    max_depth: 3,
    max_total_len: 30,
    max_segment_len: 8,
};

#[test]
fn client_refuses_a_message_with_a_repeated_or_zero_cmd_id_with_400_and_ends() {
    let now = Instant::now();
    for commands in [
        vec![header_ok(1), replace(2, "./A", "1"), replace(2, "./B", "2")],
        vec![
            header_ok(1),
            replace(2, "./A", "1"),
            sequence(3, vec![replace(1, "./B", "2")]),
        ],
        vec![header_ok(1), replace(0, "./A", "1")],
    ] {
        let (mut session, mut tree) = client_past_package_1(now);
        let reply = reply_to(&mut session, from_server(1, commands, true), &mut tree, now);
        assert_refused(&reply, session.end_reason(), StatusCode::BAD_REQUEST);
        assert!(tree.values.is_empty(), "nothing ran");
    }
}

#[test]
fn client_answers_a_nested_atomic_with_500_runs_none_of_its_atomic_and_goes_on() {
    let now = Instant::now();
    let (mut session, mut tree) = client_past_package_1(now);
    tree.values.insert("./C".into(), "c".into());
    let nested = atomic(
        3,
        vec![
            replace(4, "./A", "1"),
            sequence(5, vec![atomic(6, vec![replace(7, "./B", "2")])]),
        ],
    );
    let direct = atomic(8, vec![atomic(9, vec![replace(10, "./B", "3")])]);
    let reply = reply_to(
        &mut session,
        from_server(1, vec![header_ok(1), nested, direct, get(11, "./C")], true),
        &mut tree,
        now,
    );
    assert_eq!(
        statuses(&reply),
        [
            (CommandKind::SyncHdr, 0, 200),
            (CommandKind::Atomic, 3, 507),
            (CommandKind::Replace, 4, 215),
            (CommandKind::Sequence, 5, 215),
            (CommandKind::Atomic, 6, 500),
            (CommandKind::Replace, 7, 215),
            (CommandKind::Atomic, 8, 507),
            (CommandKind::Atomic, 9, 500),
            (CommandKind::Replace, 10, 215),
            (CommandKind::Get, 11, 200),
        ]
    );
    assert_eq!(tree.values.len(), 1, "only ./C: nothing of the Atomics ran");
    assert!(holds(&reply, CommandKind::Results));
    assert!(!session.is_ended());
}

#[test]
fn client_answers_a_uri_beyond_the_devices_limits_with_414_and_goes_on() {
    let now = Instant::now();
    let mut session = client_with_uri_limits(SMALL, now);
    let mut tree = MapExecutor::default();
    tree.values.insert("./A/B/C/D".into(), "deep".into());
    let reply = reply_to(
        &mut session,
        from_server(
            1,
            vec![
                header_ok(1),
                get(2, "./A/B/C/D"),
                replace(3, "./ABCDEFGHI", "long segment"),
                sequence(
                    4,
                    vec![
                        replace(5, "./ABCDEFGH/ABCDEFGH/ABCDEFGH/A", "too long"),
                        replace(6, "./ok", "1"),
                    ],
                ),
                atomic(7, vec![replace(8, "./fine", "2"), get(9, "./A/B/C/D")]),
                replace(10, "./A/B/C", "within"),
            ],
            true,
        ),
        &mut tree,
        now,
    );
    assert_eq!(
        statuses(&reply),
        [
            (CommandKind::SyncHdr, 0, 200),
            (CommandKind::Get, 2, 414),
            (CommandKind::Replace, 3, 414),
            (CommandKind::Sequence, 4, 200),
            (CommandKind::Replace, 5, 414),
            (CommandKind::Replace, 6, 200),
            (CommandKind::Atomic, 7, 507),
            (CommandKind::Replace, 8, 215),
            (CommandKind::Get, 9, 414),
            (CommandKind::Replace, 10, 200),
        ]
    );
    assert!(
        !holds(&reply, CommandKind::Results),
        "the deep Get did not run"
    );
    let written: Vec<&str> = tree.values.keys().map(String::as_str).collect();
    assert_eq!(written, ["./A/B/C", "./A/B/C/D", "./ok"]);
    assert!(!session.is_ended());
}

#[test]
fn the_default_uri_limits_are_those_of_devdetail() {
    assert_eq!(Limits::default().uri, UriLimits::default());
    let now = Instant::now();
    let (mut session, mut tree) = client_past_package_1(now);
    let deep = format!("./{}", ["N"; 17].join("/"));
    let reply = reply_to(
        &mut session,
        from_server(1, vec![header_ok(1), get(2, &deep)], true),
        &mut tree,
        now,
    );
    assert_eq!(statuses(&reply)[1], (CommandKind::Get, 2, 414));
}

#[test]
fn server_refuses_a_device_message_with_a_repeated_cmd_id_with_400_and_ends() {
    let now = Instant::now();
    let mut server = server_with(server_config(), now);
    let msg = SyncMl::new(
        device_hdr(1),
        SyncBody::final_with(vec![
            Command::Alert(Alert::new(1, AlertCode::CLIENT_INITIATED_MGMT)),
            replace(1, "./DevInfo/DevId", DEVICE),
        ]),
    );
    server.handle_message(msg, now);
    let reply = server.poll_message(now).expect("a reply");
    assert_refused(&reply, server.end_reason(), StatusCode::BAD_REQUEST);
    assert!(!drain_events(&mut server)
        .iter()
        .any(|e| matches!(e, ServerEvent::SessionStarted { .. })));
}

#[test]
fn server_answers_a_generic_alert_from_beyond_the_uri_limits_with_414() {
    let now = Instant::now();
    let mut config = server_config();
    config.limits.uri = SMALL;
    let mut server = server_with(config, now);
    let far = GenericAlert::new("urn:x", "chr", "far");
    let mut far = far.to_alert();
    far.cmd_id = 2;
    far.items[0].source = Some(crate::model::Location::uri("./A/B/C/D"));
    let near = GenericAlert::new("urn:x", "chr", "near");
    let mut near = near.to_alert();
    near.cmd_id = 3;
    near.items[0].source = Some(crate::model::Location::uri("./A/B"));
    let msg = SyncMl::new(
        device_hdr(1),
        SyncBody::final_with(vec![
            Command::Alert(Alert::new(1, AlertCode::CLIENT_INITIATED_MGMT)),
            Command::Alert(far),
            Command::Alert(near),
        ]),
    );
    server.handle_message(msg, now);
    let reply = server.poll_message(now).expect("a reply");
    assert_eq!(
        statuses(&reply),
        [
            (CommandKind::SyncHdr, 0, 200),
            (CommandKind::Alert, 1, 200),
            (CommandKind::Alert, 2, 414),
            (CommandKind::Alert, 3, 200),
        ]
    );
    let alerts: Vec<_> = drain_events(&mut server)
        .into_iter()
        .filter_map(|e| match e {
            ServerEvent::GenericAlert(alert) => Some(alert.source),
            _ => None,
        })
        .collect();
    assert_eq!(alerts, [Some("./A/B".to_owned())]);
}

#[test]
fn client_refuses_a_msg_id_that_does_not_increase_with_400_and_ends() {
    let now = Instant::now();
    let (mut session, mut tree) = client_past_package_1(now);
    reply_to(
        &mut session,
        from_server(1, vec![header_ok(1), replace(2, "./A", "1")], true),
        &mut tree,
        now,
    );
    let reply = reply_to(
        &mut session,
        from_server(1, vec![header_ok(2), replace(2, "./B", "2")], true),
        &mut tree,
        now,
    );
    assert_refused(&reply, session.end_reason(), StatusCode::BAD_REQUEST);
    assert!(!tree.values.contains_key("./B"));
}

#[test]
fn client_answers_a_chunk_inside_a_group_with_400_and_runs_none_of_it() {
    let now = Instant::now();
    let (mut session, mut tree) = client_past_package_1(now);
    let mut chunk = Item::target("./Big").with_data("part").with_more_data(true);
    chunk.meta = Some(Meta {
        size: Some(100),
        ..Meta::default()
    });
    let chunked = Command::Replace(ItemCommand::new(4, vec![chunk]));
    let reply = reply_to(
        &mut session,
        from_server(
            1,
            vec![
                header_ok(1),
                sequence(3, vec![chunked, replace(5, "./A", "1")]),
            ],
            true,
        ),
        &mut tree,
        now,
    );
    assert_eq!(
        statuses(&reply),
        [
            (CommandKind::SyncHdr, 0, 200),
            (CommandKind::Sequence, 3, 400),
            (CommandKind::Replace, 4, 215),
            (CommandKind::Replace, 5, 215),
        ]
    );
    assert!(tree.values.is_empty());
}

#[test]
fn client_answers_a_package_that_ends_mid_object_with_1225() {
    let now = Instant::now();
    let (mut session, mut tree) = client_past_package_1(now);
    let mut chunk = Item::target("./Big").with_data("part").with_more_data(true);
    chunk.meta = Some(Meta {
        size: Some(100),
        ..Meta::default()
    });
    let reply = reply_to(
        &mut session,
        from_server(
            1,
            vec![
                header_ok(1),
                Command::Replace(ItemCommand::new(2, vec![chunk])),
            ],
            true,
        ),
        &mut tree,
        now,
    );
    assert!(reply.body.commands.iter().any(|c| matches!(c,
        Command::Alert(a) if a.data == AlertCode::NO_END_OF_DATA)));
    assert!(tree.values.is_empty());
}
