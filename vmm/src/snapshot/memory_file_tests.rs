//! Tests of `memory.bin`: round trips, digests, sparse writes, lazy mappings, damage.

use super::*;
use crate::snapshot::memory_digest::digest_of;
use std::os::unix::fs::MetadataExt;
use vm_memory::Bytes;

pub(in crate::snapshot) fn memory_with_pattern(
    ranges: &[(u64, usize)],
    touched: &[u64],
) -> GuestMemoryMmap<()> {
    let ranges: Vec<_> = ranges.iter().map(|&(a, s)| (GuestAddress(a), s)).collect();
    let memory = GuestMemoryMmap::<()>::from_ranges(&ranges).expect("allocate");
    for &addr in touched {
        let page: Vec<u8> = (0..PAGE).map(|i| (i as u64 ^ addr) as u8 | 1).collect();
        memory
            .write_slice(&page, GuestAddress(addr))
            .expect("write");
    }
    memory
}

/// All guest memory, region after region: the logical `memory.bin`.
fn logical_content(memory: &GuestMemoryMmap<()>) -> Vec<u8> {
    let mut content = Vec::new();
    for region in memory.iter() {
        let mut all = vec![0u8; region.len() as usize];
        memory.read_slice(&mut all, region.start_addr()).unwrap();
        content.extend_from_slice(&all);
    }
    content
}

pub(in crate::snapshot) fn same_content(a: &GuestMemoryMmap<()>, b: &GuestMemoryMmap<()>) -> bool {
    a.iter().zip(b.iter()).all(|(ra, rb)| {
        let len = ra.len() as usize;
        let mut va = vec![0u8; len];
        let mut vb = vec![0u8; len];
        a.read_slice(&mut va, ra.start_addr()).expect("read a");
        b.read_slice(&mut vb, rb.start_addr()).expect("read b");
        ra.start_addr() == rb.start_addr() && va == vb
    })
}

const RANGES: &[(u64, usize)] = &[(0, 4 << 20), (0x1_0000_0000, 1 << 20)];
const TOUCHED: &[u64] = &[
    0,
    0x5000,
    0x20_0000,
    0x3f_f000,
    0x1_0000_0000,
    0x1_000f_f000,
];

#[test]
fn sparse_file_round_trips_lazily_and_eagerly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("memory.bin");
    let memory = memory_with_pattern(RANGES, TOUCHED);
    let file = File::create(&path).expect("create");
    let summary = write_memory_file(&memory, &file).expect("write");
    drop(file);
    let layout = MemoryLayout::of(&memory);
    assert_eq!(summary.len, 5 << 20);
    assert_eq!(summary.data_bytes, TOUCHED.len() as u64 * PAGE_SIZE);
    assert_eq!(
        checksum_memory_file(&path).expect("checksum"),
        summary.digest
    );

    let lazy = map_memory_lazy(&path, &layout).expect("lazy");
    assert!(same_content(&memory, &lazy));
    let eager = load_memory_eager(&path, &layout, Some(summary.digest)).expect("eager");
    assert!(same_content(&memory, &eager));
}

/// Regions whose boundaries fall inside digest chunks, whole untouched chunks, and a short
/// last chunk: file offsets 0..7M (region 0), 7M..9M+12K (region 1), 9M+12K..10M+12K
/// (region 2); digest chunks every 2 MiB, the last one 12 KiB long.
const ODD_RANGES: &[(u64, usize)] = &[
    (0, 7 << 20),
    (0x1_0000_0000, (2 << 20) + 0x3000),
    (0x2_0000_0000, 1 << 20),
];
const ODD_TOUCHED: &[u64] = &[
    0x1000,        // chunk 0
    0x6f_f000,     // chunk 3, last page of region 0
    0x1_0000_0000, // chunk 3, first page of region 1
    0x1_0020_2000, // chunk 4, last page of region 1
    0x2_0000_0000, // chunk 4, first page of region 2
    0x2_000f_f000, // chunk 5 (12 KiB), last page of the file
];

#[test]
fn writer_and_readers_agree_with_the_digest_definition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("memory.bin");
    let memory = memory_with_pattern(ODD_RANGES, ODD_TOUCHED);
    let file = File::create(&path).expect("create");
    let summary = write_memory_file(&memory, &file).expect("write");
    drop(file);
    let content = logical_content(&memory);
    assert_eq!(summary.len, content.len() as u64);
    assert_eq!(summary.len % DIGEST_CHUNK_BYTES, 0x3000, "short last chunk");
    assert_eq!(summary.data_bytes, ODD_TOUCHED.len() as u64 * PAGE_SIZE);
    assert_eq!(std::fs::read(&path).expect("read back"), content);
    assert_eq!(summary.digest, digest_of(&content));
    assert_eq!(
        checksum_memory_file(&path).expect("checksum"),
        summary.digest
    );
    let layout = MemoryLayout::of(&memory);
    let eager = load_memory_eager(&path, &layout, Some(summary.digest)).expect("eager");
    assert!(same_content(&memory, &eager));
}

#[test]
fn data_in_a_chunk_that_was_all_hole_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("memory.bin");
    let memory = memory_with_pattern(ODD_RANGES, ODD_TOUCHED);
    let file = File::create(&path).expect("create");
    let summary = write_memory_file(&memory, &file).expect("write");
    // Chunk 1 (2M..4M) was never touched: a whole-chunk hole, digested without hashing.
    file.write_all_at(&[0x42; 512], (3 << 20) + 0x800)
        .expect("fill the hole");
    drop(file);
    assert_ne!(
        checksum_memory_file(&path).expect("checksum"),
        summary.digest
    );
    assert!(matches!(
        load_memory_eager(&path, &MemoryLayout::of(&memory), Some(summary.digest)),
        Err(MemoryFileError::ChecksumMismatch { .. })
    ));
}

#[test]
fn damage_in_the_short_last_chunk_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("memory.bin");
    let memory = memory_with_pattern(ODD_RANGES, ODD_TOUCHED);
    let file = File::create(&path).expect("create");
    let summary = write_memory_file(&memory, &file).expect("write");
    // Pattern bytes always have bit 0 set: a zero is a change.
    file.write_all_at(&[0x00], summary.len - 1).expect("damage");
    drop(file);
    assert_ne!(
        checksum_memory_file(&path).expect("checksum"),
        summary.digest
    );
}

#[test]
fn saving_a_lazily_restored_memory_keeps_its_untouched_file_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = dir.path().join("first.bin");
    let memory = memory_with_pattern(RANGES, TOUCHED);
    let file = File::create(&first).expect("create");
    let summary = write_memory_file(&memory, &file).expect("write");
    drop(file);
    // The pages of the mapping are not in the page tables until touched, yet hold data.
    let lazy = map_memory_lazy(&first, &MemoryLayout::of(&memory)).expect("lazy");
    let second = dir.path().join("second.bin");
    let file = File::create(&second).expect("create");
    let again = write_memory_file(&lazy, &file).expect("write again");
    assert_eq!(again, summary);
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap()
    );
}

#[test]
fn pages_only_read_are_zero_and_the_checksum_counts_untouched_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("memory.bin");
    let memory = memory_with_pattern(RANGES, &[0x20_0000]);
    // Reading maps the zero page: present, but all zero.
    let mut page = [0u8; PAGE];
    memory
        .read_slice(&mut page, GuestAddress(0x30_0000))
        .unwrap();
    let file = File::create(&path).expect("create");
    let summary = write_memory_file(&memory, &file).expect("write");
    drop(file);
    assert_eq!(summary.data_bytes, PAGE_SIZE);
    assert_eq!(summary.digest, digest_of(&logical_content(&memory)));
}

#[test]
fn zero_pages_take_no_disk_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("memory.bin");
    let memory = memory_with_pattern(&[(0, 64 << 20)], &[0x1000, 0x10_0000, 0x3ff_f000]);
    let file = File::create(&path).expect("create");
    write_memory_file(&memory, &file).expect("write");
    file.sync_all().expect("fsync");
    let meta = std::fs::metadata(&path).expect("stat");
    assert_eq!(meta.len(), 64 << 20);
    let on_disk = meta.blocks() * 512;
    // Three touched pages; allow the file system some metadata/blocks of slack.
    assert!(
        on_disk <= 3 * PAGE_SIZE + (64 << 10),
        "{on_disk} bytes on disk"
    );
    assert!(on_disk >= 3 * PAGE_SIZE, "{on_disk} bytes on disk");
}

#[test]
fn lazy_writes_stay_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("memory.bin");
    let memory = memory_with_pattern(&[(0, 1 << 20)], &[0x2000]);
    let file = File::create(&path).expect("create");
    let summary = write_memory_file(&memory, &file).expect("write");
    let layout = MemoryLayout::of(&memory);
    let lazy = map_memory_lazy(&path, &layout).expect("lazy");
    lazy.write_slice(&[0xAB; 16], GuestAddress(0x2000))
        .expect("guest write");
    lazy.write_slice(&[0xCD; 16], GuestAddress(0x9000))
        .expect("guest write");
    assert_eq!(
        checksum_memory_file(&path).expect("checksum"),
        summary.digest
    );
}

#[test]
fn corrupted_memory_is_refused_by_eager_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("memory.bin");
    let memory = memory_with_pattern(&[(0, 1 << 20)], &[0x2000]);
    let file = File::create(&path).expect("create");
    let summary = write_memory_file(&memory, &file).expect("write");
    file.write_all_at(&[0x55], 0x2010).expect("damage");
    let layout = MemoryLayout::of(&memory);
    assert!(matches!(
        load_memory_eager(&path, &layout, Some(summary.digest)),
        Err(MemoryFileError::ChecksumMismatch { .. })
    ));
}

#[test]
fn byte_written_into_a_hole_is_refused_by_eager_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("memory.bin");
    let memory = memory_with_pattern(&[(0, 1 << 20)], &[0x2000]);
    let file = File::create(&path).expect("create");
    let summary = write_memory_file(&memory, &file).expect("write");
    file.write_all_at(&[0x01], 0x8_0000).expect("damage a hole");
    let layout = MemoryLayout::of(&memory);
    assert!(matches!(
        load_memory_eager(&path, &layout, Some(summary.digest)),
        Err(MemoryFileError::ChecksumMismatch { .. })
    ));
    assert_ne!(
        checksum_memory_file(&path).expect("checksum"),
        summary.digest
    );
}

#[test]
fn truncated_memory_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("memory.bin");
    let memory = memory_with_pattern(&[(0, 1 << 20)], &[0x2000]);
    let file = File::create(&path).expect("create");
    write_memory_file(&memory, &file).expect("write");
    file.set_len(0x8000).expect("truncate");
    let layout = MemoryLayout::of(&memory);
    assert!(matches!(
        map_memory_lazy(&path, &layout),
        Err(MemoryFileError::SizeMismatch { .. })
    ));
    assert!(matches!(
        load_memory_eager(&path, &layout, None),
        Err(MemoryFileError::SizeMismatch { .. })
    ));
}

#[test]
fn is_zero_finds_any_non_zero_byte() {
    let page = [0u8; PAGE];
    assert!(is_zero(&page));
    assert!(is_zero(&page[..13]));
    for at in [0, 7, 8, 63, 64, 2049, PAGE - 1] {
        let mut damaged = page;
        damaged[at] = 0x80;
        assert!(!is_zero(&damaged), "byte {at}");
    }
    let mut short = [0u8; 13];
    short[12] = 1;
    assert!(!is_zero(&short), "byte in the tail after the last word");
}

#[test]
fn extents_split_data_and_holes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = File::create(dir.path().join("f")).expect("create");
    file.write_all_at(&[1; 4096], 0x10000).expect("write");
    file.set_len(0x40000).expect("len");
    let found = extents(&file, 0, 0x40000).expect("extents");
    assert_eq!(
        found,
        vec![
            Extent::Hole {
                offset: 0,
                len: 0x10000
            },
            Extent::Data {
                offset: 0x10000,
                len: 0x1000
            },
            Extent::Hole {
                offset: 0x11000,
                len: 0x2f000
            },
        ]
    );
}
