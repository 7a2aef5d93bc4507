//! The ELF vmlinux inside a bzImage: the setup header says where the compressed payload lies
//! (boot protocol 2.08+), and the VMM decompresses it itself so the kernel can be entered at its
//! PVH entry point instead of decompressing itself in the guest. LZ4 legacy blocks are
//! independent, so the VMM decompresses them on several threads, mostly straight into guest
//! memory. In the nested runner this took ~0.35 s (2 threads) where the guest's own decompressor
//! took ~1 s.
//!
//! Only LZ4 payloads (the kernel's "legacy" LZ4 frame, Debian's choice) are decompressed here;
//! for any other compression the caller falls back to the Linux boot protocol.

use std::ops::Range;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::mapped_file::ScratchBuffer;
use crate::memory::HIMEM_START;

/// Offset of `setup_sects` in the bzImage.
const SETUP_SECTS_OFFSET: usize = 0x1f1;
/// Offsets of `payload_offset` and `payload_length` (boot protocol 2.08+).
const PAYLOAD_OFFSET_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH_OFFSET: usize = 0x24c;
/// Offset and value of the `HdrS` magic and the protocol version.
const HEADER_MAGIC_OFFSET: usize = 0x202;
const HEADER_MAGIC: &[u8; 4] = b"HdrS";
const VERSION_OFFSET: usize = 0x206;
const MIN_PAYLOAD_VERSION: u16 = 0x0208;
/// `setup_sects` 0 means 4 (old kernels).
const DEFAULT_SETUP_SECTS: usize = 4;
const SECTOR_SIZE: usize = 512;

/// The magic of the LZ4 legacy frame (`lz4 -l`), little-endian.
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
/// Every block of an LZ4 legacy frame decompresses to at most 8 MiB.
const LZ4_LEGACY_BLOCK_MAX: usize = 8 << 20;
/// The largest vmlinux accepted (a sanity bound on the size word at the payload's end).
const MAX_VMLINUX_SIZE: usize = 1 << 30;
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// Why the payload could not be turned into an ELF vmlinux.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("the setup header has no payload fields (boot protocol below 2.08)")]
    NoPayloadFields,
    #[error("the payload ({offset:#x}+{length:#x}) lies outside the {file_len}-byte file")]
    OutOfFile {
        offset: usize,
        length: usize,
        file_len: usize,
    },
    #[error("the payload is not LZ4-compressed")]
    NotLz4,
    #[error("the payload claims a {0}-byte vmlinux (more than 1 GiB)")]
    TooLarge(usize),
    #[error("the LZ4 stream ends inside a block header or block at byte {0}")]
    Truncated(usize),
    #[error("LZ4 block at byte {at} is corrupt: {reason}")]
    Corrupt { at: usize, reason: String },
    #[error("the payload decompressed to {got} bytes, but its size word says {expected}")]
    SizeMismatch { got: usize, expected: usize },
    #[error("the decompressed payload is not an x86_64 ELF file")]
    NotElf,
    #[error("the decompressed ELF has a bad {0}")]
    BadElf(&'static str),
    #[error("an ELF segment ({paddr:#x}..{end:#x}) lies outside the guest's low RAM")]
    SegmentOutsideRam { paddr: u64, end: u64 },
    #[error("the kernel has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY)")]
    NoPvhEntry,
    #[error("a loader thread panicked")]
    LoaderPanicked,
    #[error("cannot map a scratch buffer")]
    Scratch(#[source] std::io::Error),
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
}

/// Where the compressed payload lies in `bzimage`.
pub fn payload_range(bzimage: &[u8]) -> Result<Range<usize>, PayloadError> {
    let has_magic = bzimage.get(HEADER_MAGIC_OFFSET..HEADER_MAGIC_OFFSET + 4) == Some(HEADER_MAGIC);
    let version = bzimage
        .get(VERSION_OFFSET..VERSION_OFFSET + 2)
        .map(|v| u16::from_le_bytes([v[0], v[1]]));
    if !has_magic || version.is_none_or(|v| v < MIN_PAYLOAD_VERSION) {
        return Err(PayloadError::NoPayloadFields);
    }
    let (Some(offset), Some(length)) = (
        u32_at(bzimage, PAYLOAD_OFFSET_OFFSET),
        u32_at(bzimage, PAYLOAD_LENGTH_OFFSET),
    ) else {
        return Err(PayloadError::NoPayloadFields);
    };
    let setup_sects = match bzimage[SETUP_SECTS_OFFSET] {
        0 => DEFAULT_SETUP_SECTS,
        n => usize::from(n),
    };
    let offset = (setup_sects + 1) * SECTOR_SIZE + offset as usize;
    let length = length as usize;
    match offset.checked_add(length) {
        Some(end) if end <= bzimage.len() => Ok(offset..end),
        _ => Err(PayloadError::OutOfFile {
            offset,
            length,
            file_len: bzimage.len(),
        }),
    }
}

/// The compressed blocks of a kernel LZ4 payload: the legacy frame (magic, then blocks each
/// preceded by their compressed length; another magic may start a concatenated frame) followed
/// by the uncompressed size as a little-endian `u32`.
struct Lz4Blocks<'a> {
    payload: &'a [u8],
    /// Where the size word starts.
    end: usize,
    at: usize,
}

impl<'a> Lz4Blocks<'a> {
    /// The blocks and the uncompressed size.
    fn new(payload: &'a [u8]) -> Result<(Self, usize), PayloadError> {
        if payload.len() < 8 || u32_at(payload, 0) != Some(LZ4_LEGACY_MAGIC) {
            return Err(PayloadError::NotLz4);
        }
        let end = payload.len() - 4;
        let size = u32_at(payload, end).ok_or(PayloadError::Truncated(end))? as usize;
        if size > MAX_VMLINUX_SIZE {
            return Err(PayloadError::TooLarge(size));
        }
        Ok((
            Self {
                payload: &payload[..end],
                end,
                at: 4,
            },
            size,
        ))
    }
}

impl<'a> Iterator for Lz4Blocks<'a> {
    /// (offset of the block in the payload, compressed block)
    type Item = Result<(usize, &'a [u8]), PayloadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.at >= self.end {
                return None;
            }
            let Some(len) = u32_at(self.payload, self.at) else {
                self.at = self.end;
                return Some(Err(PayloadError::Truncated(self.at)));
            };
            let start = self.at + 4;
            if len == LZ4_LEGACY_MAGIC {
                self.at = start;
                continue;
            }
            let Some(block_end) = start.checked_add(len as usize).filter(|&e| e <= self.end) else {
                self.at = self.end;
                return Some(Err(PayloadError::Truncated(start)));
            };
            self.at = block_end;
            return Some(Ok((start, &self.payload[start..block_end])));
        }
    }
}

#[cfg(test)]
/// Feeds each decompressed block of `payload`, with its offset in the decompressed stream, to
/// `sink`. Returns the decompressed size.
fn decompress_lz4_payload(
    payload: &[u8],
    mut sink: impl FnMut(u64, &[u8]) -> Result<(), PayloadError>,
) -> Result<usize, PayloadError> {
    let (blocks, expected) = Lz4Blocks::new(payload)?;
    let mut scratch = vec![0u8; expected.min(LZ4_LEGACY_BLOCK_MAX)];
    let mut written: usize = 0;
    for block in blocks {
        let (at, block) = block?;
        let window = (expected - written).min(scratch.len());
        let produced =
            lz4_flex::block::decompress_into(block, &mut scratch[..window]).map_err(|e| {
                PayloadError::Corrupt {
                    at,
                    reason: e.to_string(),
                }
            })?;
        sink(written as u64, &scratch[..produced])?;
        written += produced;
    }
    if written != expected {
        return Err(PayloadError::SizeMismatch {
            got: written,
            expected,
        });
    }
    Ok(written)
}

/// ELF64 little-endian x86_64 executable: header and program header fields used here.
const ELF_CLASS_64: u8 = 2;
const ELF_DATA_LSB: u8 = 1;
const ELF_MACHINE_X86_64: u16 = 62;
const ELF_HEADER_SIZE: usize = 64;
const ELF_PHDR_SIZE: usize = 56;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
/// The PVH entry note: owner "Xen", type `XEN_ELFNOTE_PHYS32_ENTRY`.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// A piece of the ELF file that lands in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    file_offset: u64,
    file_size: u64,
    paddr: u64,
    mem_size: u64,
}

/// The program headers of the vmlinux.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ElfLayout {
    loads: Vec<Segment>,
    /// File ranges of the notes (offset, size).
    notes: Vec<(u64, u64)>,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(b);
    Some(u64::from_le_bytes(word))
}

/// Parses the ELF header and program headers from the start of the file (`head`, the first
/// decompressed block).
fn parse_elf_layout(head: &[u8]) -> Result<ElfLayout, PayloadError> {
    let header_ok = head.len() >= ELF_HEADER_SIZE
        && head.starts_with(ELF_MAGIC)
        && head[4] == ELF_CLASS_64
        && head[5] == ELF_DATA_LSB
        && u16_at(head, 18) == Some(ELF_MACHINE_X86_64);
    if !header_ok {
        return Err(PayloadError::NotElf);
    }
    let bad = |what: &'static str| PayloadError::BadElf(what);
    let phoff = u64_at(head, 32).ok_or(bad("program header offset"))?;
    let phentsize = u16_at(head, 54).ok_or(bad("program header size"))?;
    let phnum = u16_at(head, 56).ok_or(bad("program header count"))?;
    if usize::from(phentsize) != ELF_PHDR_SIZE {
        return Err(bad("program header size"));
    }
    let mut layout = ElfLayout {
        loads: Vec::new(),
        notes: Vec::new(),
    };
    for i in 0..usize::from(phnum) {
        let at = usize::try_from(phoff)
            .ok()
            .and_then(|o| o.checked_add(i * ELF_PHDR_SIZE))
            .ok_or(bad("program header offset"))?;
        let ph = head
            .get(at..at + ELF_PHDR_SIZE)
            .ok_or(bad("program headers beyond the first block"))?;
        let field = |o| u64_at(ph, o).ok_or(bad("program header"));
        let kind = u32_at(ph, 0).ok_or(bad("program header"))?;
        let (offset, paddr, file_size, mem_size) = (field(8)?, field(24)?, field(32)?, field(40)?);
        if offset.checked_add(file_size).is_none() || paddr.checked_add(mem_size).is_none() {
            return Err(bad("segment bounds overflow"));
        }
        match kind {
            PT_LOAD => layout.loads.push(Segment {
                file_offset: offset,
                file_size,
                paddr,
                mem_size,
            }),
            PT_NOTE => layout.notes.push((offset, file_size)),
            _ => {}
        }
    }
    if layout.loads.is_empty() {
        return Err(bad("no loadable segment"));
    }
    Ok(layout)
}

/// The PVH entry point from ELF note bytes, if a `XEN_ELFNOTE_PHYS32_ENTRY` note is there.
fn pvh_entry_from_notes(mut notes: &[u8]) -> Option<u64> {
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    while notes.len() >= 12 {
        let name_size = u32_at(notes, 0)? as usize;
        let desc_size = u32_at(notes, 4)? as usize;
        let kind = u32_at(notes, 8)?;
        let name_end = 12usize.checked_add(align4(name_size)?)?;
        let desc_end = name_end.checked_add(align4(desc_size)?)?;
        let name = notes.get(12..12 + name_size)?;
        let desc = notes.get(name_end..name_end + desc_size)?;
        if kind == XEN_ELFNOTE_PHYS32_ENTRY && name.starts_with(b"Xen") {
            return match desc.len() {
                4 => u32_at(desc, 0).map(u64::from),
                8 => u64_at(desc, 0),
                _ => None,
            };
        }
        notes = notes.get(desc_end..)?;
    }
    None
}

/// The vmlinux of a bzImage, loaded into guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedVmlinux {
    /// The PVH entry point (physical).
    pub pvh_entry: u64,
    /// The end of the highest segment in memory.
    pub kernel_end: u64,
}

/// How many threads decompress blocks (LZ4 legacy blocks are independent).
const MAX_LOADER_THREADS: usize = 4;

/// Decompresses block `block` (the output bytes `out_offset..` of the vmlinux) and puts the parts
/// that belong to loadable segments at their physical addresses. A block that lies inside one
/// segment is decompressed straight into guest memory; any other goes through `scratch`.
fn load_block(
    mem: &GuestMemoryMmap,
    layout: &ElfLayout,
    (at, block): (usize, &[u8]),
    out_offset: u64,
    out_len: usize,
    scratch: &mut Option<ScratchBuffer>,
    block_size: usize,
) -> Result<(), PayloadError> {
    let corrupt = |e: lz4_flex::block::DecompressError| PayloadError::Corrupt {
        at,
        reason: e.to_string(),
    };
    let short = |got: usize| PayloadError::SizeMismatch {
        got,
        expected: out_len,
    };
    let out_end = out_offset + out_len as u64;
    let inside = layout
        .loads
        .iter()
        .find(|seg| seg.file_offset <= out_offset && out_end <= seg.file_offset + seg.file_size);
    if let Some(seg) = inside {
        let addr = seg.paddr + (out_offset - seg.file_offset);
        let slice = mem.get_slice(GuestAddress(addr), out_len).map_err(|_| {
            PayloadError::SegmentOutsideRam {
                paddr: addr,
                end: addr + out_len as u64,
            }
        })?;
        let guard = slice.ptr_guard_mut();
        // SAFETY: `slice` is `out_len` bytes of guest RAM mapped by `mem` (get_slice checked the
        // bounds), alive while `mem` is borrowed here. No vCPU runs yet, and the loader
        // threads write disjoint ranges (segments do not overlap, each block is one range), so
        // nothing else reads or writes these bytes while the slice exists.
        let target = unsafe { std::slice::from_raw_parts_mut(guard.as_ptr(), out_len) };
        let produced = lz4_flex::block::decompress_into(block, target).map_err(corrupt)?;
        return if produced == out_len {
            Ok(())
        } else {
            Err(short(produced))
        };
    }
    if scratch.is_none() {
        *scratch = Some(ScratchBuffer::new(block_size).map_err(PayloadError::Scratch)?);
    }
    let Some(buffer) = scratch.as_mut() else {
        return Err(PayloadError::LoaderPanicked);
    };
    let out = &mut buffer.bytes_mut()[..out_len];
    let produced = lz4_flex::block::decompress_into(block, out).map_err(corrupt)?;
    if produced != out_len {
        return Err(short(produced));
    }
    write_segments(mem, layout, out_offset, out)
}

/// Writes the parts of `bytes` (the vmlinux from `offset`) that belong to loadable segments.
fn write_segments(
    mem: &GuestMemoryMmap,
    layout: &ElfLayout,
    offset: u64,
    bytes: &[u8],
) -> Result<(), PayloadError> {
    let end = offset + bytes.len() as u64;
    for seg in &layout.loads {
        let start = seg.file_offset.max(offset);
        let stop = (seg.file_offset + seg.file_size).min(end);
        if start < stop {
            let piece = &bytes[(start - offset) as usize..(stop - offset) as usize];
            let addr = seg.paddr + (start - seg.file_offset);
            mem.write_slice(piece, GuestAddress(addr)).map_err(|_| {
                PayloadError::SegmentOutsideRam {
                    paddr: addr,
                    end: addr + piece.len() as u64,
                }
            })?;
        }
    }
    Ok(())
}

/// Checks that every loadable segment lies in low RAM above 1 MiB and that none overlap (the
/// loader threads write them concurrently).
fn check_segments(layout: &ElfLayout, mem_limit: u64) -> Result<(), PayloadError> {
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for seg in &layout.loads {
        let end = seg.paddr + seg.mem_size;
        if seg.paddr < HIMEM_START || end > mem_limit {
            return Err(PayloadError::SegmentOutsideRam {
                paddr: seg.paddr,
                end,
            });
        }
        spans.push((seg.paddr, end));
    }
    spans.sort_unstable();
    if spans.windows(2).any(|w| w[0].1 > w[1].0) {
        return Err(PayloadError::BadElf("overlapping segments"));
    }
    Ok(())
}

/// Reads the note bytes that lie inside loaded segments back from guest memory.
fn read_notes(mem: &GuestMemoryMmap, layout: &ElfLayout) -> Vec<u8> {
    let mut notes = Vec::new();
    for &(offset, size) in &layout.notes {
        let Some(seg) = layout.loads.iter().find(|seg| {
            seg.file_offset <= offset && offset + size <= seg.file_offset + seg.file_size
        }) else {
            continue;
        };
        if size > MAX_NOTES_SIZE {
            continue;
        }
        let mut bytes = vec![0u8; size as usize];
        let addr = seg.paddr + (offset - seg.file_offset);
        if mem.read_slice(&mut bytes, GuestAddress(addr)).is_ok() {
            notes.extend_from_slice(&bytes);
        }
    }
    notes
}

/// Decompresses the LZ4 payload of `bzimage` and writes the vmlinux's loadable segments into
/// guest memory at their physical addresses, several blocks at once on up to
/// [`MAX_LOADER_THREADS`] threads, mostly straight into guest memory. `mem_limit` is where
/// usable low RAM ends. The guest memory must be fresh (zero), which stands for the segments'
/// zero-filled tails, and no vCPU may run yet.
pub fn load_vmlinux(
    mem: &GuestMemoryMmap,
    bzimage: &[u8],
    mem_limit: u64,
) -> Result<LoadedVmlinux, PayloadError> {
    load_vmlinux_in_blocks_of(mem, bzimage, mem_limit, LZ4_LEGACY_BLOCK_MAX)
}

/// [`load_vmlinux`] for a stream whose blocks (but the last) decompress to `block_size` bytes.
fn load_vmlinux_in_blocks_of(
    mem: &GuestMemoryMmap,
    bzimage: &[u8],
    mem_limit: u64,
    block_size: usize,
) -> Result<LoadedVmlinux, PayloadError> {
    let range = payload_range(bzimage)?;
    let (blocks, expected) = Lz4Blocks::new(&bzimage[range])?;
    let blocks = blocks.collect::<Result<Vec<_>, _>>()?;
    // Every block but the last decompresses to exactly the legacy block size.
    let block_len = |i: usize| {
        let start = i * block_size;
        expected.saturating_sub(start).min(block_size)
    };
    let Some(&first) = blocks.first() else {
        return Err(PayloadError::SizeMismatch { got: 0, expected });
    };
    if blocks.len() != expected.div_ceil(block_size) {
        return Err(PayloadError::BadElf("LZ4 block count for its size"));
    }

    // The first block holds the ELF and program headers.
    let mut first_out = ScratchBuffer::new(block_len(0)).map_err(PayloadError::Scratch)?;
    let scratch = &mut first_out.bytes_mut()[..block_len(0)];
    let produced =
        lz4_flex::block::decompress_into(first.1, scratch).map_err(|e| PayloadError::Corrupt {
            at: first.0,
            reason: e.to_string(),
        })?;
    if produced != scratch.len() {
        return Err(PayloadError::SizeMismatch {
            got: produced,
            expected: scratch.len(),
        });
    }
    let layout = parse_elf_layout(scratch)?;
    check_segments(&layout, mem_limit)?;
    write_segments(mem, &layout, 0, scratch)?;
    drop(first_out);

    let rest = blocks.len() - 1;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_LOADER_THREADS)
        .min(rest.max(1));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (blocks, layout) = (&blocks, &layout);
                scope.spawn(move || -> Result<(), PayloadError> {
                    let mut scratch: Option<ScratchBuffer> = None;
                    for i in (1 + t..blocks.len()).step_by(threads) {
                        let len = block_len(i);
                        let offset = (i * block_size) as u64;
                        load_block(
                            mem,
                            layout,
                            blocks[i],
                            offset,
                            len,
                            &mut scratch,
                            block_size,
                        )?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or(Err(PayloadError::LoaderPanicked)))
    })?;

    let pvh_entry =
        pvh_entry_from_notes(&read_notes(mem, &layout)).ok_or(PayloadError::NoPvhEntry)?;
    let kernel_end = layout
        .loads
        .iter()
        .map(|s| s.paddr + s.mem_size)
        .max()
        .unwrap_or(HIMEM_START);
    Ok(LoadedVmlinux {
        pvh_entry,
        kernel_end,
    })
}

/// A bound on the size of one note segment (the kernel's are a few hundred bytes).
const MAX_NOTES_SIZE: u64 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{create_guest_memory, MIB};

    /// The error of a failed load or decompression, as its message.
    fn failure<T: std::fmt::Debug>(result: Result<T, PayloadError>) -> String {
        result.unwrap_err().to_string()
    }

    /// A kernel-style LZ4 payload of `data`, in blocks of `block` bytes.
    fn lz4_payload(data: &[u8], block: usize) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for chunk in data.chunks(block) {
            let compressed = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(compressed.len() as u32).to_le_bytes());
            out.extend_from_slice(&compressed);
        }
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    /// A bzImage-shaped file: setup header fields and the payload after `setup_sects` sectors.
    fn bzimage(payload: &[u8], setup_sects: u8) -> Vec<u8> {
        let sects = if setup_sects == 0 {
            4
        } else {
            setup_sects as usize
        };
        let payload_offset = 0x100usize;
        let mut bz = vec![0u8; (sects + 1) * 512 + payload_offset];
        bz[SETUP_SECTS_OFFSET] = setup_sects;
        bz[HEADER_MAGIC_OFFSET..HEADER_MAGIC_OFFSET + 4].copy_from_slice(HEADER_MAGIC);
        bz[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        bz[PAYLOAD_OFFSET_OFFSET..PAYLOAD_OFFSET_OFFSET + 4]
            .copy_from_slice(&(payload_offset as u32).to_le_bytes());
        bz[PAYLOAD_LENGTH_OFFSET..PAYLOAD_LENGTH_OFFSET + 4]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());
        bz.extend_from_slice(payload);
        bz
    }

    fn put_u32(buf: &mut [u8], at: usize, v: u32) {
        buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u64(buf: &mut [u8], at: usize, v: u64) {
        buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// The PVH entry the fake vmlinux announces.
    const ENTRY: u64 = 0x1a0_0040;

    /// A small vmlinux like the real one: two loadable segments whose physical addresses are
    /// offset differently from their file offsets, one with a zero-filled tail, and a PVH note.
    fn fake_vmlinux() -> Vec<u8> {
        let mut elf: Vec<u8> = (0..0x30000).map(|i| (i * 7 % 251) as u8).collect();
        elf[..4].copy_from_slice(ELF_MAGIC);
        elf[4] = ELF_CLASS_64;
        elf[5] = ELF_DATA_LSB;
        elf[18..20].copy_from_slice(&ELF_MACHINE_X86_64.to_le_bytes());
        put_u64(&mut elf, 32, 64); // e_phoff
        elf[54..56].copy_from_slice(&(ELF_PHDR_SIZE as u16).to_le_bytes());
        elf[56..58].copy_from_slice(&3u16.to_le_bytes());
        let phdr =
            |elf: &mut Vec<u8>, i: usize, kind: u32, off: u64, paddr: u64, fsz: u64, msz: u64| {
                let at = 64 + i * ELF_PHDR_SIZE;
                put_u32(elf, at, kind);
                put_u64(elf, at + 8, off);
                put_u64(elf, at + 24, paddr);
                put_u64(elf, at + 32, fsz);
                put_u64(elf, at + 40, msz);
            };
        phdr(&mut elf, 0, PT_LOAD, 0x1000, 0x100_0000, 0x10000, 0x10000);
        phdr(&mut elf, 1, PT_LOAD, 0x20000, 0x180_0000, 0x8000, 0x20000);
        phdr(&mut elf, 2, PT_NOTE, 0x2000, 0x100_1000, 24, 24);
        // Note: namesz 4 ("Xen\0"), descsz 8, type 18, then the entry.
        put_u32(&mut elf, 0x2000, 4);
        put_u32(&mut elf, 0x2004, 8);
        put_u32(&mut elf, 0x2008, XEN_ELFNOTE_PHYS32_ENTRY);
        elf[0x200c..0x2010].copy_from_slice(b"Xen\0");
        put_u64(&mut elf, 0x2010, ENTRY);
        elf
    }

    fn load(bz: &[u8]) -> (Result<LoadedVmlinux, PayloadError>, GuestMemoryMmap) {
        let mem = create_guest_memory(64 * MIB).unwrap();
        (load_vmlinux(&mem, bz, 64 * MIB), mem)
    }

    fn load_in_blocks_of(
        bz: &[u8],
        block: usize,
    ) -> (Result<LoadedVmlinux, PayloadError>, GuestMemoryMmap) {
        let mem = create_guest_memory(64 * MIB).unwrap();
        (load_vmlinux_in_blocks_of(&mem, bz, 64 * MIB, block), mem)
    }

    #[test]
    fn segments_land_at_their_physical_addresses_whatever_the_block_size() {
        let elf = fake_vmlinux();
        for block in [0x30000, 0x8000, 0x1234] {
            let (loaded, mem) = load_in_blocks_of(&bzimage(&lz4_payload(&elf, block), 0), block);
            assert_eq!(
                loaded.unwrap(),
                LoadedVmlinux {
                    pvh_entry: ENTRY,
                    kernel_end: 0x182_0000
                },
                "block size {block:#x}"
            );
            let mut seg0 = vec![0u8; 0x10000];
            mem.read_slice(&mut seg0, GuestAddress(0x100_0000)).unwrap();
            assert_eq!(seg0, elf[0x1000..0x11000]);
            let mut seg1 = vec![0u8; 0x20000];
            mem.read_slice(&mut seg1, GuestAddress(0x180_0000)).unwrap();
            assert_eq!(seg1[..0x8000], elf[0x20000..0x28000]);
            assert!(seg1[0x8000..].iter().all(|&b| b == 0), "zero-filled tail");
        }
    }

    #[test]
    fn other_compressions_and_old_headers_are_told_apart() {
        let gzip = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            failure(load(&bzimage(&gzip, 0)).0),
            PayloadError::NotLz4.to_string()
        );
        let mut old = bzimage(&gzip, 0);
        old[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&0x0206u16.to_le_bytes());
        assert_eq!(
            failure(load(&old).0),
            PayloadError::NoPayloadFields.to_string()
        );
        assert_eq!(
            failure(load(&[0u8; 16]).0),
            PayloadError::NoPayloadFields.to_string()
        );
    }

    #[test]
    fn payload_beyond_the_file_is_refused() {
        let mut bz = bzimage(&lz4_payload(&fake_vmlinux(), 0x8000), 30);
        bz.truncate(bz.len() - 10);
        assert!(matches!(
            payload_range(&bz),
            Err(PayloadError::OutOfFile { .. })
        ));
    }

    #[test]
    fn a_kernel_without_pvh_note_or_not_elf_is_refused() {
        let mut elf = fake_vmlinux();
        put_u32(&mut elf, 0x2008, 17);
        let bz = bzimage(&lz4_payload(&elf, 0x8000), 0);
        assert_eq!(
            failure(load_in_blocks_of(&bz, 0x8000).0),
            PayloadError::NoPvhEntry.to_string()
        );

        let data = vec![0x42u8; 4096];
        assert_eq!(
            failure(load(&bzimage(&lz4_payload(&data, 4096), 0)).0),
            PayloadError::NotElf.to_string()
        );
    }

    #[test]
    fn segments_outside_ram_are_refused() {
        let mut elf = fake_vmlinux();
        put_u64(&mut elf, 64 + ELF_PHDR_SIZE + 24, 0x3ff_0000); // segment 1 at 64 MiB - 64 KiB
        let bz = bzimage(&lz4_payload(&elf, 0x8000), 0);
        assert!(matches!(
            load_in_blocks_of(&bz, 0x8000).0,
            Err(PayloadError::SegmentOutsideRam { .. })
        ));

        let mut overlapping = fake_vmlinux();
        put_u64(&mut overlapping, 64 + ELF_PHDR_SIZE + 24, 0x100_8000);
        let bz = bzimage(&lz4_payload(&overlapping, 0x8000), 0);
        assert_eq!(
            failure(load_in_blocks_of(&bz, 0x8000).0),
            PayloadError::BadElf("overlapping segments").to_string()
        );
    }

    fn decompress_all(payload: &[u8]) -> Result<Vec<u8>, PayloadError> {
        let mut out = Vec::new();
        decompress_lz4_payload(payload, |offset, bytes| {
            assert_eq!(offset, out.len() as u64);
            out.extend_from_slice(bytes);
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn corrupt_truncated_or_mis_sized_streams_are_errors_not_panics() {
        let elf = fake_vmlinux();
        let good = lz4_payload(&elf, 0x8000);
        assert_eq!(decompress_all(&good).unwrap(), elf);
        let n = good.len();

        let mut wrong_size = good.clone();
        wrong_size[n - 4..].copy_from_slice(&0x40000u32.to_le_bytes());
        assert_eq!(
            failure(decompress_all(&wrong_size)),
            PayloadError::SizeMismatch {
                got: 0x30000,
                expected: 0x40000
            }
            .to_string()
        );

        let mut huge = good.clone();
        huge[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decompress_all(&huge),
            Err(PayloadError::TooLarge(_))
        ));

        let mut cut = good[..good.len() / 2].to_vec();
        cut.extend_from_slice(&0x30000u32.to_le_bytes());
        assert!(decompress_all(&cut).is_err());

        let mut overlong_block = good.clone();
        overlong_block[4..8].copy_from_slice(&(good.len() as u32).to_le_bytes());
        assert_eq!(
            failure(decompress_all(&overlong_block)),
            PayloadError::Truncated(8).to_string()
        );

        // Garbage inside a block: an error or other bytes, never a panic.
        for fill in [0x00, 0x0f, 0xf0, 0xff] {
            let mut garbage = good.clone();
            garbage[12..200].fill(fill);
            assert_ne!(decompress_all(&garbage).ok(), Some(elf.clone()));
        }
    }

    #[test]
    fn pvh_note_parsing_skips_other_notes_and_bounds_sizes() {
        let mut notes = Vec::new();
        for (name, kind, desc) in [
            (&b"GNU\0"[..], 3u32, &[1u8, 2, 3, 4, 5][..]),
            (&b"Xen\0"[..], 18, &0x1234_5678u32.to_le_bytes()[..]),
        ] {
            notes.extend_from_slice(&(name.len() as u32).to_le_bytes());
            notes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            notes.extend_from_slice(&kind.to_le_bytes());
            notes.extend_from_slice(name);
            notes.extend_from_slice(desc);
            while notes.len() % 4 != 0 {
                notes.push(0);
            }
        }
        assert_eq!(pvh_entry_from_notes(&notes), Some(0x1234_5678));
        let mut bad = notes.clone();
        put_u32(&mut bad, 0, u32::MAX);
        assert_eq!(pvh_entry_from_notes(&bad), None);
        assert_eq!(pvh_entry_from_notes(&[]), None);
    }
}
