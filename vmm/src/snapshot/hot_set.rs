//! The hot set: the 2 MiB units of `memory.bin` a resumed guest touched, recorded at its next
//! suspend and read in first at the resume after (`MemoryRestore::Hot`).
//!
//! A lazily restored guest pays a fault for every page it touches again, 4 KiB at a time (a
//! private file mapping gets no huge pages). The pages of guest memory that are mapped in this
//! process at suspend (`/proc/self/pagemap`) are, for memory restored from a file, exactly those
//! touched since that resume: its working set. `hotset.bin` keeps it as ordered runs of 2 MiB
//! units (the digest's chunks) of the file:
//!
//! ```text
//! offset  size  field
//! 0       8     magic "VIRMOHOT"
//! 8       8     unit size in bytes, little-endian (2 MiB)
//! 16      8     number of runs N
//! 24      16*N  runs: file offset, length in bytes (multiples of the unit, ordered, disjoint)
//! ```
//!
//! A hot restore ([`map_memory_hot`]) maps each region anonymous at a 2 MiB-aligned address with
//! `MADV_HUGEPAGE`, reads the hot units of the file into it (data extents only, in large
//! sequential reads), and maps the file copy-on-write over the cold units only, as a lazy
//! restore does. The guest then faults its working set in 2 MiB pages without a host fault, and
//! the rest stays lazy. Memory that was booted or eagerly restored (anonymous) carries no such
//! information: its hot set is empty, and a hot restore of it is a lazy one.

use std::fs::File;
use std::path::Path;

use vm_memory::guest_memory::FileOffset;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use super::format::{MemoryLayout, PAGE_SIZE};
use super::memory_file::{check_len, chunks, extents, io, Extent, MemoryFileError, CHUNK_BYTES};
use super::pagemap::PageMap;
use crate::memory::GUEST_PROT;

/// File name of the hot set in a snapshot folder.
pub const HOT_SET_FILE: &str = "hotset.bin";
/// The unit of the hot set: a huge page, and the memory digest's chunk.
pub const UNIT_BYTES: u64 = CHUNK_BYTES as u64;
const MAGIC: &[u8; 8] = b"VIRMOHOT";
const HEADER_LEN: usize = 24;
/// More runs than units in any memory we restore is damage (4 TiB of 2 MiB units).
const MAX_RUNS: u64 = 1 << 21;

/// Errors recording, reading or using a hot set.
#[derive(Debug, thiserror::Error)]
pub enum HotSetError {
    /// `hotset.bin` is not a hot set of this memory.
    #[error("hotset.bin is malformed: {0}")]
    Malformed(String),
    /// `/proc/self/pagemap` could not be read.
    #[error("cannot read /proc/self/pagemap")]
    PageMap(#[source] std::io::Error),
    /// Guest memory could not be walked.
    #[error("cannot walk guest memory")]
    Memory(#[from] MemoryFileError),
}

/// A stretch of `memory.bin`: its file offset and length, multiples of [`UNIT_BYTES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotRun {
    pub offset: u64,
    pub len: u64,
}

/// The hot units of `memory.bin`, as ordered, disjoint, non-adjacent runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HotSet {
    runs: Vec<HotRun>,
}

impl HotSet {
    /// The runs, in file order.
    pub fn runs(&self) -> &[HotRun] {
        &self.runs
    }

    /// Bytes of the file the hot set covers.
    pub fn bytes(&self) -> u64 {
        self.runs.iter().map(|r| r.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The hot set of the units whose indices `units` yields in increasing order.
    fn from_units(units: impl IntoIterator<Item = u64>) -> Self {
        let mut runs: Vec<HotRun> = Vec::new();
        for unit in units {
            let offset = unit * UNIT_BYTES;
            match runs.last_mut() {
                Some(last) if last.offset + last.len == offset => last.len += UNIT_BYTES,
                Some(last) if last.offset + last.len > offset => {}
                _ => runs.push(HotRun {
                    offset,
                    len: UNIT_BYTES,
                }),
            }
        }
        Self { runs }
    }

    /// The units of `memory` that hold a page mapped in this process, over the regions mapped
    /// from a file (a lazy or hot restore): the pages touched since that restore. Call it
    /// before anything reads guest memory in bulk (the snapshot writer reads file-backed
    /// regions in full). Anonymous regions add nothing.
    pub fn record(memory: &GuestMemoryMmap<()>) -> Result<Self, HotSetError> {
        // The writer's own walk: chunks of at most a unit, cut at unit boundaries of the file.
        let chunks = chunks(memory)?;
        if chunks.iter().all(|c| c.anonymous) {
            return Ok(Self::default());
        }
        let pagemap = PageMap::open().ok_or_else(|| {
            HotSetError::PageMap(std::io::Error::other("cannot open /proc/self/pagemap"))
        })?;
        let mut units = Vec::new();
        let mut present = Vec::with_capacity(CHUNK_BYTES / PAGE_SIZE as usize);
        for chunk in chunks.iter().filter(|c| !c.anonymous) {
            present.clear();
            pagemap
                .touched(chunk.host, chunk.pages(), &mut present)
                .map_err(HotSetError::PageMap)?;
            if present.iter().any(|&p| p) {
                units.push(chunk.file_offset / UNIT_BYTES);
            }
        }
        // In file order already: `from_units` merges a unit that two regions share.
        Ok(Self::from_units(units))
    }

    /// The content of `hotset.bin`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 16 * self.runs.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&UNIT_BYTES.to_le_bytes());
        out.extend_from_slice(&(self.runs.len() as u64).to_le_bytes());
        for run in &self.runs {
            out.extend_from_slice(&run.offset.to_le_bytes());
            out.extend_from_slice(&run.len.to_le_bytes());
        }
        out
    }

    /// Reads `hotset.bin` for a `memory.bin` of `memory_len` bytes.
    pub fn decode(bytes: &[u8], memory_len: u64) -> Result<Self, HotSetError> {
        let bad = |reason: &str| HotSetError::Malformed(reason.to_string());
        let word = |at: usize| -> Result<u64, HotSetError> {
            bytes
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| bad("truncated"))
        };
        if bytes.get(..8) != Some(MAGIC.as_slice()) {
            return Err(bad("no VIRMOHOT magic"));
        }
        if word(8)? != UNIT_BYTES {
            return Err(bad("unit is not 2 MiB"));
        }
        let count = word(16)?;
        if count > MAX_RUNS || bytes.len() as u64 != HEADER_LEN as u64 + 16 * count {
            return Err(bad("length does not match the number of runs"));
        }
        let mut runs = Vec::with_capacity(count as usize);
        let mut end_of_last = None;
        for i in 0..count as usize {
            let (offset, len) = (word(HEADER_LEN + 16 * i)?, word(HEADER_LEN + 16 * i + 8)?);
            let aligned = offset % UNIT_BYTES == 0 && len % UNIT_BYTES == 0 && len > 0;
            let end = offset
                .checked_add(len)
                .ok_or_else(|| bad("run overflows"))?;
            if !aligned || end_of_last.is_some_and(|e| offset <= e) {
                return Err(bad("runs are not aligned, ordered and disjoint"));
            }
            // The last unit of the file may be short.
            if offset >= memory_len {
                return Err(bad("run beyond the memory file"));
            }
            runs.push(HotRun { offset, len });
            end_of_last = Some(end);
        }
        Ok(Self { runs })
    }

    /// The parts of `[start, end)` of the file that the hot set covers (`true`) or not, in
    /// order.
    fn split(&self, start: u64, end: u64) -> Vec<(u64, u64, bool)> {
        let mut out = Vec::new();
        let mut at = start;
        for run in &self.runs {
            let (from, to) = (run.offset.max(start), (run.offset + run.len).min(end));
            if from >= to {
                continue;
            }
            if from > at {
                out.push((at, from, false));
            }
            out.push((from, to, true));
            at = to;
        }
        if at < end {
            out.push((at, end, false));
        }
        out
    }
}

/// Builds guest memory from `memory.bin` with the units of `hot` read into anonymous huge-page
/// memory and the rest mapped from the file copy-on-write (see the module documentation). The
/// regions are never unmapped: guest memory lives as long as the VMM process. They carry their
/// file offset, so the snapshot writer reads them in full (a cold page still holds the file's
/// data).
pub fn map_memory_hot(
    path: &Path,
    layout: &MemoryLayout,
    hot: &HotSet,
) -> Result<GuestMemoryMmap<()>, MemoryFileError> {
    let started = std::time::Instant::now();
    let file = File::open(path).map_err(io("open"))?;
    check_len(&file, layout)?;
    let mut regions = Vec::with_capacity(layout.regions.len());
    for r in &layout.regions {
        let size = r.size as usize;
        let host = crate::memory::reserve_aligned(size).map_err(io("mmap"))?;
        let region_end = r.file_offset + r.size;
        for (from, to, is_hot) in hot.split(r.file_offset, region_end) {
            let at = host + (from - r.file_offset) as usize;
            let len = (to - from) as usize;
            if is_hot {
                read_data(&file, from, to, at)?;
            } else {
                map_file_over(&file, from, at, len)?;
            }
        }
        let fd = file.try_clone().map_err(io("duplicate descriptor"))?;
        // SAFETY: [host, host + size) is the mapping just made for this region (anonymous and
        // file parts, all readable and writable, private), owned by nothing else and never
        // unmapped.
        let mapping = unsafe {
            MmapRegionBuilder::new(size)
                .with_raw_mmap_pointer(host as *mut u8)
                .with_file_offset(FileOffset::new(fd, r.file_offset))
                .with_mmap_prot(GUEST_PROT)
                .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
                .build()
        }
        .map_err(|source| MemoryFileError::Mmap {
            guest_addr: r.guest_addr,
            size: r.size,
            source,
        })?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(r.guest_addr)).ok_or(
            MemoryFileError::Regions(vm_memory::GuestRegionCollectionError::NoMemoryRegion),
        )?;
        regions.push(region);
    }
    tracing::info!(
        hot_mib = hot.bytes() >> 20,
        runs = hot.runs().len(),
        load_ms = started.elapsed().as_millis() as u64,
        "hot set loaded"
    );
    GuestMemoryMmap::from_regions(regions).map_err(MemoryFileError::Regions)
}

/// Maps `[offset, offset + len)` of `file` copy-on-write at host address `at`, replacing the
/// anonymous memory there.
fn map_file_over(file: &File, offset: u64, at: usize, len: usize) -> Result<(), MemoryFileError> {
    use std::os::fd::AsRawFd;
    // SAFETY: [at, at + len) lies inside the region's reservation made by `map_memory_hot`,
    // which nothing else uses yet; MAP_FIXED replaces only that range.
    let mapped = unsafe {
        libc::mmap(
            at as *mut libc::c_void,
            len,
            GUEST_PROT,
            libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
            file.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if mapped == libc::MAP_FAILED {
        return Err(io("mmap memory.bin")(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Reads the data extents of `[from, to)` of `file` into anonymous memory at host address `at`
/// (holes stay zero: the memory is fresh).
fn read_data(file: &File, from: u64, to: u64, at: usize) -> Result<(), MemoryFileError> {
    use std::os::unix::fs::FileExt;
    for extent in extents(file, from, to)? {
        let Extent::Data { offset, len } = extent else {
            continue;
        };
        // SAFETY: [offset, offset + len) lies in [from, to), so the destination lies in
        // [at, at + (to - from)), anonymous memory of the region's reservation that nothing
        // else (KVM, vCPUs, devices) uses yet.
        let dest = unsafe {
            std::slice::from_raw_parts_mut((at + (offset - from) as usize) as *mut u8, len as usize)
        };
        file.read_exact_at(dest, offset).map_err(io("read"))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "hot_set_tests.rs"]
mod tests;
