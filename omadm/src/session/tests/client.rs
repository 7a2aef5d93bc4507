//! The client session against a scripted server.

use super::*;

#[test]
fn client_package_1_announces_the_session_devinfo_and_generic_alerts() {
    let now = Instant::now();
    let alert = GenericAlert::new("urn:oma:at:virmo:1.0:OperationComplete", "int", "1200")
        .with_correlator("op-1");
    let mut session = ClientSession::new(
        client_config(),
        Initiation::Server {
            session_id: "42".into(),
        },
        vec![alert.clone()],
        now,
    );
    let msg = session.poll_message(now).expect("package 1");
    assert_eq!(msg.hdr.msg_id, 1);
    assert_eq!(msg.hdr.session_id, "42");
    assert_eq!(msg.hdr.target.loc_uri, SERVER);
    assert_eq!(msg.hdr.source.loc_uri, DEVICE);
    assert_eq!(
        msg.hdr.meta.as_ref().and_then(|m| m.max_msg_size),
        Some(Limits::default().max_msg_size)
    );
    assert!(msg.body.final_);
    let kinds: Vec<_> = msg.body.commands.iter().map(Command::kind).collect();
    assert_eq!(
        kinds,
        [CommandKind::Alert, CommandKind::Replace, CommandKind::Alert]
    );
    let Command::Alert(session_alert) = &msg.body.commands[0] else {
        unreachable!()
    };
    assert_eq!(session_alert.data, AlertCode::SERVER_INITIATED_MGMT);
    let Command::Alert(generic) = &msg.body.commands[2] else {
        unreachable!()
    };
    assert_eq!(GenericAlert::from_alert(generic), Some(alert));
    assert_eq!(
        session.poll_message(now),
        None,
        "nothing more until the server answers"
    );
}

#[test]
fn client_answers_commands_with_statuses_and_results_then_ends_on_statuses_only() {
    let now = Instant::now();
    let (mut session, mut tree) = client_past_package_1(now);
    tree.values.insert("./DevInfo/Mod".into(), "agent".into());
    let exec = Command::Exec(Exec::new(5, Item::target("./VirMO/Op")).with_correlator("c9"));
    session.handle_message(
        from_server(
            1,
            vec![
                header_ok(1),
                get(3, "./DevInfo/Mod"),
                replace(4, "./A", "1"),
                exec,
                get(6, "./Missing"),
            ],
            true,
        ),
        &mut tree,
        now,
    );
    let pkg3 = session.poll_message(now).expect("package 3");
    assert_eq!(pkg3.hdr.msg_id, 2);
    assert!(pkg3.body.final_);
    assert_eq!(
        statuses(&pkg3),
        [
            (CommandKind::SyncHdr, 0, 200),
            (CommandKind::Get, 3, 200),
            (CommandKind::Replace, 4, 200),
            (CommandKind::Exec, 5, 202),
            (CommandKind::Get, 6, 404),
        ]
    );
    let results: Vec<&Results> = pkg3
        .body
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Results(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 1);
    assert_eq!((results[0].msg_ref, results[0].cmd_ref), (Some(1), 3));
    assert_eq!(tree.values.get("./A").map(String::as_str), Some("1"));
    assert_eq!(
        tree.executed,
        [("./VirMO/Op".to_owned(), Some("c9".to_owned()))]
    );

    session.handle_message(from_server(2, vec![header_ok(2)], true), &mut tree, now);
    assert_eq!(session.poll_message(now), None);
    assert_eq!(session.end_reason(), Some(&EndReason::Completed));
    assert!(matches!(
        session.poll_event(),
        Some(ClientEvent::Authenticated)
    ));
    assert!(matches!(
        session.poll_event(),
        Some(ClientEvent::Ended {
            reason: EndReason::Completed,
            ..
        })
    ));
}

#[test]
fn client_asks_for_the_next_message_of_an_unfinished_package() {
    let now = Instant::now();
    let (mut session, mut tree) = client_past_package_1(now);
    let reply = reply_to(
        &mut session,
        from_server(1, vec![header_ok(1), replace(2, "./A", "x")], false),
        &mut tree,
        now,
    );
    assert!(reply.body.final_);
    let last = reply.body.commands.last().expect("commands");
    assert!(matches!(last, Command::Alert(a) if a.data == AlertCode::NEXT_MESSAGE));
    assert_eq!(
        statuses(&reply),
        [
            (CommandKind::SyncHdr, 0, 200),
            (CommandKind::Replace, 2, 200)
        ]
    );
}

#[test]
fn client_resends_package_1_with_new_credentials_after_a_challenge_then_gives_up() {
    let now = Instant::now();
    let mut session =
        client(now).with_credentials(Box::new(auth::DmAuth::new(crate::auth::PeerAuth::new(
            crate::auth::AuthScheme::Md5,
            crate::auth::Credentials::new("dev", "pw"),
            crate::auth::Credentials::new("srv", "pw"),
        ))));
    let mut tree = MapExecutor::default();
    let first = session.poll_message(now).expect("package 1");
    let first_cred = first.hdr.cred.clone().expect("credentials");
    for msg_id in 1..=3 {
        let mut meta = Meta::format_and_type("b64", "syncml:auth-md5");
        meta.next_nonce = Some(crate::model::Data::text(format!("bm9uY2U{msg_id}")));
        let chal =
            Status::for_header(1, msg_id, SERVER, DEVICE, StatusCode(401)).with_chal(Chal { meta });
        session.handle_message(
            from_server(msg_id, vec![Command::Status(chal)], true),
            &mut tree,
            now,
        );
        if msg_id == 3 {
            break;
        }
        let retry = session.poll_message(now).expect("a retry");
        assert_eq!(retry.hdr.msg_id, msg_id + 1);
        let cred: &Cred = retry.hdr.cred.as_ref().expect("credentials");
        assert_ne!(cred.data, first_cred.data, "a digest over the new nonce");
        let resent: Vec<_> = retry
            .body
            .commands
            .iter()
            .map(Command::kind)
            .filter(|kind| *kind != CommandKind::Status)
            .collect();
        assert_eq!(
            resent,
            [CommandKind::Alert, CommandKind::Replace],
            "package 1 again"
        );
    }
    assert_eq!(session.end_reason(), Some(&EndReason::AuthenticationFailed));
}

#[test]
fn client_times_out_when_the_server_goes_quiet() {
    let now = Instant::now();
    let mut session = client(now);
    session.poll_message(now);
    let deadline = session.poll_timeout().expect("a deadline");
    assert_eq!(deadline, now + Limits::default().idle_timeout);
    session.handle_timeout(deadline - Duration::from_millis(1));
    assert!(!session.is_ended());
    session.handle_timeout(deadline);
    assert_eq!(session.end_reason(), Some(&EndReason::TimedOut));
    assert_eq!(session.poll_timeout(), None);
}

#[test]
fn client_refuses_unsupported_alerts_with_406_and_goes_on() {
    let now = Instant::now();
    let (mut session, mut tree) = client_past_package_1(now);
    let stray = Command::Alert(Alert::new(2, AlertCode::CLIENT_INITIATED_MGMT));
    let display = Command::Alert(Alert::new(3, AlertCode::DISPLAY));
    let reply = reply_to(
        &mut session,
        from_server(1, vec![header_ok(1), stray, display], true),
        &mut tree,
        now,
    );
    assert_eq!(
        statuses(&reply),
        [
            (CommandKind::SyncHdr, 0, 200),
            (CommandKind::Alert, 2, 406),
            (CommandKind::Alert, 3, 406)
        ]
    );
    assert!(!session.is_ended());
}

#[test]
fn client_answers_garbage_with_400_and_ends() {
    let now = Instant::now();
    let mut session = client(now);
    let mut tree = MapExecutor::default();
    session.poll_transmit(now).expect("encodes");
    session.handle_bytes(b"<SyncML><oops", None, None, &mut tree, now);
    let reply = session.poll_message(now).expect("a reply");
    assert_refused(&reply, session.end_reason(), StatusCode::BAD_REQUEST);
}

#[test]
fn client_reassembles_a_large_object_sent_in_chunks() {
    let now = Instant::now();
    let (mut session, mut tree) = client_past_package_1(now);
    let chunk = |cmd_id: u32, data: &str, more: bool, size: Option<u64>| {
        let mut item = Item::target("./Big").with_data(data).with_more_data(more);
        item.meta = size.map(|size| Meta {
            size: Some(size),
            ..Meta::default()
        });
        Command::Replace(ItemCommand::new(cmd_id, vec![item]))
    };
    let reply = reply_to(
        &mut session,
        from_server(
            1,
            vec![header_ok(1), chunk(2, "hello ", true, Some(11))],
            false,
        ),
        &mut tree,
        now,
    );
    assert_eq!(
        statuses(&reply),
        [
            (CommandKind::SyncHdr, 0, 200),
            (CommandKind::Replace, 2, 213)
        ]
    );
    let reply = reply_to(
        &mut session,
        from_server(2, vec![header_ok(2), chunk(2, "world", false, None)], true),
        &mut tree,
        now,
    );
    assert_eq!(
        statuses(&reply),
        [
            (CommandKind::SyncHdr, 0, 200),
            (CommandKind::Replace, 2, 200)
        ]
    );
    assert_eq!(
        tree.values.get("./Big").map(String::as_str),
        Some("hello world")
    );
}

#[test]
fn a_generic_alert_queued_during_a_session_goes_with_the_next_message() {
    let now = Instant::now();
    let (mut session, mut tree) = client_past_package_1(now);
    session.handle_message(
        from_server(1, vec![header_ok(1), replace(2, "./A", "1")], true),
        &mut tree,
        now,
    );
    session.queue_generic_alert(GenericAlert::new("urn:x", "chr", "late").with_correlator("c2"));
    let pkg3 = session.poll_message(now).expect("package 3");
    let alert = pkg3.body.commands.iter().find_map(|c| match c {
        Command::Alert(a) => GenericAlert::from_alert(a),
        _ => None,
    });
    assert_eq!(alert.and_then(|a| a.correlator).as_deref(), Some("c2"));
}

#[test]
fn a_notification_names_the_session_in_hexadecimal() {
    let notification = crate::notification::Notification {
        version: 12,
        ui_mode: crate::notification::UiMode::NotSpecified,
        initiator: crate::notification::Initiator::Server,
        session_id: 0x1a2b,
        server_id: "virmo-server".into(),
        vendor_specific: Vec::new(),
    };
    assert_eq!(
        Initiation::from_notification(&notification),
        Initiation::Server {
            session_id: "1A2B".into()
        }
    );
}

#[test]
fn a_value_above_the_servers_max_obj_size_is_not_sent_and_its_get_gets_413() {
    let now = Instant::now();
    let (mut session, mut tree) = client_past_package_1(now);
    tree.values.insert("./Big".into(), "b".repeat(500));
    let mut msg = from_server(1, vec![header_ok(1), get(2, "./Big")], true);
    msg.hdr.meta = Some(Meta::max_sizes(10_000, Some(100)));
    let reply = reply_to(&mut session, msg, &mut tree, now);
    assert_eq!(
        statuses(&reply),
        [(CommandKind::SyncHdr, 0, 200), (CommandKind::Get, 2, 413)]
    );
    assert!(!holds(&reply, CommandKind::Results));
}

#[test]
fn client_answers_a_golden_package_2_byte_for_byte_through_the_codec() {
    let golden: &[u8] = include_bytes!("../../../tests/golden/pkg2_server_mgmt.xml");
    let pkg2 = Encoding::Xml
        .decode(golden)
        .expect("the golden package decodes");
    let now = Instant::now();
    let mut config = client_config();
    config.dev_info.dev_id = pkg2.hdr.target.loc_uri.clone();
    let mut session = ClientSession::new(
        config,
        Initiation::Server {
            session_id: pkg2.hdr.session_id.clone(),
        },
        Vec::new(),
        now,
    );
    let mut tree = MapExecutor::default();
    tree.values
        .insert("./VirMO/VM/work/State".into(), "40".into());
    session
        .poll_transmit(now)
        .expect("encodes")
        .expect("package 1");
    session.handle_bytes(
        golden,
        Some("application/vnd.syncml.dm+xml; charset=UTF-8"),
        None,
        &mut tree,
        now,
    );
    let reply = session
        .poll_transmit(now)
        .expect("encodes")
        .expect("package 3");
    assert_eq!(
        Some(reply.target_uri.as_str()),
        pkg2.hdr.resp_uri.as_deref()
    );
    let pkg3 = Encoding::Xml
        .decode(&reply.body)
        .expect("package 3 decodes");
    assert_eq!(pkg3.hdr.msg_id, 2);
    assert_eq!(statuses(&pkg3)[0], (CommandKind::SyncHdr, 0, 200));
    let quiet_members: Vec<u32> = pkg2
        .body
        .commands
        .iter()
        .filter_map(|command| match command {
            Command::Sequence(group) if group.no_resp => Some(group),
            _ => None,
        })
        .flat_map(|group| group.commands.iter().map(Command::cmd_id))
        .collect();
    assert!(
        !quiet_members.is_empty(),
        "the golden package has a NoResp Sequence"
    );
    for member in &quiet_members {
        assert!(
            !statuses(&pkg3)
                .iter()
                .any(|(_, cmd_ref, _)| cmd_ref == member),
            "NoResp on the Sequence holds for its command {member}"
        );
    }
    for command in &pkg2.body.commands {
        if command.kind() == CommandKind::Status || command.no_resp() {
            continue;
        }
        assert!(
            pkg3.body.commands.iter().any(|answer| matches!(answer,
                Command::Status(s) if s.cmd_ref == command.cmd_id() && s.msg_ref == 1)),
            "no status for {:?} {}",
            command.kind(),
            command.cmd_id()
        );
    }
    assert!(pkg3.body.commands.iter().any(|c| matches!(c,
        Command::Results(r) if r.items.iter().any(|i| i.data == Some(crate::model::Data::text("40"))))));
}
