//! The element tree both parsers produce and the model reader consumes: the shape of a SyncML
//! document with names resolved to [`Tag`]s, before any DM rule is checked. Text and opaque data
//! borrow from the input where they can.

use std::borrow::Cow;

use super::tag::Tag;

/// A decoded element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element<'a> {
    pub tag: Tag,
    /// Byte offset of the element's start in the input (for error messages).
    pub offset: usize,
    pub nodes: Vec<Node<'a>>,
}

/// The content of an element, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node<'a> {
    Element(Element<'a>),
    /// Character data (XML text and CDATA; WBXML `STR_I`, `STR_T`, `ENTITY`).
    Text(Cow<'a, str>),
    /// WBXML `OPAQUE` bytes.
    Opaque(&'a [u8]),
}

impl<'a> Element<'a> {
    /// An element with no content yet.
    pub fn new(tag: Tag, offset: usize) -> Self {
        Self {
            tag,
            offset,
            nodes: Vec::new(),
        }
    }

    /// Appends character data, merging it with a preceding text node.
    pub fn push_text(&mut self, text: Cow<'a, str>) {
        if let Some(Node::Text(last)) = self.nodes.last_mut() {
            last.to_mut().push_str(&text);
        } else {
            self.nodes.push(Node::Text(text));
        }
    }
}
