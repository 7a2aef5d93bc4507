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

#[test]
fn notification_decode_says_it_is_not_built_here() {
    let result = omadm(&["notification", "decode", "-"], b"");
    assert_eq!(result.status.code(), Some(2), "{result:?}");
    let text = String::from_utf8(result.stderr).unwrap();
    assert!(text.contains("not built in this branch"), "{text}");
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
