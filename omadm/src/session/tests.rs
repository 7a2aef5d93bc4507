//! Both state machines driven by scripted peers: messages (or bytes) in, messages out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;
use crate::model::{
    Alert, AlertCode, Chal, Command, CommandKind, Cred, Exec, Item, ItemCommand, Meta,
    ProtoVersion, Results, Status, SyncBody, SyncHdr, SyncMl,
};
use crate::status::StatusCode;

/// A device tree as a flat map of leaf values: enough to see what the session asked for.
#[derive(Debug, Default)]
struct MapExecutor {
    values: BTreeMap<String, String>,
    executed: Vec<(String, Option<String>)>,
}

impl CommandExecutor for MapExecutor {
    fn execute(&mut self, _server_id: &str, command: &Command) -> Execution {
        let item = command.items().first().cloned().unwrap_or_default();
        let uri = item.target_uri().unwrap_or_default().to_owned();
        let data = item.data.as_ref().map(|d| d.to_string_lossy().into_owned());
        match command {
            Command::Get(_) => match self.values.get(&uri) {
                Some(value) => {
                    Execution::results(vec![Item::source(uri).with_data(value.as_str())])
                }
                None => Execution::status(StatusCode::NOT_FOUND),
            },
            Command::Replace(_) | Command::Add(_) => {
                self.values.insert(uri, data.unwrap_or_default());
                Execution::status(StatusCode::OK)
            }
            Command::Exec(exec) => {
                self.executed.push((uri, exec.correlator.clone()));
                Execution::status(StatusCode::ACCEPTED_FOR_PROCESSING)
            }
            _ => Execution::status(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED),
        }
    }

    fn execute_group(
        &mut self,
        server_id: &str,
        _kind: GroupKind,
        commands: &[Command],
    ) -> GroupExecution {
        let commands = commands
            .iter()
            .map(|command| self.execute(server_id, command))
            .collect();
        GroupExecution {
            status: StatusCode::OK,
            commands,
        }
    }
}

const SERVER: &str = "https://dm.example/dm";
const DEVICE: &str = "virmo:host-1";

fn client_config() -> ClientConfig {
    ClientConfig {
        proto: ProtoVersion::Dm12,
        server_uri: SERVER.into(),
        server_id: "virmo-server".into(),
        dev_info: DevInfo {
            dev_id: DEVICE.into(),
            man: "VirMO".into(),
            model: "agent".into(),
            dm_version: "1.2".into(),
            lang: "en-US".into(),
        },
        encoding: Encoding::Xml,
        limits: Limits::default(),
    }
}

/// The client configuration of these tests, for the robustness tests.
pub(super) fn client_config_for_robustness() -> ClientConfig {
    client_config()
}

fn server_config() -> ServerConfig {
    ServerConfig {
        server_id: "virmo-server".into(),
        encoding: Encoding::Xml,
        limits: Limits::default(),
    }
}

/// A client that opens session 7 with `config`, carrying `alerts`.
fn client_with(config: ClientConfig, alerts: Vec<GenericAlert>, now: Instant) -> ClientSession {
    ClientSession::new(
        config,
        Initiation::Client {
            session_id: "7".into(),
        },
        alerts,
        now,
    )
}

fn client(now: Instant) -> ClientSession {
    client_with(client_config(), Vec::new(), now)
}

/// A client that has sent package 1, over an empty tree.
fn client_past_package_1(now: Instant) -> (ClientSession, MapExecutor) {
    let mut session = client(now);
    session.poll_message(now).expect("package 1");
    (session, MapExecutor::default())
}

/// A client that has sent package 1, and a server that has read it with a Get queued.
fn client_and_server_past_package_1(now: Instant) -> (ClientSession, ServerSession) {
    let mut session = client(now);
    let pkg1 = session.poll_message(now).expect("package 1");
    let mut server = ServerSession::new(server_config(), &pkg1.hdr, now);
    server.enqueue(get(0, "./X"));
    server.handle_message(pkg1, now);
    (session, server)
}

/// The header of the device's message `msg_id` in session 7.
fn device_hdr(msg_id: u32) -> SyncHdr {
    SyncHdr::new(ProtoVersion::Dm12, "7", msg_id, SERVER, DEVICE)
}

/// A server with `config` for session 7, opened by the device's first header.
fn server_with(config: ServerConfig, now: Instant) -> ServerSession {
    ServerSession::new(config, &device_hdr(1), now)
}

/// Whether `msg` holds a command of `kind`.
fn holds(msg: &SyncMl, kind: CommandKind) -> bool {
    msg.body.commands.iter().any(|c| c.kind() == kind)
}

/// The events `server` has for us, in order.
fn drain_events(server: &mut ServerSession) -> Vec<ServerEvent> {
    std::iter::from_fn(|| server.poll_event()).collect()
}

/// A server message of session 7 with `commands`.
fn from_server(msg_id: u32, commands: Vec<Command>, final_: bool) -> SyncMl {
    SyncMl::new(
        SyncHdr::new(ProtoVersion::Dm12, "7", msg_id, DEVICE, "virmo-server"),
        SyncBody { commands, final_ },
    )
}

fn header_ok(msg_ref: u32) -> Command {
    Command::Status(Status::for_header(
        1,
        msg_ref,
        SERVER,
        DEVICE,
        StatusCode(212),
    ))
}

fn statuses(msg: &SyncMl) -> Vec<(CommandKind, u32, u16)> {
    msg.body
        .commands
        .iter()
        .filter_map(|command| match command {
            Command::Status(status) => Some((status.cmd, status.cmd_ref, status.data.0)),
            _ => None,
        })
        .collect()
}

/// `reply` answers the peer's header with `code` and nothing else, and the session ended for
/// that (`end_reason`).
fn assert_refused(reply: &SyncMl, end_reason: Option<&EndReason>, code: StatusCode) {
    assert_eq!(statuses(reply), [(CommandKind::SyncHdr, 0, code.0)]);
    assert_eq!(end_reason, Some(&EndReason::BadMessage(code)));
}

/// Hands the server's `msg` to `session` and takes its reply.
fn reply_to(
    session: &mut ClientSession,
    msg: SyncMl,
    tree: &mut MapExecutor,
    now: Instant,
) -> SyncMl {
    session.handle_message(msg, tree, now);
    session.poll_message(now).expect("a reply")
}

fn get(cmd_id: u32, uri: &str) -> Command {
    Command::Get(ItemCommand::new(cmd_id, vec![Item::target(uri)]))
}

fn replace(cmd_id: u32, uri: &str, value: &str) -> Command {
    Command::Replace(ItemCommand::new(
        cmd_id,
        vec![Item::target(uri).with_data(value)],
    ))
}

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
    let golden: &[u8] = include_bytes!("../../tests/golden/pkg2_server_mgmt.xml");
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

#[test]
fn server_answers_the_golden_package_1_in_wbxml_with_its_commands() {
    let golden: &[u8] = include_bytes!("../../tests/golden/pkg1_client_init.wbxml");
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
