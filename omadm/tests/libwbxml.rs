//! Cross-checks against libwbxml (Debian `libwbxml2-utils`), an independent WBXML implementation:
//! our WBXML, turned into XML by `wbxml2xml`, must decode to the same message; our XML, turned
//! into WBXML by `xml2wbxml`, must decode to the same message.
//!
//! These tests fail (they do not skip) when the tools are missing.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use omadm::codec::{Codec, WbxmlCodec, XmlCodec};
use omadm::model::{
    format, Alert, Chal, Command, CommandKind, Container, Data, Exec, Item, ItemCommand, Meta,
    ProtoVersion, Results, Status, SyncBody, SyncHdr, SyncMl,
};
use omadm::status::StatusCode;

const INSTALL_HINT: &str = "install libwbxml2-utils (apt-get install libwbxml2-utils)";

fn run_tool(tool: &str, input: &Path, output: &Path) {
    let result = Process::new(tool).arg("-o").arg(output).arg(input).output();
    let out = match result {
        Ok(out) => out,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            panic!("{tool} is not installed: {INSTALL_HINT}")
        }
        Err(err) => panic!("cannot run {tool}: {err}"),
    };
    assert!(
        out.status.success(),
        "{tool} failed on {}: {}{}",
        input.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("libwbxml-cross-check");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The golden messages and [`edge_cases`]; `data_newline` is how the edge cases' multi-line
/// `Data` ends its lines.
fn golden_messages(data_newline: &str) -> Vec<(String, SyncMl)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut messages: Vec<(String, SyncMl)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "xml"))
        .map(|path| {
            let msg = XmlCodec::default()
                .decode(&std::fs::read(&path).unwrap())
                .unwrap();
            (
                path.file_stem().unwrap().to_string_lossy().into_owned(),
                msg,
            )
        })
        .collect();
    messages.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(messages.len(), 4, "golden XML files in {}", dir.display());
    messages.push(("edge_cases".into(), edge_cases(data_newline)));
    messages
}

/// Fields the golden files do not use: escapes, non-ASCII, empty data, flags, every MetInf field,
/// nested groups.
fn edge_cases(data_newline: &str) -> SyncMl {
    let mut hdr = SyncHdr::new(
        ProtoVersion::Dm13,
        "FFFF",
        4_294_967_295,
        "https://ß.example/<dm>",
        "IMEI:4901542032375181",
    );
    hdr.no_resp = true;
    let meta = Meta {
        format: Some(format::B64.into()),
        type_: Some("application/vnd.virmo.snapshot".into()),
        mark: Some("critical".into()),
        size: Some(18_446_744_073_709_551_615),
        version: Some("1.0".into()),
        next_nonce: Some(Data::text("bm9uY2U=")),
        max_msg_size: Some(1),
        max_obj_size: Some(2),
        emi: vec!["x-one".into(), "x-two".into()],
    };
    let mut get = ItemCommand::new(3, vec![Item::target("./A"), Item::target("./B")]);
    get.no_resp = true;
    let mut results = Results::new(6, 9, 3, vec![Item::source("./A").with_data("a&b<c>\"d'e")]);
    results.target_ref = Some("./T".into());
    results.source_ref = Some("./S".into());
    results.meta = Some(Meta::with_type("text/plain"));
    results.msg_ref = None;
    SyncMl::new(
        hdr,
        SyncBody::with(vec![
            Command::Status(
                Status::new(
                    1,
                    1,
                    0,
                    CommandKind::SyncHdr,
                    StatusCode::INVALID_CREDENTIALS,
                )
                .with_chal(Chal {
                    meta: Meta::format_and_type("b64", "syncml:auth-basic"),
                }),
            ),
            Command::Replace(
                ItemCommand::new(
                    2,
                    vec![
                        Item::target("./Vendor/Ünïcødé/値")
                            .with_meta(meta)
                            .with_data(format!("línea uno{data_newline}line two\ttab"))
                            .with_more_data(true),
                        Item::target("./Empty").with_data(""),
                        Item::default(),
                    ],
                )
                .with_meta(Meta::default()),
            ),
            Command::Get(get),
            Command::Sequence(Container::new(
                4,
                vec![Command::Atomic(Container::new(
                    5,
                    vec![Command::Exec(
                        Exec::new(7, Item::target("./Op").with_data("arg")).with_correlator("c"),
                    )],
                ))],
            )),
            Command::Results(results),
            Command::Alert(Alert::new(8, omadm::model::AlertCode::SESSION_ABORT)),
        ]),
    )
}

#[test]
fn wbxml2xml_reads_our_wbxml_as_the_same_message() {
    for (name, msg) in golden_messages("\n") {
        let wbxml = scratch(&format!("{name}.ours.wbxml"));
        let xml = scratch(&format!("{name}.wbxml2xml.xml"));
        std::fs::write(&wbxml, WbxmlCodec::default().encode(&msg).unwrap()).unwrap();
        run_tool("wbxml2xml", &wbxml, &xml);
        let decoded = XmlCodec::default()
            .decode(&std::fs::read(&xml).unwrap())
            .unwrap_or_else(|err| panic!("{name}: wbxml2xml output does not decode: {err}"));
        assert_eq!(decoded, msg, "{name}");
    }
}

/// libwbxml writes SyncML `Data` as OPAQUE and turns its line feeds into CR LF on the way, so
/// the message it makes of ours has CR LF where ours has LF.
#[test]
fn xml2wbxml_of_our_xml_decodes_to_the_same_message() {
    let sent = golden_messages("\n");
    let expected = golden_messages("\r\n");
    for ((name, msg), (_, expected)) in sent.into_iter().zip(expected) {
        let xml = scratch(&format!("{name}.ours.xml"));
        let wbxml = scratch(&format!("{name}.xml2wbxml.wbxml"));
        std::fs::write(&xml, XmlCodec::default().encode(&msg).unwrap()).unwrap();
        run_tool("xml2wbxml", &xml, &wbxml);
        let decoded = WbxmlCodec::default()
            .decode(&std::fs::read(&wbxml).unwrap())
            .unwrap_or_else(|err| panic!("{name}: xml2wbxml output does not decode: {err}"));
        assert_eq!(decoded, expected, "{name}");
    }
}
