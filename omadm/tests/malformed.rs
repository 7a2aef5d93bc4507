//! Every class of bad input gets its typed error and the status a strict DM server answers.

use omadm::codec::{Codec, DecodeError, EncodeError, Limits, WbxmlCodec, XmlCodec};
use omadm::model::{
    Command, Container, Data, Item, ItemCommand, ProtoVersion, Status, SyncBody, SyncHdr, SyncMl,
};
use omadm::status::StatusCode;

const VALID: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<SyncML xmlns="SYNCML:SYNCML1.2">
<SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>7</SessionID><MsgID>1</MsgID>
<Target><LocURI>https://dm</LocURI></Target><Source><LocURI>IMEI:1</LocURI></Source>
<Meta><MaxMsgSize xmlns="syncml:metinf">8192</MaxMsgSize></Meta></SyncHdr>
<SyncBody>
<Get><CmdID>2</CmdID><Item><Target><LocURI>./DevInfo/DevId</LocURI></Target></Item></Get>
<Final/>
</SyncBody>
</SyncML>"#;

fn xml(from: &str, to: &str) -> Result<SyncMl, DecodeError> {
    assert!(VALID.contains(from), "template lacks {from:?}");
    XmlCodec::default().decode(VALID.replacen(from, to, 1).as_bytes())
}

/// Asserts `result` failed with status `status` and an error matching `pattern`; `case` names
/// the input in a table of them.
macro_rules! rejects {
    ($result:expr, $status:expr, $pattern:pat) => {
        rejects!($result, $status, $pattern, "")
    };
    ($result:expr, $status:expr, $pattern:pat, $case:expr) => {{
        let result = $result;
        match &result {
            Err(err @ $pattern) => assert_eq!(err.status_code(), $status, "{err} {:?}", $case),
            other => panic!(
                "expected {}, got {other:?} {:?}",
                stringify!($pattern),
                $case
            ),
        }
    }};
}

const BAD_REQUEST: StatusCode = StatusCode::BAD_REQUEST;

#[test]
fn the_template_is_valid() {
    let msg = XmlCodec::default().decode(VALID.as_bytes()).unwrap();
    assert_eq!(msg.body.commands.len(), 1);
}

#[test]
fn xml_that_is_not_well_formed_is_400() {
    for (from, to) in [
        ("</Get>", ""),
        ("</Get>", "</Add>"),
        ("</SyncML>", ""),
        ("2</CmdID>", "&foo;</CmdID>"),
        ("2</CmdID>", "&#0;</CmdID>"),
        ("2</CmdID>", "&#1;</CmdID>"),
        ("<Final/>", "<Final a='1'/>"),
        ("<SyncML ", "junk<SyncML "),
        ("./DevInfo", "./Dev\u{1}Info"),
        ("</Item>", "<Data><![CDATA[\u{8}]]></Data></Item>"),
    ] {
        rejects!(xml(from, to), BAD_REQUEST, DecodeError::Xml { .. }, to);
    }
    let mut bad_utf8 = VALID.as_bytes().to_vec();
    let at = VALID.find("./DevInfo").unwrap();
    bad_utf8[at] = 0xFF;
    rejects!(
        XmlCodec::default().decode(&bad_utf8),
        BAD_REQUEST,
        DecodeError::Xml { .. }
    );
}

#[test]
fn trailing_garbage_is_400_but_trailing_whitespace_and_comments_are_fine() {
    let with = |tail: &str| XmlCodec::default().decode(format!("{VALID}{tail}").as_bytes());
    for tail in ["x", "<SyncML/>", "<![CDATA[x]]>"] {
        rejects!(
            with(tail),
            BAD_REQUEST,
            DecodeError::TrailingData { .. },
            tail
        );
    }
    assert!(with("\n  <!-- done -->\n").is_ok());
}

#[test]
fn unknown_elements_are_400_and_ds_only_syncml_is_406() {
    rejects!(
        xml("<Final/>", "<Foo/><Final/>"),
        BAD_REQUEST,
        DecodeError::UnknownElement { .. }
    );
    for (from, to) in [
        ("<Final/>", "<Sync><CmdID>9</CmdID></Sync><Final/>"),
        ("<CmdID>2</CmdID>", "<CmdID>2</CmdID><Lang>en</Lang>"),
        ("<MaxMsgSize", "<Anchor xmlns='syncml:metinf'/><MaxMsgSize"),
        ("</Target></Item>", "</Target><Data><DevInf/></Data></Item>"),
    ] {
        rejects!(
            xml(from, to),
            StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED,
            DecodeError::Unsupported { .. },
            to
        );
    }
    // A known element where it does not belong.
    rejects!(
        xml("<Final/>", "<LocURI>x</LocURI><Final/>"),
        BAD_REQUEST,
        DecodeError::NotAllowed { .. }
    );
}

#[test]
fn missing_required_elements_are_400() {
    rejects!(
        xml("<CmdID>2</CmdID>", ""),
        BAD_REQUEST,
        DecodeError::Missing { name: "CmdID", .. }
    );
    rejects!(
        xml("<MsgID>1</MsgID>", ""),
        BAD_REQUEST,
        DecodeError::Missing { name: "MsgID", .. }
    );
    rejects!(
        xml(
            "<Item><Target><LocURI>./DevInfo/DevId</LocURI></Target></Item>",
            ""
        ),
        BAD_REQUEST,
        DecodeError::Missing { name: "Item", .. }
    );
    rejects!(
        xml("<LocURI>IMEI:1</LocURI>", ""),
        BAD_REQUEST,
        DecodeError::Missing { name: "LocURI", .. }
    );
    rejects!(
        xml("<Final/>", "<Atomic><CmdID>3</CmdID></Atomic><Final/>"),
        BAD_REQUEST,
        DecodeError::Missing { .. }
    );
    rejects!(
        xml("<Final/>", "<Status><CmdID>3</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd></Status><Final/>"),
        BAD_REQUEST,
        DecodeError::Missing { name: "Data", .. }
    );
}

#[test]
fn duplicates_and_order_violations_are_400() {
    rejects!(
        xml("<CmdID>2</CmdID>", "<CmdID>2</CmdID><CmdID>3</CmdID>"),
        BAD_REQUEST,
        DecodeError::Duplicate { name: "CmdID", .. }
    );
    rejects!(
        xml("<MaxMsgSize", "<MaxObjSize xmlns='syncml:metinf'>1</MaxObjSize><MaxObjSize xmlns='syncml:metinf'>2</MaxObjSize><MaxMsgSize"),
        BAD_REQUEST,
        DecodeError::Duplicate { name: "MaxObjSize", .. }
    );
    rejects!(
        xml(
            "<Final/>\n</SyncBody>",
            "<Final/><Get><CmdID>3</CmdID><Item/></Get></SyncBody>"
        ),
        BAD_REQUEST,
        DecodeError::OutOfOrder { name: "Get", .. }
    );
    let body_first = {
        let start = VALID.find("<SyncHdr>").unwrap();
        let end = VALID.find("<SyncBody>").unwrap();
        let body_end = VALID.find("</SyncBody>").unwrap() + "</SyncBody>".len();
        format!(
            "{}{}{}{}",
            &VALID[..start],
            &VALID[end..body_end],
            &VALID[start..end],
            &VALID[body_end..]
        )
    };
    rejects!(
        XmlCodec::default().decode(body_first.as_bytes()),
        BAD_REQUEST,
        DecodeError::OutOfOrder {
            name: "SyncBody",
            ..
        }
    );
    // Field order inside an element is free, as in the DM specification's own examples.
    assert!(xml("<CmdID>2</CmdID><Item>", "<Item>").is_err());
    let moved = VALID.replacen("<CmdID>2</CmdID>", "", 1).replacen(
        "</Item></Get>",
        "</Item><CmdID>2</CmdID></Get>",
        1,
    );
    assert!(XmlCodec::default().decode(moved.as_bytes()).is_ok());
}

#[test]
fn text_where_elements_belong_is_400() {
    rejects!(
        xml("<Get>", "<Get>oops"),
        BAD_REQUEST,
        DecodeError::UnexpectedText { parent: "Get", .. }
    );
    rejects!(
        xml("<Final/>", "<Final>yes</Final>"),
        BAD_REQUEST,
        DecodeError::UnexpectedText { .. }
    );
    rejects!(
        xml(
            "<LocURI>https://dm</LocURI>",
            "<LocURI>https://<MsgID>1</MsgID></LocURI>"
        ),
        BAD_REQUEST,
        DecodeError::UnexpectedElement {
            element: "LocURI",
            ..
        }
    );
}

#[test]
fn bad_numbers_are_400() {
    for bad in ["abc", "-1", "+1", "1.0", "", "4294967296", "0x10"] {
        rejects!(
            xml("<CmdID>2</CmdID>", &format!("<CmdID>{bad}</CmdID>")),
            BAD_REQUEST,
            DecodeError::BadValue {
                element: "CmdID",
                ..
            }
        );
    }
    rejects!(
        xml("8192</MaxMsgSize>", "18446744073709551616</MaxMsgSize>"),
        BAD_REQUEST,
        DecodeError::BadValue {
            element: "MaxMsgSize",
            ..
        }
    );
    rejects!(
        xml(
            "<Final/>",
            "<Alert><CmdID>3</CmdID><Data>70000</Data></Alert><Final/>"
        ),
        BAD_REQUEST,
        DecodeError::BadValue {
            element: "Data",
            ..
        }
    );
    rejects!(
        xml("<Final/>", "<Status><CmdID>3</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>Sync</Cmd><Data>200</Data></Status><Final/>"),
        BAD_REQUEST,
        DecodeError::BadValue { element: "Cmd", .. }
    );
    // Whitespace around a number is not part of it.
    assert!(xml("<CmdID>2</CmdID>", "<CmdID>\n  2\n</CmdID>").is_ok());
}

#[test]
fn unsupported_versions_get_505_and_513() {
    rejects!(
        xml("<VerDTD>1.2</VerDTD>", "<VerDTD>1.1</VerDTD>"),
        StatusCode(505),
        DecodeError::UnsupportedDtdVersion(_)
    );
    rejects!(
        xml("DM/1.2", "DM/1.1"),
        StatusCode(513),
        DecodeError::UnsupportedProtocolVersion(_)
    );
}

#[test]
fn content_that_is_not_syncml_12_is_415() {
    const UNSUPPORTED: StatusCode = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    rejects!(
        XmlCodec::default().decode(b"<html><body/></html>"),
        UNSUPPORTED,
        DecodeError::NotSyncMl { .. }
    );
    rejects!(
        XmlCodec::default().decode(b""),
        UNSUPPORTED,
        DecodeError::NotSyncMl { .. }
    );
    rejects!(
        xml("SYNCML:SYNCML1.2", "SYNCML:SYNCML1.1"),
        UNSUPPORTED,
        DecodeError::NotSyncMl { .. }
    );
    rejects!(
        xml("UTF-8", "ISO-8859-1"),
        UNSUPPORTED,
        DecodeError::UnsupportedCharset { .. }
    );
    rejects!(
        XmlCodec::default().decode(b"\xFF\xFE<\0S\0"),
        UNSUPPORTED,
        DecodeError::UnsupportedCharset { .. }
    );
    // A UTF-8 byte order mark before the declaration is fine.
    assert!(XmlCodec::default()
        .decode(format!("\u{FEFF}{VALID}").as_bytes())
        .is_ok());
    rejects!(
        omadm::codec::decode_any(b"\x7fELF"),
        UNSUPPORTED,
        DecodeError::NotSyncMl { .. }
    );
}

#[test]
fn namespaces_are_checked() {
    rejects!(
        xml("syncml:metinf", "urn:other"),
        BAD_REQUEST,
        DecodeError::WrongNamespace {
            name: "MaxMsgSize",
            ..
        }
    );
    rejects!(
        xml("<Final/>", "<Final xmlns='syncml:metinf'/>"),
        BAD_REQUEST,
        DecodeError::WrongNamespace { name: "Final", .. }
    );
    rejects!(
        xml("<Final/>", "<x:Final/>"),
        BAD_REQUEST,
        DecodeError::Xml { .. }
    );
    // MetInf elements that inherit the SyncML namespace, and prefixed SyncML, are accepted.
    assert!(xml(" xmlns=\"syncml:metinf\"", "").is_ok());
    assert!(xml("<Final/>", "<s:Final xmlns:s='SYNCML:SYNCML1.2'/>").is_ok());
}

#[test]
fn groups_and_status_are_only_where_dm_allows_them() {
    let get = "<Get><CmdID>9</CmdID><Item><Target><LocURI>./A</LocURI></Target></Item></Get>";
    rejects!(
        xml(
            "<Final/>",
            &format!(
                "<Sequence><CmdID>3</CmdID><Sequence><CmdID>4</CmdID>{get}</Sequence></Sequence><Final/>"
            )
        ),
        BAD_REQUEST,
        DecodeError::NotAllowed {
            parent: "Sequence",
            name: "Sequence",
            ..
        }
    );
    // The DTD allows an Atomic in an Atomic; the protocol refuses it (omadm::rules, status 500).
    assert!(xml(
        "<Final/>",
        &format!("<Atomic><CmdID>3</CmdID><Atomic><CmdID>4</CmdID>{get}</Atomic></Atomic><Final/>")
    )
    .is_ok());
    rejects!(
        xml("<Final/>", "<Sequence><CmdID>3</CmdID><Status><CmdID>4</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>200</Data></Status></Sequence><Final/>"),
        BAD_REQUEST,
        DecodeError::NotAllowed { parent: "Sequence", name: "Status", .. }
    );
    assert!(xml(
        "<Final/>",
        &format!(
            "<Sequence><CmdID>3</CmdID><Atomic><CmdID>4</CmdID>{get}</Atomic></Sequence><Final/>"
        )
    )
    .is_ok());
}

#[test]
fn limits_are_413() {
    const TOO_LARGE: StatusCode = StatusCode::REQUEST_ENTITY_TOO_LARGE;
    let small = Limits {
        max_message_bytes: 100,
        ..Limits::DEFAULT
    };
    rejects!(
        XmlCodec {
            limits: small,
            pretty: false
        }
        .decode(VALID.as_bytes()),
        TOO_LARGE,
        DecodeError::LimitExceeded { .. }
    );
    let nested = format!(
        "{}{}{}",
        "<Sequence><CmdID>1</CmdID>".repeat(40),
        "<Get><CmdID>2</CmdID><Item/></Get>",
        "</Sequence>".repeat(40)
    );
    rejects!(
        xml("<Final/>", &nested),
        TOO_LARGE,
        DecodeError::LimitExceeded { .. }
    );
    let few = Limits {
        max_elements: 10,
        ..Limits::DEFAULT
    };
    rejects!(
        XmlCodec {
            limits: few,
            pretty: false
        }
        .decode(VALID.as_bytes()),
        TOO_LARGE,
        DecodeError::LimitExceeded { .. }
    );
}

/// Our WBXML of the template, for patching.
fn wbxml() -> Vec<u8> {
    let msg = XmlCodec::default().decode(VALID.as_bytes()).unwrap();
    WbxmlCodec::default().encode(&msg).unwrap()
}

fn decode_wbxml(bytes: &[u8]) -> Result<SyncMl, DecodeError> {
    WbxmlCodec::default().decode(bytes)
}

/// The template's WBXML with the header replaced by `header`.
fn with_header(header: &[u8]) -> Vec<u8> {
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(&wbxml()[5..]);
    bytes
}

#[test]
fn wbxml_header_is_checked() {
    const UNSUPPORTED: StatusCode = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    assert_eq!(&wbxml()[..5], &[0x03, 0xA4, 0x01, 0x6A, 0x00]);
    assert!(
        decode_wbxml(&with_header(&[0x02, 0xA4, 0x01, 0x6A, 0x00])).is_ok(),
        "WBXML 1.2"
    );
    assert!(
        decode_wbxml(&with_header(&[0x03, 0x01, 0x6A, 0x00])).is_ok(),
        "public id 1 (unknown): the root tag says what it is"
    );
    rejects!(
        decode_wbxml(&with_header(&[0x03, 0x9F, 0x53, 0x6A, 0x00])),
        UNSUPPORTED,
        DecodeError::NotSyncMl { .. }
    );
    rejects!(
        decode_wbxml(&with_header(&[0x10, 0xA4, 0x01, 0x6A, 0x00])),
        UNSUPPORTED,
        DecodeError::NotSyncMl { .. }
    );
    rejects!(
        decode_wbxml(&with_header(&[0x03, 0xA4, 0x01, 0x04, 0x00])),
        UNSUPPORTED,
        DecodeError::UnsupportedCharset { .. }
    );
    // Public id given as a string in the string table.
    let mut header = vec![0x03, 0x00, 0x00, 0x6A, 0x1E];
    header.extend_from_slice(b"-//SYNCML//DTD SyncML 1.2//EN\0");
    assert!(decode_wbxml(&with_header(&header)).is_ok());
    let mut header = vec![0x03, 0x00, 0x00, 0x6A, 0x1E];
    header.extend_from_slice(b"-//SYNCML//DTD SyncML 1.1//EN\0");
    rejects!(
        decode_wbxml(&with_header(&header)),
        UNSUPPORTED,
        DecodeError::NotSyncMl { .. }
    );
    // String table longer than the input.
    rejects!(
        decode_wbxml(&[0x03, 0xA4, 0x01, 0x6A, 0x7F, 0x00]),
        BAD_REQUEST,
        DecodeError::Wbxml { .. }
    );
}

#[test]
fn wbxml_structure_errors_are_400() {
    let good = wbxml();
    // Truncated anywhere.
    for len in 0..good.len() {
        let result = decode_wbxml(&good[..len]);
        assert!(result.is_err(), "truncated to {len} bytes decoded");
        if len >= 5 {
            assert_eq!(
                result.unwrap_err().status_code(),
                BAD_REQUEST,
                "truncated to {len}"
            );
        }
    }
    let mut trailing = good.clone();
    trailing.push(0x01);
    rejects!(
        decode_wbxml(&trailing),
        BAD_REQUEST,
        DecodeError::TrailingData { .. }
    );

    let root = [0x03, 0xA4, 0x01, 0x6A, 0x00];
    let body = |tokens: &[u8]| {
        let mut bytes = root.to_vec();
        bytes.extend_from_slice(tokens);
        decode_wbxml(&bytes)
    };
    // Unknown token 0x30 on page 0.
    rejects!(
        body(&[0x6D, 0x70, 0x01, 0x01]),
        BAD_REQUEST,
        DecodeError::UnknownElement { .. }
    );
    let malformed: [&[u8]; 10] = [
        // SyncML with attributes.
        &[0xED, 0x01, 0x01],
        // SWITCH_PAGE to page 2.
        &[0x6D, 0x00, 0x02, 0x01],
        // LITERAL tag.
        &[0x6D, 0x04, 0x00, 0x01],
        // Extension token and PI.
        &[0x6D, 0xC0, 0x01],
        &[0x6D, 0x43, 0x01],
        // OPAQUE whose length overflows 32 bits, or runs past the end.
        &[0x6D, 0xC3, 0x90, 0x80, 0x80, 0x80, 0x00, 0x01],
        &[0x6D, 0xC3, 0x8F, 0xFF, 0xFF, 0xFF, 0x7F, 0x01],
        // STR_T with an empty string table; STR_I that is not UTF-8; END with nothing open.
        &[0x6D, 0x83, 0x00, 0x01],
        &[0x6D, 0x03, 0xFF, 0x00, 0x01],
        &[0x01],
    ];
    for tokens in malformed {
        rejects!(body(tokens), BAD_REQUEST, DecodeError::Wbxml { .. }, tokens);
    }
    // Root that is not SyncML.
    rejects!(
        body(&[0x6B, 0x01]),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        DecodeError::NotSyncMl { .. }
    );
    // DS-only element (Sync) in the body: 406.
    let sync = good
        .windows(2)
        .position(|w| w == [0x53, 0x4B])
        .expect("<Get><CmdID> in the template");
    let mut with_sync = good.clone();
    with_sync[sync] = 0x6A;
    rejects!(
        decode_wbxml(&with_sync),
        StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED,
        DecodeError::Unsupported { .. }
    );
}

#[test]
fn wbxml_depth_bombs_are_413() {
    let mut bytes = vec![0x03, 0xA4, 0x01, 0x6A, 0x00];
    bytes.extend(std::iter::repeat_n(0x6D, 100_000));
    rejects!(
        decode_wbxml(&bytes),
        StatusCode::REQUEST_ENTITY_TOO_LARGE,
        DecodeError::LimitExceeded { .. }
    );
}

fn message(commands: Vec<Command>) -> SyncMl {
    SyncMl::new(
        SyncHdr::new(ProtoVersion::Dm12, "1", 1, "s", "c"),
        SyncBody::final_with(commands),
    )
}

#[test]
fn encoders_refuse_what_the_decoders_would_reject() {
    let binary = message(vec![Command::Replace(ItemCommand::new(
        1,
        vec![Item::target("./Bin").with_data(Data::opaque(vec![0xFF, 0x00]))],
    ))]);
    assert!(matches!(
        XmlCodec::default().encode(&binary),
        Err(EncodeError::NotXmlText {
            element: "Data",
            ..
        })
    ));
    assert!(WbxmlCodec::default().encode(&binary).is_ok());

    let control = message(vec![Command::Replace(ItemCommand::new(
        1,
        vec![Item::target("./A").with_data("bell\u{7}")],
    ))]);
    assert!(matches!(
        XmlCodec::default().encode(&control),
        Err(EncodeError::NotXmlText { .. })
    ));

    let nul = message(vec![Command::Get(ItemCommand::new(
        1,
        vec![Item::target("./A\0")],
    ))]);
    assert!(matches!(
        WbxmlCodec::default().encode(&nul),
        Err(EncodeError::NulInWbxmlString { element: "LocURI" })
    ));

    let no_items = message(vec![Command::Add(ItemCommand::new(4, vec![]))]);
    let nested_sequence = message(vec![Command::Sequence(Container::new(
        1,
        vec![Command::Sequence(Container::new(
            2,
            vec![Command::Get(ItemCommand::new(3, vec![Item::target("./A")]))],
        ))],
    ))]);
    let status_in_sequence = message(vec![Command::Sequence(Container::new(
        1,
        vec![Command::Status(Status::for_header(
            2,
            1,
            "a",
            "b",
            StatusCode::OK,
        ))],
    ))]);
    for msg in [no_items, nested_sequence, status_in_sequence] {
        for result in [
            XmlCodec::default().encode(&msg),
            WbxmlCodec::default().encode(&msg),
        ] {
            assert!(
                matches!(result, Err(EncodeError::InvalidCommand { .. })),
                "{result:?}"
            );
        }
    }
}
