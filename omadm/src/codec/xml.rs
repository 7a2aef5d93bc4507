//! `application/vnd.syncml.dm+xml`: SyncML DM in XML 1.0, UTF-8.
//!
//! The decoder accepts an XML declaration (version 1.0, encoding UTF-8 or none), a DOCTYPE,
//! comments and processing instructions around the root, and namespace declarations; it rejects
//! any other attribute, a namespace other than `SYNCML:SYNCML1.2` for SyncML elements or
//! `syncml:metinf` for MetInf elements (an element with no namespace at all is accepted, and
//! MetInf elements may inherit the SyncML namespace, as many implementations send them), entity
//! references other than the five predefined ones and character references, and anything but
//! whitespace, comments or processing instructions after the root element.

use std::borrow::Cow;

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use super::element::{Element, Node};
use super::tag::{Tag, METINF_NS, PAGE_METINF, SYNCML_NS};
use super::write::{self, Sink};
use super::{read, Codec, DecodeError, EncodeError, Encoding, Limits};
use crate::model::SyncMl;

/// The media type of SyncML DM in XML.
pub const MEDIA_TYPE: &str = "application/vnd.syncml.dm+xml";

/// The XML codec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XmlCodec {
    /// Bounds for decoding.
    pub limits: Limits,
    /// Indent the output (two spaces per level; text content stays on its element's line, so
    /// indentation never changes a value).
    pub pretty: bool,
}

impl XmlCodec {
    /// A codec that writes indented XML.
    pub fn pretty() -> Self {
        Self {
            pretty: true,
            ..Self::default()
        }
    }
}

impl Codec for XmlCodec {
    fn encoding(&self) -> Encoding {
        Encoding::Xml
    }

    fn encode(&self, msg: &SyncMl) -> Result<Vec<u8>, EncodeError> {
        write_document(self.pretty, |writer| write::message(writer, msg))
    }

    fn decode(&self, input: &[u8]) -> Result<SyncMl, DecodeError> {
        read::message(&parse_document(input, &self.limits)?)
    }
}

/// An XML document: the declaration, then what `write` writes (indented when `pretty`).
pub(crate) fn write_document(
    pretty: bool,
    write: impl FnOnce(&mut XmlWriter) -> Result<(), EncodeError>,
) -> Result<Vec<u8>, EncodeError> {
    let mut writer = XmlWriter {
        out: String::with_capacity(2048),
        pretty,
        depth: 0,
    };
    writer
        .out
        .push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    write(&mut writer)?;
    if pretty {
        writer.out.push('\n');
    }
    Ok(writer.out.into_bytes())
}

/// The element tree of a whole XML document, within `limits` (no DM rule checked yet).
pub(crate) fn parse_document<'a>(
    input: &'a [u8],
    limits: &Limits,
) -> Result<Element<'a>, DecodeError> {
    limits.check_input(input)?;
    if input.starts_with(b"\xFE\xFF") || input.starts_with(b"\xFF\xFE") {
        return Err(DecodeError::UnsupportedCharset {
            charset: "UTF-16".to_owned(),
        });
    }
    parse(input, limits)
}

/// Parses `input` into an element tree.
fn parse<'a>(input: &'a [u8], limits: &Limits) -> Result<Element<'a>, DecodeError> {
    // A UTF-8 byte order mark is not part of the document; offsets still count it.
    let (base, document) = match input.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => (3, rest),
        None => (0, input),
    };
    let mut reader = NsReader::from_reader(document);
    let config = reader.config_mut();
    config.trim_text(false);
    config.check_end_names = true;
    config.check_comments = true;
    config.expand_empty_elements = false;

    let mut stack: Vec<Element<'a>> = Vec::new();
    let mut root: Option<Element<'a>> = None;
    let mut elements = 0usize;
    let mut seen_decl = false;
    loop {
        let offset = base + position(reader.buffer_position());
        let (ns, event) = match reader.read_resolved_event() {
            Ok(pair) => pair,
            Err(err) => return Err(xml_error(base + position(reader.error_position()), err)),
        };
        match event {
            Event::Decl(decl) => {
                if seen_decl || root.is_some() || !stack.is_empty() || offset != base {
                    return Err(malformed(offset, "XML declaration not at the start"));
                }
                seen_decl = true;
                check_decl(&decl, offset)?;
            }
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(DecodeError::TrailingData { offset });
            }
            Event::Start(start) => {
                let element = open(&start, namespace(&ns, offset)?, stack.last(), offset)?;
                elements += 1;
                limits.check_elements(elements)?;
                stack.push(element);
                limits.check_depth(stack.len())?;
            }
            Event::Empty(start) => {
                let element = open(&start, namespace(&ns, offset)?, stack.last(), offset)?;
                elements += 1;
                limits.check_elements(elements)?;
                limits.check_depth(stack.len() + 1)?;
                close(element, &mut stack, &mut root);
            }
            Event::End(_) => match stack.pop() {
                Some(element) => close(element, &mut stack, &mut root),
                None => return Err(malformed(offset, "end tag without a start tag")),
            },
            Event::Text(text) => {
                let text = text
                    .xml10_content()
                    .map_err(|err| malformed(offset, &err.to_string()))?;
                check_chars(&text, offset)?;
                outside_text(&text, &stack, root.is_some(), offset)?;
                if let Some(current) = stack.last_mut() {
                    current.push_text(text);
                }
            }
            Event::CData(cdata) => {
                let text = cdata
                    .xml10_content()
                    .map_err(|err| malformed(offset, &err.to_string()))?;
                check_chars(&text, offset)?;
                match stack.last_mut() {
                    Some(current) => current.push_text(text),
                    None if root.is_some() => return Err(DecodeError::TrailingData { offset }),
                    None => return Err(malformed(offset, "CDATA outside the root element")),
                }
            }
            Event::GeneralRef(reference) => {
                let ch = resolve_reference(&reference, offset)?;
                match stack.last_mut() {
                    Some(current) => current.push_text(Cow::Owned(ch.to_string())),
                    None if root.is_some() => return Err(DecodeError::TrailingData { offset }),
                    None => return Err(malformed(offset, "reference outside the root element")),
                }
            }
            Event::DocType(_) => {
                if root.is_some() || !stack.is_empty() {
                    return Err(malformed(offset, "DOCTYPE after the root element started"));
                }
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(malformed(
            open.offset,
            &format!("<{}> is not closed", open.tag.name()),
        ));
    }
    root.ok_or_else(|| DecodeError::NotSyncMl {
        reason: "the document has no root element".to_owned(),
    })
}

/// Turns a start tag into an element, checking name, namespace and attributes.
fn open(
    start: &BytesStart<'_>,
    ns: Option<&[u8]>,
    parent: Option<&Element<'_>>,
    offset: usize,
) -> Result<Element<'static>, DecodeError> {
    let local = start.local_name();
    let name = local.as_ref();
    let Some(parent) = parent else {
        // The root.
        if name != b"SyncML" {
            return Err(DecodeError::NotSyncMl {
                reason: format!("the root element is <{}>", String::from_utf8_lossy(name)),
            });
        }
        if let Some(ns) = ns {
            if !ns.eq_ignore_ascii_case(SYNCML_NS.as_bytes()) {
                return Err(DecodeError::NotSyncMl {
                    reason: format!(
                        "the root element is in namespace {:?}, not {SYNCML_NS:?}",
                        String::from_utf8_lossy(ns)
                    ),
                });
            }
        }
        check_attributes(start, offset)?;
        return Ok(Element::new(Tag::SyncML, offset));
    };
    if parent.tag == Tag::Data || parent.tag == Tag::NextNonce {
        return Err(DecodeError::Unsupported {
            parent: parent.tag.name(),
            name: String::from_utf8_lossy(name).into_owned(),
            offset,
        });
    }
    let tag = Tag::from_name(name).ok_or_else(|| DecodeError::UnknownElement {
        parent: parent.tag.name().to_owned(),
        name: String::from_utf8_lossy(name).into_owned(),
        offset,
    })?;
    if let Some(ns) = ns {
        let expected = tag.namespace();
        let inherited_ok =
            tag.page() == PAGE_METINF && ns.eq_ignore_ascii_case(SYNCML_NS.as_bytes());
        if !ns.eq_ignore_ascii_case(expected.as_bytes()) && !inherited_ok {
            return Err(DecodeError::WrongNamespace {
                parent: parent.tag.name(),
                name: tag.name(),
                namespace: String::from_utf8_lossy(ns).into_owned(),
                expected,
                offset,
            });
        }
    }
    check_attributes(start, offset)?;
    Ok(Element::new(tag, offset))
}

/// Only namespace declarations are allowed as attributes.
fn check_attributes(start: &BytesStart<'_>, offset: usize) -> Result<(), DecodeError> {
    for attribute in start.attributes().with_checks(true) {
        let attribute = attribute.map_err(|err| malformed(offset, &err.to_string()))?;
        let key = attribute.key.as_ref();
        if key != b"xmlns" && !key.starts_with(b"xmlns:") {
            return Err(malformed(
                offset,
                &format!(
                    "unexpected attribute {:?} (SyncML elements have none)",
                    String::from_utf8_lossy(key)
                ),
            ));
        }
    }
    Ok(())
}

/// Attaches a finished element to its parent, or makes it the root.
fn close<'a>(element: Element<'a>, stack: &mut [Element<'a>], root: &mut Option<Element<'a>>) {
    match stack.last_mut() {
        Some(parent) => parent.nodes.push(Node::Element(element)),
        None => *root = Some(element),
    }
}

/// Text outside the root must be whitespace.
fn outside_text(
    text: &str,
    stack: &[Element<'_>],
    after_root: bool,
    offset: usize,
) -> Result<(), DecodeError> {
    if !stack.is_empty() || text.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n')) {
        return Ok(());
    }
    if after_root {
        Err(DecodeError::TrailingData { offset })
    } else {
        Err(malformed(offset, "text before the root element"))
    }
}

fn check_decl(decl: &quick_xml::events::BytesDecl<'_>, offset: usize) -> Result<(), DecodeError> {
    let version = decl
        .version()
        .map_err(|err| malformed(offset, &err.to_string()))?;
    if version.as_ref() != b"1.0" {
        return Err(malformed(offset, "only XML version 1.0 is accepted"));
    }
    if let Some(encoding) = decl.encoding() {
        let encoding = encoding.map_err(|err| malformed(offset, &err.to_string()))?;
        if !encoding.eq_ignore_ascii_case(b"UTF-8") && !encoding.eq_ignore_ascii_case(b"UTF8") {
            return Err(DecodeError::UnsupportedCharset {
                charset: String::from_utf8_lossy(&encoding).into_owned(),
            });
        }
    }
    Ok(())
}

/// `&amp;`, `&lt;`, `&gt;`, `&apos;`, `&quot;` and character references; no other entities
/// (a DTD cannot define any: internal subsets are not read).
fn resolve_reference(reference: &BytesRef<'_>, offset: usize) -> Result<char, DecodeError> {
    let ch = match reference.as_ref() {
        b"amp" => '&',
        b"lt" => '<',
        b"gt" => '>',
        b"apos" => '\'',
        b"quot" => '"',
        _ => reference
            .resolve_char_ref()
            .map_err(|err| malformed(offset, &err.to_string()))?
            .ok_or_else(|| {
                malformed(
                    offset,
                    &format!(
                        "unknown entity &{};",
                        String::from_utf8_lossy(reference.as_ref())
                    ),
                )
            })?,
    };
    if !is_xml_char(ch) {
        return Err(malformed(
            offset,
            &format!(
                "character reference to U+{:04X}, not allowed in XML",
                ch as u32
            ),
        ));
    }
    Ok(ch)
}

/// The namespace an element resolved to; `None` when it has none.
fn namespace<'r>(
    ns: &'r ResolveResult<'_>,
    offset: usize,
) -> Result<Option<&'r [u8]>, DecodeError> {
    match ns {
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Bound(ns) => Ok(Some(ns.as_ref())),
        ResolveResult::Unknown(prefix) => Err(malformed(
            offset,
            &format!(
                "undeclared namespace prefix {:?}",
                String::from_utf8_lossy(prefix)
            ),
        )),
    }
}

fn position(position: u64) -> usize {
    // Positions are within the input, which is in memory: they fit.
    usize::try_from(position).unwrap_or(usize::MAX / 2)
}

fn malformed(offset: usize, reason: &str) -> DecodeError {
    DecodeError::Xml {
        offset,
        reason: reason.to_owned(),
    }
}

fn xml_error(offset: usize, err: quick_xml::Error) -> DecodeError {
    malformed(offset, &err.to_string())
}

/// Character data may only hold XML 1.0 `Char`s (no control characters but tab, LF, CR).
fn check_chars(text: &str, offset: usize) -> Result<(), DecodeError> {
    match text.chars().find(|&c| !is_xml_char(c)) {
        Some(c) => Err(malformed(
            offset,
            &format!("character U+{:04X} is not allowed in XML", c as u32),
        )),
        None => Ok(()),
    }
}

/// XML 1.0 `Char`: what a document may contain.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// Writes elements as XML text.
pub(crate) struct XmlWriter {
    out: String,
    pretty: bool,
    depth: usize,
}

impl XmlWriter {
    fn indent(&mut self) {
        if self.pretty {
            self.out.push('\n');
            for _ in 0..self.depth {
                self.out.push_str("  ");
            }
        }
    }

    fn open_tag(&mut self, tag: Tag, empty: bool) {
        self.indent();
        self.out.push('<');
        self.out.push_str(tag.name());
        if tag == Tag::SyncML || tag.page() == PAGE_METINF {
            self.out.push_str(" xmlns=\"");
            self.out.push_str(if tag == Tag::SyncML {
                SYNCML_NS
            } else {
                METINF_NS
            });
            self.out.push('"');
        }
        self.out.push_str(if empty { "/>" } else { ">" });
    }

    fn close_tag(&mut self, tag: Tag) {
        self.out.push_str("</");
        self.out.push_str(tag.name());
        self.out.push('>');
    }
}

impl Sink for XmlWriter {
    fn start(&mut self, tag: Tag) {
        self.open_tag(tag, false);
        self.depth += 1;
    }

    fn end(&mut self, tag: Tag) {
        self.depth = self.depth.saturating_sub(1);
        self.indent();
        self.close_tag(tag);
    }

    fn empty(&mut self, tag: Tag) {
        self.open_tag(tag, true);
    }

    fn text(&mut self, tag: Tag, text: &str) -> Result<(), EncodeError> {
        if let Some(c) = text.chars().find(|&c| !is_xml_char(c)) {
            return Err(EncodeError::NotXmlText {
                element: tag.name(),
                reason: if c == '\0' {
                    "a NUL character"
                } else {
                    "a control character or a non-character"
                },
            });
        }
        self.open_tag(tag, false);
        escape_into(&mut self.out, text);
        self.close_tag(tag);
        Ok(())
    }

    fn binary_text(&mut self, tag: Tag, text: &str) -> Result<(), EncodeError> {
        self.text(tag, text)
    }

    fn opaque(&mut self, tag: Tag, bytes: &[u8]) -> Result<(), EncodeError> {
        let text = std::str::from_utf8(bytes).map_err(|_| EncodeError::NotXmlText {
            element: tag.name(),
            reason: "bytes that are not UTF-8",
        })?;
        self.text(tag, text)
    }
}

/// Escapes character data: `&`, `<`, `>`, and `\r` (which a parser would otherwise normalize).
fn escape_into(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(at) = rest.find(['&', '<', '>', '\r']) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            _ => "&#13;",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_carriage_returns() {
        let mut out = String::new();
        escape_into(&mut out, "a<b>&c\r\nd");
        assert_eq!(out, "a&lt;b&gt;&amp;c&#13;\nd");
    }

    #[test]
    fn xml_chars_exclude_controls_and_non_characters() {
        assert!(is_xml_char('\t') && is_xml_char('é') && is_xml_char('\u{10FFFF}'));
        assert!(!is_xml_char('\0') && !is_xml_char('\u{1}') && !is_xml_char('\u{FFFF}'));
    }
}
