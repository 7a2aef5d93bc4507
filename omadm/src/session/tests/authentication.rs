//! Authentication that recovers: MD5 nonces out of date on both sides at once (after a device
//! reset, say), the `LocName` of MD5 credentials, and the Chal of a message whose credentials
//! are refused.

use super::*;
use crate::auth::{AuthScheme, Credentials, PeerAuth};
use crate::session::auth::{CredentialSource, DmAuth};

const DEVICE_USER: &str = "dev-user";
const SERVER_USER: &str = "srv-user";

/// The device's and the server's MD5 state, each with the nonces `(for sending, for verifying)`.
fn md5_pair(device: (&[u8], &[u8]), server: (&[u8], &[u8])) -> (DmAuth, DmAuth) {
    let device_creds = Credentials::new(DEVICE_USER, "device-secret");
    let server_creds = Credentials::new(SERVER_USER, "server-secret");
    (
        DmAuth::new(
            PeerAuth::new(AuthScheme::Md5, device_creds.clone(), server_creds.clone())
                .with_nonces(device.0.to_vec(), device.1.to_vec()),
        ),
        DmAuth::new(
            PeerAuth::new(AuthScheme::Md5, server_creds, device_creds)
                .with_nonces(server.0.to_vec(), server.1.to_vec()),
        ),
    )
}

/// What went over the wire, decoded, in order.
#[derive(Debug, Default)]
struct Transcript {
    from_client: Vec<SyncMl>,
    from_server: Vec<SyncMl>,
}

impl Transcript {
    /// The status codes `messages` gave the peer's `SyncHdr`.
    fn header_codes(messages: &[SyncMl]) -> Vec<u16> {
        messages
            .iter()
            .flat_map(|msg| statuses(msg).into_iter())
            .filter(|(kind, _, _)| *kind == CommandKind::SyncHdr)
            .map(|(_, _, code)| code)
            .collect()
    }

    /// How often the server refused the device's credentials, and the device the server's.
    fn refusals(&self) -> (usize, usize) {
        let refused = |codes: Vec<u16>| codes.into_iter().filter(|code| *code == 401).count();
        (
            refused(Self::header_codes(&self.from_server)),
            refused(Self::header_codes(&self.from_client)),
        )
    }
}

/// A whole session between a client with `device` credentials and a server with `server`
/// credentials, through the bytes of every message; the server application queues a Get of
/// `./DevInfo/Mod` when the session starts. Returns the server session, its events and the
/// transcript.
fn session_with(
    device: DmAuth,
    server: DmAuth,
    tree: &mut MapExecutor,
) -> (ClientSession, ServerSession, Vec<ServerEvent>, Transcript) {
    let now = Instant::now();
    let mut client = client(now)
        .with_credentials(Box::new(device.clone()))
        .with_server_verifier(Box::new(device));
    let mut transcript = Transcript::default();
    let mut to_server = client
        .poll_transmit(now)
        .expect("encodes")
        .expect("package 1");
    let first = Encoding::Xml.decode(&to_server.body).expect("decodes");
    let mut server_session = ServerSession::new(server_config(), &first.hdr, now)
        .with_verifier(Box::new(server.clone()))
        .with_credentials(Box::new(server));
    let mut events = Vec::new();
    for _ in 0..10 {
        transcript
            .from_client
            .push(Encoding::Xml.decode(&to_server.body).expect("decodes"));
        server_session.handle_bytes(&to_server.body, Some(to_server.content_type), None, now);
        for event in drain_events(&mut server_session) {
            if matches!(event, ServerEvent::SessionStarted { .. }) {
                server_session.enqueue(get(0, "./DevInfo/Mod"));
            }
            events.push(event);
        }
        let Some(reply) = server_session.poll_transmit(now).expect("encodes") else {
            break;
        };
        transcript
            .from_server
            .push(Encoding::Xml.decode(&reply.body).expect("decodes"));
        client.handle_bytes(&reply.body, Some(reply.content_type), None, tree, now);
        match client.poll_transmit(now).expect("encodes") {
            Some(next) => to_server = next,
            None => break,
        }
    }
    events.extend(drain_events(&mut server_session));
    (client, server_session, events, transcript)
}

/// Both sides' nonces as they are after a session, for the next one.
fn persisted(auth: &DmAuth) -> (Vec<u8>, Vec<u8>) {
    let peer = auth.lock();
    (
        peer.nonce_for_sending().to_vec(),
        peer.nonce_for_verifying().to_vec(),
    )
}

#[test]
fn a_session_with_both_md5_nonces_stale_completes_after_one_retry_each_way() {
    let (device, server) = md5_pair(
        (b"device-stale-for-sending", b"device-stale-for-verifying"),
        (b"server-stale-for-sending", b"server-stale-for-verifying"),
    );
    let mut tree = MapExecutor::default();
    tree.values.insert("./DevInfo/Mod".into(), "agent".into());
    let (mut client, server_session, events, transcript) =
        session_with(device.clone(), server.clone(), &mut tree);

    assert_eq!(client.end_reason(), Some(&EndReason::Completed));
    assert_eq!(server_session.end_reason(), Some(&EndReason::Completed));
    assert_eq!(transcript.refusals(), (1, 1), "one retry each way");
    assert!(events.contains(&ServerEvent::Authenticated));
    assert!(events
        .iter()
        .any(|e| matches!(e, ServerEvent::DeviceInfo(info) if info.dev_id == DEVICE)));
    assert!(events.iter().any(|e| matches!(e,
        ServerEvent::Results { results, .. }
            if results.items[0].data == Some(crate::model::Data::text("agent")))));
    let client_events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(client_events.contains(&ClientEvent::Authenticated));

    // The device's second message answers the server's challenge and is package 1 again.
    let second = &transcript.from_client[1];
    assert_eq!(statuses(second)[0], (CommandKind::SyncHdr, 0, 401));
    let resent: Vec<_> = second
        .body
        .commands
        .iter()
        .map(Command::kind)
        .filter(|kind| *kind != CommandKind::Status)
        .collect();
    assert_eq!(resent, [CommandKind::Alert, CommandKind::Replace]);

    // The nonces both sides keep now authenticate the next session at once.
    let (device_nonces, server_nonces) = (persisted(&device), persisted(&server));
    assert_eq!(device_nonces.0, server_nonces.1);
    assert_eq!(server_nonces.0, device_nonces.1);
    let (device, server) = md5_pair(
        (&device_nonces.0, &device_nonces.1),
        (&server_nonces.0, &server_nonces.1),
    );
    let (client, server_session, _, transcript) = session_with(device, server, &mut tree);
    assert_eq!(client.end_reason(), Some(&EndReason::Completed));
    assert_eq!(server_session.end_reason(), Some(&EndReason::Completed));
    assert_eq!(transcript.refusals(), (0, 0));
}

#[test]
fn a_session_with_only_the_devices_nonce_stale_retries_once_and_completes() {
    let (device, server) = md5_pair(
        (b"device-stale-for-sending", b"shared-server-nonce"),
        (b"shared-server-nonce", b"server-expects-another"),
    );
    let mut tree = MapExecutor::default();
    tree.values.insert("./DevInfo/Mod".into(), "agent".into());
    let (client, server_session, _, transcript) = session_with(device, server, &mut tree);
    assert_eq!(client.end_reason(), Some(&EndReason::Completed));
    assert_eq!(server_session.end_reason(), Some(&EndReason::Completed));
    assert_eq!(transcript.refusals(), (1, 0));
}

#[test]
fn client_takes_the_chal_of_a_server_message_whose_credentials_it_refuses() {
    let now = Instant::now();
    let (device, _) = md5_pair((b"old", b"device-expects-this"), (b"", b""));
    let mut session = client(now)
        .with_credentials(Box::new(device.clone()))
        .with_server_verifier(Box::new(device.clone()));
    let mut tree = MapExecutor::default();
    let first = session.poll_message(now).expect("package 1");

    let mut meta = Meta::format_and_type("b64", "syncml:auth-md5");
    meta.next_nonce = Some(crate::model::Data::text("bmV3LW5vbmNl")); // "new-nonce"
    let chal = Status::for_header(1, 1, SERVER, DEVICE, StatusCode(401)).with_chal(Chal { meta });
    let mut msg = from_server(
        1,
        vec![Command::Status(chal), replace(2, "./A", "must not run")],
        true,
    );
    msg.hdr.cred = Some(Cred::new("syncml:auth-md5", "b64", "d3Jvbmc="));
    let reply = reply_to(&mut session, msg, &mut tree, now);

    assert!(tree.values.is_empty(), "nothing of the refused server runs");
    assert_eq!(device.lock().nonce_for_sending(), b"new-nonce");
    let Command::Status(header) = &reply.body.commands[0] else {
        panic!("the reply opens with the header status: {reply:?}");
    };
    assert_eq!(header.data, StatusCode::INVALID_CREDENTIALS);
    assert!(header.chal.is_some(), "the server is challenged in turn");
    assert!(
        !statuses(&reply)
            .iter()
            .any(|(kind, _, _)| *kind == CommandKind::Replace),
        "no status for a command of an unauthenticated server"
    );
    let resent: Vec<_> = reply
        .body
        .commands
        .iter()
        .filter(|c| c.kind() != CommandKind::Status)
        .cloned()
        .collect();
    let original: Vec<_> = first.body.commands.clone();
    assert_eq!(resent.len(), original.len(), "package 1 again");
    for (again, before) in resent.iter().zip(&original) {
        assert_eq!(again.kind(), before.kind());
        assert_eq!(again.items(), before.items());
    }
    assert_ne!(
        reply.hdr.cred, first.hdr.cred,
        "credentials over the new nonce"
    );
    assert!(!session.is_ended());
}

#[test]
fn server_takes_the_chal_of_a_device_message_whose_credentials_it_refuses() {
    let now = Instant::now();
    let (_, server_auth) = md5_pair((b"", b""), (b"old", b"server-expects-this"));
    let mut server = server_with(server_config(), now)
        .with_verifier(Box::new(server_auth.clone()))
        .with_credentials(Box::new(server_auth.clone()));
    server.enqueue(get(0, "./DevInfo/Mod"));
    let mut meta = Meta::format_and_type("b64", "syncml:auth-md5");
    meta.next_nonce = Some(crate::model::Data::text("bmV3LW5vbmNl")); // "new-nonce"
    let chal = Status::for_header(1, 1, DEVICE, SERVER, StatusCode(401)).with_chal(Chal { meta });
    let mut msg = SyncMl::new(
        device_hdr(2),
        SyncBody::final_with(vec![
            Command::Status(chal),
            Command::Alert(Alert::new(2, AlertCode::CLIENT_INITIATED_MGMT)),
        ]),
    );
    msg.hdr.cred = Some(Cred::new("syncml:auth-md5", "b64", "d3Jvbmc="));
    server.handle_message(msg, now);
    let reply = server.poll_message(now).expect("a reply");

    assert_eq!(server_auth.lock().nonce_for_sending(), b"new-nonce");
    assert_eq!(statuses(&reply), [(CommandKind::SyncHdr, 0, 401)]);
    assert!(!holds(&reply, CommandKind::Get), "statuses only");
    assert!(drain_events(&mut server).contains(&ServerEvent::AuthenticationFailed(StatusCode(401))));
}

#[test]
fn md5_credentials_name_the_user_in_the_header_source_locname() {
    let now = Instant::now();
    let (device, server_auth) = md5_pair((b"", b""), (b"", b""));
    let mut session = client(now).with_credentials(Box::new(device));
    let pkg1 = session.poll_message(now).expect("package 1");
    assert!(pkg1.hdr.cred.is_some());
    assert_eq!(pkg1.hdr.source.loc_uri, DEVICE);
    assert_eq!(pkg1.hdr.source.loc_name.as_deref(), Some(DEVICE_USER));

    let mut server =
        ServerSession::new(server_config(), &pkg1.hdr, now).with_credentials(Box::new(server_auth));
    server.handle_message(pkg1, now);
    let pkg2 = server.poll_message(now).expect("package 2");
    assert!(pkg2.hdr.cred.is_some());
    assert_eq!(pkg2.hdr.source.loc_name.as_deref(), Some(SERVER_USER));

    // Once accepted, no Cred goes and so no LocName either.
    let mut tree = MapExecutor::default();
    let accepted = from_server(1, vec![header_ok(1), get(2, "./X")], true);
    let next = reply_to(&mut session, accepted, &mut tree, now);
    assert_eq!(
        (next.hdr.cred.as_ref(), next.hdr.source.loc_name.as_ref()),
        (None, None)
    );
}

#[test]
fn basic_and_hmac_credentials_send_no_locname() {
    let now = Instant::now();
    for scheme in [AuthScheme::Basic, AuthScheme::Hmac] {
        let mut auth = DmAuth::new(PeerAuth::new(
            scheme,
            Credentials::new(DEVICE_USER, "pw"),
            Credentials::new(SERVER_USER, "pw"),
        ));
        assert_eq!(auth.loc_name(), None, "{scheme:?}");
        let mut session = client(now).with_credentials(Box::new(auth));
        let pkg1 = session.poll_message(now).expect("package 1");
        assert_eq!(pkg1.hdr.source.loc_name, None, "{scheme:?}");
    }
}
