//! How the client runs the server's commands: the DM rules first ([`Refusal`]: a nested Atomic,
//! an item URI beyond the device's limits), large objects reassembled, then the executor; each
//! command answered with its status, each Get with its Results.

use super::{ClientSession, Sent};
use crate::model::{Command, CommandKind, Container, Item, Results};
use crate::session::assembly::Received;
use crate::session::executor::{CommandExecutor, Execution, GroupKind};
use crate::session::refusal::Refusal;
use crate::status::StatusCode;

impl ClientSession {
    /// Results with a value above the server's MaxObjSize are not sent: the Get gets 413.
    fn fit_for_server(&self, execution: Execution) -> Execution {
        let too_large = execution.results.iter().any(|item| {
            let len = item.data.as_ref().map_or(0, |data| data.as_bytes().len());
            self.exchange.too_large_for_peer(len)
        });
        if too_large {
            Execution::status(StatusCode::REQUEST_ENTITY_TOO_LARGE)
        } else {
            execution
        }
    }

    fn push_results(&mut self, msg_id: u32, command: &Command, results: Vec<Item>) {
        if results.is_empty() {
            return;
        }
        let mut results = Results::new(0, msg_id, command.cmd_id(), results);
        results.target_ref = command
            .items()
            .first()
            .and_then(|item| item.target_uri().map(str::to_owned));
        self.exchange
            .outbox
            .push_command(Command::Results(results), Sent::Results);
    }

    /// Runs one command of the server's message `msg_id` (not a group).
    pub(super) fn run_command(
        &mut self,
        msg_id: u32,
        command: Command,
        server_id: &str,
        executor: &mut dyn CommandExecutor,
    ) {
        if matches!(&command, Command::Alert(alert) if alert.data.0 >= 1200) {
            self.exchange
                .answer(msg_id, &command, StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED);
            return;
        }
        if let Some(refusal) = Refusal::of(&command, &self.config.limits.uri) {
            refusal.answer(&mut self.exchange, msg_id, &command, false);
            return;
        }
        let command = match self
            .exchange
            .assembly
            .receive(command.clone(), self.exchange.limits.max_obj_size)
        {
            Received::Whole(command) => command,
            Received::Chunk(code) => {
                self.exchange.answer(msg_id, &command, code);
                return;
            }
        };
        let execution = self.fit_for_server(executor.execute(server_id, &command));
        self.exchange.answer(msg_id, &command, execution.status);
        self.push_results(msg_id, &command, execution.results);
    }

    /// Runs an Atomic or a Sequence of the server's message `msg_id`. An Atomic the rules refuse
    /// anywhere inside does not run at all (507, the offending commands their status, the others
    /// 215); a Sequence runs the members the rules allow, in order, and answers the others
    /// without running them.
    pub(super) fn run_group(
        &mut self,
        msg_id: u32,
        kind: GroupKind,
        group: Container,
        server_id: &str,
        executor: &mut dyn CommandExecutor,
    ) {
        let container = match kind {
            GroupKind::Atomic => Command::Atomic(group.clone()),
            GroupKind::Sequence => Command::Sequence(group.clone()),
        };
        let limits = self.config.limits.uri;
        if kind == GroupKind::Atomic {
            if let Some(refusal) = Refusal::of(&container, &limits) {
                refusal.answer(&mut self.exchange, msg_id, &container, false);
                return;
            }
        }
        let refusals: Vec<Option<Refusal>> = group
            .commands
            .iter()
            .map(|command| Refusal::of(command, &limits))
            .collect();
        let runnable: Vec<Command> = group
            .commands
            .iter()
            .zip(&refusals)
            .filter(|(_, refusal)| refusal.is_none())
            .map(|(command, _)| command.clone())
            .collect();
        let malformed = runnable.iter().any(|command| {
            matches!(command.kind(), CommandKind::Status | CommandKind::Results)
                || command.items().iter().any(|item| item.more_data)
        });
        // NoResp on the group holds for its commands too.
        let quiet = group.no_resp;
        if malformed {
            self.exchange
                .answer(msg_id, &container, StatusCode::BAD_REQUEST);
            for command in group.commands.iter().filter(|_| !quiet) {
                self.exchange
                    .answer(msg_id, command, StatusCode::NOT_EXECUTED);
            }
            return;
        }
        let (status, executions) = if runnable.is_empty() {
            (StatusCode::OK, Vec::new())
        } else {
            let outcome = executor.execute_group(server_id, kind, &runnable);
            (outcome.status, outcome.commands)
        };
        self.exchange.answer(msg_id, &container, status);
        let mut executions = executions.into_iter();
        for (command, refusal) in group.commands.iter().zip(&refusals) {
            if let Some(refusal) = refusal {
                refusal.answer(&mut self.exchange, msg_id, command, quiet);
                continue;
            }
            let execution = executions
                .next()
                .unwrap_or_else(|| Execution::status(StatusCode::NOT_EXECUTED));
            let execution = self.fit_for_server(execution);
            if !quiet {
                self.exchange.answer(msg_id, command, execution.status);
            }
            self.push_results(msg_id, command, execution.results);
        }
    }
}
