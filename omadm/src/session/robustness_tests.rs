//! Both state machines fed arbitrary sequences of messages (valid in form, anything in content):
//! they never panic, every message they send answers the peer's header first, encodes, and
//! decodes back to itself.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::model::{
    Alert, AlertCode, Chal, Command, CommandKind, Container, Exec, Item, ItemCommand, Meta,
    ProtoVersion, Results, Status, SyncBody, SyncHdr, SyncMl,
};
use crate::status::StatusCode;

fn item() -> impl Strategy<Value = Item> + Clone {
    (
        prop::sample::select(vec!["./A", "./A/B", "./DevInfo/DevId", "./Big", ""]),
        prop::option::of("[a-z]{0,40}"),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec![0u64, 3, 10, 100, u64::MAX])),
        prop::option::of(prop::sample::select(vec!["chr", "int", "node", "b64", "x"])),
    )
        .prop_map(|(uri, data, more, size, format)| {
            let mut item = Item::target(uri).with_source(uri).with_more_data(more);
            item.data = data.map(crate::model::Data::Text);
            if size.is_some() || format.is_some() {
                item.meta = Some(Meta {
                    size,
                    format: format.map(str::to_owned),
                    ..Meta::default()
                });
            }
            item
        })
}

fn status() -> impl Strategy<Value = Status> + Clone {
    (
        0u32..4,
        0u32..6,
        prop::sample::select(vec![200u16, 212, 213, 401, 407, 413, 500]),
        any::<bool>(),
    )
        .prop_map(|(msg_ref, cmd_ref, code, chal)| {
            let kind = if cmd_ref == 0 {
                CommandKind::SyncHdr
            } else {
                CommandKind::Get
            };
            let mut status = Status::new(1, msg_ref, cmd_ref, kind, StatusCode(code));
            if chal {
                let mut meta = Meta::format_and_type("b64", "syncml:auth-md5");
                meta.next_nonce = Some(crate::model::Data::text("bm9uY2U="));
                status.chal = Some(Chal { meta });
            }
            status
        })
}

fn leaf_command() -> impl Strategy<Value = Command> + Clone {
    let items = prop::collection::vec(item(), 1..3);
    prop_oneof![
        status().prop_map(Command::Status),
        items
            .clone()
            .prop_map(|items| Command::Get(ItemCommand::new(2, items))),
        items
            .clone()
            .prop_map(|items| Command::Replace(ItemCommand::new(3, items))),
        items
            .clone()
            .prop_map(|items| Command::Add(ItemCommand::new(4, items))),
        items
            .clone()
            .prop_map(|items| Command::Delete(ItemCommand::new(5, items))),
        item().prop_map(|item| Command::Exec(Exec::new(6, item).with_correlator("c"))),
        (
            prop::sample::select(vec![1100u16, 1200, 1201, 1222, 1223, 1225, 1226, 9999]),
            items.clone()
        )
            .prop_map(|(code, items)| Command::Alert(
                Alert::new(7, AlertCode(code)).with_items(items)
            )),
        items.prop_map(|items| Command::Results(Results::new(8, 1, 2, items))),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => leaf_command(),
        1 => prop::collection::vec(leaf_command(), 0..3)
            .prop_map(|commands| Command::Atomic(Container::new(9, commands))),
        1 => prop::collection::vec(leaf_command(), 0..3)
            .prop_map(|commands| Command::Sequence(Container::new(10, commands))),
    ]
}

fn message() -> impl Strategy<Value = SyncMl> {
    (
        prop::sample::select(vec!["7", "8"]),
        prop::sample::select(vec![0u32, 1, 2, 3, 4, 5, u32::MAX]),
        prop::collection::vec(command(), 0..5),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec![0u64, 400, 900, 3000])),
    )
        .prop_map(|(session, msg_id, commands, final_, no_resp, max)| {
            let mut hdr = SyncHdr::new(ProtoVersion::Dm12, session, msg_id, "dev", "srv");
            hdr.no_resp = no_resp;
            hdr.meta = max.map(|size| Meta::max_sizes(size, None));
            SyncMl::new(hdr, SyncBody { commands, final_ })
        })
}

/// A sent message answers the peer's header first (unless that header asked for no response)
/// and survives the codec.
fn check_sent(sent: &SyncMl, answered: Option<&SyncHdr>) {
    if let Some(hdr) = answered.filter(|hdr| !hdr.no_resp) {
        match sent.body.commands.first() {
            Some(Command::Status(status)) => {
                assert_eq!((status.cmd_ref, status.cmd), (0, CommandKind::SyncHdr));
                assert_eq!(status.msg_ref, hdr.msg_id);
            }
            other => panic!("the first command answers the header, not {other:?}"),
        }
    }
    let bytes = Encoding::Xml.encode(sent).expect("our messages encode");
    let peer_max = answered.and_then(|hdr| hdr.meta.as_ref()?.max_msg_size);
    if let Some(max) = peer_max.filter(|max| *max >= 3000) {
        assert!(
            bytes.len() as u64 <= max,
            "{} bytes sent to a peer taking {max}",
            bytes.len()
        );
    }
    assert_eq!(&Encoding::Xml.decode(&bytes).expect("and decode"), sent);
}

struct Tree;

impl CommandExecutor for Tree {
    fn execute(&mut self, _server_id: &str, command: &Command) -> Execution {
        match command {
            Command::Get(cmd) => Execution::results(cmd.items.clone()),
            _ => Execution::status(StatusCode::OK),
        }
    }

    fn execute_group(&mut self, _: &str, _: GroupKind, commands: &[Command]) -> GroupExecution {
        GroupExecution {
            status: StatusCode::OK,
            commands: commands
                .iter()
                .map(|_| Execution::status(StatusCode::OK))
                .collect(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_client_survives_any_server(messages in prop::collection::vec(message(), 1..6)) {
        let now = Instant::now();
        let mut config = super::tests::client_config_for_robustness();
        config.limits.max_obj_size = Some(50);
        let mut client = ClientSession::new(
            config,
            Initiation::Client { session_id: "7".into() },
            vec![GenericAlert::new("urn:x", "chr", "a")],
            now,
        );
        let mut last = client.poll_message(now);
        for msg in messages {
            let hdr = msg.hdr.clone();
            client.handle_message(msg, &mut Tree, now);
            last = client.poll_message(now);
            if let Some(sent) = &last {
                check_sent(sent, Some(&hdr));
            }
        }
        client.handle_timeout(now + Duration::from_secs(3600));
        prop_assert!(client.is_ended());
        let _ = last;
    }

    #[test]
    fn the_server_survives_any_client(messages in prop::collection::vec(message(), 1..6)) {
        let now = Instant::now();
        let first = SyncHdr::new(ProtoVersion::Dm12, "7", 1, "srv", "dev");
        let mut server = ServerSession::new(
            ServerConfig {
                server_id: "srv".into(),
                encoding: Encoding::Xml,
                limits: Limits { max_obj_size: Some(50), ..Limits::default() },
            },
            &first,
            now,
        );
        server.enqueue(Command::Get(ItemCommand::new(0, vec![Item::target("./A")])));
        server.enqueue(Command::Replace(ItemCommand::new(0, vec![Item::target("./Big").with_data("x".repeat(2000))])));
        for mut msg in messages {
            msg.hdr.source.loc_uri = "dev".into();
            let hdr = msg.hdr.clone();
            server.handle_message(msg, now);
            while server.poll_event().is_some() {}
            if let Some(sent) = server.poll_message(now) {
                check_sent(&sent, Some(&hdr));
            }
        }
        server.handle_timeout(now + Duration::from_secs(3600));
        prop_assert!(server.is_ended());
    }
}
