//! The leaves of the element tree and the reader's errors: child elements, text, numbers,
//! flags, `Data`, and the checks every element shares (given once, required, allowed).

use std::borrow::Cow;
use std::str::FromStr;

use super::super::element::{Element, Node};
use super::super::tag::Tag;
use super::super::DecodeError;
use super::Result;
use crate::model::{Data, Item};

/// The child elements of a structural element; text other than whitespace is an error.
pub(super) fn children<'e, 'a>(
    el: &'e Element<'a>,
) -> Result<impl Iterator<Item = &'e Element<'a>>> {
    for node in &el.nodes {
        match node {
            Node::Element(_) => {}
            Node::Text(text) if is_xml_whitespace(text) => {}
            Node::Text(_) | Node::Opaque(_) => {
                return Err(DecodeError::UnexpectedText {
                    parent: el.tag.name(),
                    offset: el.offset,
                })
            }
        }
    }
    Ok(el.nodes.iter().filter_map(|node| match node {
        Node::Element(child) => Some(child),
        Node::Text(_) | Node::Opaque(_) => None,
    }))
}

/// The content of `<Data>` or `<NextNonce>`: text, or opaque bytes when any part was opaque.
pub(super) fn data(el: &Element) -> Result<Data> {
    match el.nodes.as_slice() {
        [] => return Ok(Data::Text(String::new())),
        [Node::Text(text)] => return Ok(Data::Text(text.to_string())),
        [Node::Opaque(bytes)] => return Ok(Data::Opaque(bytes.to_vec())),
        _ => {}
    }
    let mut text = String::new();
    let mut bytes: Option<Vec<u8>> = None;
    for node in &el.nodes {
        match node {
            Node::Element(child) => {
                return Err(DecodeError::Unsupported {
                    parent: el.tag.name(),
                    name: child.tag.name().to_owned(),
                    offset: child.offset,
                })
            }
            Node::Text(part) => match &mut bytes {
                Some(bytes) => bytes.extend_from_slice(part.as_bytes()),
                None => text.push_str(part),
            },
            Node::Opaque(part) => {
                let bytes = bytes.get_or_insert_with(|| std::mem::take(&mut text).into_bytes());
                bytes.extend_from_slice(part);
            }
        }
    }
    Ok(match bytes {
        Some(bytes) => Data::Opaque(bytes),
        None => Data::Text(text),
    })
}

/// The character content of a leaf element (borrowed when it is one piece); opaque parts must
/// be UTF-8.
pub(super) fn leaf_text<'e>(el: &'e Element<'_>) -> Result<Cow<'e, str>> {
    if let [Node::Text(text)] = el.nodes.as_slice() {
        return Ok(Cow::Borrowed(text));
    }
    let content = data(el).map_err(|_| DecodeError::UnexpectedElement {
        element: el.tag.name(),
        offset: el.offset,
    })?;
    match content {
        Data::Text(text) => Ok(Cow::Owned(text)),
        Data::Opaque(bytes) => {
            String::from_utf8(bytes)
                .map(Cow::Owned)
                .map_err(|err| DecodeError::BadValue {
                    element: el.tag.name(),
                    value: String::from_utf8_lossy(err.as_bytes()).into_owned(),
                    expected: "UTF-8 text",
                    offset: el.offset,
                })
        }
    }
}

/// The text of a leaf element, without surrounding whitespace (which carries no meaning in
/// identifiers, URIs, names and numbers).
pub(super) fn token(el: &Element) -> Result<String> {
    Ok(trim(&leaf_text(el)?).to_owned())
}

/// A decimal number without sign.
pub(super) fn number<T: FromStr>(el: &Element) -> Result<T> {
    let text = leaf_text(el)?;
    let digits = trim(&text);
    let parsed = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    };
    parsed.ok_or_else(|| DecodeError::BadValue {
        element: el.tag.name(),
        value: digits.to_owned(),
        expected: "an unsigned decimal number in range",
        offset: el.offset,
    })
}

pub(super) fn trim(text: &str) -> &str {
    text.trim_matches(is_xml_whitespace_char)
}

/// An empty element such as `<Final/>`: present means true.
pub(super) fn flag(el: &Element) -> Result<bool> {
    for node in &el.nodes {
        match node {
            Node::Text(text) if is_xml_whitespace(text) => {}
            Node::Element(child) => return Err(not_allowed(el, child)),
            Node::Text(_) | Node::Opaque(_) => {
                return Err(DecodeError::UnexpectedText {
                    parent: el.tag.name(),
                    offset: el.offset,
                })
            }
        }
    }
    Ok(true)
}

pub(super) fn set<T>(
    slot: &mut Option<T>,
    value: T,
    parent: &Element,
    child: &Element,
) -> Result<()> {
    if slot.is_some() {
        return Err(DecodeError::Duplicate {
            parent: parent.tag.name(),
            name: child.tag.name(),
            offset: child.offset,
        });
    }
    *slot = Some(value);
    Ok(())
}

pub(super) fn required<T>(slot: Option<T>, parent: &Element, tag: Tag) -> Result<T> {
    slot.ok_or_else(|| missing(parent, tag.name()))
}

pub(super) fn at_least_one(items: Vec<Item>, parent: &Element) -> Result<Vec<Item>> {
    if items.is_empty() {
        Err(missing(parent, Tag::Item.name()))
    } else {
        Ok(items)
    }
}

pub(super) fn missing(parent: &Element, name: &'static str) -> DecodeError {
    DecodeError::Missing {
        parent: parent.tag.name(),
        name,
        offset: parent.offset,
    }
}

pub(super) fn not_allowed(parent: &Element, child: &Element) -> DecodeError {
    if child.tag.used_by_dm() {
        DecodeError::NotAllowed {
            parent: parent.tag.name(),
            name: child.tag.name(),
            offset: child.offset,
        }
    } else {
        DecodeError::Unsupported {
            parent: parent.tag.name(),
            name: child.tag.name().to_owned(),
            offset: child.offset,
        }
    }
}

pub(super) fn out_of_order(parent: &Element, child: &Element, rule: &'static str) -> DecodeError {
    DecodeError::OutOfOrder {
        parent: parent.tag.name(),
        name: child.tag.name(),
        rule,
        offset: child.offset,
    }
}

pub(super) fn is_xml_whitespace_char(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

pub(super) fn is_xml_whitespace(text: &str) -> bool {
    text.chars().all(is_xml_whitespace_char)
}
