//! Element tree → [`SyncMl`]: checks the SyncML DM rules both encodings share.
//!
//! Order is enforced where it carries meaning: `SyncHdr` before `SyncBody`, `Final` last in the
//! body, and commands and repeated items keep their document order. The order of distinct fields
//! inside an element is not enforced (the DM specification's own examples put `MsgRef` before
//! `CmdID`); a field given twice, a missing required field, a field the element does not have, or
//! text where elements belong is an error.

use std::str::FromStr;

mod leaf;

use super::element::Element;
use super::tag::Tag;
use super::DecodeError;
use crate::model::{
    Alert, AlertCode, Chal, Command, CommandKind, Container, Cred, Exec, Item, ItemCommand,
    Location, Meta, ProtoVersion, Results, Status, SyncBody, SyncHdr, SyncMl, VER_DTD,
};
use crate::status::StatusCode;
use leaf::{
    at_least_one, children, data, flag, missing, not_allowed, number, out_of_order, required, set,
    token,
};

pub(super) type Result<T> = std::result::Result<T, DecodeError>;

/// Reads a `<SyncML>` element tree into the model.
pub(crate) fn message(root: &Element) -> Result<SyncMl> {
    if root.tag != Tag::SyncML {
        return Err(DecodeError::NotSyncMl {
            reason: format!("the root element is <{}>", root.tag.name()),
        });
    }
    let mut hdr = None;
    let mut body = None;
    for child in children(root)? {
        match child.tag {
            Tag::SyncHdr => set(&mut hdr, sync_hdr(child)?, root, child)?,
            Tag::SyncBody if hdr.is_none() => {
                return Err(out_of_order(root, child, "SyncHdr comes before SyncBody"))
            }
            Tag::SyncBody => set(&mut body, sync_body(child)?, root, child)?,
            _ => return Err(not_allowed(root, child)),
        }
    }
    Ok(SyncMl {
        hdr: required(hdr, root, Tag::SyncHdr)?,
        body: required(body, root, Tag::SyncBody)?,
    })
}

fn sync_hdr(el: &Element) -> Result<SyncHdr> {
    let mut ver_dtd = None;
    let mut ver_proto = None;
    let mut session_id = None;
    let mut msg_id = None;
    let mut target = None;
    let mut source = None;
    let mut resp_uri = None;
    let mut no_resp = None;
    let mut cred = None;
    let mut meta = None;
    for child in children(el)? {
        match child.tag {
            Tag::VerDTD => set(&mut ver_dtd, token(child)?, el, child)?,
            Tag::VerProto => set(&mut ver_proto, token(child)?, el, child)?,
            Tag::SessionID => set(&mut session_id, token(child)?, el, child)?,
            Tag::MsgID => set(&mut msg_id, number(child)?, el, child)?,
            Tag::Target => set(&mut target, location(child)?, el, child)?,
            Tag::Source => set(&mut source, location(child)?, el, child)?,
            Tag::RespURI => set(&mut resp_uri, token(child)?, el, child)?,
            Tag::NoResp => set(&mut no_resp, flag(child)?, el, child)?,
            Tag::Cred => set(&mut cred, self::cred(child)?, el, child)?,
            Tag::Meta => set(&mut meta, self::meta(child)?, el, child)?,
            _ => return Err(not_allowed(el, child)),
        }
    }
    let ver_dtd = required(ver_dtd, el, Tag::VerDTD)?;
    if ver_dtd != VER_DTD {
        return Err(DecodeError::UnsupportedDtdVersion(ver_dtd));
    }
    let ver_proto = required(ver_proto, el, Tag::VerProto)?;
    let ver_proto = ProtoVersion::from_str(&ver_proto)
        .map_err(|_| DecodeError::UnsupportedProtocolVersion(ver_proto))?;
    Ok(SyncHdr {
        ver_proto,
        session_id: required(session_id, el, Tag::SessionID)?,
        msg_id: required(msg_id, el, Tag::MsgID)?,
        target: required(target, el, Tag::Target)?,
        source: required(source, el, Tag::Source)?,
        resp_uri,
        no_resp: no_resp.unwrap_or(false),
        cred,
        meta,
    })
}

fn sync_body(el: &Element) -> Result<SyncBody> {
    let mut body = SyncBody::default();
    for child in children(el)? {
        if body.final_ {
            return Err(out_of_order(
                el,
                child,
                "Final is the last element of SyncBody",
            ));
        }
        if child.tag == Tag::Final {
            body.final_ = flag(child)?;
        } else {
            body.commands.push(command(el, child)?);
        }
    }
    Ok(body)
}

/// Whether `parent` (`SyncBody`, `Atomic` or `Sequence`) may hold the command `tag`.
fn may_hold(parent: Tag, tag: Tag) -> bool {
    match tag {
        Tag::Add | Tag::Alert | Tag::Copy | Tag::Delete | Tag::Exec | Tag::Get | Tag::Replace => {
            true
        }
        // The DTD lets an Atomic hold an Atomic; the protocol forbids it (status 500 for the
        // nested one), which `crate::rules` checks. No Sequence holds a Sequence (DTD).
        Tag::Atomic => true,
        Tag::Sequence => parent != Tag::Sequence,
        // Status and Results answer a message, not a group.
        Tag::Results | Tag::Status => parent == Tag::SyncBody,
        _ => false,
    }
}

fn command(parent: &Element, el: &Element) -> Result<Command> {
    if !may_hold(parent.tag, el.tag) {
        return Err(not_allowed(parent, el));
    }
    Ok(match el.tag {
        Tag::Add => Command::Add(item_command(el)?),
        Tag::Copy => Command::Copy(item_command(el)?),
        Tag::Delete => Command::Delete(item_command(el)?),
        Tag::Get => Command::Get(item_command(el)?),
        Tag::Replace => Command::Replace(item_command(el)?),
        Tag::Alert => Command::Alert(alert(el)?),
        Tag::Exec => Command::Exec(exec(el)?),
        Tag::Atomic => Command::Atomic(container(el)?),
        Tag::Sequence => Command::Sequence(container(el)?),
        Tag::Results => Command::Results(results(el)?),
        Tag::Status => Command::Status(status(el)?),
        _ => return Err(not_allowed(parent, el)),
    })
}

fn item_command(el: &Element) -> Result<ItemCommand> {
    let mut fields = CommandFields::new(HEAD_FIELDS);
    let mut items = Vec::new();
    for child in children(el)? {
        match child.tag {
            Tag::Item => items.push(item(child)?),
            _ => fields.read(el, child)?,
        }
    }
    Ok(ItemCommand {
        cmd_id: fields.cmd_id(el)?,
        no_resp: fields.no_resp(),
        cred: fields.cred,
        meta: fields.meta,
        items: at_least_one(items, el)?,
    })
}

fn exec(el: &Element) -> Result<Exec> {
    let mut fields = CommandFields::new(HEAD_FIELDS);
    let mut correlator = None;
    let mut item = None;
    for child in children(el)? {
        match child.tag {
            Tag::Correlator => set(&mut correlator, token(child)?, el, child)?,
            Tag::Item => set(&mut item, self::item(child)?, el, child)?,
            _ => fields.read(el, child)?,
        }
    }
    Ok(Exec {
        cmd_id: fields.cmd_id(el)?,
        no_resp: fields.no_resp(),
        cred: fields.cred,
        meta: fields.meta,
        correlator,
        item: required(item, el, Tag::Item)?,
    })
}

fn alert(el: &Element) -> Result<Alert> {
    let mut fields = CommandFields::new(&[Tag::CmdID, Tag::NoResp, Tag::Cred]);
    let mut data = None;
    let mut correlator = None;
    let mut items = Vec::new();
    for child in children(el)? {
        match child.tag {
            Tag::Data => set(&mut data, AlertCode(number(child)?), el, child)?,
            Tag::Correlator => set(&mut correlator, token(child)?, el, child)?,
            Tag::Item => items.push(item(child)?),
            _ => fields.read(el, child)?,
        }
    }
    Ok(Alert {
        cmd_id: fields.cmd_id(el)?,
        no_resp: fields.no_resp(),
        cred: fields.cred,
        data: required(data, el, Tag::Data)?,
        correlator,
        items,
    })
}

fn container(el: &Element) -> Result<Container> {
    let mut fields = CommandFields::new(&[Tag::CmdID, Tag::NoResp, Tag::Meta]);
    let mut commands = Vec::new();
    for child in children(el)? {
        if fields.has(child.tag) {
            fields.read(el, child)?;
        } else {
            commands.push(command(el, child)?);
        }
    }
    if commands.is_empty() {
        return Err(missing(el, "a command"));
    }
    Ok(Container {
        cmd_id: fields.cmd_id(el)?,
        no_resp: fields.no_resp(),
        meta: fields.meta,
        commands,
    })
}

fn results(el: &Element) -> Result<Results> {
    let mut fields = CommandFields::new(&[Tag::CmdID, Tag::MsgRef, Tag::CmdRef, Tag::Meta]);
    let mut target_ref = None;
    let mut source_ref = None;
    let mut items = Vec::new();
    for child in children(el)? {
        match child.tag {
            Tag::TargetRef => set(&mut target_ref, token(child)?, el, child)?,
            Tag::SourceRef => set(&mut source_ref, token(child)?, el, child)?,
            Tag::Item => items.push(item(child)?),
            _ => fields.read(el, child)?,
        }
    }
    Ok(Results {
        cmd_id: fields.cmd_id(el)?,
        msg_ref: fields.msg_ref,
        cmd_ref: required(fields.cmd_ref, el, Tag::CmdRef)?,
        meta: fields.meta,
        target_ref,
        source_ref,
        items: at_least_one(items, el)?,
    })
}

fn status(el: &Element) -> Result<Status> {
    let mut fields = CommandFields::new(&[Tag::CmdID, Tag::MsgRef, Tag::CmdRef, Tag::Cred]);
    let mut cmd = None;
    let mut target_ref = Vec::new();
    let mut source_ref = Vec::new();
    let mut chal = None;
    let mut data = None;
    let mut items = Vec::new();
    for child in children(el)? {
        match child.tag {
            Tag::Cmd => set(&mut cmd, command_kind(child)?, el, child)?,
            Tag::TargetRef => target_ref.push(token(child)?),
            Tag::SourceRef => source_ref.push(token(child)?),
            Tag::Chal => set(&mut chal, self::chal(child)?, el, child)?,
            Tag::Data => set(&mut data, StatusCode(number(child)?), el, child)?,
            Tag::Item => items.push(item(child)?),
            _ => fields.read(el, child)?,
        }
    }
    Ok(Status {
        cmd_id: fields.cmd_id(el)?,
        msg_ref: required(fields.msg_ref, el, Tag::MsgRef)?,
        cmd_ref: required(fields.cmd_ref, el, Tag::CmdRef)?,
        cmd: required(cmd, el, Tag::Cmd)?,
        target_ref,
        source_ref,
        cred: fields.cred,
        chal,
        data: required(data, el, Tag::Data)?,
        items,
    })
}

/// The fields commands share: CmdID, NoResp, Cred and Meta open most of them, MsgRef and CmdRef
/// the replies. Each command reads the ones its DTD gives it; any other child is not allowed.
struct CommandFields {
    accepted: &'static [Tag],
    cmd_id: Option<u32>,
    no_resp: Option<bool>,
    cred: Option<Cred>,
    meta: Option<Meta>,
    msg_ref: Option<u32>,
    cmd_ref: Option<u32>,
}

/// The fields `Add`, `Copy`, `Delete`, `Get`, `Replace` and `Exec` open with.
const HEAD_FIELDS: &[Tag] = &[Tag::CmdID, Tag::NoResp, Tag::Cred, Tag::Meta];

impl CommandFields {
    fn new(accepted: &'static [Tag]) -> Self {
        Self {
            accepted,
            cmd_id: None,
            no_resp: None,
            cred: None,
            meta: None,
            msg_ref: None,
            cmd_ref: None,
        }
    }

    /// Whether `tag` is one of the fields this command has.
    fn has(&self, tag: Tag) -> bool {
        self.accepted.contains(&tag)
    }

    /// Reads `child` of the command `el` into its field; a child that is none of the command's
    /// fields is not allowed.
    fn read(&mut self, el: &Element, child: &Element) -> Result<()> {
        if !self.has(child.tag) {
            return Err(not_allowed(el, child));
        }
        match child.tag {
            Tag::CmdID => set(&mut self.cmd_id, number(child)?, el, child),
            Tag::NoResp => set(&mut self.no_resp, flag(child)?, el, child),
            Tag::Cred => set(&mut self.cred, cred(child)?, el, child),
            Tag::Meta => set(&mut self.meta, meta(child)?, el, child),
            Tag::MsgRef => set(&mut self.msg_ref, number(child)?, el, child),
            Tag::CmdRef => set(&mut self.cmd_ref, number(child)?, el, child),
            _ => Err(not_allowed(el, child)),
        }
    }

    /// The CmdID every command must have.
    fn cmd_id(&self, el: &Element) -> Result<u32> {
        required(self.cmd_id, el, Tag::CmdID)
    }

    fn no_resp(&self) -> bool {
        self.no_resp.unwrap_or(false)
    }
}

fn command_kind(el: &Element) -> Result<CommandKind> {
    let name = token(el)?;
    CommandKind::from_str(&name).map_err(|_| DecodeError::BadValue {
        element: el.tag.name(),
        value: name,
        expected: "a DM command name or SyncHdr",
        offset: el.offset,
    })
}

fn item(el: &Element) -> Result<Item> {
    let mut item = Item::default();
    let mut more_data = None;
    for child in children(el)? {
        match child.tag {
            Tag::Target => set(&mut item.target, location(child)?, el, child)?,
            Tag::Source => set(&mut item.source, location(child)?, el, child)?,
            Tag::Meta => set(&mut item.meta, meta(child)?, el, child)?,
            Tag::Data => set(&mut item.data, data(child)?, el, child)?,
            Tag::MoreData => set(&mut more_data, flag(child)?, el, child)?,
            _ => return Err(not_allowed(el, child)),
        }
    }
    item.more_data = more_data.unwrap_or(false);
    Ok(item)
}

fn location(el: &Element) -> Result<Location> {
    let mut loc_uri = None;
    let mut loc_name = None;
    for child in children(el)? {
        match child.tag {
            Tag::LocURI => set(&mut loc_uri, token(child)?, el, child)?,
            Tag::LocName => set(&mut loc_name, token(child)?, el, child)?,
            _ => return Err(not_allowed(el, child)),
        }
    }
    Ok(Location {
        loc_uri: required(loc_uri, el, Tag::LocURI)?,
        loc_name,
    })
}

fn cred(el: &Element) -> Result<Cred> {
    let mut meta = None;
    let mut data = None;
    for child in children(el)? {
        match child.tag {
            Tag::Meta => set(&mut meta, self::meta(child)?, el, child)?,
            Tag::Data => set(&mut data, self::data(child)?, el, child)?,
            _ => return Err(not_allowed(el, child)),
        }
    }
    Ok(Cred {
        meta,
        data: required(data, el, Tag::Data)?,
    })
}

fn chal(el: &Element) -> Result<Chal> {
    let mut meta = None;
    for child in children(el)? {
        match child.tag {
            Tag::Meta => set(&mut meta, self::meta(child)?, el, child)?,
            _ => return Err(not_allowed(el, child)),
        }
    }
    Ok(Chal {
        meta: required(meta, el, Tag::Meta)?,
    })
}

fn meta(el: &Element) -> Result<Meta> {
    let mut meta = Meta::default();
    for child in children(el)? {
        match child.tag {
            Tag::Format => set(&mut meta.format, token(child)?, el, child)?,
            Tag::Type => set(&mut meta.type_, token(child)?, el, child)?,
            Tag::Mark => set(&mut meta.mark, token(child)?, el, child)?,
            Tag::Size => set(&mut meta.size, number(child)?, el, child)?,
            Tag::Version => set(&mut meta.version, token(child)?, el, child)?,
            Tag::NextNonce => set(&mut meta.next_nonce, data(child)?, el, child)?,
            Tag::MaxMsgSize => set(&mut meta.max_msg_size, number(child)?, el, child)?,
            Tag::MaxObjSize => set(&mut meta.max_obj_size, number(child)?, el, child)?,
            Tag::EMI => meta.emi.push(token(child)?),
            _ => return Err(not_allowed(el, child)),
        }
    }
    Ok(meta)
}
