//! Guest memory save and restore throughput, against the floor of a plain sequential write.
//!
//! `cargo bench -p vmm --bench snapshot_memory [-- <MiB>...]` (default: 256 and 1024 MiB;
//! `VIRMO_BENCH_DIR` picks the folder, default the system temp folder; `VIRMO_BENCH_RUNS` the
//! number of runs per case, default 5; `VIRMO_BENCH_TOUCH_MIB` how much of the memory is
//! written, from its start, default all of it; `VIRMO_BENCH_SAVE_ONLY=1` only measures the
//! floor and the save). Every page written is non-zero (the worst case for the sparse writer);
//! the rest is untouched anonymous memory. Reports the median of the runs. The floor writes as
//! many bytes as the save wrote. "cold" cases evict the file from the page cache first
//! (`posix_fadvise(DONTNEED)` after `fsync`), "warm" ones read it from cache.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm::snapshot::memory_file::{
    checksum_memory_file, load_memory_eager, map_memory_lazy, write_memory_file,
};
use vmm::snapshot::MemoryLayout;

const MIB: usize = 1 << 20;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn evict(path: &Path) {
    let file = File::open(path).expect("open for eviction");
    // SAFETY: advisory call on a descriptor `file` keeps open; it only drops clean cached pages.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise failed");
}

/// `bytes` of guest memory whose first `touched` bytes are non-zero pages.
fn memory_touched(bytes: usize, touched: usize) -> GuestMemoryMmap<()> {
    let memory =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), bytes)]).expect("guest memory");
    let page: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8 + 1).collect();
    for addr in (0..touched.min(bytes) as u64).step_by(4096) {
        memory.write_slice(&page, GuestAddress(addr)).expect("fill");
    }
    memory
}

/// Reads one byte of every page, as a guest touching all its memory would.
fn touch_all(memory: &GuestMemoryMmap<()>) -> u64 {
    let mut sum = 0u64;
    for region in memory.iter() {
        for offset in (0..region.len()).step_by(4096) {
            let addr = region.start_addr().0 + offset;
            sum += u64::from(memory.read_obj::<u8>(GuestAddress(addr)).expect("read"));
        }
    }
    sum
}

/// Writes one byte in every page, as a guest dirtying all its memory would (copy-on-write).
fn dirty_all(memory: &GuestMemoryMmap<()>) {
    for region in memory.iter() {
        for offset in (0..region.len()).step_by(4096) {
            let addr = GuestAddress(region.start_addr().0 + offset);
            memory.write_obj(0xffu8, addr).expect("write");
        }
    }
}

fn floor_write(path: &Path, bytes: u64) -> Duration {
    let buf = vec![0x5au8; 2 * MIB];
    let _ = std::fs::remove_file(path);
    let start = Instant::now();
    let mut file = File::create(path).expect("create");
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        file.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
    file.sync_all().expect("fsync");
    start.elapsed()
}

/// Saves `memory`; returns the time, the digest and the bytes written.
fn save(path: &Path, memory: &GuestMemoryMmap<()>) -> (Duration, u64, u64) {
    let _ = std::fs::remove_file(path);
    let start = Instant::now();
    let file = File::create(path).expect("create");
    let summary = write_memory_file(memory, &file).expect("save");
    file.sync_all().expect("fsync");
    (start.elapsed(), summary.digest, summary.data_bytes)
}

struct Case {
    mib: usize,
    touch_mib: usize,
    runs: usize,
    save_only: bool,
}

fn run(dir: &Path, case: &Case) {
    let Case {
        mib,
        touch_mib,
        runs,
        save_only,
    } = *case;
    let bytes = mib * MIB;
    let memory = memory_touched(bytes, touch_mib * MIB);
    let layout = MemoryLayout::of(&memory);
    let floor_path = dir.join("floor.bin");
    let memory_path = dir.join("memory.bin");

    let mut rows: Vec<(&str, Vec<Duration>)> = Vec::new();
    let mut record = |name, d| match rows.iter_mut().find(|(n, _)| *n == name) {
        Some((_, v)) => v.push(d),
        None => rows.push((name, vec![d])),
    };
    let mut written = 0;
    for _ in 0..runs {
        let (took, digest, data_bytes) = save(&memory_path, &memory);
        written = data_bytes;
        record("save: sparse write + fsync", took);
        record(
            "floor: sequential write + fsync of as many bytes",
            floor_write(&floor_path, data_bytes),
        );
        if save_only {
            continue;
        }

        evict(&memory_path);
        let start = Instant::now();
        assert_eq!(
            checksum_memory_file(&memory_path).expect("checksum"),
            digest
        );
        record(
            "verify memory digest only (read), cold cache",
            start.elapsed(),
        );

        evict(&memory_path);
        let start = Instant::now();
        let eager = load_memory_eager(&memory_path, &layout, Some(digest)).expect("eager");
        record("eager restore, cold cache, digest checked", start.elapsed());
        drop(eager);

        let start = Instant::now();
        let eager = load_memory_eager(&memory_path, &layout, None).expect("eager");
        record("eager restore, warm cache, no digest", start.elapsed());
        drop(eager);

        evict(&memory_path);
        let start = Instant::now();
        let lazy = map_memory_lazy(&memory_path, &layout).expect("lazy");
        record("lazy restore: map only", start.elapsed());
        std::hint::black_box(touch_all(&lazy));
        record(
            "lazy restore: map + touch every page, cold",
            start.elapsed(),
        );
        drop(lazy);

        let start = Instant::now();
        let lazy = map_memory_lazy(&memory_path, &layout).expect("lazy");
        std::hint::black_box(touch_all(&lazy));
        record(
            "lazy restore: map + touch every page, warm",
            start.elapsed(),
        );
        drop(lazy);

        let start = Instant::now();
        let lazy = map_memory_lazy(&memory_path, &layout).expect("lazy");
        dirty_all(&lazy);
        record(
            "lazy restore: map + write every page, warm",
            start.elapsed(),
        );
        drop(lazy);
    }
    println!(
        "{mib} MiB, {touch_mib} MiB touched ({} MiB written), median of {runs}:",
        written / MIB as u64
    );
    for (name, samples) in rows {
        let (min, max) = (samples.iter().min().copied(), samples.iter().max().copied());
        let ms = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64() * 1e3;
        let m = median(samples);
        let rate = written as f64 / MIB as f64 / m.as_secs_f64();
        println!(
            "  {name:<46} {:>9.1} ms  {rate:>8.0} MiB/s  (min {:.1}, max {:.1})",
            m.as_secs_f64() * 1e3,
            ms(min),
            ms(max)
        );
    }
    let _ = std::fs::remove_file(&floor_path);
    let _ = std::fs::remove_file(&memory_path);
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![256, 1024]
    } else {
        sizes
    };
    let runs = std::env::var("VIRMO_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let base = std::env::var_os("VIRMO_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let touch_mib = std::env::var("VIRMO_BENCH_TOUCH_MIB")
        .ok()
        .and_then(|r| r.parse().ok());
    let save_only = std::env::var_os("VIRMO_BENCH_SAVE_ONLY").is_some_and(|v| v == "1");
    let dir = tempfile::tempdir_in(base).expect("bench folder");
    for mib in sizes {
        let case = Case {
            mib,
            touch_mib: touch_mib.unwrap_or(mib),
            runs,
            save_only,
        };
        run(dir.path(), &case);
    }
}
