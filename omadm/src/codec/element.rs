//! The element tree both parsers produce and the model reader consumes: the shape of a SyncML
//! document with names resolved to [`Tag`]s, before any DM rule is checked.

use super::tag::Tag;

/// A decoded element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    pub tag: Tag,
    /// Byte offset of the element's start in the input (for error messages).
    pub offset: usize,
    pub nodes: Vec<Node>,
}

/// The content of an element, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Element(Element),
    /// Character data (XML text and CDATA; WBXML `STR_I`, `STR_T`, `ENTITY`).
    Text(String),
    /// WBXML `OPAQUE` bytes.
    Opaque(Vec<u8>),
}

impl Element {
    /// An element with no content yet.
    pub fn new(tag: Tag, offset: usize) -> Self {
        Self {
            tag,
            offset,
            nodes: Vec::new(),
        }
    }

    /// Appends character data, merging it with a preceding text node.
    pub fn push_text(&mut self, text: &str) {
        if let Some(Node::Text(last)) = self.nodes.last_mut() {
            last.push_str(text);
        } else {
            self.nodes.push(Node::Text(text.to_owned()));
        }
    }
}
