//! Receiving large objects: chunks (`MoreData`) of an Add, Replace or Results are gathered until
//! the last one, then checked against the announced `Meta/Size` (424 on mismatch) and the
//! receiver's MaxObjSize (413).

use crate::model::{Command, CommandKind, Data, Item};
use crate::status::StatusCode;

/// What became of a received command.
#[expect(
    clippy::large_enum_variant,
    reason = "one value per received command, consumed at once"
)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Received {
    /// A whole command (possibly reassembled from chunks) to act on.
    Whole(Command),
    /// A chunk was stored (213) or refused (413/424/412): answer with this status only.
    Chunk(StatusCode),
}

#[derive(Debug)]
struct Partial {
    kind: CommandKind,
    uri: String,
    declared: Option<u64>,
    data: Vec<u8>,
    text: bool,
    /// The first chunk (its item's Data is replaced at the end).
    first: Command,
    refused: Option<StatusCode>,
}

/// The large object being received, if any.
#[derive(Debug, Default)]
pub(crate) struct Assembly {
    partial: Option<Partial>,
}

fn single_item(command: &Command) -> Option<&Item> {
    match command {
        Command::Add(cmd) | Command::Replace(cmd) if cmd.items.len() == 1 => cmd.items.first(),
        Command::Results(results) if results.items.len() == 1 => results.items.first(),
        _ => None,
    }
}

fn item_uri(item: &Item) -> String {
    item.target_uri()
        .or(item.source_uri())
        .unwrap_or_default()
        .to_owned()
}

fn declared_size(command: &Command, item: &Item) -> Option<u64> {
    let command_meta = match command {
        Command::Add(cmd) | Command::Replace(cmd) => cmd.meta.as_ref(),
        Command::Results(results) => results.meta.as_ref(),
        _ => None,
    };
    item.meta
        .as_ref()
        .and_then(|meta| meta.size)
        .or(command_meta.and_then(|meta| meta.size))
}

impl Assembly {
    /// Whether a large object is half received.
    #[cfg(test)]
    pub fn in_progress(&self) -> bool {
        self.partial.is_some()
    }

    /// Drops a half-received object (the sender broke off); true when there was one.
    pub fn abandon(&mut self) -> bool {
        self.partial.take().is_some()
    }

    /// Takes one received command. `max_obj_size` is our MaxObjSize.
    pub fn receive(&mut self, command: Command, max_obj_size: Option<u64>) -> Received {
        let Some(item) = single_item(&command) else {
            return Received::Whole(command);
        };
        let uri = item_uri(item);
        let more = item.more_data;
        let bytes = item
            .data
            .as_ref()
            .map(|data| data.as_bytes().to_vec())
            .unwrap_or_default();
        let continues = self
            .partial
            .as_ref()
            .is_some_and(|partial| partial.kind == command.kind() && partial.uri == uri);
        if !continues {
            if !more {
                return Received::Whole(command);
            }
            let declared = declared_size(&command, item);
            let refused = match (declared, max_obj_size) {
                (None, _) => Some(StatusCode::INCOMPLETE_COMMAND),
                (Some(size), Some(max)) if size > max => Some(StatusCode::REQUEST_ENTITY_TOO_LARGE),
                _ => None,
            };
            let text = matches!(item.data, Some(Data::Text(_)));
            self.partial = Some(Partial {
                kind: command.kind(),
                uri,
                declared,
                data: bytes,
                text,
                first: command,
                refused,
            });
            return Received::Chunk(refused.unwrap_or(StatusCode::CHUNKED_ITEM_ACCEPTED));
        }
        let Some(mut partial) = self.partial.take() else {
            return Received::Chunk(StatusCode::COMMAND_FAILED);
        };
        if partial.refused.is_none() {
            partial.data.extend_from_slice(&bytes);
            if partial
                .declared
                .is_some_and(|size| partial.data.len() as u64 > size)
            {
                partial.refused = Some(StatusCode::SIZE_MISMATCH);
            }
        }
        if more {
            let status = partial.refused.unwrap_or(StatusCode::CHUNKED_ITEM_ACCEPTED);
            self.partial = Some(partial);
            return Received::Chunk(status);
        }
        if let Some(status) = partial.refused {
            return Received::Chunk(status);
        }
        if partial.declared != Some(partial.data.len() as u64) {
            return Received::Chunk(StatusCode::SIZE_MISMATCH);
        }
        Received::Whole(partial.finish(command))
    }
}

impl Partial {
    /// The first chunk's command carrying the whole data; the last chunk's CmdID, so that the
    /// status of the whole object answers the last chunk.
    fn finish(self, last: Command) -> Command {
        let data = if self.text {
            match String::from_utf8(self.data) {
                Ok(text) => Data::Text(text),
                Err(err) => Data::Opaque(err.into_bytes()),
            }
        } else {
            Data::Opaque(self.data)
        };
        let cmd_id = last.cmd_id();
        let mut whole = self.first;
        let fix = |item: &mut Item| {
            item.data = Some(data.clone());
            item.more_data = false;
        };
        match &mut whole {
            Command::Add(cmd) | Command::Replace(cmd) => {
                cmd.cmd_id = cmd_id;
                cmd.items.iter_mut().for_each(fix);
            }
            Command::Results(results) => {
                results.cmd_id = cmd_id;
                if let Command::Results(last) = &last {
                    results.msg_ref = last.msg_ref;
                }
                results.items.iter_mut().for_each(fix);
            }
            _ => {}
        }
        whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ItemCommand, Meta};

    fn chunk(id: u32, data: &str, more: bool, size: Option<u64>) -> Command {
        let mut item = Item::target("./Big").with_data(data).with_more_data(more);
        if let Some(size) = size {
            item.meta = Some(Meta {
                size: Some(size),
                ..Meta::default()
            });
        }
        Command::Replace(ItemCommand::new(id, vec![item]))
    }

    #[test]
    fn chunks_reassemble_into_one_command() {
        let mut assembly = Assembly::default();
        assert_eq!(
            assembly.receive(chunk(1, "abc", true, Some(6)), None),
            Received::Chunk(StatusCode::CHUNKED_ITEM_ACCEPTED)
        );
        assert!(assembly.in_progress());
        let Received::Whole(whole) = assembly.receive(chunk(4, "def", false, None), None) else {
            panic!("expected the whole object");
        };
        assert_eq!(whole.cmd_id(), 4);
        assert_eq!(whole.items()[0].data, Some(Data::text("abcdef")));
        assert!(!whole.items()[0].more_data);
    }

    #[test]
    fn a_size_mismatch_is_424() {
        let mut assembly = Assembly::default();
        assembly.receive(chunk(1, "abc", true, Some(10)), None);
        assert_eq!(
            assembly.receive(chunk(2, "def", false, None), None),
            Received::Chunk(StatusCode::SIZE_MISMATCH)
        );
        assert!(!assembly.in_progress());
    }

    #[test]
    fn an_object_above_max_obj_size_is_413_to_the_end() {
        let mut assembly = Assembly::default();
        let too_big = Received::Chunk(StatusCode::REQUEST_ENTITY_TOO_LARGE);
        assert_eq!(
            assembly.receive(chunk(1, "abc", true, Some(100)), Some(50)),
            too_big
        );
        assert_eq!(
            assembly.receive(chunk(2, "def", true, None), Some(50)),
            too_big
        );
        assert_eq!(
            assembly.receive(chunk(3, "ghi", false, None), Some(50)),
            too_big
        );
        assert!(!assembly.in_progress());
    }

    #[test]
    fn a_first_chunk_without_size_is_412() {
        let mut assembly = Assembly::default();
        assert_eq!(
            assembly.receive(chunk(1, "abc", true, None), None),
            Received::Chunk(StatusCode::INCOMPLETE_COMMAND)
        );
    }
}
