//! [`SyncMl`] → a stream of elements in DTD order, for the XML and WBXML writers.
//!
//! The writer refuses what the reader would reject (a command without items, a Status inside an
//! Atomic, a Sequence in a Sequence...), so that every encoded message decodes. An Atomic in an
//! Atomic is valid SyncML that the protocol forbids: it is written, and `crate::rules` refuses it.

use super::tag::Tag;
use super::EncodeError;
use crate::model::{
    format, Alert, Chal, Command, Container, Cred, Data, Exec, Item, ItemCommand, Location, Meta,
    Results, Status, SyncHdr, SyncMl, VER_DTD,
};

type Result<T = ()> = std::result::Result<T, EncodeError>;

/// Receives the elements of a message in document order.
pub(crate) trait Sink {
    /// Opens an element that has child elements.
    fn start(&mut self, tag: Tag);
    /// Closes the element opened last.
    fn end(&mut self, tag: Tag);
    /// An element without content (`<Final/>`).
    fn empty(&mut self, tag: Tag);
    /// An element holding character data.
    fn text(&mut self, tag: Tag, text: &str) -> Result;
    /// An element holding raw bytes.
    fn opaque(&mut self, tag: Tag, bytes: &[u8]) -> Result;
    /// An element holding the text of a binary-format value (`b64`): XML writes it as text,
    /// WBXML as `OPAQUE`, as is common practice (libwbxml, Funambol).
    fn binary_text(&mut self, tag: Tag, text: &str) -> Result;
}

/// Writes `msg` to `sink`.
pub(crate) fn message(sink: &mut impl Sink, msg: &SyncMl) -> Result {
    sink.start(Tag::SyncML);
    sync_hdr(sink, &msg.hdr)?;
    sink.start(Tag::SyncBody);
    for command in &msg.body.commands {
        self::command(sink, command, Context::Body)?;
    }
    flag(sink, Tag::Final, msg.body.final_);
    sink.end(Tag::SyncBody);
    sink.end(Tag::SyncML);
    Ok(())
}

fn sync_hdr(sink: &mut impl Sink, hdr: &SyncHdr) -> Result {
    sink.start(Tag::SyncHdr);
    sink.text(Tag::VerDTD, VER_DTD)?;
    sink.text(Tag::VerProto, hdr.ver_proto.as_str())?;
    sink.text(Tag::SessionID, &hdr.session_id)?;
    number(sink, Tag::MsgID, hdr.msg_id)?;
    location(sink, Tag::Target, &hdr.target)?;
    location(sink, Tag::Source, &hdr.source)?;
    optional_text(sink, Tag::RespURI, hdr.resp_uri.as_deref())?;
    flag(sink, Tag::NoResp, hdr.no_resp);
    optional_cred(sink, hdr.cred.as_ref())?;
    optional_meta(sink, hdr.meta.as_ref())?;
    sink.end(Tag::SyncHdr);
    Ok(())
}

/// Where a command sits, which decides what it may be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Body,
    Atomic,
    Sequence,
}

fn command(sink: &mut impl Sink, command: &Command, context: Context) -> Result {
    let kind = command.kind();
    let invalid = |reason| EncodeError::InvalidCommand {
        command: kind.as_str(),
        cmd_id: command.cmd_id(),
        reason,
    };
    match (command, context) {
        (Command::Status(_) | Command::Results(_), Context::Atomic | Context::Sequence) => {
            return Err(invalid(
                "Status and Results cannot be inside Atomic or Sequence",
            ))
        }
        (Command::Sequence(_), Context::Sequence) => {
            return Err(invalid("a Sequence cannot be nested in a Sequence"))
        }
        _ => {}
    }
    match command {
        Command::Add(cmd)
        | Command::Copy(cmd)
        | Command::Delete(cmd)
        | Command::Get(cmd)
        | Command::Replace(cmd)
            if cmd.items.is_empty() =>
        {
            Err(invalid(NO_ITEMS))
        }
        Command::Add(cmd) => item_command(sink, Tag::Add, cmd),
        Command::Copy(cmd) => item_command(sink, Tag::Copy, cmd),
        Command::Delete(cmd) => item_command(sink, Tag::Delete, cmd),
        Command::Get(cmd) => item_command(sink, Tag::Get, cmd),
        Command::Replace(cmd) => item_command(sink, Tag::Replace, cmd),
        Command::Alert(alert) => self::alert(sink, alert),
        Command::Exec(exec) => self::exec(sink, exec),
        Command::Atomic(group) | Command::Sequence(group) if group.commands.is_empty() => {
            Err(invalid(NO_COMMANDS))
        }
        Command::Atomic(group) => container(sink, Tag::Atomic, group, Context::Atomic),
        Command::Sequence(group) => container(sink, Tag::Sequence, group, Context::Sequence),
        Command::Results(results) if results.items.is_empty() => Err(invalid(NO_ITEMS)),
        Command::Results(results) => self::results(sink, results),
        Command::Status(status) => self::status(sink, status),
    }
}

const NO_ITEMS: &str = "it needs at least one Item";
const NO_COMMANDS: &str = "it needs at least one command";

/// Writes Add/Copy/Delete/Get/Replace.
fn item_command(sink: &mut impl Sink, tag: Tag, cmd: &ItemCommand) -> Result {
    sink.start(tag);
    number(sink, Tag::CmdID, cmd.cmd_id)?;
    flag(sink, Tag::NoResp, cmd.no_resp);
    optional_cred(sink, cmd.cred.as_ref())?;
    optional_meta(sink, cmd.meta.as_ref())?;
    for item in &cmd.items {
        self::item(sink, item, cmd.meta.as_ref())?;
    }
    sink.end(tag);
    Ok(())
}

fn exec(sink: &mut impl Sink, exec: &Exec) -> Result {
    sink.start(Tag::Exec);
    number(sink, Tag::CmdID, exec.cmd_id)?;
    flag(sink, Tag::NoResp, exec.no_resp);
    optional_cred(sink, exec.cred.as_ref())?;
    optional_meta(sink, exec.meta.as_ref())?;
    optional_text(sink, Tag::Correlator, exec.correlator.as_deref())?;
    item(sink, &exec.item, exec.meta.as_ref())?;
    sink.end(Tag::Exec);
    Ok(())
}

fn alert(sink: &mut impl Sink, alert: &Alert) -> Result {
    sink.start(Tag::Alert);
    number(sink, Tag::CmdID, alert.cmd_id)?;
    flag(sink, Tag::NoResp, alert.no_resp);
    optional_cred(sink, alert.cred.as_ref())?;
    number(sink, Tag::Data, alert.data.0)?;
    optional_text(sink, Tag::Correlator, alert.correlator.as_deref())?;
    for item in &alert.items {
        self::item(sink, item, None)?;
    }
    sink.end(Tag::Alert);
    Ok(())
}

fn container(sink: &mut impl Sink, tag: Tag, group: &Container, context: Context) -> Result {
    sink.start(tag);
    number(sink, Tag::CmdID, group.cmd_id)?;
    flag(sink, Tag::NoResp, group.no_resp);
    optional_meta(sink, group.meta.as_ref())?;
    for command in &group.commands {
        self::command(sink, command, context)?;
    }
    sink.end(tag);
    Ok(())
}

fn results(sink: &mut impl Sink, results: &Results) -> Result {
    sink.start(Tag::Results);
    number(sink, Tag::CmdID, results.cmd_id)?;
    if let Some(msg_ref) = results.msg_ref {
        number(sink, Tag::MsgRef, msg_ref)?;
    }
    number(sink, Tag::CmdRef, results.cmd_ref)?;
    optional_meta(sink, results.meta.as_ref())?;
    optional_text(sink, Tag::TargetRef, results.target_ref.as_deref())?;
    optional_text(sink, Tag::SourceRef, results.source_ref.as_deref())?;
    for item in &results.items {
        self::item(sink, item, results.meta.as_ref())?;
    }
    sink.end(Tag::Results);
    Ok(())
}

fn status(sink: &mut impl Sink, status: &Status) -> Result {
    sink.start(Tag::Status);
    number(sink, Tag::CmdID, status.cmd_id)?;
    number(sink, Tag::MsgRef, status.msg_ref)?;
    number(sink, Tag::CmdRef, status.cmd_ref)?;
    sink.text(Tag::Cmd, status.cmd.as_str())?;
    for target_ref in &status.target_ref {
        sink.text(Tag::TargetRef, target_ref)?;
    }
    for source_ref in &status.source_ref {
        sink.text(Tag::SourceRef, source_ref)?;
    }
    optional_cred(sink, status.cred.as_ref())?;
    if let Some(chal) = &status.chal {
        self::chal(sink, chal)?;
    }
    number(sink, Tag::Data, status.data.0)?;
    for item in &status.items {
        self::item(sink, item, None)?;
    }
    sink.end(Tag::Status);
    Ok(())
}

/// `command_meta` is the Meta of the enclosing command, which applies to items without their own.
fn item(sink: &mut impl Sink, item: &Item, command_meta: Option<&Meta>) -> Result {
    sink.start(Tag::Item);
    if let Some(target) = &item.target {
        location(sink, Tag::Target, target)?;
    }
    if let Some(source) = &item.source {
        location(sink, Tag::Source, source)?;
    }
    optional_meta(sink, item.meta.as_ref())?;
    if let Some(data) = &item.data {
        let meta = item.meta.as_ref().or(command_meta);
        self::data(sink, Tag::Data, data, is_binary_format(meta))?;
    }
    flag(sink, Tag::MoreData, item.more_data);
    sink.end(Tag::Item);
    Ok(())
}

fn location(sink: &mut impl Sink, tag: Tag, location: &Location) -> Result {
    sink.start(tag);
    sink.text(Tag::LocURI, &location.loc_uri)?;
    optional_text(sink, Tag::LocName, location.loc_name.as_deref())?;
    sink.end(tag);
    Ok(())
}

fn optional_cred(sink: &mut impl Sink, cred: Option<&Cred>) -> Result {
    if let Some(cred) = cred {
        sink.start(Tag::Cred);
        optional_meta(sink, cred.meta.as_ref())?;
        data(
            sink,
            Tag::Data,
            &cred.data,
            is_binary_format(cred.meta.as_ref()),
        )?;
        sink.end(Tag::Cred);
    }
    Ok(())
}

fn chal(sink: &mut impl Sink, chal: &Chal) -> Result {
    sink.start(Tag::Chal);
    meta(sink, &chal.meta)?;
    sink.end(Tag::Chal);
    Ok(())
}

fn optional_meta(sink: &mut impl Sink, meta: Option<&Meta>) -> Result {
    match meta {
        Some(meta) => self::meta(sink, meta),
        None => Ok(()),
    }
}

/// `<Meta>` with its MetInf children in MetInf DTD order.
fn meta(sink: &mut impl Sink, meta: &Meta) -> Result {
    if meta.is_empty() {
        sink.empty(Tag::Meta);
        return Ok(());
    }
    sink.start(Tag::Meta);
    optional_text(sink, Tag::Format, meta.format.as_deref())?;
    optional_text(sink, Tag::Type, meta.type_.as_deref())?;
    optional_text(sink, Tag::Mark, meta.mark.as_deref())?;
    if let Some(size) = meta.size {
        number(sink, Tag::Size, size)?;
    }
    optional_text(sink, Tag::Version, meta.version.as_deref())?;
    if let Some(nonce) = &meta.next_nonce {
        data(sink, Tag::NextNonce, nonce, false)?;
    }
    if let Some(size) = meta.max_msg_size {
        number(sink, Tag::MaxMsgSize, size)?;
    }
    if let Some(size) = meta.max_obj_size {
        number(sink, Tag::MaxObjSize, size)?;
    }
    for emi in &meta.emi {
        sink.text(Tag::EMI, emi)?;
    }
    sink.end(Tag::Meta);
    Ok(())
}

/// Writes `data`; text of a binary format (`b64`, `bin`) is a [`Sink::binary_text`].
fn data(sink: &mut impl Sink, tag: Tag, data: &Data, binary_format: bool) -> Result {
    match data {
        Data::Text(text) if binary_format => sink.binary_text(tag, text),
        Data::Text(text) => sink.text(tag, text),
        Data::Opaque(bytes) => sink.opaque(tag, bytes),
    }
}

/// Whether `meta` gives the format `b64` or `bin`.
fn is_binary_format(meta: Option<&Meta>) -> bool {
    matches!(
        meta.and_then(|meta| meta.format.as_deref()),
        Some(format::B64 | format::BIN)
    )
}

fn optional_text(sink: &mut impl Sink, tag: Tag, text: Option<&str>) -> Result {
    match text {
        Some(text) => sink.text(tag, text),
        None => Ok(()),
    }
}

fn number(sink: &mut impl Sink, tag: Tag, value: impl Into<u64>) -> Result {
    let mut buf = [0u8; 20];
    sink.text(tag, format_u64(value.into(), &mut buf))
}

/// Formats `value` in decimal into `buf` without allocating.
fn format_u64(mut value: u64, buf: &mut [u8; 20]) -> &str {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[start..]).unwrap_or("0")
}

fn flag(sink: &mut impl Sink, tag: Tag, set: bool) {
    if set {
        sink.empty(tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_in_decimal() {
        let mut buf = [0u8; 20];
        assert_eq!(format_u64(0, &mut buf), "0");
        assert_eq!(format_u64(1201, &mut buf), "1201");
        assert_eq!(format_u64(u64::MAX, &mut buf), "18446744073709551615");
    }
}
