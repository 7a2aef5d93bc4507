//! A SyncML DM message as its elements, in document order: what `omadm convert` converts.
//!
//! [`Codec`](super::Codec) decodes into the typed model and encodes the model in DTD order, so
//! it normalizes: a `<Meta>` written `<Type>` before `<Format>` (as the DM specification's own
//! Chal examples and real servers write it) comes back `<Format>` first. A [`Document`] keeps
//! what the message says element for element: the same elements in the same order, MetInf
//! children included, text exactly as it was. Whitespace between elements is not kept (it is not
//! content), and which of text or WBXML `OPAQUE` carries a value is an encoding matter: both
//! compare equal when their bytes do. A `Document` is always a valid SyncML DM message: building
//! one runs the decoders' checks.

use std::borrow::Cow;

use super::element::{Element, Node};
use super::tag::Tag;
use super::write::Sink;
use super::{read, wbxml, xml, DecodeError, EncodeError, Encoding, Limits};
use crate::model::{format, SyncMl};

/// A valid SyncML DM message as elements in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    root: DocElement,
}

/// One element: its name and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocElement {
    tag: Tag,
    content: DocContent,
}

/// What an element holds.
#[derive(Debug, Clone, Eq)]
pub enum DocContent {
    /// Child elements, in document order.
    Elements(Vec<DocElement>),
    /// Character data, exactly as sent (empty for an empty element such as `<Final/>`).
    Text(String),
    /// WBXML `OPAQUE` bytes (all of the content, when any part of it was opaque).
    Opaque(Vec<u8>),
}

impl PartialEq for DocContent {
    /// Elements compare element by element; text and opaque content compare by their bytes, so
    /// a WBXML `OPAQUE` value equals the same value as XML text.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Elements(a), Self::Elements(b)) => a == b,
            (Self::Elements(_), _) | (_, Self::Elements(_)) => false,
            (a, b) => a.bytes() == b.bytes(),
        }
    }
}

impl DocContent {
    /// The bytes of text or opaque content (empty for elements).
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Elements(_) => &[],
            Self::Text(text) => text.as_bytes(),
            Self::Opaque(bytes) => bytes,
        }
    }
}

impl DocElement {
    /// The element named `name` (a SyncML or MetInf element name) holding `content`; `None` for a
    /// name SyncML does not have.
    pub fn new(name: &str, content: DocContent) -> Option<Self> {
        Some(Self {
            tag: Tag::from_name(name.as_bytes())?,
            content,
        })
    }

    /// The element's name (`SyncHdr`, `Format`...).
    pub fn name(&self) -> &'static str {
        self.tag.name()
    }

    pub fn content(&self) -> &DocContent {
        &self.content
    }

    /// The child elements (none for text or opaque content).
    pub fn children(&self) -> &[DocElement] {
        match &self.content {
            DocContent::Elements(children) => children,
            DocContent::Text(_) | DocContent::Opaque(_) => &[],
        }
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&DocElement> {
        self.children().iter().find(|child| child.name() == name)
    }

    /// An element of the decoders' tree: whitespace between child elements is dropped, and the
    /// pieces of a leaf are joined (opaque when any piece is).
    fn from_element(element: &Element<'_>) -> Self {
        let has_children = element
            .nodes
            .iter()
            .any(|node| matches!(node, Node::Element(_)));
        let content = if has_children {
            DocContent::Elements(
                element
                    .nodes
                    .iter()
                    .filter_map(|node| match node {
                        Node::Element(child) => Some(Self::from_element(child)),
                        Node::Text(_) | Node::Opaque(_) => None,
                    })
                    .collect(),
            )
        } else if element
            .nodes
            .iter()
            .any(|node| matches!(node, Node::Opaque(_)))
        {
            let mut bytes = Vec::new();
            for node in &element.nodes {
                match node {
                    Node::Text(text) => bytes.extend_from_slice(text.as_bytes()),
                    Node::Opaque(part) => bytes.extend_from_slice(part),
                    Node::Element(_) => {}
                }
            }
            DocContent::Opaque(bytes)
        } else {
            let mut text = String::new();
            for node in &element.nodes {
                if let Node::Text(part) = node {
                    text.push_str(part);
                }
            }
            DocContent::Text(text)
        };
        Self {
            tag: element.tag,
            content,
        }
    }

    /// The decoders' tree of this element, for their checks; `None` past `depth_left` levels.
    fn to_element(&self, depth_left: usize) -> Option<Element<'_>> {
        let depth_left = depth_left.checked_sub(1)?;
        let mut element = Element::new(self.tag, 0);
        match &self.content {
            DocContent::Elements(children) => {
                for child in children {
                    element
                        .nodes
                        .push(Node::Element(child.to_element(depth_left)?));
                }
            }
            DocContent::Text(text) if text.is_empty() => {}
            DocContent::Text(text) => element.nodes.push(Node::Text(Cow::Borrowed(text))),
            DocContent::Opaque(bytes) => element.nodes.push(Node::Opaque(bytes)),
        }
        Some(element)
    }
}

impl Document {
    /// A document of `root`, if it is a valid SyncML DM message (the checks of the decoders,
    /// within [`Limits::DEFAULT`]; byte offsets in errors are 0).
    pub fn new(root: DocElement) -> Result<Self, DecodeError> {
        let limits = Limits::DEFAULT;
        let element = root
            .to_element(limits.max_depth)
            .ok_or(DecodeError::LimitExceeded {
                what: "element nesting depth",
                limit: limits.max_depth,
            })?;
        read::message(&element)?;
        Ok(Self { root })
    }

    /// Decodes `input`, XML or WBXML ([`Encoding::sniff`]), with the checks and limits of
    /// [`super::decode_any`].
    pub fn decode(input: &[u8]) -> Result<(Encoding, Self), DecodeError> {
        let encoding = Encoding::sniff(input).ok_or_else(|| DecodeError::NotSyncMl {
            reason: "the input is neither XML nor WBXML".to_owned(),
        })?;
        Ok((encoding, Self::decode_as(encoding, input)?))
    }

    /// Decodes `input` in `encoding` with the default [`Limits`].
    pub fn decode_as(encoding: Encoding, input: &[u8]) -> Result<Self, DecodeError> {
        let limits = Limits::DEFAULT;
        let root = match encoding {
            Encoding::Xml => xml::parse_document(input, &limits)?,
            Encoding::Wbxml => wbxml::parse_document(input, limits)?,
        };
        read::message(&root)?;
        Ok(Self {
            root: DocElement::from_element(&root),
        })
    }

    /// The typed message (as [`super::Codec::decode`] gives it).
    pub fn message(&self) -> Result<SyncMl, DecodeError> {
        let limits = Limits::DEFAULT;
        let element = self
            .root
            .to_element(limits.max_depth)
            .ok_or(DecodeError::LimitExceeded {
                what: "element nesting depth",
                limit: limits.max_depth,
            })?;
        read::message(&element)
    }

    /// The `<SyncML>` element.
    pub fn root(&self) -> &DocElement {
        &self.root
    }

    /// The document in `encoding` (compact XML, or WBXML), element for element. In WBXML, like
    /// the codec, the `Data` of an item or `Cred` whose format is `b64` or `bin` goes as `OPAQUE`.
    pub fn encode(&self, encoding: Encoding) -> Result<Vec<u8>, EncodeError> {
        match encoding {
            Encoding::Xml => {
                xml::write_document(false, |sink| write(sink, &self.root, Scope::NONE))
            }
            Encoding::Wbxml => wbxml::write_document(|sink| write(sink, &self.root, Scope::NONE)),
        }
    }

    /// The document as indented XML (indentation never changes a value).
    pub fn encode_pretty_xml(&self) -> Result<Vec<u8>, EncodeError> {
        xml::write_document(true, |sink| write(sink, &self.root, Scope::NONE))
    }
}

/// What an element's parents say about its content: the format a command's Meta gives its
/// items, and whether a `Data` here holds a binary-format value.
#[derive(Clone, Copy)]
struct Scope<'d> {
    command_format: Option<&'d str>,
    binary_data: bool,
}

impl Scope<'_> {
    const NONE: Self = Self {
        command_format: None,
        binary_data: false,
    };
}

/// Writes `element` and its content to `sink`.
fn write<'d>(
    sink: &mut impl Sink,
    element: &'d DocElement,
    scope: Scope<'d>,
) -> Result<(), EncodeError> {
    let tag = element.tag;
    match &element.content {
        DocContent::Elements(children) => {
            let inner = scope_of(element, scope);
            sink.start(tag);
            for child in children {
                write(sink, child, inner)?;
            }
            sink.end(tag);
            Ok(())
        }
        DocContent::Text(text) if text.is_empty() => {
            sink.empty(tag);
            Ok(())
        }
        DocContent::Text(text) if tag == Tag::Data && scope.binary_data => {
            sink.binary_text(tag, text)
        }
        DocContent::Text(text) => sink.text(tag, text),
        DocContent::Opaque(bytes) => sink.opaque(tag, bytes),
    }
}

/// The scope of `element`'s children, as the model writer sees it: the commands with items pass
/// their Meta's format to their items; an item's own format, else its command's, and a `Cred`'s
/// format decide whether its `Data` is binary.
fn scope_of<'d>(element: &'d DocElement, scope: Scope<'d>) -> Scope<'d> {
    match element.tag {
        Tag::Add | Tag::Copy | Tag::Delete | Tag::Get | Tag::Replace | Tag::Exec | Tag::Results => {
            Scope {
                command_format: meta_format(element),
                binary_data: false,
            }
        }
        Tag::Item => Scope {
            command_format: None,
            binary_data: is_binary(meta_format(element).or(scope.command_format)),
        },
        Tag::Cred => Scope {
            command_format: None,
            binary_data: is_binary(meta_format(element)),
        },
        _ => Scope::NONE,
    }
}

/// The `Meta/Format` of `element`, trimmed as the reader trims it.
fn meta_format(element: &DocElement) -> Option<&str> {
    let format = element.child(Tag::Meta.name())?.child(Tag::Format.name())?;
    match &format.content {
        DocContent::Text(text) => Some(text.trim_matches([' ', '\t', '\n', '\r'])),
        DocContent::Opaque(bytes) => std::str::from_utf8(bytes)
            .ok()
            .map(|text| text.trim_matches([' ', '\t', '\n', '\r'])),
        DocContent::Elements(_) => None,
    }
}

fn is_binary(format: Option<&str>) -> bool {
    matches!(format, Some(format::B64 | format::BIN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, WbxmlCodec, XmlCodec};

    /// A Status with a Chal whose Meta lists Type, Format, NextNonce (the order of the DM
    /// RepPro example), then Data before the CmdID.
    const CHAL_FIRST: &str = r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>IMEI:1</LocURI></Target><Source><LocURI>https://dm</LocURI></Source></SyncHdr><SyncBody><Status><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><TargetRef>https://dm</TargetRef><SourceRef>IMEI:1</SourceRef><Chal><Meta><Type xmlns="syncml:metinf">syncml:auth-md5</Type><Format xmlns="syncml:metinf">b64</Format><NextNonce xmlns="syncml:metinf">ZG9iZWhhdmUNCg==</NextNonce></Meta></Chal><Data>401</Data><CmdID>1</CmdID></Status><Final/></SyncBody></SyncML>"#;

    fn names(element: &DocElement) -> Vec<&'static str> {
        element.children().iter().map(DocElement::name).collect()
    }

    fn chal_meta(doc: &Document) -> &DocElement {
        let status = doc.root().child("SyncBody").and_then(|b| b.child("Status"));
        status
            .and_then(|s| s.child("Chal"))
            .and_then(|c| c.child("Meta"))
            .expect("Status/Chal/Meta")
    }

    #[test]
    fn metinf_children_keep_their_order_through_wbxml_and_back() {
        let (encoding, doc) = Document::decode(CHAL_FIRST.as_bytes()).expect("valid");
        assert_eq!(encoding, Encoding::Xml);
        assert_eq!(names(chal_meta(&doc)), ["Type", "Format", "NextNonce"]);
        let wbxml = doc.encode(Encoding::Wbxml).expect("encodes");
        let from_wbxml = Document::decode_as(Encoding::Wbxml, &wbxml).expect("decodes");
        assert_eq!(from_wbxml, doc);
        let xml = from_wbxml.encode(Encoding::Xml).expect("encodes");
        let back = Document::decode_as(Encoding::Xml, &xml).expect("decodes");
        assert_eq!(back, doc);
        assert_eq!(names(chal_meta(&back)), ["Type", "Format", "NextNonce"]);
        let status = back
            .root()
            .child("SyncBody")
            .and_then(|b| b.child("Status"));
        assert_eq!(
            status.map(names).unwrap_or_default().last(),
            Some(&"CmdID"),
            "fields keep their order too"
        );
        // The model normalizes the order; the document does not.
        let normalized = XmlCodec::default().encode(&doc.message().expect("a message"));
        let normalized = Document::decode_as(Encoding::Xml, &normalized.expect("encodes"));
        assert_eq!(
            names(chal_meta(&normalized.expect("decodes"))),
            ["Format", "Type", "NextNonce"]
        );
    }

    #[test]
    fn a_document_in_dtd_order_encodes_like_the_codec() {
        let (_, doc) = Document::decode(CHAL_FIRST.as_bytes()).expect("valid");
        let msg = doc.message().expect("a message");
        let in_dtd_order = WbxmlCodec::default().encode(&msg).expect("encodes");
        let doc = Document::decode_as(Encoding::Wbxml, &in_dtd_order).expect("decodes");
        assert_eq!(doc.encode(Encoding::Wbxml).expect("encodes"), in_dtd_order);
    }

    #[test]
    fn binary_format_data_goes_as_opaque_and_compares_equal_to_text() {
        let xml = CHAL_FIRST.replace(
            "<Final/>",
            "<Replace><CmdID>2</CmdID><Item><Data>AAEC</Data><Meta><Format xmlns=\"syncml:metinf\">b64</Format></Meta><Target><LocURI>./A</LocURI></Target></Item></Replace><Final/>",
        );
        let (_, doc) = Document::decode(xml.as_bytes()).expect("valid");
        let wbxml = doc.encode(Encoding::Wbxml).expect("encodes");
        let from_wbxml = Document::decode_as(Encoding::Wbxml, &wbxml).expect("decodes");
        let data = |doc: &Document| {
            let replace = doc
                .root()
                .child("SyncBody")
                .and_then(|b| b.child("Replace"));
            let item = replace.and_then(|r| r.child("Item"));
            item.and_then(|i| i.child("Data"))
                .map(|d| d.content().clone())
        };
        assert_eq!(
            data(&from_wbxml),
            Some(DocContent::Opaque(b"AAEC".to_vec()))
        );
        assert_eq!(data(&doc), Some(DocContent::Text("AAEC".into())));
        assert_eq!(from_wbxml, doc);
    }

    #[test]
    fn new_documents_are_checked_like_decoded_ones() {
        let (_, doc) = Document::decode(CHAL_FIRST.as_bytes()).expect("valid");
        assert_eq!(Document::new(doc.root().clone()).as_ref(), Ok(&doc));
        let mut root = doc.root().clone();
        if let DocContent::Elements(children) = &mut root.content {
            children.reverse(); // SyncBody before SyncHdr
        }
        assert!(matches!(
            Document::new(root),
            Err(DecodeError::OutOfOrder { .. })
        ));
        assert!(DocElement::new("Sink", DocContent::Text(String::new())).is_none());
        let mut deep = DocElement::new("Final", DocContent::Text(String::new())).expect("a tag");
        for _ in 0..100 {
            deep = DocElement::new("Sequence", DocContent::Elements(vec![deep])).expect("a tag");
        }
        assert!(matches!(
            Document::new(deep),
            Err(DecodeError::LimitExceeded { .. })
        ));
    }

    #[test]
    fn xml_cannot_carry_opaque_bytes_that_are_not_utf8() {
        let xml = CHAL_FIRST.replace(
            "<Final/>",
            "<Replace><CmdID>2</CmdID><Item><Target><LocURI>./A</LocURI></Target><Data>x</Data></Item></Replace><Final/>",
        );
        let (_, doc) = Document::decode(xml.as_bytes()).expect("valid");
        let mut wbxml = doc.encode(Encoding::Wbxml).expect("encodes");
        // Replace the STR_I "x" of the Data with OPAQUE 0xFF.
        let at = wbxml
            .windows(3)
            .position(|w| w == [0x03, b'x', 0])
            .expect("the Data string");
        wbxml.splice(at..at + 3, [0xC3, 0x01, 0xFF]);
        let doc = Document::decode_as(Encoding::Wbxml, &wbxml).expect("decodes");
        assert!(matches!(
            doc.encode(Encoding::Xml),
            Err(EncodeError::NotXmlText {
                element: "Data",
                ..
            })
        ));
        assert_eq!(
            Document::decode_as(
                Encoding::Wbxml,
                &doc.encode(Encoding::Wbxml).expect("encodes")
            ),
            Ok(doc)
        );
    }
}
