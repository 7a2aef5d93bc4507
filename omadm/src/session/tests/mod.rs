//! Both state machines driven by scripted peers: messages (or bytes) in, messages out. This
//! module holds the scripted peers and helpers; the tests are in `client`, `server` and `both`.

mod authentication;
mod both;
mod client;
mod dm_rules;
mod server;

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
