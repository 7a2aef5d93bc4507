//! `application/vnd.syncml.dm+wbxml`: SyncML DM in WBXML 1.3 (WAP-192-WBXML), code page 0 SyncML,
//! code page 1 MetInf.
//!
//! The encoder writes version 1.3, public id 0x1201 (`-//SYNCML//DTD SyncML 1.2//EN`), charset
//! UTF-8 (MIBenum 106), an empty string table, text as `STR_I`, and as `OPAQUE` both
//! [`Data::Opaque`] and the `Data` of an item or `Cred` whose format is `b64` or `bin` (common
//! practice: libwbxml and Funambol do the same).
//!
//! The decoder accepts WBXML 1.1–1.3; public id 0x1201, 0x01 ("unknown", the root tag then says
//! what the document is), or 0 with the public identifier in the string table; charset UTF-8 only;
//! `SWITCH_PAGE` to pages 0 and 1; `STR_I`, `STR_T`, `ENTITY` and `OPAQUE` content. It rejects
//! attributes, `LITERAL` tags, extension tokens and processing instructions (SyncML uses none),
//! bytes after the root's `END`, and multi-byte integers longer than 5 bytes or above `u32::MAX`.
//!
//! [`Data::Opaque`]: crate::model::Data::Opaque

use std::borrow::Cow;

use super::element::{Element, Node};
use super::tag::{Tag, PAGE_METINF, PAGE_SYNCML};
use super::write::{self, Sink};
use super::{read, Codec, DecodeError, EncodeError, Encoding, Limits};
use crate::model::SyncMl;

/// The media type of SyncML DM in WBXML.
pub const MEDIA_TYPE: &str = "application/vnd.syncml.dm+wbxml";

/// WBXML version 1.3.
const VERSION_1_3: u8 = 0x03;
/// The WBXML public id of `-//SYNCML//DTD SyncML 1.2//EN`.
pub const PUBLIC_ID_SYNCML_12: u32 = 0x1201;
/// The public identifier string of SyncML 1.2.
pub const PUBLIC_ID_SYNCML_12_STR: &str = "-//SYNCML//DTD SyncML 1.2//EN";
/// Public id "unknown or missing" (WBXML 5.6).
const PUBLIC_ID_UNKNOWN: u32 = 0x01;
/// IANA MIBenum of UTF-8.
const CHARSET_UTF8: u32 = 106;

/// Global tokens (WBXML 5.8.1).
mod token {
    pub const SWITCH_PAGE: u8 = 0x00;
    pub const END: u8 = 0x01;
    pub const ENTITY: u8 = 0x02;
    pub const STR_I: u8 = 0x03;
    pub const LITERAL: u8 = 0x04;
    pub const EXT_I_0: u8 = 0x40;
    pub const EXT_I_1: u8 = 0x41;
    pub const EXT_I_2: u8 = 0x42;
    pub const PI: u8 = 0x43;
    pub const LITERAL_C: u8 = 0x44;
    pub const EXT_T_0: u8 = 0x80;
    pub const EXT_T_1: u8 = 0x81;
    pub const EXT_T_2: u8 = 0x82;
    pub const STR_T: u8 = 0x83;
    pub const LITERAL_A: u8 = 0x84;
    pub const EXT_0: u8 = 0xC0;
    pub const EXT_1: u8 = 0xC1;
    pub const EXT_2: u8 = 0xC2;
    pub const OPAQUE: u8 = 0xC3;
    pub const LITERAL_AC: u8 = 0xC4;
    /// Tag token bit: the element has content.
    pub const HAS_CONTENT: u8 = 0x40;
    /// Tag token bit: the element has attributes.
    pub const HAS_ATTRIBUTES: u8 = 0x80;
    /// Tag token bits naming the tag.
    pub const TAG_MASK: u8 = 0x3F;
}

/// The WBXML codec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WbxmlCodec {
    /// Bounds for decoding.
    pub limits: Limits,
}

impl Codec for WbxmlCodec {
    fn encoding(&self) -> Encoding {
        Encoding::Wbxml
    }

    fn encode(&self, msg: &SyncMl) -> Result<Vec<u8>, EncodeError> {
        write_document(|writer| write::message(writer, msg))
    }

    fn decode(&self, input: &[u8]) -> Result<SyncMl, DecodeError> {
        read::message(&parse_document(input, self.limits)?)
    }
}

/// A WBXML document: the header (version 1.3, SyncML 1.2, UTF-8, no string table), then what
/// `write` writes.
pub(crate) fn write_document(
    write: impl FnOnce(&mut WbxmlWriter) -> Result<(), EncodeError>,
) -> Result<Vec<u8>, EncodeError> {
    let mut writer = WbxmlWriter {
        out: Vec::with_capacity(1024),
        page: PAGE_SYNCML,
    };
    writer.out.push(VERSION_1_3);
    write_mb_u32(&mut writer.out, PUBLIC_ID_SYNCML_12);
    write_mb_u32(&mut writer.out, CHARSET_UTF8);
    write_mb_u32(&mut writer.out, 0); // string table length
    write(&mut writer)?;
    Ok(writer.out)
}

/// The element tree of a whole WBXML document, within `limits` (no DM rule checked yet).
pub(crate) fn parse_document(input: &[u8], limits: Limits) -> Result<Element<'_>, DecodeError> {
    limits.check_input(input)?;
    Parser::new(input, limits).document()
}

/// Appends `value` as a WBXML `mb_u_int32` (7 bits per byte, most significant first).
pub(crate) fn write_mb_u32(out: &mut Vec<u8>, value: u32) {
    let mut bytes = [0u8; 5];
    let mut start = bytes.len() - 1;
    let mut rest = value;
    bytes[start] = (rest & 0x7F) as u8;
    rest >>= 7;
    while rest != 0 {
        start -= 1;
        bytes[start] = (rest & 0x7F) as u8 | 0x80;
        rest >>= 7;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// A WBXML reader over one input.
struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    limits: Limits,
    string_table: &'a [u8],
    page: u8,
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8], limits: Limits) -> Self {
        Self {
            input,
            pos: 0,
            limits,
            string_table: &[],
            page: PAGE_SYNCML,
        }
    }

    /// Header, body, and nothing after.
    fn document(mut self) -> Result<Element<'a>, DecodeError> {
        self.header()?;
        let root = self.body()?;
        if self.pos != self.input.len() {
            return Err(DecodeError::TrailingData { offset: self.pos });
        }
        Ok(root)
    }

    fn header(&mut self) -> Result<(), DecodeError> {
        let version = self.byte()?;
        if !(0x01..=0x03).contains(&version) {
            return Err(DecodeError::NotSyncMl {
                reason: format!(
                    "WBXML version byte 0x{version:02x} (only 1.1 to 1.3 are accepted)"
                ),
            });
        }
        let public_id = self.mb_u32()?;
        let public_id_index = if public_id == 0 {
            Some(self.mb_u32()?)
        } else {
            None
        };
        let charset = self.mb_u32()?;
        if charset != CHARSET_UTF8 {
            return Err(DecodeError::UnsupportedCharset {
                charset: format!("MIBenum {charset}"),
            });
        }
        let table_len = self.length()?;
        let table_start = self.pos;
        self.string_table = self.take(table_len, "string table")?;
        match (public_id, public_id_index) {
            (PUBLIC_ID_SYNCML_12 | PUBLIC_ID_UNKNOWN, _) => Ok(()),
            (_, Some(index)) => {
                let name = self.table_string(index, table_start)?;
                if name.eq_ignore_ascii_case(PUBLIC_ID_SYNCML_12_STR) {
                    Ok(())
                } else {
                    Err(DecodeError::NotSyncMl {
                        reason: format!("public identifier {name:?}"),
                    })
                }
            }
            (other, None) => Err(DecodeError::NotSyncMl {
                reason: format!("WBXML public id 0x{other:x} (expected 0x1201, SyncML 1.2)"),
            }),
        }
    }

    /// The element tree of the body, up to the root's `END`.
    fn body(&mut self) -> Result<Element<'a>, DecodeError> {
        let mut stack: Vec<Element<'a>> = Vec::new();
        let mut elements = 0usize;
        loop {
            let offset = self.pos;
            let byte = self.byte()?;
            match byte {
                token::SWITCH_PAGE => {
                    let page = self.byte()?;
                    if page != PAGE_SYNCML && page != PAGE_METINF {
                        return Err(malformed(
                            offset,
                            format!("code page {page} (SyncML uses pages 0 and 1)"),
                        ));
                    }
                    self.page = page;
                }
                token::END => {
                    let element = stack
                        .pop()
                        .ok_or_else(|| malformed(offset, "END without an open element".into()))?;
                    match stack.last_mut() {
                        Some(parent) => parent.nodes.push(Node::Element(element)),
                        None => return Ok(element),
                    }
                }
                token::ENTITY => {
                    let code = self.mb_u32()?;
                    let ch = char::from_u32(code).filter(|&c| c != '\0').ok_or_else(|| {
                        malformed(offset, format!("ENTITY U+{code:04X} is not a character"))
                    })?;
                    current(&mut stack, offset)?.push_text(Cow::Owned(ch.to_string()));
                }
                token::STR_I => {
                    let text = self.inline_string()?;
                    current(&mut stack, offset)?.push_text(Cow::Borrowed(text));
                }
                token::STR_T => {
                    let index = self.mb_u32()?;
                    let text = self.table_string(index, offset)?;
                    current(&mut stack, offset)?.push_text(Cow::Borrowed(text));
                }
                token::OPAQUE => {
                    let len = self.length()?;
                    let bytes = self.take(len, "OPAQUE data")?;
                    current(&mut stack, offset)?.nodes.push(Node::Opaque(bytes));
                }
                token::LITERAL | token::LITERAL_A | token::LITERAL_C | token::LITERAL_AC => {
                    let index = self.mb_u32()?;
                    let name = self.table_string(index, offset)?;
                    return Err(DecodeError::UnknownElement {
                        parent: parent_name(&stack),
                        name: name.to_owned(),
                        offset,
                    });
                }
                token::EXT_I_0
                | token::EXT_I_1
                | token::EXT_I_2
                | token::EXT_T_0
                | token::EXT_T_1
                | token::EXT_T_2
                | token::EXT_0
                | token::EXT_1
                | token::EXT_2 => {
                    return Err(malformed(
                        offset,
                        format!("extension token 0x{byte:02x} (SyncML defines none)"),
                    ))
                }
                token::PI => {
                    return Err(malformed(
                        offset,
                        "processing instruction (SyncML defines none)".into(),
                    ))
                }
                _ => {
                    if byte & token::HAS_ATTRIBUTES != 0 {
                        return Err(malformed(
                            offset,
                            format!("tag 0x{byte:02x} has attributes (SyncML defines none)"),
                        ));
                    }
                    let id = byte & token::TAG_MASK;
                    let tag = Tag::from_token(self.page, id).ok_or_else(|| {
                        DecodeError::UnknownElement {
                            parent: parent_name(&stack),
                            name: format!("page {} token 0x{id:02x}", self.page),
                            offset,
                        }
                    })?;
                    if stack.is_empty() && tag != Tag::SyncML {
                        return Err(DecodeError::NotSyncMl {
                            reason: format!("the root element is <{}>", tag.name()),
                        });
                    }
                    elements += 1;
                    self.limits.check_elements(elements)?;
                    let element = Element::new(tag, offset);
                    if byte & token::HAS_CONTENT != 0 {
                        stack.push(element);
                        self.limits.check_depth(stack.len())?;
                    } else {
                        self.limits.check_depth(stack.len() + 1)?;
                        match stack.last_mut() {
                            Some(parent) => parent.nodes.push(Node::Element(element)),
                            None => return Ok(element),
                        }
                    }
                }
            }
        }
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let byte = *self
            .input
            .get(self.pos)
            .ok_or_else(|| malformed(self.pos, "unexpected end of input".into()))?;
        self.pos += 1;
        Ok(byte)
    }

    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.input.len())
            .ok_or_else(|| {
                malformed(
                    self.pos,
                    format!("{what} of {len} bytes runs past the end of input"),
                )
            })?;
        let bytes = &self.input[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// A WBXML `mb_u_int32`: at most 5 bytes, value within `u32`.
    fn mb_u32(&mut self) -> Result<u32, DecodeError> {
        let start = self.pos;
        let mut value: u32 = 0;
        for _ in 0..5 {
            let byte = self.byte()?;
            if value > (u32::MAX >> 7) {
                return Err(malformed(
                    start,
                    "multi-byte integer exceeds 32 bits".into(),
                ));
            }
            value = (value << 7) | u32::from(byte & 0x7F);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed(
            start,
            "multi-byte integer longer than 5 bytes".into(),
        ))
    }

    /// An `mb_u_int32` used as a byte count.
    fn length(&mut self) -> Result<usize, DecodeError> {
        let value = self.mb_u32()?;
        usize::try_from(value)
            .map_err(|_| malformed(self.pos, "length does not fit in memory".into()))
    }

    /// A NUL-terminated UTF-8 string inline in the body.
    fn inline_string(&mut self) -> Result<&'a str, DecodeError> {
        let start = self.pos;
        let rest = &self.input[start..];
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| malformed(start, "STR_I without its terminating NUL".into()))?;
        self.pos = start + len + 1;
        std::str::from_utf8(&rest[..len])
            .map_err(|err| malformed(start, format!("STR_I is not UTF-8: {err}")))
    }

    /// The NUL-terminated string at `index` in the string table.
    fn table_string(&self, index: u32, offset: usize) -> Result<&'a str, DecodeError> {
        let table = self.string_table;
        let start = usize::try_from(index)
            .ok()
            .filter(|&start| start < table.len())
            .ok_or_else(|| {
                malformed(
                    offset,
                    format!("string table index {index} is outside the table"),
                )
            })?;
        let len = table[start..].iter().position(|&b| b == 0).ok_or_else(|| {
            malformed(
                offset,
                format!("string table entry {index} has no terminating NUL"),
            )
        })?;
        std::str::from_utf8(&table[start..start + len]).map_err(|err| {
            malformed(
                offset,
                format!("string table entry {index} is not UTF-8: {err}"),
            )
        })
    }
}

fn current<'s, 'a>(
    stack: &'s mut [Element<'a>],
    offset: usize,
) -> Result<&'s mut Element<'a>, DecodeError> {
    stack
        .last_mut()
        .ok_or_else(|| malformed(offset, "content outside the root element".into()))
}

fn parent_name(stack: &[Element<'_>]) -> String {
    stack
        .last()
        .map_or("(document)", |parent| parent.tag.name())
        .to_owned()
}

fn malformed(offset: usize, reason: String) -> DecodeError {
    DecodeError::Wbxml { offset, reason }
}

/// Writes elements as WBXML tokens, switching code pages as needed.
pub(crate) struct WbxmlWriter {
    out: Vec<u8>,
    page: u8,
}

impl WbxmlWriter {
    fn tag(&mut self, tag: Tag, has_content: bool) {
        if tag.page() != self.page {
            self.page = tag.page();
            self.out.extend_from_slice(&[token::SWITCH_PAGE, self.page]);
        }
        let content = if has_content { token::HAS_CONTENT } else { 0 };
        self.out.push(tag.token() | content);
    }
}

impl Sink for WbxmlWriter {
    fn start(&mut self, tag: Tag) {
        self.tag(tag, true);
    }

    fn end(&mut self, _tag: Tag) {
        self.out.push(token::END);
    }

    fn empty(&mut self, tag: Tag) {
        self.tag(tag, false);
    }

    fn text(&mut self, tag: Tag, text: &str) -> Result<(), EncodeError> {
        if text.as_bytes().contains(&0) {
            return Err(EncodeError::NulInWbxmlString {
                element: tag.name(),
            });
        }
        if text.is_empty() {
            self.tag(tag, false);
            return Ok(());
        }
        self.tag(tag, true);
        self.out.push(token::STR_I);
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(&[0, token::END]);
        Ok(())
    }

    fn binary_text(&mut self, tag: Tag, text: &str) -> Result<(), EncodeError> {
        self.opaque(tag, text.as_bytes())
    }

    fn opaque(&mut self, tag: Tag, bytes: &[u8]) -> Result<(), EncodeError> {
        let len = u32::try_from(bytes.len()).map_err(|_| EncodeError::TooLarge {
            element: tag.name(),
        })?;
        self.tag(tag, true);
        self.out.push(token::OPAQUE);
        write_mb_u32(&mut self.out, len);
        self.out.extend_from_slice(bytes);
        self.out.push(token::END);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_mb(bytes: &[u8]) -> Result<u32, DecodeError> {
        Parser::new(bytes, Limits::DEFAULT).mb_u32()
    }

    #[test]
    fn mb_u32_round_trips_at_the_byte_boundaries() {
        for value in [0, 0x7F, 0x80, 0x1201, 0x3FFF, 0x4000, u32::MAX] {
            let mut out = Vec::new();
            write_mb_u32(&mut out, value);
            assert_eq!(parse_mb(&out), Ok(value), "{out:x?}");
        }
        let mut out = Vec::new();
        write_mb_u32(&mut out, 0x1201);
        assert_eq!(out, [0xA4, 0x01]);
    }

    #[test]
    fn mb_u32_rejects_overflow_overlength_and_truncation() {
        assert!(parse_mb(&[0x90, 0x80, 0x80, 0x80, 0x00]).is_err(), "2^32");
        assert!(
            parse_mb(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]).is_err(),
            "6 bytes"
        );
        assert!(parse_mb(&[0x81]).is_err(), "truncated");
        assert_eq!(parse_mb(&[0x8F, 0xFF, 0xFF, 0xFF, 0x7F]), Ok(u32::MAX));
    }
}
