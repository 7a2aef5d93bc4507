//! Tests of the hot set: its file format, its recording from this process's page tables, and a
//! hot restore that gives back the same memory with the hot units already in place.

use super::*;
use crate::snapshot::memory_file::tests::{memory_with_pattern, same_content};
use crate::snapshot::memory_file::{map_memory_lazy, write_memory_file};
use vm_memory::{Bytes, GuestMemoryBackend};

const MIB: u64 = 1 << 20;

fn run(offset_mib: u64, len_mib: u64) -> HotRun {
    HotRun {
        offset: offset_mib * MIB,
        len: len_mib * MIB,
    }
}

#[test]
fn units_become_ordered_disjoint_runs() {
    let set = HotSet::from_units([0, 1, 3, 3, 4, 9]);
    assert_eq!(set.runs(), &[run(0, 4), run(6, 4), run(18, 2)]);
    assert_eq!(set.bytes(), 10 * MIB);
}

#[test]
fn hot_set_file_round_trips() {
    let set = HotSet::from_units([0, 2, 3, 7]);
    let bytes = set.encode();
    assert_eq!(bytes.len(), HEADER_LEN + 3 * 16);
    assert_eq!(HotSet::decode(&bytes, 16 * MIB).expect("decode"), set);
    assert_eq!(
        HotSet::decode(&HotSet::default().encode(), 16 * MIB).expect("empty"),
        HotSet::default()
    );
}

#[test]
fn malformed_hot_set_files_are_refused() {
    let good = HotSet::from_units([1, 4]).encode();
    let with_run = |i: usize, offset: u64, len: u64| {
        let mut b = good.clone();
        b[HEADER_LEN + 16 * i..HEADER_LEN + 16 * i + 8].copy_from_slice(&offset.to_le_bytes());
        b[HEADER_LEN + 16 * i + 8..HEADER_LEN + 16 * i + 16].copy_from_slice(&len.to_le_bytes());
        b
    };
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    let mut bad_unit = good.clone();
    bad_unit[8] = 1;
    let mut bad_count = good.clone();
    bad_count[16] = 3;
    for (bytes, what) in [
        (bad_magic, "magic"),
        (bad_unit, "unit"),
        (bad_count, "count"),
        (good[..good.len() - 1].to_vec(), "truncated"),
        (with_run(0, MIB, 2 * MIB), "unaligned"),
        (with_run(1, 0, 2 * MIB), "unordered"),
        (with_run(1, 2 * MIB, 2 * MIB), "overlapping"),
        (with_run(1, 64 * MIB, 2 * MIB), "beyond the file"),
        (with_run(1, 8 * MIB, 0), "empty run"),
        (with_run(1, 8 * MIB, u64::MAX - MIB + 1), "overflow"),
    ] {
        assert!(
            matches!(
                HotSet::decode(&bytes, 16 * MIB),
                Err(HotSetError::Malformed(_))
            ),
            "{what}"
        );
    }
}

#[test]
fn split_covers_the_range_in_order() {
    let set = HotSet::from_units([1, 2, 5]);
    assert_eq!(
        set.split(MIB, 11 * MIB),
        vec![
            (MIB, 2 * MIB, false),
            (2 * MIB, 6 * MIB, true),
            (6 * MIB, 10 * MIB, false),
            (10 * MIB, 11 * MIB, true),
        ]
    );
    assert_eq!(HotSet::default().split(0, MIB), vec![(0, MIB, false)]);
}

/// Whether the page at guest address `addr` of `memory` is mapped in this process.
fn mapped(memory: &GuestMemoryMmap<()>, addr: u64) -> bool {
    let host = memory.get_host_address(GuestAddress(addr)).expect("host") as usize;
    let mut out = Vec::new();
    PageMap::open()
        .expect("pagemap")
        .touched(host, 1, &mut out)
        .expect("read pagemap");
    out[0]
}

/// Memory of 8 MiB + 2 MiB with data in every unit, saved to `memory.bin` in `dir`.
fn saved_memory(dir: &Path) -> (GuestMemoryMmap<()>, MemoryLayout, std::path::PathBuf) {
    let ranges = [(0, 8 << 20), (0x1_0000_0000, 2 << 20)];
    let touched: Vec<u64> = (0..8u64)
        .map(|mib| mib * MIB + 0x3000)
        .chain([0x1_0000_0000, 0x1_001f_f000])
        .collect();
    let memory = memory_with_pattern(&ranges, &touched);
    let path = dir.join("memory.bin");
    let file = File::create(&path).expect("create");
    write_memory_file(&memory, &file).expect("write");
    let layout = MemoryLayout::of(&memory);
    (memory, layout, path)
}

#[test]
fn booted_memory_has_no_hot_set() {
    let memory = memory_with_pattern(&[(0, 4 << 20)], &[0, 0x20_0000]);
    assert!(HotSet::record(&memory).expect("record").is_empty());
}

#[test]
fn touched_units_of_a_lazy_restore_are_recorded_and_a_hot_restore_preloads_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (original, layout, path) = saved_memory(dir.path());

    // A lazy restore touches a page in unit 1 (2-4 MiB) and in the second region (file
    // offset 8 MiB: unit 4).
    let lazy = map_memory_lazy(&path, &layout).expect("lazy");
    assert!(
        HotSet::record(&lazy).expect("record").is_empty(),
        "nothing touched yet"
    );
    let mut byte = [0u8; 1];
    lazy.read_slice(&mut byte, GuestAddress(0x20_3000)).unwrap();
    lazy.write_slice(&[7], GuestAddress(0x1_0000_0010)).unwrap();
    let hot = HotSet::record(&lazy).expect("record");
    assert_eq!(hot.runs(), &[run(2, 2), run(8, 2)]);

    let restored = map_memory_hot(&path, &layout, &hot).expect("hot restore");
    // The hot units are in memory before anything touches them; the cold ones are not.
    assert!(mapped(&restored, 0x20_3000) && mapped(&restored, 0x1_0000_0000));
    assert!(!mapped(&restored, 0x3000) && !mapped(&restored, 0x60_3000));
    // Untouched, it records the same hot set, and holds the same memory as the saved one.
    assert_eq!(HotSet::record(&restored).expect("record again"), hot);
    assert!(same_content(&original, &restored));

    // Saved again, a hot-restored memory gives the same file: cold pages are read from the
    // file mapping, not taken for zeros.
    let again = dir.path().join("again.bin");
    let file = File::create(&again).expect("create");
    let a = write_memory_file(&restored, &file).expect("write again");
    let b = write_memory_file(&original, &File::create(dir.path().join("b.bin")).unwrap())
        .expect("write original");
    assert_eq!(a.digest, b.digest);
}

#[test]
fn hot_restore_without_a_hot_set_is_a_lazy_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (original, layout, path) = saved_memory(dir.path());
    let restored = map_memory_hot(&path, &layout, &HotSet::default()).expect("hot restore");
    assert!(!mapped(&restored, 0x3000));
    assert!(same_content(&original, &restored));
}
