//! Both state machines against each other.

use super::*;

/// Drives a client and a server against each other until the session ends, all messages
/// through their XML bytes; returns the server's events.
fn run(
    client: &mut ClientSession,
    server_queue: Vec<Command>,
    tree: &mut MapExecutor,
    server_limits: Limits,
) -> (Vec<ServerEvent>, usize) {
    let now = Instant::now();
    let first = client
        .poll_transmit(now)
        .expect("encodes")
        .expect("package 1");
    let hdr = Encoding::Xml.decode(&first.body).expect("decodes").hdr;
    let mut server = ServerSession::new(
        ServerConfig {
            limits: server_limits,
            ..server_config()
        },
        &hdr,
        now,
    );
    let mut events = Vec::new();
    let mut queue = Some(server_queue);
    let mut to_server = first;
    let mut messages = 1;
    loop {
        server.handle_bytes(&to_server.body, Some(to_server.content_type), None, now);
        while let Some(event) = server.poll_event() {
            events.push(event);
        }
        for command in queue.take().unwrap_or_default() {
            server.enqueue(command);
        }
        let Some(reply) = server.poll_transmit(now).expect("encodes") else {
            break;
        };
        messages += 1;
        client.handle_bytes(&reply.body, Some(reply.content_type), None, tree, now);
        match client.poll_transmit(now).expect("encodes") {
            Some(next) => {
                messages += 1;
                to_server = next;
            }
            None => break,
        }
    }
    while let Some(event) = server.poll_event() {
        events.push(event);
    }
    assert!(server.is_ended(), "the server ended too");
    (events, messages)
}

#[test]
fn a_whole_session_between_both_state_machines() {
    let now = Instant::now();
    let mut session = client_with(
        client_config(),
        vec![GenericAlert::new("urn:x", "chr", "done").with_correlator("c1")],
        now,
    );
    let mut tree = MapExecutor::default();
    tree.values.insert("./DevInfo/DevId".into(), DEVICE.into());
    let (events, _) = run(
        &mut session,
        vec![get(0, "./DevInfo/DevId"), replace(0, "./A", "v")],
        &mut tree,
        Limits::default(),
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, ServerEvent::DeviceInfo(info) if info.dev_id == DEVICE)));
    assert!(events.iter().any(
        |e| matches!(e, ServerEvent::GenericAlert(a) if a.correlator.as_deref() == Some("c1"))
    ));
    assert!(events.iter().any(|e| matches!(e,
        ServerEvent::Results { request: 1, results, .. }
            if results.items[0].data == Some(crate::model::Data::text(DEVICE)))));
    assert!(events.iter().any(|e| matches!(e,
        ServerEvent::Status { request: 2, status, .. } if status.data == StatusCode::OK)));
    assert!(events.iter().any(|e| matches!(e,
        ServerEvent::Ended { reason: EndReason::Completed, unanswered } if unanswered.is_empty())));
    assert_eq!(session.end_reason(), Some(&EndReason::Completed));
    let mut delivered = false;
    while let Some(event) = session.poll_event() {
        if let ClientEvent::Ended { undelivered, .. } = &event {
            assert!(undelivered.is_empty());
        }
        delivered |=
            matches!(event, ClientEvent::AlertStatus { status, .. } if status == StatusCode::OK);
    }
    assert!(delivered);
}

#[test]
fn small_max_msg_size_splits_packages_and_chunks_large_objects_both_ways() {
    let now = Instant::now();
    let mut config = client_config();
    config.limits.max_msg_size = 1200;
    let mut session = client_with(config, Vec::new(), now);
    let big = "0123456789abcdef".repeat(200);
    let mut tree = MapExecutor::default();
    tree.values.insert("./Log".into(), big.clone());
    let mut queue: Vec<Command> = (0..20)
        .map(|i| replace(0, &format!("./N{i}"), "v"))
        .collect();
    queue.push(replace(0, "./Upload", &big));
    queue.push(get(0, "./Log"));
    let server_limits = Limits {
        max_msg_size: 1500,
        ..Limits::default()
    };
    let (events, messages) = run(&mut session, queue, &mut tree, server_limits);
    assert!(messages > 10, "many messages: {messages}");
    assert_eq!(tree.values.get("./Upload"), Some(&big));
    assert_eq!(tree.values.get("./N19").map(String::as_str), Some("v"));
    let results = events.iter().find_map(|e| match e {
        ServerEvent::Results { results, .. } => Some(results),
        _ => None,
    });
    assert_eq!(
        results.and_then(|r| r.items[0].data.clone()),
        Some(crate::model::Data::text(big.as_str()))
    );
    let statuses = events
        .iter()
        .filter(|e| matches!(e, ServerEvent::Status { status, .. } if status.data.is_success()))
        .count();
    assert_eq!(statuses, 22);
    assert_eq!(session.end_reason(), Some(&EndReason::Completed));
}

#[test]
fn a_client_abort_sends_1223_and_the_server_ends_after_answering_it() {
    let now = Instant::now();
    let (mut session, mut server) = client_and_server_past_package_1(now);
    let pkg2 = server.poll_message(now).expect("package 2");
    let mut tree = MapExecutor::default();
    session.handle_message(pkg2, &mut tree, now);
    session.abort();
    let abort = session.poll_message(now).expect("the abort");
    assert!(abort.body.commands.iter().any(|c| matches!(c,
        Command::Alert(a) if a.data == AlertCode::SESSION_ABORT)));
    assert_eq!(session.end_reason(), Some(&EndReason::Aborted));
    server.handle_message(abort, now);
    let last = server.poll_message(now).expect("the last answer");
    assert!(last.body.final_);
    assert_eq!(server.end_reason(), Some(&EndReason::AbortedByPeer));
    let ended = drain_events(&mut server).into_iter().find_map(|e| match e {
        ServerEvent::Ended { unanswered, .. } => Some(unanswered),
        _ => None,
    });
    assert_eq!(ended, Some(vec![1]), "the Get was never answered");
}

#[test]
fn a_server_abort_ends_the_client_without_an_answer() {
    let now = Instant::now();
    let (mut session, mut server) = client_and_server_past_package_1(now);
    server.abort();
    let abort = server.poll_message(now).expect("the abort");
    assert_eq!(server.end_reason(), Some(&EndReason::Aborted));
    let mut tree = MapExecutor::default();
    session.handle_message(abort, &mut tree, now);
    assert_eq!(session.end_reason(), Some(&EndReason::AbortedByPeer));
    assert_eq!(session.poll_message(now), None);
}
