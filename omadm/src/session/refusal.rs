//! Received commands the DM rules refuse before anything runs ([`crate::rules`]): a nested
//! Atomic (500), an item URI beyond the device's limits (414). They are answered here without
//! reaching the executor.

use std::collections::HashMap;

use super::exchange::Exchange;
use crate::model::Command;
use crate::rules::{self, Violation};
use crate::status::StatusCode;
use crate::tree::UriLimits;

/// The statuses of a command the rules refuse, by CmdID (unique within a message: a message
/// with a repeated CmdID is refused whole before its commands are looked at).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Refusal {
    statuses: HashMap<u32, StatusCode>,
}

impl Refusal {
    /// What the rules say of `command` (with all it holds); `None` when it may run.
    pub fn of(command: &Command, limits: &UriLimits) -> Option<Self> {
        let violations = rules::command_violations(command, limits);
        if violations.is_empty() {
            return None;
        }
        let statuses = violations
            .iter()
            .inspect(|violation| tracing::debug!(%violation, "command refused"))
            .filter_map(|violation: &Violation| Some((violation.cmd_id()?, violation.status())))
            .collect();
        Some(Self { statuses })
    }

    /// Answers `command` of the peer's message `msg_id`, and all it holds, none of it run: a
    /// command a rule names gets that rule's status; otherwise the outermost Atomic gets 507
    /// (Atomic failed) and any other command 215 (not executed). `quiet`: an enclosing group
    /// has NoResp, which holds for its commands.
    pub fn answer<T: Clone>(
        &self,
        exchange: &mut Exchange<T>,
        msg_id: u32,
        command: &Command,
        quiet: bool,
    ) {
        self.answer_at(exchange, msg_id, command, quiet, true);
    }

    fn answer_at<T: Clone>(
        &self,
        exchange: &mut Exchange<T>,
        msg_id: u32,
        command: &Command,
        quiet: bool,
        outermost: bool,
    ) {
        let status = match self.statuses.get(&command.cmd_id()) {
            Some(&status) => status,
            None if outermost && matches!(command, Command::Atomic(_)) => StatusCode::ATOMIC_FAILED,
            None => StatusCode::NOT_EXECUTED,
        };
        if !quiet {
            exchange.answer(msg_id, command, status);
        }
        if let Command::Atomic(group) | Command::Sequence(group) = command {
            for member in &group.commands {
                self.answer_at(
                    exchange,
                    msg_id,
                    member,
                    quiet || group.no_resp,
                    outermost && !matches!(command, Command::Atomic(_)),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::model::{CommandKind, Container, Item, ItemCommand};
    use crate::session::Encoding;
    use crate::session::Limits;

    fn get(cmd_id: u32, uri: &str) -> Command {
        Command::Get(ItemCommand::new(cmd_id, vec![Item::target(uri)]))
    }

    fn answers(command: &Command) -> Vec<(CommandKind, u32, u16)> {
        let mut exchange: Exchange<()> =
            Exchange::new("1".into(), Encoding::Xml, Limits::default(), Instant::now());
        let refusal = Refusal::of(command, &UriLimits::default()).expect("refused");
        refusal.answer(&mut exchange, 4, command, false);
        exchange
            .outbox
            .statuses()
            .map(|status| (status.cmd, status.cmd_ref, status.data.0))
            .collect()
    }

    #[test]
    fn a_nested_atomic_gets_500_its_outer_atomic_507_and_the_rest_215() {
        let command = Command::Atomic(Container::new(
            1,
            vec![
                get(2, "./A"),
                Command::Sequence(Container::new(
                    3,
                    vec![Command::Atomic(Container::new(4, vec![get(5, "./B")]))],
                )),
            ],
        ));
        assert_eq!(
            answers(&command),
            [
                (CommandKind::Atomic, 1, 507),
                (CommandKind::Get, 2, 215),
                (CommandKind::Sequence, 3, 215),
                (CommandKind::Atomic, 4, 500),
                (CommandKind::Get, 5, 215),
            ]
        );
    }

    #[test]
    fn a_uri_beyond_the_limits_gets_414_and_noresp_holds_for_members() {
        let deep = format!("./{}", ["N"; 17].join("/"));
        assert_eq!(answers(&get(7, &deep)), [(CommandKind::Get, 7, 414)]);
        let mut quiet = Container::new(1, vec![get(2, "./A"), get(3, &deep)]);
        quiet.no_resp = true;
        assert_eq!(answers(&Command::Atomic(quiet)), []);
        assert_eq!(Refusal::of(&get(8, "./A"), &UriLimits::default()), None);
    }
}
