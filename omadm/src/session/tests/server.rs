//! The server session against a scripted device.

use super::*;

#[test]
fn server_challenges_missing_credentials_then_accepts_the_retry() {
    let now = Instant::now();
    let device = crate::auth::Credentials::new("dev", "devpw");
    let server_creds = crate::auth::Credentials::new("srv", "srvpw");
    let scheme = crate::auth::AuthScheme::Md5;
    let server_auth = auth::DmAuth::new(
        crate::auth::PeerAuth::new(scheme, server_creds.clone(), device.clone())
            .with_nonces(Vec::new(), b"nonce-0".to_vec()),
    );
    let hdr = device_hdr(1);
    let mut server = server_with(server_config(), now).with_verifier(Box::new(server_auth));
    server.enqueue(get(0, "./DevInfo/Mod"));
    let pkg1 = SyncMl::new(
        hdr.clone(),
        SyncBody::final_with(vec![Command::Alert(Alert::new(
            1,
            AlertCode::CLIENT_INITIATED_MGMT,
        ))]),
    );
    server.handle_message(pkg1.clone(), now);
    let reply = server.poll_message(now).expect("a challenge");
    assert_eq!(statuses(&reply), [(CommandKind::SyncHdr, 0, 407)]);
    assert!(!holds(&reply, CommandKind::Get));
    let Command::Status(status) = &reply.body.commands[0] else {
        unreachable!()
    };
    let chal = status.chal.clone().expect("a Chal");
    assert!(!server.is_ended());

    let mut client_auth =
        auth::DmAuth::new(crate::auth::PeerAuth::new(scheme, device, server_creds));
    auth::CredentialSource::challenged(&mut client_auth, &chal);
    let mut retry = pkg1;
    retry.hdr.msg_id = 2;
    retry.hdr.cred = auth::CredentialSource::credentials(&mut client_auth);
    server.handle_message(retry, now);
    let reply = server.poll_message(now).expect("package 2");
    assert_eq!(statuses(&reply)[0], (CommandKind::SyncHdr, 0, 212));
    assert!(holds(&reply, CommandKind::Get));
    let events = drain_events(&mut server);
    assert!(events.contains(&ServerEvent::AuthenticationFailed(StatusCode(407))));
    assert!(events.contains(&ServerEvent::Authenticated));
}

#[test]
fn server_answers_an_unfinished_client_package_with_1222_and_holds_its_commands() {
    let now = Instant::now();
    let mut server = server_with(server_config(), now);
    server.enqueue(get(0, "./X"));
    let msg = SyncMl::new(
        device_hdr(1),
        SyncBody::with(vec![Command::Alert(Alert::new(
            1,
            AlertCode::CLIENT_INITIATED_MGMT,
        ))]),
    );
    server.handle_message(msg, now);
    let reply = server.poll_message(now).expect("a reply");
    assert_eq!(
        statuses(&reply),
        [(CommandKind::SyncHdr, 0, 200), (CommandKind::Alert, 1, 200)]
    );
    assert!(
        matches!(reply.body.commands.last(), Some(Command::Alert(a)) if a.data == AlertCode::NEXT_MESSAGE)
    );
    assert!(!server.is_ended());
}

#[test]
fn server_refuses_oversized_messages_with_413_and_ends() {
    let now = Instant::now();
    let limits = Limits {
        max_msg_size: 300,
        ..Limits::default()
    };
    let mut server = server_with(
        ServerConfig {
            limits,
            ..server_config()
        },
        now,
    );
    let msg = SyncMl::new(
        device_hdr(1),
        SyncBody::final_with(vec![replace(1, "./DevInfo/DevId", &"x".repeat(400))]),
    );
    let bytes = Encoding::Xml.encode(&msg).expect("encodes");
    server.handle_bytes(&bytes, None, None, now);
    let reply = server.poll_message(now).expect("a reply");
    assert_refused(
        &reply,
        server.end_reason(),
        StatusCode::REQUEST_ENTITY_TOO_LARGE,
    );
}

#[test]
fn server_answers_unknown_client_commands_with_406() {
    let now = Instant::now();
    let mut server = server_with(server_config(), now);
    let msg = SyncMl::new(
        device_hdr(1),
        SyncBody::final_with(vec![get(1, "./Server/Secret")]),
    );
    server.handle_message(msg, now);
    let reply = server.poll_message(now).expect("a reply");
    assert_eq!(
        statuses(&reply),
        [(CommandKind::SyncHdr, 0, 200), (CommandKind::Get, 1, 406)]
    );
}

#[test]
fn server_answers_the_golden_package_1_in_wbxml_with_its_commands() {
    let golden: &[u8] = include_bytes!("../../../tests/golden/pkg1_client_init.wbxml");
    let pkg1 = Encoding::Wbxml
        .decode(golden)
        .expect("the golden package decodes");
    let now = Instant::now();
    let config = ServerConfig {
        encoding: Encoding::Wbxml,
        ..server_config()
    };
    let mut server = ServerSession::new(config, &pkg1.hdr, now);
    server.handle_bytes(golden, Some("application/vnd.syncml.dm+wbxml"), None, now);
    let events = drain_events(&mut server);
    assert!(events.iter().any(|e| matches!(e,
        ServerEvent::SessionStarted { initiation, .. } if *initiation == AlertCode::CLIENT_INITIATED_MGMT)));
    assert!(events
        .iter()
        .any(|e| matches!(e, ServerEvent::DeviceInfo(_))));
    server.enqueue(get(0, "./DevDetail/SwV"));
    let reply = server
        .poll_transmit(now)
        .expect("encodes")
        .expect("package 2");
    assert_eq!(reply.content_type, "application/vnd.syncml.dm+wbxml");
    let pkg2 = Encoding::Wbxml
        .decode(&reply.body)
        .expect("package 2 decodes");
    assert_eq!(pkg2.hdr.session_id, pkg1.hdr.session_id);
    assert_eq!(pkg2.hdr.target.loc_uri, pkg1.hdr.source.loc_uri);
    assert_eq!(statuses(&pkg2)[0], (CommandKind::SyncHdr, 0, 200));
    for command in pkg1.body.commands.iter().filter(|c| !c.no_resp()) {
        assert!(statuses(&pkg2)
            .iter()
            .any(|(_, cmd_ref, _)| *cmd_ref == command.cmd_id()));
    }
    assert!(holds(&pkg2, CommandKind::Get));
    assert!(
        !server.is_ended(),
        "commands went out: the session waits for package 3"
    );
}
