//! Golden DM messages: hand-written XML, the WBXML our encoder makes of it (byte-exact
//! regression), and the WBXML libwbxml's `xml2wbxml` made of it (an independent encoder that uses
//! a string table and OPAQUE data) must all decode to the same model.

use std::path::PathBuf;

use omadm::codec::{Codec, Encoding, WbxmlCodec, XmlCodec};
use omadm::model::{
    format, Alert, AlertCode, Command, CommandKind, Cred, Data, Item, ItemCommand, Location, Meta,
    ProtoVersion, SyncBody, SyncHdr, SyncMl,
};
use omadm::status::StatusCode;

const GOLDEN: [&str; 4] = [
    "pkg1_client_init",
    "pkg2_server_mgmt",
    "pkg3_client_results",
    "generic_alert_1226",
];

fn golden(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

fn decode_xml(name: &str) -> SyncMl {
    XmlCodec::default()
        .decode(&golden(&format!("{name}.xml")))
        .unwrap_or_else(|err| panic!("{name}.xml: {err}"))
}

#[test]
fn every_golden_encoding_decodes_to_the_same_model() {
    for name in GOLDEN {
        let from_xml = decode_xml(name);
        for wbxml in [format!("{name}.wbxml"), format!("{name}.libwbxml.wbxml")] {
            let from_wbxml = WbxmlCodec::default()
                .decode(&golden(&wbxml))
                .unwrap_or_else(|err| panic!("{wbxml}: {err}"));
            assert_eq!(from_wbxml, from_xml, "{wbxml} differs from {name}.xml");
        }
    }
}

#[test]
fn our_wbxml_of_every_golden_message_is_byte_exact() {
    for name in GOLDEN {
        let encoded = WbxmlCodec::default().encode(&decode_xml(name)).unwrap();
        assert_eq!(encoded, golden(&format!("{name}.wbxml")), "{name}");
    }
}

#[test]
fn golden_messages_survive_xml_and_pretty_xml_reencoding() {
    for name in GOLDEN {
        let msg = decode_xml(name);
        for codec in [XmlCodec::default(), XmlCodec::pretty()] {
            let xml = codec.encode(&msg).unwrap();
            assert_eq!(codec.decode(&xml).unwrap(), msg, "{name}");
        }
    }
}

#[test]
fn libwbxml_sends_data_as_opaque_which_equals_our_text() {
    let msg = WbxmlCodec::default()
        .decode(&golden("pkg1_client_init.libwbxml.wbxml"))
        .unwrap();
    let Command::Replace(replace) = &msg.body.commands[1] else {
        panic!(
            "second command is not a Replace: {:?}",
            msg.body.commands[1]
        );
    };
    let data = replace.items[2].data.as_ref().unwrap();
    assert!(matches!(data, Data::Opaque(_)), "{data:?}");
    assert_eq!(data, &Data::text("virmo-agent & vmm 0.1"));
}

#[test]
fn package_1_decodes_to_the_expected_model() {
    let devinfo = |uri: &str, value: &str| {
        Item::source(uri)
            .with_meta(Meta::with_format(format::CHR))
            .with_data(value)
    };
    let device = "urn:uuid:5f1c3a9e-0c77-4a52-9d0f-6a3b2e7d9c11";
    let mut hdr = SyncHdr::new(
        ProtoVersion::Dm12,
        "1A2F",
        1,
        "https://dm.example.net/virmo",
        device,
    )
    .with_cred(Cred::new(
        "syncml:auth-md5",
        format::B64,
        "Zz6EivR3yeaaENcRN6lpAQ==",
    ))
    .with_meta(Meta::max_sizes(65536, Some(1_048_576)));
    hdr.source = Location::uri(device).with_name("agent-7");
    let expected = SyncMl::new(
        hdr,
        SyncBody::final_with(vec![
            Command::Alert(Alert::new(1, AlertCode::CLIENT_INITIATED_MGMT)),
            Command::Replace(ItemCommand::new(
                2,
                vec![
                    devinfo("./DevInfo/DevId", device),
                    devinfo("./DevInfo/Man", "virmo"),
                    devinfo("./DevInfo/Mod", "virmo-agent & vmm 0.1"),
                    devinfo("./DevInfo/DmV", "1.3"),
                    devinfo("./DevInfo/Lang", "en-US"),
                ],
            )),
        ]),
    );
    assert_eq!(decode_xml("pkg1_client_init"), expected);
}

#[test]
fn package_2_holds_every_management_command_in_order() {
    let msg = decode_xml("pkg2_server_mgmt");
    let kinds: Vec<_> = msg.body.commands.iter().map(Command::kind).collect();
    use CommandKind::*;
    assert_eq!(
        kinds,
        [Status, Status, Status, Get, Replace, Add, Exec, Delete, Atomic, Sequence]
    );
    let Command::Status(hdr_status) = &msg.body.commands[0] else {
        unreachable!()
    };
    assert_eq!(hdr_status.data, StatusCode::AUTHENTICATION_ACCEPTED);
    let nonce = hdr_status.chal.as_ref().unwrap().meta.next_nonce.as_ref();
    assert_eq!(nonce, Some(&Data::text("ZG9uJ3QgcmV1c2UgbWU=")));
    let Command::Exec(exec) = &msg.body.commands[6] else {
        unreachable!()
    };
    assert_eq!(exec.correlator.as_deref(), Some("op-42"));
    assert_eq!(
        exec.item.target_uri(),
        Some("./VirMO/VM/work/Operations/Suspend")
    );
    let Command::Atomic(atomic) = &msg.body.commands[8] else {
        unreachable!()
    };
    let Command::Add(add) = &atomic.commands[1] else {
        unreachable!()
    };
    assert_eq!(add.items[0].data, Some(Data::text("web <frontend>")));
    let Command::Sequence(sequence) = &msg.body.commands[9] else {
        unreachable!()
    };
    assert!(sequence.no_resp);
    assert_eq!(sequence.commands.len(), 2);
    assert!(msg.body.final_);
}

#[test]
fn generic_alert_carries_type_format_mark_source_data_and_correlator() {
    let msg = decode_xml("generic_alert_1226");
    assert_eq!(msg.hdr.ver_proto, ProtoVersion::Dm13);
    let Command::Alert(alert) = &msg.body.commands[1] else {
        panic!("not an alert: {:?}", msg.body.commands[1]);
    };
    assert_eq!(alert.data, AlertCode::GENERIC_ALERT);
    assert_eq!(alert.correlator.as_deref(), Some("op-42"));
    let item = &alert.items[0];
    assert_eq!(
        item.source_uri(),
        Some("./VirMO/VM/work/Operations/Suspend")
    );
    let meta = item.meta.as_ref().unwrap();
    assert_eq!(
        meta.type_.as_deref(),
        Some("urn:oma:at:virmo:1.0:OperationComplete")
    );
    assert_eq!(meta.format.as_deref(), Some("int"));
    assert_eq!(meta.mark.as_deref(), Some("informational"));
    assert_eq!(item.data, Some(Data::text("1200")));
}

#[test]
fn encodings_are_found_by_sniffing_the_golden_files() {
    for name in GOLDEN {
        let (encoding, msg) = omadm::codec::decode_any(&golden(&format!("{name}.wbxml"))).unwrap();
        assert_eq!(encoding, Encoding::Wbxml);
        let (encoding, from_xml) =
            omadm::codec::decode_any(&golden(&format!("{name}.xml"))).unwrap();
        assert_eq!(encoding, Encoding::Xml);
        assert_eq!(msg, from_xml);
    }
}

#[test]
fn our_wbxml_sends_b64_values_as_opaque_and_other_text_inline() {
    let msg = WbxmlCodec::default()
        .decode(&golden("pkg2_server_mgmt.wbxml"))
        .unwrap();
    let Command::Add(add) = &msg.body.commands[5] else {
        panic!("sixth command is not an Add: {:?}", msg.body.commands[5]);
    };
    // Item 2 has Format b64: OPAQUE on the wire, the same value as the XML text.
    assert!(
        matches!(add.items[1].data, Some(Data::Opaque(_))),
        "{:?}",
        add.items[1].data
    );
    assert_eq!(add.items[1].data, Some(Data::text("aGVsbG8gd29ybGQh")));
    let Command::Replace(replace) = &msg.body.commands[4] else {
        panic!("fifth command is not a Replace: {:?}", msg.body.commands[4]);
    };
    // Format int: an inline string.
    assert!(
        matches!(replace.items[0].data, Some(Data::Text(_))),
        "{:?}",
        replace.items[0].data
    );
}
