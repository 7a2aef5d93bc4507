//! Taking descriptor chains off a split virtqueue and checking them before any device uses them.
//!
//! `virtio-queue` finds the head of the next available chain; the walk itself is ours, because a
//! chain that loops, runs past its table, or points outside guest memory must be *reported* (and
//! counted), not silently cut short. A chain that passes [`walk_chain`] only names guest ranges
//! that are mapped, readable ones before writable ones, with a bounded total length.

use crate::devices::virtio::guest_log::guest_warn;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::spec::desc_flags;
use super::stats::{bump, DeviceStats};

/// Size of one split-ring descriptor in guest memory.
const DESCRIPTOR_SIZE: u64 = 16;
/// Longest indirect table we follow (the Linux driver never builds one longer than the queue).
pub const MAX_INDIRECT_DESCRIPTORS: u32 = 1024;

/// One guest buffer named by a descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub addr: GuestAddress,
    pub len: u32,
}

/// A checked descriptor chain: the device-readable buffers, then the device-writable ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub readable: Vec<Buffer>,
    pub writable: Vec<Buffer>,
}

impl Chain {
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|b| u64::from(b.len)).sum()
    }

    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|b| u64::from(b.len)).sum()
    }
}

/// Why a descriptor chain was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("descriptor index {index} is outside a table of {table_len} entries")]
    IndexOutOfRange { index: u16, table_len: u32 },
    #[error("chain has more than {max} descriptors: it loops or runs past its table")]
    TooLong { max: u32 },
    #[error("descriptor table entry at {addr:#x} is outside guest memory")]
    DescriptorUnreadable { addr: u64 },
    #[error("buffer of {len} bytes at {addr:#x} is outside guest memory")]
    BufferOutsideMemory { addr: u64, len: u32 },
    #[error("a device-readable descriptor follows a device-writable one")]
    ReadableAfterWritable,
    #[error("an indirect descriptor inside an indirect table")]
    NestedIndirect,
    #[error("an indirect descriptor that also has the NEXT flag")]
    IndirectWithNext,
    #[error("indirect descriptors were not negotiated")]
    IndirectNotNegotiated,
    #[error("indirect table of {len} bytes is empty, not a multiple of 16, or over {MAX_INDIRECT_DESCRIPTORS} entries")]
    BadIndirectTable { len: u32 },
    #[error("chain buffers add up to more than 4 GiB")]
    TooManyBytes,
}

/// A raw split-ring descriptor.
#[derive(Clone, Copy, Debug)]
struct RawDescriptor {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

fn read_descriptor(
    mem: &GuestMemoryMmap,
    table: GuestAddress,
    index: u16,
) -> Result<RawDescriptor, ChainError> {
    let addr = table
        .checked_add(u64::from(index) * DESCRIPTOR_SIZE)
        .ok_or(ChainError::DescriptorUnreadable { addr: u64::MAX })?;
    let mut raw = [0u8; 16];
    mem.read_slice(&mut raw, addr)
        .map_err(|_| ChainError::DescriptorUnreadable {
            addr: addr.raw_value(),
        })?;
    let le64 = |b: &[u8]| {
        b.iter()
            .rev()
            .fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
    };
    Ok(RawDescriptor {
        addr: le64(&raw[0..8]),
        len: le64(&raw[8..12]) as u32,
        flags: le64(&raw[12..14]) as u16,
        next: le64(&raw[14..16]) as u16,
    })
}

/// Walks and checks the chain that starts at `head` in the descriptor table at `table`.
pub fn walk_chain(
    mem: &GuestMemoryMmap,
    table: GuestAddress,
    queue_size: u16,
    head: u16,
    indirect_allowed: bool,
) -> Result<Chain, ChainError> {
    walk_chain_counted(mem, table, queue_size, head, indirect_allowed, &mut 0)
}

/// [`walk_chain`], adding to `read` the number of descriptors it read (what the walk cost:
/// at most the queue size plus [`MAX_INDIRECT_DESCRIPTORS`], whether the chain is good or not).
pub fn walk_chain_counted(
    mem: &GuestMemoryMmap,
    table: GuestAddress,
    queue_size: u16,
    head: u16,
    indirect_allowed: bool,
    read: &mut u32,
) -> Result<Chain, ChainError> {
    let mut chain = Chain {
        head,
        readable: Vec::new(),
        writable: Vec::new(),
    };
    let mut total: u64 = 0;
    let mut table = table;
    let mut table_len = u32::from(queue_size);
    let mut in_indirect = false;
    let mut index = head;
    let mut visited: u32 = 0;
    loop {
        if u32::from(index) >= table_len {
            return Err(ChainError::IndexOutOfRange { index, table_len });
        }
        visited += 1;
        if visited > table_len {
            return Err(ChainError::TooLong { max: table_len });
        }
        *read = read.saturating_add(1);
        let desc = read_descriptor(mem, table, index)?;
        if desc.flags & desc_flags::INDIRECT != 0 {
            if in_indirect {
                return Err(ChainError::NestedIndirect);
            }
            if !indirect_allowed {
                return Err(ChainError::IndirectNotNegotiated);
            }
            if desc.flags & desc_flags::NEXT != 0 {
                return Err(ChainError::IndirectWithNext);
            }
            let entries = desc.len / DESCRIPTOR_SIZE as u32;
            if desc.len == 0
                || desc.len % DESCRIPTOR_SIZE as u32 != 0
                || entries > MAX_INDIRECT_DESCRIPTORS
            {
                return Err(ChainError::BadIndirectTable { len: desc.len });
            }
            if !mem.check_range(GuestAddress(desc.addr), desc.len as usize) {
                return Err(ChainError::BufferOutsideMemory {
                    addr: desc.addr,
                    len: desc.len,
                });
            }
            // Descriptors of the outer chain before the indirect one are kept: the
            // specification forbids mixing, but nothing is unsafe about it.
            table = GuestAddress(desc.addr);
            table_len = entries;
            in_indirect = true;
            index = 0;
            visited = 0;
            continue;
        }
        let buffer = Buffer {
            addr: GuestAddress(desc.addr),
            len: desc.len,
        };
        if desc.len > 0 && !mem.check_range(buffer.addr, desc.len as usize) {
            return Err(ChainError::BufferOutsideMemory {
                addr: desc.addr,
                len: desc.len,
            });
        }
        total += u64::from(desc.len);
        if total > u64::from(u32::MAX) {
            return Err(ChainError::TooManyBytes);
        }
        if desc.flags & desc_flags::WRITE != 0 {
            chain.writable.push(buffer);
        } else if chain.writable.is_empty() {
            chain.readable.push(buffer);
        } else {
            return Err(ChainError::ReadableAfterWritable);
        }
        if desc.flags & desc_flags::NEXT == 0 {
            return Ok(chain);
        }
        index = desc.next;
    }
}

/// What taking the next chain off a queue gave.
#[derive(Debug)]
pub enum Popped {
    /// No chain is available.
    Empty,
    /// A checked chain.
    Chain(Chain),
    /// A refused chain; it was counted and, where its head was valid, returned to the guest
    /// as used with length 0.
    Refused(ChainError),
}

/// Takes the next available chain off `queue` and checks it.
///
/// Never panics and never loops: a bad available index stops the queue for this round
/// (counted), a bad chain is counted and completed empty so the guest gets its descriptors
/// back.
pub fn pop_chain(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    stats: &DeviceStats,
    indirect_allowed: bool,
) -> Popped {
    pop_chain_counted(queue, mem, stats, indirect_allowed, &mut 0)
}

/// [`pop_chain`], adding to `read` the number of descriptors read (at least one per call that
/// found a chain; see [`walk_chain_counted`]).
pub fn pop_chain_counted(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    stats: &DeviceStats,
    indirect_allowed: bool,
    read: &mut u32,
) -> Popped {
    let head = {
        let mut iter = match queue.iter(mem) {
            Ok(iter) => iter,
            Err(err) => {
                guest_warn!(%err, "virtqueue refused: bad available ring");
                bump(&stats.invalid_chains);
                return Popped::Empty;
            }
        };
        match iter.next() {
            Some(chain) => chain.head_index(),
            None => return Popped::Empty,
        }
    };
    let table = GuestAddress(queue.desc_table());
    match walk_chain_counted(mem, table, queue.size(), head, indirect_allowed, read) {
        Ok(chain) => Popped::Chain(chain),
        Err(err) => {
            guest_warn!(%err, head, "descriptor chain refused");
            bump(&stats.invalid_chains);
            if head < queue.size() && queue.add_used(mem, head, 0).is_err() {
                bump(&stats.invalid_chains);
            }
            Popped::Refused(err)
        }
    }
}

/// Iterates over the guest ranges covering bytes `skip..skip + len` of a buffer list.
pub fn segments(
    buffers: &[Buffer],
    mut skip: u64,
    mut len: u64,
) -> impl Iterator<Item = (GuestAddress, usize)> + '_ {
    buffers.iter().filter_map(move |buf| {
        let buf_len = u64::from(buf.len);
        if skip >= buf_len {
            skip -= buf_len;
            return None;
        }
        if len == 0 {
            return None;
        }
        let start = skip;
        let take = (buf_len - start).min(len);
        skip = 0;
        len -= take;
        // `start < buf.len` and the whole buffer was checked to be in guest memory.
        Some((buf.addr.unchecked_add(start), take as usize))
    })
}

/// The guest memory of `segments` as iovecs (host addresses inside the guest memory mappings),
/// for a `preadv`/`pwritev`/`writev` straight to or from guest memory. The iovecs are valid as
/// long as `mem` is.
pub fn guest_iovecs(
    mem: &GuestMemoryMmap,
    segments: impl Iterator<Item = (GuestAddress, usize)>,
) -> Result<Vec<libc::iovec>, vm_memory::GuestMemoryError> {
    segments
        .filter(|&(_, len)| len > 0)
        .map(|(addr, len)| {
            let slice = mem.get_slice(addr, len)?;
            Ok(libc::iovec {
                iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                iov_len: len,
            })
        })
        .collect()
}

/// Most iovecs one `preadv`/`pwritev`/`writev` takes (Linux `UIO_MAXIOV`).
pub const IOV_MAX: usize = 1024;

/// Copies `data` into the buffers, starting `skip` bytes in. Returns the bytes written.
pub fn write_to_buffers(
    mem: &GuestMemoryMmap,
    buffers: &[Buffer],
    skip: u64,
    data: &[u8],
) -> Result<usize, vm_memory::GuestMemoryError> {
    let mut done = 0;
    for (addr, len) in segments(buffers, skip, data.len() as u64) {
        mem.write_slice(&data[done..done + len], addr)?;
        done += len;
    }
    Ok(done)
}

/// Copies bytes `skip..skip + out.len()` of the buffers into `out`. Returns the bytes read.
pub fn read_from_buffers(
    mem: &GuestMemoryMmap,
    buffers: &[Buffer],
    skip: u64,
    out: &mut [u8],
) -> Result<usize, vm_memory::GuestMemoryError> {
    let mut done = 0;
    for (addr, len) in segments(buffers, skip, out.len() as u64) {
        mem.read_slice(&mut out[done..done + len], addr)?;
        done += len;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{guest_memory, GuestQueue, DESC_NEXT, DESC_WRITE};

    #[test]
    fn a_well_formed_chain_is_split_into_readable_and_writable_buffers() {
        let mem = guest_memory();
        let mut q = GuestQueue::new(&mem, 16);
        q.add_chain(&[
            (0x10_000, 16, 0),
            (0x11_000, 512, DESC_WRITE),
            (0x12_000, 1, DESC_WRITE),
        ]);
        let mut queue = q.ready_queue();
        let stats = DeviceStats::default();
        let Popped::Chain(chain) = pop_chain(&mut queue, &mem, &stats, false) else {
            panic!("chain refused");
        };
        assert_eq!(chain.readable.len(), 1);
        assert_eq!(chain.writable_len(), 513);
        assert!(matches!(
            pop_chain(&mut queue, &mem, &stats, false),
            Popped::Empty
        ));
    }

    #[test]
    fn a_looping_chain_is_refused_and_completed_empty() {
        let mem = guest_memory();
        let q = GuestQueue::new(&mem, 8);
        // Descriptor 0 -> 1 -> 0 -> ...
        q.write_descriptor(0, 0x10_000, 16, DESC_NEXT, 1);
        q.write_descriptor(1, 0x11_000, 16, DESC_NEXT, 0);
        q.publish(0);
        let mut queue = q.ready_queue();
        let stats = DeviceStats::default();
        let popped = pop_chain(&mut queue, &mem, &stats, false);
        assert!(matches!(
            popped,
            Popped::Refused(ChainError::TooLong { max: 8 })
        ));
        assert_eq!(stats.snapshot().invalid_chains, 1);
        assert_eq!(q.used_entries(), vec![(0, 0)]);
    }

    #[test]
    fn out_of_memory_buffers_and_bad_indexes_are_refused() {
        let mem = guest_memory();
        let q = GuestQueue::new(&mem, 8);
        q.write_descriptor(0, 0xffff_ff00_0000, 16, 0, 0);
        q.publish(0);
        q.write_descriptor(1, 0x10_000, 16, DESC_NEXT, 200);
        q.publish(1);
        q.publish(77); // a head outside the table
        let mut queue = q.ready_queue();
        let stats = DeviceStats::default();
        assert!(matches!(
            pop_chain(&mut queue, &mem, &stats, false),
            Popped::Refused(ChainError::BufferOutsideMemory { .. })
        ));
        assert!(matches!(
            pop_chain(&mut queue, &mem, &stats, false),
            Popped::Refused(ChainError::IndexOutOfRange { index: 200, .. })
        ));
        assert!(matches!(
            pop_chain(&mut queue, &mem, &stats, false),
            Popped::Refused(ChainError::IndexOutOfRange { index: 77, .. })
        ));
        assert_eq!(stats.snapshot().invalid_chains, 3);
        // The two chains with valid heads were given back; the bad head could not be.
        assert_eq!(q.used_entries(), vec![(0, 0), (1, 0)]);
    }

    #[test]
    fn a_runaway_available_index_is_refused_without_looping() {
        let mem = guest_memory();
        let q = GuestQueue::new(&mem, 8);
        q.set_avail_idx(1000);
        let mut queue = q.ready_queue();
        let stats = DeviceStats::default();
        assert!(matches!(
            pop_chain(&mut queue, &mem, &stats, false),
            Popped::Empty
        ));
        assert_eq!(stats.snapshot().invalid_chains, 1);
    }

    #[test]
    fn indirect_tables_are_followed_once_and_nesting_is_refused() {
        let mem = guest_memory();
        let q = GuestQueue::new(&mem, 8);
        let table = 0x20_000u64;
        q.write_raw_descriptor(table, 0, 0x10_000, 16, DESC_NEXT, 1);
        q.write_raw_descriptor(table, 1, 0x11_000, 64, DESC_WRITE, 0);
        q.write_descriptor(0, table, 32, super::desc_flags::INDIRECT, 0);
        q.publish(0);
        let mut queue = q.ready_queue();
        let stats = DeviceStats::default();
        let Popped::Chain(chain) = pop_chain(&mut queue, &mem, &stats, true) else {
            panic!("indirect chain refused");
        };
        assert_eq!((chain.readable_len(), chain.writable_len()), (16, 64));

        // Not negotiated: refused.
        q.publish(0);
        assert!(matches!(
            pop_chain(&mut queue, &mem, &stats, false),
            Popped::Refused(ChainError::IndirectNotNegotiated)
        ));
        // Nested: refused.
        q.write_raw_descriptor(table, 1, table, 32, super::desc_flags::INDIRECT, 0);
        q.publish(0);
        assert!(matches!(
            pop_chain(&mut queue, &mem, &stats, true),
            Popped::Refused(ChainError::NestedIndirect)
        ));
    }

    #[test]
    fn segments_cover_exactly_the_requested_bytes() {
        let bufs = [
            Buffer {
                addr: GuestAddress(0x1000),
                len: 10,
            },
            Buffer {
                addr: GuestAddress(0x2000),
                len: 10,
            },
            Buffer {
                addr: GuestAddress(0x3000),
                len: 10,
            },
        ];
        let segs: Vec<_> = segments(&bufs, 5, 12).collect();
        assert_eq!(
            segs,
            vec![(GuestAddress(0x1005), 5), (GuestAddress(0x2000), 7)]
        );
        assert_eq!(
            segments(&bufs, 29, 10).collect::<Vec<_>>(),
            vec![(GuestAddress(0x3009), 1)]
        );
    }
}
