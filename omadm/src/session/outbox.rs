//! What one side still has to send in the current package, and how it is cut into messages that
//! fit the peer's MaxMsgSize: statuses first, then commands; an item too large for the room left
//! is sent as a large object in chunks (`MoreData`, `Meta/Size` in the first chunk), a chunk being
//! the last command of its message.

use std::collections::VecDeque;

use super::wire::{encoded_len, Encoding};
use crate::model::{Command, Data, Item, Status, SyncBody, SyncMl};

/// Below this many data bytes of room, a chunk waits for the next message (unless the message
/// is still empty).
const MIN_CHUNK: usize = 64;

/// A command waiting to be sent, with what its sender wants back when its Status arrives.
#[derive(Debug, Clone)]
struct Queued<T> {
    command: Command,
    tag: T,
    /// The rest of a large object whose first chunk went out.
    continuation: bool,
}

/// A command put in a message: its CmdID (and, inside an Atomic/Sequence, its position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SentCommand<T> {
    pub cmd_id: u32,
    pub tag: T,
    /// `Some(i)`: the i-th command of the group `tag` belongs to.
    pub member: Option<usize>,
    /// More chunks of this large object follow (its Status will be 213).
    pub chunk: bool,
}

/// The pending part of a package.
#[derive(Debug)]
pub(crate) struct Outbox<T> {
    statuses: VecDeque<Status>,
    commands: VecDeque<Queued<T>>,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Self {
            statuses: VecDeque::new(),
            commands: VecDeque::new(),
        }
    }
}

impl<T: Clone> Outbox<T> {
    /// The statuses queued, in order.
    #[cfg(test)]
    pub fn statuses(&self) -> impl Iterator<Item = &Status> {
        self.statuses.iter()
    }

    pub fn push_status(&mut self, status: Status) {
        self.statuses.push_back(status);
    }

    /// Puts `status` before the statuses queued (a resend after an authentication failure), but
    /// after the status of the header being answered: that one must open the message.
    pub fn push_status_front(&mut self, status: Status) {
        let after_header = self
            .statuses
            .iter()
            .take_while(|queued| queued.cmd_ref == 0)
            .count();
        self.statuses.insert(after_header, status);
    }

    pub fn push_command(&mut self, command: Command, tag: T) {
        self.commands.push_back(Queued {
            command,
            tag,
            continuation: false,
        });
    }

    /// Puts `command` before everything else queued (a resend after an authentication failure).
    pub fn push_command_front(&mut self, command: Command, tag: T) {
        self.commands.push_front(Queued {
            command,
            tag,
            continuation: false,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.statuses.is_empty() && self.commands.is_empty()
    }

    pub fn has_commands(&self) -> bool {
        !self.commands.is_empty()
    }

    /// Drops the rest of a large object tagged `tag` whose chunk the peer refused.
    pub fn drop_continuations(&mut self, tag: &T)
    where
        T: PartialEq,
    {
        self.commands
            .retain(|queued| !(queued.continuation && queued.tag == *tag));
    }

    /// Takes out the commands not yet started whose single item's value is above `max` bytes
    /// (they must not be sent to a peer with that MaxObjSize).
    pub fn take_oversized(&mut self, max: u64) -> Vec<T> {
        let mut taken = Vec::new();
        self.commands.retain(|queued| {
            let oversized = !queued.continuation
                && chunk_item(&queued.command)
                    .and_then(|item| item.data.as_ref())
                    .is_some_and(|data| data.as_bytes().len() as u64 > max);
            if oversized {
                taken.push(queued.tag.clone());
            }
            !oversized
        });
        taken
    }

    /// Drops the commands queued (the statuses stay).
    pub fn clear_commands(&mut self) {
        self.commands.clear();
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.statuses.clear();
        self.commands.clear();
    }

    /// Fills `msg` (whose body must be empty) with as much as fits in `limit` bytes, leaving room
    /// for `trailer` (e.g. Alert 1222), which is appended last. Sets `Final` when everything went
    /// out. CmdIDs are assigned from 1. With `statuses_only`, commands stay queued (the reply to
    /// a message of an unfinished package carries statuses and Alert 1222 only) and the message
    /// is final.
    pub fn fill(
        &mut self,
        msg: &mut SyncMl,
        limit: Option<usize>,
        encoding: Encoding,
        trailer: Option<Command>,
        statuses_only: bool,
    ) -> Vec<SentCommand<T>> {
        let limit = limit.unwrap_or(usize::MAX);
        if let Some(sent) = self.fill_whole(msg, limit, encoding, trailer.as_ref(), statuses_only) {
            return sent;
        }
        let mut next_id = 1u32;
        let mut sent = Vec::new();
        let base = encoded_len(msg, encoding);
        let final_len = "<Final/>".len();
        let trailer_len = trailer.as_ref().map_or(0, |trailer| {
            let mut trailer = trailer.clone();
            renumber(&mut trailer, &mut 900);
            command_len(&msg.hdr, &trailer, encoding)
        });
        let mut used = base + final_len + trailer_len;
        let mut chunked = false;

        while let Some(mut status) = self.statuses.pop_front() {
            status.cmd_id = next_id;
            let command = Command::Status(status);
            let size = command_len(&msg.hdr, &command, encoding);
            if used + size > limit && !msg.body.commands.is_empty() {
                let Command::Status(status) = command else {
                    unreachable!("built as a Status above")
                };
                self.statuses.push_front(status);
                break;
            }
            used += size;
            next_id += 1;
            msg.body.commands.push(command);
        }

        while self.statuses.is_empty() && !chunked && !statuses_only {
            let Some(mut queued) = self.commands.pop_front() else {
                break;
            };
            let first_id = next_id;
            let mut ids = next_id;
            renumber(&mut queued.command, &mut ids);
            let size = command_len(&msg.hdr, &queued.command, encoding);
            if used + size <= limit || (msg.body.commands.is_empty() && !is_chunkable(&queued)) {
                used += size;
                next_id = ids;
                record(&queued, first_id, false, &mut sent);
                msg.body.commands.push(queued.command);
                continue;
            }
            if !is_chunkable(&queued) {
                self.commands.push_front(queued);
                break;
            }
            let room = limit.saturating_sub(used);
            match split(
                &msg.hdr,
                &queued,
                room,
                msg.body.commands.is_empty(),
                encoding,
            ) {
                Some((chunk, rest)) => {
                    record(&queued, first_id, true, &mut sent);
                    next_id = first_id + 1;
                    msg.body.commands.push(chunk);
                    self.commands.push_front(Queued {
                        command: rest,
                        tag: queued.tag,
                        continuation: true,
                    });
                    chunked = true;
                }
                None => {
                    self.commands.push_front(queued);
                    break;
                }
            }
        }

        if let Some(mut trailer) = trailer {
            renumber(&mut trailer, &mut next_id);
            msg.body.commands.push(trailer);
        }
        msg.body.final_ = statuses_only || self.is_empty();
        sent
    }
}

impl<T: Clone> Outbox<T> {
    /// Puts everything in `msg` when it all fits (the usual case): one encoding instead of one
    /// per command. `None` (and `msg` untouched) when it does not.
    fn fill_whole(
        &mut self,
        msg: &mut SyncMl,
        limit: usize,
        encoding: Encoding,
        trailer: Option<&Command>,
        statuses_only: bool,
    ) -> Option<Vec<SentCommand<T>>> {
        let mut next_id = 1u32;
        let mut body = Vec::new();
        let mut sent = Vec::new();
        for status in &self.statuses {
            let mut command = Command::Status(status.clone());
            renumber(&mut command, &mut next_id);
            body.push(command);
        }
        if !statuses_only {
            for queued in &self.commands {
                let first_id = next_id;
                let mut command = queued.command.clone();
                renumber(&mut command, &mut next_id);
                let queued = Queued {
                    command,
                    tag: queued.tag.clone(),
                    continuation: queued.continuation,
                };
                record(&queued, first_id, false, &mut sent);
                body.push(queued.command);
            }
        }
        if let Some(trailer) = trailer {
            let mut trailer = trailer.clone();
            renumber(&mut trailer, &mut next_id);
            body.push(trailer);
        }
        let candidate = SyncMl::new(msg.hdr.clone(), SyncBody::final_with(body));
        if limit != usize::MAX && encoded_len(&candidate, encoding) > limit {
            return None;
        }
        msg.body = candidate.body;
        self.statuses.clear();
        if !statuses_only {
            self.commands.clear();
        }
        msg.body.final_ = statuses_only || self.is_empty();
        Some(sent)
    }
}

fn record<T: Clone>(queued: &Queued<T>, cmd_id: u32, chunk: bool, sent: &mut Vec<SentCommand<T>>) {
    sent.push(SentCommand {
        cmd_id,
        tag: queued.tag.clone(),
        member: None,
        chunk,
    });
    if let Command::Atomic(group) | Command::Sequence(group) = &queued.command {
        for (index, member) in group.commands.iter().enumerate() {
            sent.push(SentCommand {
                cmd_id: member.cmd_id(),
                tag: queued.tag.clone(),
                member: Some(index),
                chunk: false,
            });
        }
    }
}

/// Gives `command` (and the members of a group) CmdIDs from `next`.
pub(crate) fn renumber(command: &mut Command, next: &mut u32) {
    let id = *next;
    *next += 1;
    match command {
        Command::Add(cmd)
        | Command::Copy(cmd)
        | Command::Delete(cmd)
        | Command::Get(cmd)
        | Command::Replace(cmd) => cmd.cmd_id = id,
        Command::Alert(alert) => alert.cmd_id = id,
        Command::Exec(exec) => exec.cmd_id = id,
        Command::Results(results) => results.cmd_id = id,
        Command::Status(status) => status.cmd_id = id,
        Command::Atomic(group) | Command::Sequence(group) => {
            group.cmd_id = id;
            for member in &mut group.commands {
                renumber(member, next);
            }
        }
    }
}

/// The bytes `command` adds to a message with header `hdr`.
fn command_len(hdr: &crate::model::SyncHdr, command: &Command, encoding: Encoding) -> usize {
    let empty = SyncMl::new(hdr.clone(), SyncBody::default());
    let with = SyncMl::new(hdr.clone(), SyncBody::with(vec![command.clone()]));
    encoded_len(&with, encoding).saturating_sub(encoded_len(&empty, encoding))
}

/// The single data-carrying item of a command that can travel as a large object.
fn chunk_item(command: &Command) -> Option<&Item> {
    let items = match command {
        Command::Add(cmd) | Command::Replace(cmd) => &cmd.items,
        Command::Results(results) => &results.items,
        _ => return None,
    };
    match items.as_slice() {
        [item]
            if item
                .data
                .as_ref()
                .is_some_and(|data| data.as_bytes().len() > 1) =>
        {
            Some(item)
        }
        _ => None,
    }
}

fn is_chunkable<T>(queued: &Queued<T>) -> bool {
    chunk_item(&queued.command).is_some()
}

fn with_item(command: &Command, item: Item) -> Command {
    let mut command = command.clone();
    match &mut command {
        Command::Add(cmd) | Command::Replace(cmd) => cmd.items = vec![item],
        Command::Results(results) => results.items = vec![item],
        _ => {}
    }
    command
}

/// The largest index `<= at` that does not cut a UTF-8 character of `data` in two.
fn split_point(data: &Data, at: usize) -> usize {
    match data {
        Data::Opaque(_) => at,
        Data::Text(text) => {
            let mut at = at.min(text.len());
            while at > 0 && !text.is_char_boundary(at) {
                at -= 1;
            }
            at
        }
    }
}

fn slice(data: &Data, range: std::ops::Range<usize>) -> Data {
    match data {
        Data::Opaque(bytes) => Data::Opaque(bytes[range].to_vec()),
        Data::Text(text) => Data::Text(text[range].to_owned()),
    }
}

/// Cuts the large object of `queued` into a first chunk that fits `room` bytes and the rest.
fn split<T>(
    hdr: &crate::model::SyncHdr,
    queued: &Queued<T>,
    room: usize,
    message_empty: bool,
    encoding: Encoding,
) -> Option<(Command, Command)> {
    let item = chunk_item(&queued.command)?;
    let data = item.data.as_ref()?;
    let total = data.as_bytes().len();
    let mut first = item.clone().with_more_data(true);
    if !queued.continuation {
        let mut meta = first.meta.take().unwrap_or_default();
        meta.size = Some(total as u64);
        first.meta = Some(meta);
    }
    first.data = Some(slice(data, 0..0));
    let overhead = command_len(hdr, &with_item(&queued.command, first.clone()), encoding);
    if overhead + MIN_CHUNK > room && !message_empty {
        return None;
    }
    let mut want = room.saturating_sub(overhead).clamp(1, total - 1);
    let mut chunk;
    loop {
        let at = split_point(data, want).max(1);
        first.data = Some(slice(data, 0..at));
        chunk = with_item(&queued.command, first.clone());
        let size = command_len(hdr, &chunk, encoding);
        if size <= room || at <= 1 {
            let mut rest = item.clone();
            if let Some(meta) = rest.meta.as_mut() {
                meta.size = None;
            }
            rest.data = Some(slice(data, at..total));
            return Some((chunk, with_item(&queued.command, rest)));
        }
        want = at.saturating_sub(size - room).max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CommandKind, ItemCommand, Meta, ProtoVersion, Results, SyncHdr, SyncMl};
    use crate::status::StatusCode;

    fn empty_message() -> SyncMl {
        SyncMl::new(
            SyncHdr::new(ProtoVersion::Dm12, "1", 1, "dev", "srv"),
            SyncBody::default(),
        )
    }

    fn replace(value: &str) -> Command {
        Command::Replace(ItemCommand::new(
            0,
            vec![Item::target("./A/B")
                .with_meta(Meta::with_format("chr"))
                .with_data(value)],
        ))
    }

    /// Statuses resent after an authentication failure go before the other statuses but never
    /// before the header status of the message being answered, which must open the reply.
    #[test]
    fn resent_statuses_go_after_the_header_status() {
        let mut outbox = Outbox::<&str>::default();
        outbox.push_status(Status::new(0, 2, 0, CommandKind::SyncHdr, StatusCode::OK));
        outbox.push_status(Status::new(0, 2, 5, CommandKind::Get, StatusCode::OK));
        for cmd_ref in [9, 8] {
            outbox.push_status_front(Status::new(
                0,
                1,
                cmd_ref,
                CommandKind::Atomic,
                StatusCode::OK,
            ));
        }
        let mut msg = empty_message();
        outbox.fill(&mut msg, None, Encoding::Xml, None, false);
        let refs: Vec<(u32, u32)> = msg
            .body
            .commands
            .iter()
            .map(|c| match c {
                Command::Status(s) => (s.msg_ref, s.cmd_ref),
                other => panic!("not a status: {other:?}"),
            })
            .collect();
        assert_eq!(refs, vec![(2, 0), (1, 8), (1, 9), (2, 5)]);
    }

    #[test]
    fn everything_fits_without_limit_and_is_final() {
        let mut outbox = Outbox::default();
        outbox.push_status(Status::new(0, 1, 0, CommandKind::SyncHdr, StatusCode::OK));
        outbox.push_command(replace("x"), "r");
        let mut msg = empty_message();
        let sent = outbox.fill(&mut msg, None, Encoding::Xml, None, false);
        assert!(msg.body.final_);
        assert_eq!(msg.body.commands.len(), 2);
        assert_eq!(msg.body.commands[0].cmd_id(), 1);
        assert_eq!(
            sent,
            vec![SentCommand {
                cmd_id: 2,
                tag: "r",
                member: None,
                chunk: false
            }]
        );
    }

    #[test]
    fn commands_that_do_not_fit_wait_for_the_next_message() {
        let mut outbox = Outbox::default();
        outbox.push_command(
            Command::Get(ItemCommand::new(0, vec![Item::target("./A")])),
            1,
        );
        outbox.push_command(
            Command::Get(ItemCommand::new(0, vec![Item::target("./B")])),
            2,
        );
        let mut probe = empty_message();
        let base = encoded_len(&probe, Encoding::Xml);
        let mut first = Outbox::default();
        first.push_command(
            Command::Get(ItemCommand::new(0, vec![Item::target("./A")])),
            1,
        );
        first.fill(&mut probe, None, Encoding::Xml, None, false);
        let one = encoded_len(&probe, Encoding::Xml) - base;
        let mut msg = empty_message();
        let sent = outbox.fill(&mut msg, Some(base + one + 20), Encoding::Xml, None, false);
        assert_eq!(sent.len(), 1);
        assert!(!msg.body.final_);
        let mut next = empty_message();
        let sent = outbox.fill(&mut next, None, Encoding::Xml, None, false);
        assert_eq!(sent[0].tag, 2);
        assert!(next.body.final_);
    }

    #[test]
    fn a_large_object_is_sent_in_chunks_that_reassemble() {
        let value: String = "é0123456789".repeat(300);
        let mut outbox = Outbox::default();
        outbox.push_command(
            Command::Results(Results::new(
                0,
                1,
                3,
                vec![Item::source("./Big").with_data(value.as_str())],
            )),
            (),
        );
        let mut data = String::new();
        let mut messages = 0;
        loop {
            let mut msg = empty_message();
            let sent = outbox.fill(&mut msg, Some(1500), Encoding::Xml, None, false);
            messages += 1;
            assert!(encoded_len(&msg, Encoding::Xml) <= 1500);
            let item = &msg.body.commands[0].items()[0];
            if messages == 1 {
                assert_eq!(
                    item.meta.as_ref().and_then(|m| m.size),
                    Some(value.len() as u64)
                );
            }
            data.push_str(
                item.data
                    .as_ref()
                    .and_then(Data::as_str)
                    .unwrap_or_default(),
            );
            assert_eq!(item.more_data, !msg.body.final_);
            assert_eq!(sent[0].chunk, !msg.body.final_);
            if msg.body.final_ {
                break;
            }
        }
        assert!(messages > 2);
        assert_eq!(data, value);
    }
}
