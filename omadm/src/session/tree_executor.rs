//! The device's [`DmTree`] as the client session's [`CommandExecutor`]: SyncML commands become
//! [`DmOp`]s, outcomes become statuses and result items.

use base64::Engine as _;

use super::executor::{CommandExecutor, Execution, GroupExecution, GroupKind};
use crate::model::{format, Command, Data, Item, ItemCommand, Meta};
use crate::status::StatusCode;
use crate::tree::{self, DmOp, DmTree, Format, GetResult, OpOutcome, Requester};

fn data_bytes(item: &Item) -> Option<Vec<u8>> {
    item.data.as_ref().map(|data| data.as_bytes().to_vec())
}

/// The tree Item of an Add/Replace item, its Meta taken from the item or else the command.
fn tree_item(command: &ItemCommand, item: &Item) -> Result<tree::Item, StatusCode> {
    let meta = item.meta.as_ref().or(command.meta.as_ref());
    let format = match meta.and_then(|meta| meta.format.as_deref()) {
        Some(name) => Some(Format::parse(name).ok_or(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)?),
        None => None,
    };
    Ok(tree::Item {
        format,
        mime_type: meta.and_then(|meta| meta.type_.clone()),
        data: data_bytes(item),
        declared_size: meta.and_then(|meta| meta.size),
    })
}

fn target(item: &Item) -> Result<String, StatusCode> {
    item.target_uri()
        .map(str::to_owned)
        .ok_or(StatusCode::INCOMPLETE_COMMAND)
}

/// The tree operations of `command`, one per item.
fn ops(command: &Command) -> Result<Vec<DmOp>, StatusCode> {
    let per_item = |cmd: &ItemCommand, f: &dyn Fn(&Item) -> Result<DmOp, StatusCode>| {
        if cmd.items.is_empty() {
            return Err(StatusCode::INCOMPLETE_COMMAND);
        }
        cmd.items.iter().map(f).collect()
    };
    match command {
        Command::Get(cmd) => per_item(cmd, &|item| {
            Ok(DmOp::Get {
                target: target(item)?,
            })
        }),
        Command::Delete(cmd) => per_item(cmd, &|item| {
            Ok(DmOp::Delete {
                target: target(item)?,
            })
        }),
        Command::Add(cmd) => per_item(cmd, &|item| {
            Ok(DmOp::Add {
                target: target(item)?,
                item: tree_item(cmd, item)?,
            })
        }),
        Command::Replace(cmd) => per_item(cmd, &|item| {
            Ok(DmOp::Replace {
                target: target(item)?,
                item: tree_item(cmd, item)?,
            })
        }),
        Command::Copy(cmd) => per_item(cmd, &|item| {
            let source = item.source_uri().ok_or(StatusCode::INCOMPLETE_COMMAND)?;
            Ok(DmOp::Copy {
                source: source.to_owned(),
                target: target(item)?,
            })
        }),
        Command::Exec(exec) => Ok(vec![DmOp::Exec {
            target: target(&exec.item)?,
            data: data_bytes(&exec.item),
            correlator: exec.correlator.clone(),
        }]),
        Command::Alert(_)
        | Command::Atomic(_)
        | Command::Sequence(_)
        | Command::Results(_)
        | Command::Status(_) => Err(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED),
    }
}

/// A Results item: text when the value is UTF-8, else base64 with format `b64` (XML cannot
/// carry raw bytes).
fn result_item(result: GetResult) -> Item {
    let mut meta = Meta::with_format(result.format.as_str());
    meta.type_ = result.mime_type;
    let data = result.data.map(|bytes| match String::from_utf8(bytes) {
        Ok(text) => Data::Text(text),
        Err(err) => {
            meta.format = Some(format::B64.to_owned());
            Data::Text(base64::engine::general_purpose::STANDARD.encode(err.into_bytes()))
        }
    });
    Item {
        source: Some(crate::model::Location::uri(result.uri)),
        meta: Some(meta),
        data,
        ..Item::default()
    }
}

/// One execution from the outcomes of a command's items: the first error, else the first status.
fn combine(outcomes: Vec<OpOutcome>) -> Execution {
    let status = outcomes
        .iter()
        .map(|outcome| outcome.status)
        .find(|status| !status.is_success())
        .or_else(|| outcomes.first().map(|outcome| outcome.status))
        .unwrap_or(StatusCode::OK);
    let results = outcomes
        .into_iter()
        .flat_map(|outcome| outcome.results)
        .map(result_item)
        .collect();
    Execution { status, results }
}

impl CommandExecutor for DmTree {
    fn execute(&mut self, server_id: &str, command: &Command) -> Execution {
        match ops(command) {
            Ok(ops) => combine(
                ops.iter()
                    .map(|op| DmTree::execute(self, Requester::Server(server_id), op))
                    .collect(),
            ),
            Err(status) => Execution::status(status),
        }
    }

    fn execute_group(
        &mut self,
        server_id: &str,
        kind: GroupKind,
        commands: &[Command],
    ) -> GroupExecution {
        match kind {
            GroupKind::Sequence => GroupExecution {
                status: StatusCode::OK,
                commands: commands
                    .iter()
                    .map(|command| CommandExecutor::execute(self, server_id, command))
                    .collect(),
            },
            GroupKind::Atomic => run_atomic(self, server_id, commands),
        }
    }
}

/// An Atomic: every command's operations in one tree transaction. A command that cannot become
/// operations fails the Atomic before anything runs.
fn run_atomic(tree: &mut DmTree, server_id: &str, commands: &[Command]) -> GroupExecution {
    let mut all = Vec::new();
    let mut counts = Vec::new();
    for (index, command) in commands.iter().enumerate() {
        match ops(command) {
            Ok(ops) => {
                counts.push(ops.len());
                all.extend(ops);
            }
            Err(status) => {
                let mut executions: Vec<Execution> = commands
                    .iter()
                    .map(|_| Execution::status(StatusCode::NOT_EXECUTED))
                    .collect();
                executions[index] = Execution::status(status);
                return GroupExecution {
                    status: tree::ATOMIC_FAILED,
                    commands: executions,
                };
            }
        }
    }
    let outcome = tree.run_atomic(Requester::Server(server_id), &all);
    let mut outcomes = outcome.commands.into_iter();
    let commands = counts
        .into_iter()
        .map(|count| combine(outcomes.by_ref().take(count).collect()))
        .collect();
    GroupExecution {
        status: outcome.status,
        commands,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{AccessTypes, Acl, AclCommand, DmUri, Node, Scope, TreeLimits};

    fn tree() -> DmTree {
        let mut acl = Acl::inherit();
        for command in AclCommand::ALL {
            acl = acl.grant(command, "srv");
        }
        let mut tree = DmTree::new(acl, TreeLimits::default()).expect("a tree");
        tree.put_node(
            &DmUri::from_segments(["A"]),
            Node::interior(Scope::Dynamic, 0).with_access(AccessTypes::STORED),
        )
        .expect("A");
        tree
    }

    fn add(uri: &str, fmt: &str, value: &str) -> Command {
        let mut item = Item::target(uri).with_meta(Meta::with_format(fmt));
        if !value.is_empty() {
            item = item.with_data(value);
        }
        Command::Add(ItemCommand::new(1, vec![item]))
    }

    #[test]
    fn commands_become_tree_operations_and_gets_become_result_items() {
        let mut tree = tree();
        let added = CommandExecutor::execute(&mut tree, "srv", &add("./A/B", "int", "7"));
        assert_eq!(added.status, StatusCode::OK);
        let get = Command::Get(ItemCommand::new(2, vec![Item::target("./A/B")]));
        let got = CommandExecutor::execute(&mut tree, "srv", &get);
        assert_eq!(got.status, StatusCode::OK);
        let item = &got.results[0];
        assert_eq!(item.source_uri(), Some("./A/B"));
        assert_eq!(
            item.meta.as_ref().and_then(|m| m.format.as_deref()),
            Some("int")
        );
        assert_eq!(item.data, Some(Data::text("7")));
        let odd = CommandExecutor::execute(&mut tree, "srv", &add("./A/C", "weird", "x"));
        assert_eq!(odd.status, StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED);
        let other = CommandExecutor::execute(&mut tree, "intruder", &get);
        assert_eq!(other.status, StatusCode::PERMISSION_DENIED);
    }

    #[test]
    fn a_failing_atomic_leaves_the_tree_as_it_was_and_a_sequence_goes_on() {
        let mut tree = tree();
        let group = [add("./A/X", "node", ""), add("./A", "node", "")];
        let atomic = tree.execute_group("srv", GroupKind::Atomic, &group);
        assert_eq!(atomic.status, tree::ATOMIC_FAILED);
        assert_eq!(atomic.commands[1].status, StatusCode::ALREADY_EXISTS);
        assert_eq!(
            tree.device_children(&DmUri::from_segments(["A"])),
            Vec::<String>::new()
        );
        let sequence = tree.execute_group("srv", GroupKind::Sequence, &group);
        assert_eq!(sequence.status, StatusCode::OK);
        assert_eq!(sequence.commands[0].status, StatusCode::OK);
        assert!(!sequence.commands[1].status.is_success());
    }
}
