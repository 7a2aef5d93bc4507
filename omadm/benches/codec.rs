//! Codec throughput on a typical package (golden package 2: three Status, Get, Replace, Add, Exec,
//! Delete, Atomic, Sequence), and a comparison with libwbxml2 (loaded at run time with
//! `libloading`, so the bench builds without it; install `libwbxml2-1` to get the comparison).
//!
//! `cargo bench -p omadm --bench codec` prints criterion's estimates, then a summary of medians:
//! MB/s and messages/s per operation, and libwbxml's time per conversion over ours.

use std::ffi::{c_int, c_uint, c_void};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use libloading::Library;
use omadm::codec::{Codec, WbxmlCodec, XmlCodec};
use omadm::model::SyncMl;

fn typical_package() -> SyncMl {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/pkg2_server_mgmt.xml"
    );
    let bytes = std::fs::read(path).expect("golden package 2");
    XmlCodec::default()
        .decode(&bytes)
        .expect("golden package 2 decodes")
}

/// The entry points of libwbxml2's converters (`wbxml/wbxml_conv.h`).
struct LibWbxml {
    xml2wbxml_create: unsafe extern "C" fn(*mut *mut c_void) -> c_int,
    xml2wbxml_run:
        unsafe extern "C" fn(*mut c_void, *const u8, c_uint, *mut *mut u8, *mut c_uint) -> c_int,
    xml2wbxml_destroy: unsafe extern "C" fn(*mut c_void),
    wbxml2xml_create: unsafe extern "C" fn(*mut *mut c_void) -> c_int,
    wbxml2xml_set_gen_type: unsafe extern "C" fn(*mut c_void, c_int),
    wbxml2xml_run:
        unsafe extern "C" fn(*mut c_void, *const u8, c_uint, *mut *mut u8, *mut c_uint) -> c_int,
    wbxml2xml_destroy: unsafe extern "C" fn(*mut c_void),
    free: unsafe extern "C" fn(*mut c_void),
    /// Keeps the function pointers above valid.
    _library: Library,
}

/// `WBXML_GEN_XML_COMPACT`.
const GEN_XML_COMPACT: c_int = 0;

impl LibWbxml {
    fn load() -> Option<Self> {
        // SAFETY: libwbxml2's initialisers only set up its own static tables; the library stays
        // loaded for as long as `_library` lives, which outlives every copied symbol below.
        let library = unsafe { Library::new("libwbxml2.so.1") }.ok()?;
        // SAFETY: each symbol is declared with the C signature of `wbxml/wbxml_conv.h`
        // (`WB_UTINY` = unsigned char, `WB_ULONG` = unsigned int, enums = int).
        unsafe {
            Some(Self {
                xml2wbxml_create: *library.get(b"wbxml_conv_xml2wbxml_create\0").ok()?,
                xml2wbxml_run: *library.get(b"wbxml_conv_xml2wbxml_run\0").ok()?,
                xml2wbxml_destroy: *library.get(b"wbxml_conv_xml2wbxml_destroy\0").ok()?,
                wbxml2xml_create: *library.get(b"wbxml_conv_wbxml2xml_create\0").ok()?,
                wbxml2xml_set_gen_type: *library
                    .get(b"wbxml_conv_wbxml2xml_set_gen_type\0")
                    .ok()?,
                wbxml2xml_run: *library.get(b"wbxml_conv_wbxml2xml_run\0").ok()?,
                wbxml2xml_destroy: *library.get(b"wbxml_conv_wbxml2xml_destroy\0").ok()?,
                free: *library.get(b"wbxml_free\0").ok()?,
                _library: library,
            })
        }
    }

    /// `xml2wbxml` of `xml`; returns the output length.
    fn xml_to_wbxml(&self, xml: &[u8]) -> usize {
        let mut conv = std::ptr::null_mut();
        let mut out = std::ptr::null_mut();
        let mut out_len: c_uint = 0;
        let len = c_uint::try_from(xml.len()).expect("input fits WB_ULONG");
        // SAFETY: `conv` is created, used once and destroyed here; `xml` is valid for `len` bytes
        // and only read; `out` is allocated by libwbxml and freed with its `wbxml_free`.
        unsafe {
            assert_eq!((self.xml2wbxml_create)(&mut conv), 0, "xml2wbxml_create");
            let status = (self.xml2wbxml_run)(conv, xml.as_ptr(), len, &mut out, &mut out_len);
            (self.xml2wbxml_destroy)(conv);
            assert_eq!(status, 0, "libwbxml xml2wbxml failed with {status}");
            (self.free)(out.cast());
        }
        out_len as usize
    }

    /// `wbxml2xml` (compact) of `wbxml`; returns the output length.
    fn wbxml_to_xml(&self, wbxml: &[u8]) -> usize {
        let mut conv = std::ptr::null_mut();
        let mut out = std::ptr::null_mut();
        let mut out_len: c_uint = 0;
        let len = c_uint::try_from(wbxml.len()).expect("input fits WB_ULONG");
        // SAFETY: as in `xml_to_wbxml`.
        unsafe {
            assert_eq!((self.wbxml2xml_create)(&mut conv), 0, "wbxml2xml_create");
            (self.wbxml2xml_set_gen_type)(conv, GEN_XML_COMPACT);
            let status = (self.wbxml2xml_run)(conv, wbxml.as_ptr(), len, &mut out, &mut out_len);
            (self.wbxml2xml_destroy)(conv);
            assert_eq!(status, 0, "libwbxml wbxml2xml failed with {status}");
            (self.free)(out.cast());
        }
        out_len as usize
    }
}

struct Inputs {
    msg: SyncMl,
    xml: Vec<u8>,
    wbxml: Vec<u8>,
}

fn inputs() -> Inputs {
    let msg = typical_package();
    let xml = XmlCodec::default().encode(&msg).unwrap();
    let wbxml = WbxmlCodec::default().encode(&msg).unwrap();
    Inputs { msg, xml, wbxml }
}

fn ours_xml_to_wbxml(xml: &[u8]) -> usize {
    let msg = XmlCodec::default().decode(xml).unwrap();
    WbxmlCodec::default().encode(&msg).unwrap().len()
}

fn ours_wbxml_to_xml(wbxml: &[u8]) -> usize {
    let msg = WbxmlCodec::default().decode(wbxml).unwrap();
    XmlCodec::default().encode(&msg).unwrap().len()
}

/// Benchmarks `codec` encoding `msg` and decoding `encoded` (its bytes), as group `name`.
fn codec_group<C: Codec>(c: &mut Criterion, name: &str, codec: &C, msg: &SyncMl, encoded: &[u8]) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("encode", |b| b.iter(|| codec.encode(black_box(msg))));
    group.bench_function("decode", |b| b.iter(|| codec.decode(black_box(encoded))));
    group.finish();
}

fn criterion_benches(c: &mut Criterion, inputs: &Inputs, libwbxml: Option<&LibWbxml>) {
    codec_group(c, "xml", &XmlCodec::default(), &inputs.msg, &inputs.xml);
    codec_group(
        c,
        "wbxml",
        &WbxmlCodec::default(),
        &inputs.msg,
        &inputs.wbxml,
    );

    let mut group = c.benchmark_group("convert");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ours_xml_to_wbxml", |b| {
        b.iter(|| ours_xml_to_wbxml(black_box(&inputs.xml)))
    });
    group.bench_function("ours_wbxml_to_xml", |b| {
        b.iter(|| ours_wbxml_to_xml(black_box(&inputs.wbxml)))
    });
    if let Some(lib) = libwbxml {
        group.bench_function("libwbxml_xml_to_wbxml", |b| {
            b.iter(|| lib.xml_to_wbxml(black_box(&inputs.xml)))
        });
        group.bench_function("libwbxml_wbxml_to_xml", |b| {
            b.iter(|| lib.wbxml_to_xml(black_box(&inputs.wbxml)))
        });
    }
    group.finish();
}

/// Median time per call of `f` over 21 samples of a batch sized to take about 20 ms.
fn median(mut f: impl FnMut() -> usize) -> Duration {
    let start = Instant::now();
    let mut calibration = 0;
    while start.elapsed() < Duration::from_millis(20) {
        black_box(f());
        calibration += 1;
    }
    let batch = calibration.max(1);
    let mut samples: Vec<Duration> = (0..21)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                black_box(f());
            }
            start.elapsed() / batch
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn summary(inputs: &Inputs, libwbxml: Option<&LibWbxml>) {
    let xml_codec = XmlCodec::default();
    let wbxml_codec = WbxmlCodec::default();
    let row = |name: &str, bytes: usize, time: Duration| {
        let secs = time.as_secs_f64();
        println!(
            "{name:<26} {:>9.2} µs  {:>8.1} MB/s  {:>9.0} msgs/s",
            secs * 1e6,
            bytes as f64 / secs / 1e6,
            1.0 / secs
        );
    };
    println!(
        "\nSummary (medians) — typical package: {} commands, {} bytes XML, {} bytes WBXML",
        inputs.msg.body.commands.len(),
        inputs.xml.len(),
        inputs.wbxml.len()
    );
    let xml_len = inputs.xml.len();
    let wbxml_len = inputs.wbxml.len();
    row(
        "xml encode",
        xml_len,
        median(|| xml_codec.encode(&inputs.msg).unwrap().len()),
    );
    row(
        "xml decode",
        xml_len,
        median(|| xml_codec.decode(&inputs.xml).unwrap().body.commands.len()),
    );
    row(
        "wbxml encode",
        wbxml_len,
        median(|| wbxml_codec.encode(&inputs.msg).unwrap().len()),
    );
    row(
        "wbxml decode",
        wbxml_len,
        median(|| {
            wbxml_codec
                .decode(&inputs.wbxml)
                .unwrap()
                .body
                .commands
                .len()
        }),
    );
    let ours_x2w = median(|| ours_xml_to_wbxml(&inputs.xml));
    let ours_w2x = median(|| ours_wbxml_to_xml(&inputs.wbxml));
    row("ours xml→wbxml", xml_len, ours_x2w);
    row("ours wbxml→xml", wbxml_len, ours_w2x);
    match libwbxml {
        Some(lib) => {
            let lib_x2w = median(|| lib.xml_to_wbxml(&inputs.xml));
            let lib_w2x = median(|| lib.wbxml_to_xml(&inputs.wbxml));
            row("libwbxml xml→wbxml", xml_len, lib_x2w);
            row("libwbxml wbxml→xml", wbxml_len, lib_w2x);
            println!(
                "libwbxml time / ours: xml→wbxml {:.2}×, wbxml→xml {:.2}×",
                lib_x2w.as_secs_f64() / ours_x2w.as_secs_f64(),
                lib_w2x.as_secs_f64() / ours_w2x.as_secs_f64()
            );
        }
        None => println!("libwbxml2 not found (install libwbxml2-1): no comparison"),
    }
}

fn main() {
    let inputs = inputs();
    let libwbxml = LibWbxml::load();
    if let Some(lib) = &libwbxml {
        // Sanity: libwbxml converts our message in both directions.
        assert!(lib.xml_to_wbxml(&inputs.xml) > 0);
        assert!(lib.wbxml_to_xml(&inputs.wbxml) > 0);
    }
    let mut criterion = Criterion::default().configure_from_args();
    criterion_benches(&mut criterion, &inputs, libwbxml.as_ref());
    criterion.final_summary();
    summary(&inputs, libwbxml.as_ref());
}
