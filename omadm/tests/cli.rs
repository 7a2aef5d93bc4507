//! The `omadm` binary: convert, check, notification.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use omadm::codec::{Codec, WbxmlCodec, XmlCodec};

fn omadm(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_omadm"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run omadm");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

#[test]
fn convert_goes_xml_to_wbxml_and_back_through_stdin_and_stdout() {
    let xml = std::fs::read(golden("pkg2_server_mgmt.xml")).unwrap();
    let to_wbxml = omadm(&["convert", "--to", "wbxml", "-", "-"], &xml);
    assert!(to_wbxml.status.success(), "{to_wbxml:?}");
    assert_eq!(
        to_wbxml.stdout,
        std::fs::read(golden("pkg2_server_mgmt.wbxml")).unwrap()
    );

    let back = omadm(&["convert", "--to", "xml", "-", "-"], &to_wbxml.stdout);
    assert!(back.status.success(), "{back:?}");
    assert_eq!(
        XmlCodec::default().decode(&back.stdout).unwrap(),
        XmlCodec::default().decode(&xml).unwrap()
    );
}

#[test]
fn convert_reads_and_writes_files() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-generic-alert.wbxml");
    let input = golden("generic_alert_1226.libwbxml.wbxml");
    let result = omadm(
        &[
            "convert",
            "--to",
            "wbxml",
            input.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
        b"",
    );
    assert!(result.status.success(), "{result:?}");
    assert_eq!(
        WbxmlCodec::default()
            .decode(&std::fs::read(&out).unwrap())
            .unwrap(),
        WbxmlCodec::default()
            .decode(&std::fs::read(&input).unwrap())
            .unwrap()
    );
}

#[test]
fn check_pretty_prints_a_valid_message() {
    let path = golden("pkg3_client_results.wbxml");
    let result = omadm(&["check", path.to_str().unwrap()], b"");
    assert_eq!(result.status.code(), Some(0), "{result:?}");
    let text = String::from_utf8(result.stdout).unwrap();
    assert!(text.contains("\n    <VerProto>DM/1.3</VerProto>"), "{text}");
}

#[test]
fn check_reports_the_status_a_strict_server_answers() {
    let xml = std::fs::read_to_string(golden("pkg1_client_init.xml")).unwrap();
    let cases = [
        (xml.replacen("<CmdID>1</CmdID>", "", 1), "status 400"),
        (
            xml.replacen("<VerDTD>1.2</VerDTD>", "<VerDTD>1.1</VerDTD>", 1),
            "status 505",
        ),
        (
            xml.replacen("<Final/>", "<Sync><CmdID>9</CmdID></Sync><Final/>", 1),
            "status 406",
        ),
        ("plain text".to_owned(), "status 415"),
    ];
    for (input, expected) in cases {
        let result = omadm(&["check", "-"], input.as_bytes());
        assert_eq!(result.status.code(), Some(1), "{result:?}");
        let text = String::from_utf8(result.stdout).unwrap();
        assert!(
            text.starts_with(expected),
            "{text:?} does not start with {expected:?}"
        );
    }
}

fn sample_notification() -> Vec<u8> {
    use omadm::notification::{encode, Initiator, Notification, UiMode};
    let n = Notification {
        version: 12,
        ui_mode: UiMode::Background,
        initiator: Initiator::Server,
        session_id: 0x1234,
        server_id: "virmo-server".into(),
        vendor_specific: Vec::new(),
    };
    encode(&n, "secret", b"nonce").expect("encode")
}

#[test]
fn notification_decode_shows_the_fields_and_verifies_the_digest() {
    let message = sample_notification();
    let shown = omadm(&["notification", "decode", "-"], &message);
    assert!(shown.status.success(), "{shown:?}");
    let text = String::from_utf8(shown.stdout).unwrap();
    assert!(text.contains("server-id:       virmo-server"), "{text}");
    assert!(text.contains("session-id:      4660 (0x1234)"), "{text}");
    assert!(text.contains("version:         1.2"), "{text}");

    let good = omadm(
        &[
            "notification",
            "decode",
            "-",
            "--password",
            "secret",
            "--nonce",
            "nonce",
        ],
        &message,
    );
    assert!(good.status.success(), "{good:?}");
    assert!(String::from_utf8_lossy(&good.stdout).contains("digest verified"));

    let bad = omadm(
        &[
            "notification",
            "decode",
            "-",
            "--password",
            "wrong",
            "--nonce",
            "nonce",
        ],
        &message,
    );
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stdout).contains("NOT verified"));
}

#[test]
fn notification_decode_refuses_a_truncated_message() {
    let result = omadm(&["notification", "decode", "-"], b"short");
    assert!(!result.status.success(), "{result:?}");
    let text = String::from_utf8(result.stderr).unwrap();
    assert!(text.contains("not a Pkg#0 notification"), "{text}");
}

#[test]
fn convert_refuses_binary_data_for_xml() {
    let msg = omadm::model::SyncMl::new(
        omadm::model::SyncHdr::new(omadm::model::ProtoVersion::Dm12, "1", 1, "s", "c"),
        omadm::model::SyncBody::final_with(vec![omadm::model::Command::Replace(
            omadm::model::ItemCommand::new(
                1,
                vec![omadm::model::Item::target("./Bin")
                    .with_data(omadm::model::Data::opaque(vec![0xFF, 0xFE]))],
            ),
        )]),
    );
    let wbxml = WbxmlCodec::default().encode(&msg).unwrap();
    let result = omadm(&["convert", "--to", "xml", "-", "-"], &wbxml);
    assert_eq!(result.status.code(), Some(2), "{result:?}");
    let text = String::from_utf8(result.stderr).unwrap();
    assert!(text.contains("XML cannot carry"), "{text}");
}

/// A package 2 as real servers write it: the Chal's Meta lists Type before Format (as the DM
/// RepPro examples do), the Status has Data before CmdID, the Item has Data before Target.
const OUT_OF_DTD_ORDER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>IMEI:1</LocURI></Target><Source><LocURI>https://dm</LocURI></Source></SyncHdr>
<SyncBody><Status><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Chal><Meta><Type xmlns="syncml:metinf">syncml:auth-md5</Type><Format xmlns="syncml:metinf">b64</Format><NextNonce xmlns="syncml:metinf">ZG9iZWhhdmUNCg==</NextNonce></Meta></Chal><Data>401</Data><CmdID>1</CmdID></Status>
<Replace><CmdID>2</CmdID><Item><Data>v</Data><Meta><Type xmlns="syncml:metinf">text/plain</Type><Format xmlns="syncml:metinf">chr</Format></Meta><Target><LocURI>./A</LocURI></Target></Item></Replace><Final/></SyncBody></SyncML>"#;

/// The element names of `xml` in document order.
fn element_names(xml: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(xml);
    text.split('<')
        .skip(1)
        .filter(|tag| !tag.starts_with(['/', '?', '!']))
        .map(|tag| {
            tag.split(|c: char| c == '>' || c == '/' || c.is_whitespace())
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[test]
fn convert_keeps_every_element_in_its_order_both_ways() {
    let to_wbxml = omadm(
        &["convert", "--to", "wbxml", "-", "-"],
        OUT_OF_DTD_ORDER.as_bytes(),
    );
    assert!(to_wbxml.status.success(), "{to_wbxml:?}");
    let back = omadm(&["convert", "--to", "xml", "-", "-"], &to_wbxml.stdout);
    assert!(back.status.success(), "{back:?}");
    assert_eq!(
        element_names(&back.stdout),
        element_names(OUT_OF_DTD_ORDER.as_bytes())
    );
    let again = omadm(&["convert", "--to", "wbxml", "-", "-"], &back.stdout);
    assert_eq!(
        again.stdout, to_wbxml.stdout,
        "WBXML → XML → WBXML, byte for byte"
    );

    let checked = omadm(&["check", "-"], OUT_OF_DTD_ORDER.as_bytes());
    assert_eq!(checked.status.code(), Some(0), "{checked:?}");
    assert_eq!(
        element_names(&checked.stdout),
        element_names(OUT_OF_DTD_ORDER.as_bytes()),
        "check shows the message as it is"
    );
}

#[test]
fn check_refuses_what_the_dm_rules_forbid_with_their_status() {
    let xml = std::fs::read_to_string(golden("pkg1_client_init.xml")).unwrap();
    let get = |cmd_id: u32, uri: &str| {
        format!("<Get><CmdID>{cmd_id}</CmdID><Item><Target><LocURI>{uri}</LocURI></Target></Item></Get>")
    };
    let with = |commands: String| xml.replacen("<Final/>", &format!("{commands}<Final/>"), 1);
    let deep = format!("./{}", ["N"; 17].join("/"));
    let cases = [
        (
            "repeated_cmd_id",
            with(get(2, "./A")),
            "status 400 (the message): CmdID 2 is used by a Replace and by a Get",
        ),
        (
            "cmd_id_0",
            with(get(0, "./A")),
            "status 400 (the message): the Get has CmdID 0",
        ),
        (
            "atomic_in_sequence_in_atomic",
            with(format!(
                "<Atomic><CmdID>3</CmdID><Sequence><CmdID>4</CmdID><Atomic><CmdID>5</CmdID>{}</Atomic></Sequence></Atomic>",
                get(6, "./A")
            )),
            "status 500 (command 5): the Atomic with CmdID 5 is nested in the Atomic with CmdID 3",
        ),
        (
            "uri_deeper_than_max_depth",
            with(get(3, &deep)),
            "status 414 (command 3): the Get with CmdID 3 names the URI",
        ),
    ];
    for (what, input, expected) in cases {
        let result = omadm(&["check", "-"], input.as_bytes());
        assert_eq!(result.status.code(), Some(1), "{what}: {result:?}");
        let text = String::from_utf8(result.stdout).unwrap();
        assert!(text.starts_with(expected), "{what}: {text:?}");
    }

    // The limits are those of DevDetail/URI, settable; 0 is no limit.
    let input = with(get(3, &deep));
    let unlimited = omadm(&["check", "--max-depth", "0", "-"], input.as_bytes());
    assert_eq!(unlimited.status.code(), Some(0), "{unlimited:?}");
    let deeper = omadm(&["check", "--max-depth", "17", "-"], input.as_bytes());
    assert_eq!(deeper.status.code(), Some(0), "{deeper:?}");
    let short = with(get(3, "./ABCDEF"));
    for (flag, value) in [("--max-seg-len", "5"), ("--max-tot-len", "7")] {
        let result = omadm(&["check", flag, value, "-"], short.as_bytes());
        assert_eq!(result.status.code(), Some(1), "{flag}: {result:?}");
        assert!(String::from_utf8_lossy(&result.stdout).starts_with("status 414"));
    }
    let fine = omadm(&["check", "-"], short.as_bytes());
    assert_eq!(fine.status.code(), Some(0), "{fine:?}");
}
