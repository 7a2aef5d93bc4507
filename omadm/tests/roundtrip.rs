//! Property tests: any valid message survives model → XML → model and model → WBXML → model, and
//! the two encodings agree with each other; any valid document, its elements in any order the
//! decoders accept, converts XML → WBXML → XML and WBXML → XML → WBXML element for element.

use std::collections::{HashMap, VecDeque};

use omadm::codec::{Codec, DocContent, DocElement, Document, Encoding, WbxmlCodec, XmlCodec};
use omadm::model::{
    Alert, AlertCode, Chal, Command, CommandKind, Container, Cred, Data, Exec, Item, ItemCommand,
    Location, Meta, ProtoVersion, Results, Status, SyncBody, SyncHdr, SyncMl,
};
use omadm::status::StatusCode;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// Identifiers, URIs, names: no surrounding whitespace (the decoders trim it), markup characters
/// and non-ASCII included.
fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9./:?=_&<>'\"%é値-]{0,16}"
}

/// Character data: any XML character, including whitespace, CR and markup.
fn text() -> impl Strategy<Value = String> {
    "[ -~\t\r\né値\u{10FFFF}]{0,24}"
}

/// `Data`: text, or opaque bytes that are UTF-8 (what both encodings can carry).
fn data() -> BoxedStrategy<Data> {
    prop_oneof![
        text().prop_map(Data::Text),
        text().prop_map(|text| Data::Opaque(text.into_bytes())),
    ]
    .boxed()
}

fn location() -> BoxedStrategy<Location> {
    (token(), option::of(token()))
        .prop_map(|(loc_uri, loc_name)| Location { loc_uri, loc_name })
        .boxed()
}

fn meta() -> BoxedStrategy<Meta> {
    (
        (
            option::of(token()),
            option::of(token()),
            option::of(token()),
        ),
        (
            option::of(any::<u64>()),
            option::of(token()),
            option::of(data()),
        ),
        (
            option::of(any::<u64>()),
            option::of(any::<u64>()),
            vec(token(), 0..2),
        ),
    )
        .prop_map(
            |(
                (format, type_, mark),
                (size, version, next_nonce),
                (max_msg_size, max_obj_size, emi),
            )| Meta {
                format,
                type_,
                mark,
                size,
                version,
                next_nonce,
                max_msg_size,
                max_obj_size,
                emi,
            },
        )
        .boxed()
}

fn cred() -> BoxedStrategy<Cred> {
    (option::of(meta()), data())
        .prop_map(|(meta, data)| Cred { meta, data })
        .boxed()
}

fn item() -> BoxedStrategy<Item> {
    (
        option::of(location()),
        option::of(location()),
        option::of(meta()),
        option::of(data()),
        any::<bool>(),
    )
        .prop_map(|(target, source, meta, data, more_data)| Item {
            target,
            source,
            meta,
            data,
            more_data,
        })
        .boxed()
}

fn item_command() -> BoxedStrategy<ItemCommand> {
    (
        any::<u32>(),
        any::<bool>(),
        option::of(cred()),
        option::of(meta()),
        vec(item(), 1..3),
    )
        .prop_map(|(cmd_id, no_resp, cred, meta, items)| ItemCommand {
            cmd_id,
            no_resp,
            cred,
            meta,
            items,
        })
        .boxed()
}

fn exec() -> BoxedStrategy<Exec> {
    (
        (any::<u32>(), any::<bool>(), option::of(cred())),
        (option::of(meta()), option::of(token()), item()),
    )
        .prop_map(|((cmd_id, no_resp, cred), (meta, correlator, item))| Exec {
            cmd_id,
            no_resp,
            cred,
            meta,
            correlator,
            item,
        })
        .boxed()
}

fn alert() -> BoxedStrategy<Alert> {
    (
        (any::<u32>(), any::<bool>(), option::of(cred())),
        (any::<u16>(), option::of(token()), vec(item(), 0..3)),
    )
        .prop_map(
            |((cmd_id, no_resp, cred), (code, correlator, items))| Alert {
                cmd_id,
                no_resp,
                cred,
                data: AlertCode(code),
                correlator,
                items,
            },
        )
        .boxed()
}

fn results() -> BoxedStrategy<Results> {
    (
        (any::<u32>(), option::of(any::<u32>()), any::<u32>()),
        (option::of(meta()), option::of(token()), option::of(token())),
        vec(item(), 1..3),
    )
        .prop_map(
            |((cmd_id, msg_ref, cmd_ref), (meta, target_ref, source_ref), items)| Results {
                cmd_id,
                msg_ref,
                cmd_ref,
                meta,
                target_ref,
                source_ref,
                items,
            },
        )
        .boxed()
}

fn status() -> BoxedStrategy<Status> {
    (
        (any::<u32>(), any::<u32>(), any::<u32>()),
        (
            proptest::sample::select(CommandKind::ALL.to_vec()),
            vec(token(), 0..3),
            vec(token(), 0..3),
        ),
        (
            option::of(cred()),
            option::of(meta().prop_map(|meta| Chal { meta })),
            any::<u16>(),
            vec(item(), 0..2),
        ),
    )
        .prop_map(
            |(
                (cmd_id, msg_ref, cmd_ref),
                (cmd, target_ref, source_ref),
                (cred, chal, code, items),
            )| {
                Status {
                    cmd_id,
                    msg_ref,
                    cmd_ref,
                    cmd,
                    target_ref,
                    source_ref,
                    cred,
                    chal,
                    data: StatusCode(code),
                    items,
                }
            },
        )
        .boxed()
}

/// Commands that may stand anywhere (no groups, no Status/Results).
fn simple_command() -> BoxedStrategy<Command> {
    prop_oneof![
        item_command().prop_map(Command::Add),
        item_command().prop_map(Command::Copy),
        item_command().prop_map(Command::Delete),
        item_command().prop_map(Command::Get),
        item_command().prop_map(Command::Replace),
        exec().prop_map(Command::Exec),
        alert().prop_map(Command::Alert),
    ]
    .boxed()
}

fn group_header() -> BoxedStrategy<(u32, bool, Option<Meta>)> {
    (any::<u32>(), any::<bool>(), option::of(meta())).boxed()
}

fn container(
    commands: Vec<Command>,
    (cmd_id, no_resp, meta): (u32, bool, Option<Meta>),
) -> Container {
    Container {
        cmd_id,
        no_resp,
        meta,
        commands,
    }
}

/// A Sequence of simple commands.
fn sequence() -> BoxedStrategy<Command> {
    (vec(simple_command(), 1..3), group_header())
        .prop_map(|(commands, header)| Command::Sequence(container(commands, header)))
        .boxed()
}

/// An Atomic of simple commands and Sequences.
fn atomic() -> BoxedStrategy<Command> {
    (
        vec(prop_oneof![3 => simple_command(), 1 => sequence()], 1..3),
        group_header(),
    )
        .prop_map(|(commands, header)| Command::Atomic(container(commands, header)))
        .boxed()
}

fn body_command() -> BoxedStrategy<Command> {
    prop_oneof![
        4 => simple_command(),
        1 => results().prop_map(Command::Results),
        2 => status().prop_map(Command::Status),
        1 => atomic(),
        1 => sequence(),
        1 => (vec(atomic(), 1..2), group_header())
            .prop_map(|(commands, header)| Command::Sequence(container(commands, header))),
    ]
    .boxed()
}

fn sync_hdr() -> BoxedStrategy<SyncHdr> {
    (
        (
            prop_oneof![Just(ProtoVersion::Dm12), Just(ProtoVersion::Dm13)],
            token(),
            any::<u32>(),
            location(),
            location(),
        ),
        (
            option::of(token()),
            any::<bool>(),
            option::of(cred()),
            option::of(meta()),
        ),
    )
        .prop_map(
            |((ver_proto, session_id, msg_id, target, source), (resp_uri, no_resp, cred, meta))| {
                SyncHdr {
                    ver_proto,
                    session_id,
                    msg_id,
                    target,
                    source,
                    resp_uri,
                    no_resp,
                    cred,
                    meta,
                }
            },
        )
        .boxed()
}

fn message() -> BoxedStrategy<SyncMl> {
    (sync_hdr(), vec(body_command(), 0..5), any::<bool>())
        .prop_map(|(hdr, commands, final_)| SyncMl::new(hdr, SyncBody { commands, final_ }))
        .boxed()
}

/// The next number of a xorshift generator (the shuffle needs no better).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Which siblings keep their relative order under [`Order::SameMeaning`]: the commands of a body
/// or group, and each repeated element (items, `TargetRef`s, `EMI`s...).
fn order_group(name: &'static str) -> &'static str {
    match name {
        "Add" | "Alert" | "Atomic" | "Copy" | "Delete" | "Exec" | "Get" | "Replace" | "Results"
        | "Sequence" | "Status" => "command",
        name => name,
    }
}

/// How [`shuffled`] reorders.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Any order the decoders accept (items and commands too: a converter keeps them all).
    Any,
    /// Only where order carries no meaning: distinct fields and MetInf children.
    SameMeaning,
}

/// `element` with the children of every element reordered at random, except those of `SyncML`
/// and `SyncBody`, whose order the decoders check: still a valid message, its fields, items and
/// MetInf children in orders the DTD does not give them.
fn shuffled(element: &DocElement, state: &mut u64, order: Order) -> DocElement {
    let content = match element.content() {
        DocContent::Elements(children) => {
            let children: Vec<DocElement> = children
                .iter()
                .map(|child| shuffled(child, state, order))
                .collect();
            if matches!(element.name(), "SyncML" | "SyncBody") {
                DocContent::Elements(children)
            } else {
                // Position i gets the child first at places[i].
                let mut places: Vec<usize> = (0..children.len()).collect();
                for i in (1..places.len()).rev() {
                    let j = usize::try_from(next(state) % (i as u64 + 1)).unwrap();
                    places.swap(i, j);
                }
                if order == Order::SameMeaning {
                    places = in_group_order(&children, &places);
                }
                let mut taken: Vec<Option<DocElement>> = children.into_iter().map(Some).collect();
                DocContent::Elements(places.iter().map(|&p| taken[p].take().unwrap()).collect())
            }
        }
        leaf => leaf.clone(),
    };
    DocElement::new(element.name(), content).unwrap()
}

/// `places` with the members of each [`order_group`] put back in their first order: the groups
/// still interleave as `places` says.
fn in_group_order(children: &[DocElement], places: &[usize]) -> Vec<usize> {
    let mut queues: HashMap<&str, VecDeque<usize>> = HashMap::new();
    for (index, child) in children.iter().enumerate() {
        queues
            .entry(order_group(child.name()))
            .or_default()
            .push_back(index);
    }
    places
        .iter()
        .map(|&place| {
            let group = order_group(children[place].name());
            queues.get_mut(group).and_then(VecDeque::pop_front).unwrap()
        })
        .collect()
}

/// A random valid document: `msg` in XML, its elements reordered with `seed`.
fn document(msg: &SyncMl, seed: u64, order: Order) -> Document {
    let xml = XmlCodec::default().encode(msg).unwrap();
    let in_dtd_order = Document::decode_as(Encoding::Xml, &xml).unwrap();
    let mut state = seed | 1;
    Document::new(shuffled(in_dtd_order.root(), &mut state, order)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn conversion_xml_to_wbxml_to_xml_keeps_every_element_in_order(
        msg in message(),
        seed in any::<u64>(),
    ) {
        let original = document(&msg, seed, Order::Any);
        let xml = original.encode_pretty_xml().unwrap();
        let (from, read) = Document::decode(&xml).unwrap();
        prop_assert_eq!(from, Encoding::Xml);
        prop_assert_eq!(&read, &original);
        let wbxml = read.encode(Encoding::Wbxml).unwrap();
        let (from, as_wbxml) = Document::decode(&wbxml).unwrap();
        prop_assert_eq!(from, Encoding::Wbxml);
        prop_assert_eq!(&as_wbxml, &original);
        let back = as_wbxml.encode(Encoding::Xml).unwrap();
        prop_assert_eq!(Document::decode_as(Encoding::Xml, &back).unwrap(), original);
    }

    #[test]
    fn conversion_wbxml_to_xml_to_wbxml_keeps_every_element_in_order(
        msg in message(),
        seed in any::<u64>(),
    ) {
        let original = document(&msg, seed, Order::Any);
        let wbxml = original.encode(Encoding::Wbxml).unwrap();
        let read = Document::decode_as(Encoding::Wbxml, &wbxml).unwrap();
        prop_assert_eq!(&read, &original);
        let xml = read.encode_pretty_xml().unwrap();
        let as_xml = Document::decode_as(Encoding::Xml, &xml).unwrap();
        prop_assert_eq!(&as_xml, &original);
        let back = as_xml.encode(Encoding::Wbxml).unwrap();
        prop_assert_eq!(&Document::decode_as(Encoding::Wbxml, &back).unwrap(), &original);
        prop_assert_eq!(back, wbxml, "byte for byte");
    }

    #[test]
    fn a_document_means_what_its_message_means(msg in message(), seed in any::<u64>()) {
        prop_assert_eq!(document(&msg, seed, Order::SameMeaning).message().unwrap(), msg);
    }

    #[test]
    fn model_survives_xml(msg in message()) {
        let codec = XmlCodec::default();
        let bytes = codec.encode(&msg).unwrap();
        prop_assert_eq!(codec.decode(&bytes).unwrap(), msg);
    }

    #[test]
    fn model_survives_pretty_xml(msg in message()) {
        let codec = XmlCodec::pretty();
        let bytes = codec.encode(&msg).unwrap();
        prop_assert_eq!(codec.decode(&bytes).unwrap(), msg);
    }

    #[test]
    fn model_survives_wbxml(msg in message()) {
        let codec = WbxmlCodec::default();
        let bytes = codec.encode(&msg).unwrap();
        prop_assert_eq!(codec.decode(&bytes).unwrap(), msg);
    }

    #[test]
    fn wbxml_carries_any_opaque_bytes(bytes in vec(any::<u8>(), 0..64), uri in token()) {
        let msg = SyncMl::new(
            SyncHdr::new(ProtoVersion::Dm12, "1", 1, "s", "c"),
            SyncBody::final_with(vec![Command::Replace(ItemCommand::new(
                1,
                vec![Item::target(uri).with_data(Data::Opaque(bytes.clone()))],
            ))]),
        );
        let codec = WbxmlCodec::default();
        let decoded = codec.decode(&codec.encode(&msg).unwrap()).unwrap();
        let Command::Replace(replace) = &decoded.body.commands[0] else {
            panic!("not a Replace: {decoded:?}");
        };
        prop_assert_eq!(replace.items[0].data.as_ref().map(Data::as_bytes), Some(&bytes[..]));
    }

    #[test]
    fn xml_and_wbxml_agree(msg in message()) {
        let from_xml = XmlCodec::default().decode(&XmlCodec::default().encode(&msg).unwrap()).unwrap();
        let from_wbxml = WbxmlCodec::default().decode(&WbxmlCodec::default().encode(&msg).unwrap()).unwrap();
        prop_assert_eq!(from_xml, from_wbxml);
    }
}
