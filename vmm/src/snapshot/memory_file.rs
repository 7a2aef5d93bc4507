//! The `memory.bin` file: guest RAM, one region after the other at the file offsets of the
//! [`MemoryLayout`], written sparsely.
//!
//! Saving walks guest memory in 2 MiB chunks, in place (no copy): chunks of anonymous memory
//! the process never touched (`/proc/self/pagemap`) are skipped without being read; of the
//! others, only the 4 KiB pages that are not all zero are written (`pwrite`); the file length is
//! set last, so zero pages are holes that read back as zeros and take no disk space. The
//! checksum is the chunked xxh64 digest of the logical file, holes included ([`memory_digest`]):
//! untouched chunks enter it as a known constant without being read, and it is computed on a
//! second thread while the first writes.
//!
//! [`memory_digest`]: super::memory_digest
//!
//! Restoring:
//! - [`MemoryRestore::Lazy`] maps each region of the file `MAP_PRIVATE`: nothing is read until
//!   the guest (or KVM on its behalf) touches a page; writes go to private copy-on-write pages
//!   and never reach the file. The file is opened read-only. Snapshot folders are replaced by
//!   renaming, never rewritten in place, so a mapped `memory.bin` never changes underneath.
//! - [`MemoryRestore::Eager`] allocates anonymous memory (`MADV_HUGEPAGE`) and reads the file's
//!   data extents straight into it (`SEEK_DATA`/`SEEK_HOLE`): holes are skipped, fresh anonymous
//!   memory is already zero.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use vm_memory::guest_memory::FileOffset;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    MemoryRegionAddress,
};

use super::format::{MemoryLayout, PAGE_SIZE};
use super::memory_digest::{MemoryDigester, DIGEST_CHUNK_BYTES};
use super::pagemap::PageMap;

/// Copy unit between guest memory and the file: the digest's chunk, so that a chunk of guest
/// memory never straddles two digest chunks.
pub(super) const CHUNK_BYTES: usize = DIGEST_CHUNK_BYTES as usize;
const PAGE: usize = PAGE_SIZE as usize;

/// How guest memory is rebuilt from `memory.bin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MemoryRestore {
    /// Map the file copy-on-write; pages load on first touch.
    Lazy,
    /// Read the file into anonymous memory before the guest runs.
    Eager,
    /// Read the recorded hot set into anonymous huge-page memory before the guest runs; map the
    /// rest of the file as `Lazy` does ([`super::hot_set`]). With no hot set, the same as `Lazy`.
    Hot,
}

/// Errors writing or loading `memory.bin`.
#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    /// A file operation failed.
    #[error("memory file: {op} failed")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Guest memory could not be read or written.
    #[error("guest memory access failed")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
    /// Mapping a region failed.
    #[error("cannot map guest memory region at {guest_addr:#x} ({size} bytes)")]
    Mmap {
        /// Region start.
        guest_addr: u64,
        /// Region length.
        size: u64,
        /// The mmap error.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// The regions do not form a valid guest memory.
    #[error("cannot assemble guest memory from the layout")]
    Regions(#[source] vm_memory::GuestRegionCollectionError),
    /// The anonymous memory for an eager restore could not be allocated.
    #[error("cannot allocate guest memory")]
    Allocate(#[source] vm_memory::mmap::FromRangesError),
    /// The file length does not match the layout.
    #[error("memory.bin has {actual} bytes, the layout needs {expected}")]
    SizeMismatch {
        /// Bytes the layout needs.
        expected: u64,
        /// Bytes in the file.
        actual: u64,
    },
    /// The file content does not match the recorded checksum.
    #[error("memory.bin is corrupted: xxh64-2m digest {actual:016x}, expected {expected:016x}")]
    ChecksumMismatch {
        /// Recorded.
        expected: u64,
        /// Computed.
        actual: u64,
    },
}

type Result<T> = std::result::Result<T, MemoryFileError>;

pub(super) fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> MemoryFileError {
    move |source| MemoryFileError::Io { op, source }
}

/// What [`write_memory_file`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryFileSummary {
    /// Logical file length (all guest memory).
    pub len: u64,
    /// `xxh64-2m` digest of the logical content, holes read as zeros ([`memory_digest`]).
    ///
    /// [`memory_digest`]: super::memory_digest
    pub digest: u64,
    /// Bytes actually written (non-zero pages).
    pub data_bytes: u64,
}

/// Whether `page` is all zeros, word by word with an early exit.
///
/// Deliberately scalar: in the nested runner (QEMU TCG) this loop scanned 512 MiB of zero
/// pages in 117-182 ms, where the SSE-vectorised OR reduction of 64-byte blocks the compiler
/// makes of a fold took 495-733 ms (TCG emulates vector instructions slowly); natively both
/// run at memory speed (16-21 ms).
fn is_zero(page: &[u8]) -> bool {
    let words = page.chunks_exact(8);
    let tail = words.remainder();
    words
        .into_iter()
        .all(|w| <[u8; 8]>::try_from(w).is_ok_and(|w| u64::from_ne_bytes(w) == 0))
        && tail.iter().all(|&b| b == 0)
}

/// A piece of guest memory of at most [`CHUNK_BYTES`], as the writer walks it.
#[derive(Clone, Copy)]
pub(super) struct Chunk {
    /// Host address of its first byte (page aligned).
    pub(super) host: usize,
    pub(super) len: usize,
    /// Where it goes in `memory.bin`.
    pub(super) file_offset: u64,
    /// Anonymous memory: untouched pages are known from the page tables.
    pub(super) anonymous: bool,
}

impl Chunk {
    pub(super) fn pages(&self) -> usize {
        self.len.div_ceil(PAGE)
    }

    /// Whether each page may hold data (see [`PageMap::touched`]); all pages when unknown.
    fn touched(&self, pagemap: Option<&PageMap>, out: &mut Vec<bool>) -> Result<()> {
        out.clear();
        match pagemap.filter(|_| self.anonymous) {
            Some(pagemap) => pagemap
                .touched(self.host, self.pages(), out)
                .map_err(io("read /proc/self/pagemap")),
            None => {
                out.resize(self.pages(), true);
                Ok(())
            }
        }
    }

    /// The chunk's bytes.
    ///
    /// # Safety
    /// The guest memory the chunk was taken from must be alive and not written by anyone
    /// while the slice is used.
    unsafe fn bytes(&self) -> &[u8] {
        // SAFETY: `host..host + len` lies inside one region's host mapping (see `chunks`); the
        // caller keeps the mapping alive and unwritten.
        unsafe { std::slice::from_raw_parts(self.host as *const u8, self.len) }
    }
}

/// Guest memory cut into chunks, in file order, at the end of each region and at every
/// multiple of [`CHUNK_BYTES`] in the file (so no chunk straddles two digest chunks).
pub(super) fn chunks(memory: &GuestMemoryMmap<()>) -> Result<Vec<Chunk>> {
    let mut chunks = Vec::new();
    let mut file_offset = 0u64;
    for region in memory.iter() {
        let size = region.len();
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(MemoryFileError::GuestMemory)? as usize;
        let anonymous = region.file_offset().is_none();
        let mut done = 0u64;
        while done < size {
            let at = file_offset + done;
            let to_boundary = CHUNK_BYTES as u64 - at % CHUNK_BYTES as u64;
            let len = (size - done).min(to_boundary) as usize;
            chunks.push(Chunk {
                host: host + done as usize,
                len,
                file_offset: at,
                anonymous,
            });
            done += len as u64;
        }
        file_offset += size;
    }
    Ok(chunks)
}

/// Writes all of `memory` into `file` (new and empty) following [`MemoryLayout::of`]`(memory)`,
/// skipping zero pages. The vCPUs and devices must not write guest memory meanwhile.
///
/// Pages of anonymous guest memory that the process never touched (`/proc/self/pagemap`) are
/// not even read, and enter the digest as zeros without being hashed: the cost follows the
/// memory the guest touched, not its size. Memory mapped from a file (a VM restored lazily) is
/// read in full: a page it never touched still holds the file's data. The digest is computed on
/// a second thread while this one writes.
pub fn write_memory_file(memory: &GuestMemoryMmap<()>, file: &File) -> Result<MemoryFileSummary> {
    let chunks = chunks(memory)?;
    let pagemap = PageMap::open();
    let len = chunks.last().map_or(0, |c| c.file_offset + c.len as u64);
    let (digest, data_bytes) = std::thread::scope(|scope| -> Result<(u64, u64)> {
        let digester = std::thread::Builder::new()
            .name("snapshot-digest".into())
            .spawn_scoped(scope, || timed(|| digest_chunks(&chunks, pagemap.as_ref())))
            .map_err(io("start the digest thread"))?;
        let (written, write_ms) = timed(|| write_chunks(&chunks, pagemap.as_ref(), file));
        let (digest, digest_ms) = digester.join().map_err(|_| {
            io("compute the digest")(std::io::Error::other("the digest thread panicked"))
        })?;
        tracing::debug!(write_ms, digest_ms, "memory file written");
        Ok((digest?, written?))
    })?;
    file.set_len(len).map_err(io("set length"))?;
    Ok(MemoryFileSummary {
        len,
        digest,
        data_bytes,
    })
}

/// Runs `f`; returns its result and the milliseconds it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let started = std::time::Instant::now();
    let out = f();
    (out, started.elapsed().as_secs_f64() * 1e3)
}

/// The digest of all chunks; untouched pages enter it as zeros without being read.
fn digest_chunks(chunks: &[Chunk], pagemap: Option<&PageMap>) -> Result<u64> {
    let mut digester = MemoryDigester::new();
    let mut touched = Vec::with_capacity(CHUNK_BYTES / PAGE);
    for chunk in chunks {
        chunk.touched(pagemap, &mut touched)?;
        if !touched.iter().any(|&t| t) {
            digester.zeros(chunk.len as u64);
            continue;
        }
        // SAFETY: `write_memory_file`'s caller keeps guest memory alive and unwritten.
        let bytes = unsafe { chunk.bytes() };
        // Runs of touched pages are hashed in place; untouched runs are fed as zeros, so they
        // are not faulted in (a read would map the zero page, page by page).
        let mut at = 0;
        for run in touched.chunk_by(|a, b| a == b) {
            let end = (at + run.len() * PAGE).min(bytes.len());
            if run[0] {
                digester.data(&bytes[at..end]);
            } else {
                digester.zeros((end - at) as u64);
            }
            at = end;
        }
    }
    Ok(digester.finish())
}

/// Writes the non-zero pages of all chunks; returns the bytes written.
fn write_chunks(chunks: &[Chunk], pagemap: Option<&PageMap>, file: &File) -> Result<u64> {
    let mut written = 0u64;
    let mut touched = Vec::with_capacity(CHUNK_BYTES / PAGE);
    for chunk in chunks {
        chunk.touched(pagemap, &mut touched)?;
        if touched.iter().any(|&t| t) {
            // SAFETY: `write_memory_file`'s caller keeps guest memory alive and unwritten.
            let bytes = unsafe { chunk.bytes() };
            written += write_nonzero_runs(file, bytes, &touched, chunk.file_offset)?;
        }
    }
    Ok(written)
}

/// Writes each run of consecutive non-zero pages of `chunk` (a page counts only if `touched`)
/// with one `pwrite` at `at`; returns the bytes written.
fn write_nonzero_runs(file: &File, chunk: &[u8], touched: &[bool], at: u64) -> Result<u64> {
    let mut written = 0u64;
    let mut run_start: Option<usize> = None;
    for (i, (page, &maybe)) in chunk.chunks(PAGE).zip(touched).enumerate() {
        match (maybe && !is_zero(page), run_start) {
            (true, None) => run_start = Some(i * PAGE),
            (false, Some(start)) => {
                let end = i * PAGE;
                file.write_all_at(&chunk[start..end], at + start as u64)
                    .map_err(io("write"))?;
                written += (end - start) as u64;
                run_start = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run_start {
        file.write_all_at(&chunk[start..], at + start as u64)
            .map_err(io("write"))?;
        written += (chunk.len() - start) as u64;
    }
    Ok(written)
}

/// A stretch of the file: data, or a hole that reads as zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Extent {
    Data { offset: u64, len: u64 },
    Hole { offset: u64, len: u64 },
}

/// `lseek(fd, offset, whence)` for `SEEK_DATA`/`SEEK_HOLE`; `None` when there is no more data.
fn seek(file: &File, offset: u64, whence: libc::c_int) -> Result<Option<u64>> {
    let offset = i64::try_from(offset).map_err(|_| MemoryFileError::SizeMismatch {
        expected: i64::MAX as u64,
        actual: offset,
    })?;
    // SAFETY: lseek only reads the descriptor's state; `file` keeps the descriptor open.
    let at = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if at >= 0 {
        return Ok(Some(at as u64));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENXIO) {
        Ok(None)
    } else {
        Err(io("seek data/hole")(err))
    }
}

/// The data and hole extents covering `[start, end)`, in order.
pub(super) fn extents(file: &File, start: u64, end: u64) -> Result<Vec<Extent>> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let data = seek(file, at, libc::SEEK_DATA)?.unwrap_or(end).min(end);
        if data > at {
            out.push(Extent::Hole {
                offset: at,
                len: data - at,
            });
        }
        if data >= end {
            break;
        }
        let hole = seek(file, data, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
        out.push(Extent::Data {
            offset: data,
            len: hole - data,
        });
        at = hole;
    }
    Ok(out)
}

/// Tells the kernel the file is read front to back, so it reads ahead further.
pub(super) fn advise_sequential(file: &File) {
    // SAFETY: an advisory call on a descriptor `file` keeps open; no memory is passed. Failure
    // only loses the hint.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
}

pub(super) fn check_len(file: &File, layout: &MemoryLayout) -> Result<()> {
    let actual = file.metadata().map_err(io("stat"))?.len();
    let expected = layout.total_bytes();
    if actual != expected {
        return Err(MemoryFileError::SizeMismatch { expected, actual });
    }
    Ok(())
}

/// Computes the digest of `memory.bin` as [`write_memory_file`] did, reading only data extents:
/// holes enter it as zeros, and a chunk that is all hole is not hashed.
pub fn checksum_memory_file(path: &Path) -> Result<u64> {
    let file = File::open(path).map_err(io("open"))?;
    let len = file.metadata().map_err(io("stat"))?.len();
    advise_sequential(&file);
    let mut digester = MemoryDigester::new();
    let mut buf = vec![0u8; CHUNK_BYTES];
    for extent in extents(&file, 0, len)? {
        match extent {
            Extent::Hole { len, .. } => digester.zeros(len),
            Extent::Data { offset, len } => {
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(CHUNK_BYTES as u64) as usize;
                    file.read_exact_at(&mut buf[..n], offset + done)
                        .map_err(io("read"))?;
                    digester.data(&buf[..n]);
                    done += n as u64;
                }
            }
        }
    }
    Ok(digester.finish())
}

/// Builds guest memory backed by `memory.bin` mapped `MAP_PRIVATE | MAP_NORESERVE`: pages fault
/// in from the file on first touch; guest writes stay private. Register the regions with KVM
/// (`KVM_SET_USER_MEMORY_REGION`) as for any guest memory.
pub fn map_memory_lazy(path: &Path, layout: &MemoryLayout) -> Result<GuestMemoryMmap<()>> {
    let file = File::open(path).map_err(io("open"))?;
    check_len(&file, layout)?;
    let mut regions = Vec::with_capacity(layout.regions.len());
    for r in &layout.regions {
        let mmap_error = |source| MemoryFileError::Mmap {
            guest_addr: r.guest_addr,
            size: r.size,
            source,
        };
        let fd = file.try_clone().map_err(io("duplicate descriptor"))?;
        let mapping = MmapRegionBuilder::new(r.size as usize)
            .with_file_offset(FileOffset::new(fd, r.file_offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(mmap_error)?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(r.guest_addr)).ok_or(
            MemoryFileError::Regions(vm_memory::GuestRegionCollectionError::NoMemoryRegion),
        )?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(MemoryFileError::Regions)
}

/// Builds anonymous guest memory and reads `memory.bin` into it. With `expected_digest`, the
/// content is checked on the way (holes enter the digest without being hashed) and a mismatch
/// is refused.
pub fn load_memory_eager(
    path: &Path,
    layout: &MemoryLayout,
    expected_digest: Option<u64>,
) -> Result<GuestMemoryMmap<()>> {
    let file = File::open(path).map_err(io("open"))?;
    check_len(&file, layout)?;
    advise_sequential(&file);
    let ranges: Vec<(GuestAddress, usize)> = layout
        .regions
        .iter()
        .map(|r| (GuestAddress(r.guest_addr), r.size as usize))
        .collect();
    let memory = GuestMemoryMmap::<()>::from_ranges(&ranges).map_err(MemoryFileError::Allocate)?;
    let mut digester = expected_digest.map(|_| MemoryDigester::new());
    for (r, region) in layout.regions.iter().zip(memory.iter()) {
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(MemoryFileError::GuestMemory)? as usize;
        // Huge pages where the kernel can: one fault per 2 MiB instead of per 4 KiB while the
        // file is read in (as the VMM does for the guest memory of a booted VM).
        // SAFETY: an advisory call on this region's own anonymous mapping of `r.size` bytes;
        // it changes no content. Failure only loses the hint.
        unsafe {
            libc::madvise(
                host as *mut libc::c_void,
                r.size as usize,
                libc::MADV_HUGEPAGE,
            )
        };
        let region_end = r.file_offset + r.size;
        for extent in extents(&file, r.file_offset, region_end)? {
            match extent {
                Extent::Hole { len, .. } => {
                    if let Some(digester) = &mut digester {
                        digester.zeros(len);
                    }
                }
                Extent::Data { offset, len } => {
                    let mut done = 0;
                    while done < len {
                        let n = (len - done).min(CHUNK_BYTES as u64) as usize;
                        let at = offset + done;
                        let guest_offset = (at - r.file_offset) as usize;
                        // SAFETY: `guest_offset + n <= r.size`, the length of this region's
                        // host mapping (the extent lies in `r.file_offset..region_end`). The
                        // memory was just allocated here and nothing else (KVM, vCPUs,
                        // devices) uses it yet, so this is the only reference to these bytes.
                        let dest = unsafe {
                            std::slice::from_raw_parts_mut((host + guest_offset) as *mut u8, n)
                        };
                        file.read_exact_at(dest, at).map_err(io("read"))?;
                        if let Some(digester) = &mut digester {
                            digester.data(dest);
                        }
                        done += n as u64;
                    }
                }
            }
        }
    }
    if let (Some(expected), Some(digester)) = (expected_digest, digester) {
        let actual = digester.finish();
        if actual != expected {
            return Err(MemoryFileError::ChecksumMismatch { expected, actual });
        }
    }
    Ok(memory)
}

#[cfg(test)]
#[path = "memory_file_tests.rs"]
pub(super) mod tests;
