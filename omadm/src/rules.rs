//! The DM protocol rules one decoded message can still break: the decoders check how a message is
//! written (elements, their order and values, the DTD); these rules check what it asks. The
//! session engine applies them to every message it receives, and `omadm check` to its input.
//!
//! | rule | status | scope |
//! | --- | --- | --- |
//! | a CmdID is unique within a message, groups' commands included (RepPro `CmdID`) | 400 | the message |
//! | a CmdID is not `0` (RepPro `CmdID`; `CmdRef 0` names the `SyncHdr`) | 400 | the message |
//! | no Atomic inside an Atomic at any depth, through a Sequence too (RepPro `Atomic`: a nested Atomic is error 500, command failed) | 500 | the nested Atomic |
//! | an item's `Target`/`Source` URI within the device's `DevDetail/URI` limits (`MaxDepth`, `MaxTotLen`, `MaxSegLen`) | 414 | the command |
//!
//! The URIs checked are those of the items of every command but `Status` (whose items name no
//! node); the `SyncHdr`'s `Target`/`Source` are a server address and a device ID, not tree URIs.

use std::collections::HashMap;

use crate::model::{Command, CommandKind, SyncMl};
use crate::status::StatusCode;
use crate::tree::{check_uri_limits, UriError, UriLimits};

/// A rule a message breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("CmdID {cmd_id} is used by a {first} and by a {second} in the same message")]
    RepeatedCmdId {
        cmd_id: u32,
        first: CommandKind,
        second: CommandKind,
    },
    #[error("the {kind} has CmdID 0, which no command may have (CmdRef 0 names the SyncHdr)")]
    ZeroCmdId { kind: CommandKind },
    #[error("the Atomic with CmdID {inner} is nested in the Atomic with CmdID {outer}")]
    NestedAtomic { outer: u32, inner: u32 },
    #[error("the {kind} with CmdID {cmd_id} names the URI {uri:?}, beyond the device's limits")]
    UriBeyondLimits {
        cmd_id: u32,
        kind: CommandKind,
        uri: String,
        #[source]
        error: UriError,
    },
}

impl Violation {
    /// The DM status it gets: for a message-wide rule, the status of the message's `SyncHdr`;
    /// otherwise that of the command [`Violation::cmd_id`] names.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::RepeatedCmdId { .. } | Self::ZeroCmdId { .. } => StatusCode::BAD_REQUEST,
            Self::NestedAtomic { .. } => StatusCode::COMMAND_FAILED,
            Self::UriBeyondLimits { .. } => StatusCode::URI_TOO_LONG,
        }
    }

    /// The command that gets [`Violation::status`]; `None` when the whole message is refused.
    pub fn cmd_id(&self) -> Option<u32> {
        match self {
            Self::RepeatedCmdId { .. } | Self::ZeroCmdId { .. } => None,
            Self::NestedAtomic { inner, .. } => Some(*inner),
            Self::UriBeyondLimits { cmd_id, .. } => Some(*cmd_id),
        }
    }
}

/// The first rule `msg` breaks, the message-wide ones first, then the commands' in order;
/// `limits` are the device's URI limits.
pub fn check_message(msg: &SyncMl, limits: &UriLimits) -> Result<(), Violation> {
    if let Some(violation) = message_violation(msg) {
        return Err(violation);
    }
    match msg
        .body
        .commands
        .iter()
        .find_map(|command| command_violations(command, limits).into_iter().next())
    {
        Some(violation) => Err(violation),
        None => Ok(()),
    }
}

/// The first message-wide rule `msg` breaks (a CmdID repeated, or 0): the whole message is
/// refused with its status.
pub fn message_violation(msg: &SyncMl) -> Option<Violation> {
    let mut seen: HashMap<u32, CommandKind> = HashMap::new();
    let mut found = None;
    walk(&msg.body.commands, &mut |command| {
        if found.is_some() {
            return;
        }
        let (cmd_id, kind) = (command.cmd_id(), command.kind());
        if cmd_id == 0 {
            found = Some(Violation::ZeroCmdId { kind });
        } else if let Some(&first) = seen.get(&cmd_id) {
            found = Some(Violation::RepeatedCmdId {
                cmd_id,
                first,
                second: kind,
            });
        } else {
            seen.insert(cmd_id, kind);
        }
    });
    found
}

/// The rules `command` (a command of the body, with all it holds) breaks, in document order:
/// nested Atomics and URIs beyond `limits`.
pub fn command_violations(command: &Command, limits: &UriLimits) -> Vec<Violation> {
    let mut violations = Vec::new();
    collect(command, None, limits, &mut violations);
    violations
}

/// Adds the violations of `command`, inside the Atomic `atomic` if any, to `violations`.
fn collect(
    command: &Command,
    atomic: Option<u32>,
    limits: &UriLimits,
    violations: &mut Vec<Violation>,
) {
    match command {
        Command::Atomic(group) => {
            if let Some(outer) = atomic {
                violations.push(Violation::NestedAtomic {
                    outer,
                    inner: group.cmd_id,
                });
            }
            let atomic = atomic.or(Some(group.cmd_id));
            for member in &group.commands {
                collect(member, atomic, limits, violations);
            }
        }
        Command::Sequence(group) => {
            for member in &group.commands {
                collect(member, atomic, limits, violations);
            }
        }
        Command::Status(_) => {}
        _ => {
            let uris = command
                .items()
                .iter()
                .flat_map(|item| [item.target_uri(), item.source_uri()].into_iter().flatten());
            if let Some((uri, error)) = uris
                .filter_map(|uri| check_uri_limits(uri, limits).err().map(|e| (uri, e)))
                .next()
            {
                violations.push(Violation::UriBeyondLimits {
                    cmd_id: command.cmd_id(),
                    kind: command.kind(),
                    uri: uri.to_owned(),
                    error,
                });
            }
        }
    }
}

/// Calls `visit` on every command of `commands`, groups before their members.
fn walk(commands: &[Command], visit: &mut dyn FnMut(&Command)) {
    for command in commands {
        visit(command);
        if let Command::Atomic(group) | Command::Sequence(group) = command {
            walk(&group.commands, visit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Alert, Container, Item, ItemCommand, ProtoVersion, Results, Status, SyncBody, SyncHdr,
    };

    fn message(commands: Vec<Command>) -> SyncMl {
        SyncMl::new(
            SyncHdr::new(ProtoVersion::Dm12, "1", 1, "IMEI:1", "https://dm"),
            SyncBody::final_with(commands),
        )
    }

    fn get(cmd_id: u32, uri: &str) -> Command {
        Command::Get(ItemCommand::new(cmd_id, vec![Item::target(uri)]))
    }

    fn atomic(cmd_id: u32, commands: Vec<Command>) -> Command {
        Command::Atomic(Container::new(cmd_id, commands))
    }

    fn sequence(cmd_id: u32, commands: Vec<Command>) -> Command {
        Command::Sequence(Container::new(cmd_id, commands))
    }

    fn first(msg: &SyncMl) -> Option<Violation> {
        check_message(msg, &UriLimits::default()).err()
    }

    #[test]
    fn a_cmd_id_repeated_anywhere_in_the_message_is_400() {
        let header = Command::Status(Status::for_header(1, 1, "a", "b", StatusCode::OK));
        let msg = message(vec![
            header,
            get(2, "./A"),
            sequence(3, vec![get(2, "./B")]),
        ]);
        let violation = first(&msg).expect("refused");
        assert_eq!(
            violation,
            Violation::RepeatedCmdId {
                cmd_id: 2,
                first: CommandKind::Get,
                second: CommandKind::Get
            }
        );
        assert_eq!(violation.status(), StatusCode::BAD_REQUEST);
        assert_eq!(violation.cmd_id(), None, "the whole message");
        assert_eq!(first(&message(vec![get(1, "./A"), get(2, "./A")])), None);
    }

    #[test]
    fn cmd_id_zero_is_400() {
        let violation = first(&message(vec![get(0, "./A")])).expect("refused");
        assert_eq!(
            violation,
            Violation::ZeroCmdId {
                kind: CommandKind::Get
            }
        );
        assert_eq!(violation.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn an_atomic_nested_at_any_depth_is_500_for_the_nested_one() {
        let direct = atomic(1, vec![atomic(2, vec![get(3, "./A")])]);
        let through_sequence = atomic(
            4,
            vec![
                get(5, "./A"),
                sequence(6, vec![atomic(7, vec![get(8, "./B")])]),
            ],
        );
        let deeper = atomic(
            9,
            vec![atomic(
                10,
                vec![sequence(11, vec![atomic(12, vec![get(13, "./C")])])],
            )],
        );
        let limits = UriLimits::default();
        assert_eq!(
            command_violations(&direct, &limits),
            [Violation::NestedAtomic { outer: 1, inner: 2 }]
        );
        assert_eq!(
            command_violations(&through_sequence, &limits),
            [Violation::NestedAtomic { outer: 4, inner: 7 }]
        );
        assert_eq!(
            command_violations(&deeper, &limits),
            [
                Violation::NestedAtomic {
                    outer: 9,
                    inner: 10
                },
                Violation::NestedAtomic {
                    outer: 9,
                    inner: 12
                }
            ]
        );
        let violation = first(&message(vec![through_sequence])).expect("refused");
        assert_eq!(violation.status(), StatusCode::COMMAND_FAILED);
        assert_eq!(violation.cmd_id(), Some(7));
        // An Atomic inside a Sequence, or two Atomics side by side, are fine.
        let fine = message(vec![
            sequence(1, vec![atomic(2, vec![get(3, "./A")])]),
            atomic(4, vec![get(5, "./A")]),
        ]);
        assert_eq!(first(&fine), None);
    }

    #[test]
    fn a_target_or_source_beyond_the_uri_limits_is_414_for_its_command() {
        let limits = UriLimits {
            max_depth: 3,
            max_total_len: 30,
            max_segment_len: 8,
        };
        let deep = get(1, "./A/B/C/D");
        let long_segment = get(2, "./ABCDEFGHI");
        let long = get(3, "./ABCDEFGH/ABCDEFGH/ABCDEFGH/A");
        let copy_source = Command::Copy(ItemCommand::new(
            4,
            vec![Item::target("./A").with_source("./A/B/C/D")],
        ));
        let results = Command::Results(Results::new(5, 1, 9, vec![Item::source("./A/B/C/D")]));
        let alert = Command::Alert(Alert::generic(6, None, vec![Item::source("./ABCDEFGHI")]));
        for (command, what) in [
            (deep, "depth"),
            (long_segment, "segment"),
            (long, "total length"),
            (copy_source, "Copy source"),
            (results, "Results source"),
            (alert, "Generic Alert source"),
        ] {
            let violations = command_violations(&command, &limits);
            assert_eq!(violations.len(), 1, "{what}: {violations:?}");
            assert_eq!(violations[0].status(), StatusCode::URI_TOO_LONG, "{what}");
            assert_eq!(violations[0].cmd_id(), Some(command.cmd_id()), "{what}");
        }
        let inside = atomic(7, vec![get(8, "./A"), get(9, "./A/B/C/D")]);
        assert_eq!(
            command_violations(&inside, &limits)
                .iter()
                .map(Violation::cmd_id)
                .collect::<Vec<_>>(),
            [Some(9)]
        );
        assert!(command_violations(&get(10, "./A/B/C?prop=ACL"), &limits).is_empty());
        let unlimited = UriLimits {
            max_depth: 0,
            max_total_len: 0,
            max_segment_len: 0,
        };
        assert!(command_violations(&get(11, &"./A".repeat(100)), &unlimited).is_empty());
        // The header's addresses are not tree URIs.
        let mut msg = message(vec![get(12, "./A")]);
        msg.hdr.target.loc_uri = "x".repeat(5000);
        assert_eq!(check_message(&msg, &limits), Ok(()));
    }
}
