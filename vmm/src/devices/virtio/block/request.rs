//! One virtio-blk request (virtio 1.2, 5.2.6): header, data, status byte.

use std::fs::File;
use std::os::fd::AsRawFd;

use vm_memory::GuestMemoryMmap;

use crate::devices::virtio::chain::{
    guest_iovecs, read_from_buffers, segments, write_to_buffers, Chain, IOV_MAX,
};

pub const SECTOR_SIZE: u64 = 512;
/// Size of the request header: type (le32), reserved (le32), sector (le64).
pub const HEADER_SIZE: u64 = 16;
/// Length of the GET_ID answer.
pub const ID_BYTES: usize = 20;

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

/// The request, as read from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    In,
    Out,
    Flush,
    GetId,
    Unsupported(u32),
}

/// A parsed request: what to do, where, and how many data bytes the chain carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub kind: RequestKind,
    pub sector: u64,
    /// Data bytes: after the header for OUT, before the status byte for IN and GET_ID.
    pub data_len: u64,
}

/// A chain that cannot be a block request at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MalformedRequest {
    #[error("no device-writable byte for the status")]
    NoStatusByte,
    #[error("the header needs {HEADER_SIZE} device-readable bytes, the chain has {0}")]
    ShortHeader(u64),
    #[error("the header cannot be read from guest memory")]
    HeaderUnreadable,
}

/// Why a well-formed request failed (it completes with IOERR).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{len} bytes at sector {sector} are past the end of a {sectors}-sector disk")]
    OutOfRange { sector: u64, len: u64, sectors: u64 },
    #[error("data length {0} is not a whole number of 512-byte sectors")]
    UnalignedLength(u64),
    #[error("the disk is read-only")]
    ReadOnly,
    #[error("the device is prohibited")]
    Prohibited,
    #[error("disk I/O failed")]
    Io(#[source] std::io::Error),
    #[error("guest memory access failed")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
}

impl Request {
    /// Reads and checks the header of `chain`.
    pub fn parse(chain: &Chain, mem: &GuestMemoryMmap) -> Result<Request, MalformedRequest> {
        if chain.writable_len() == 0 {
            return Err(MalformedRequest::NoStatusByte);
        }
        let readable = chain.readable_len();
        if readable < HEADER_SIZE {
            return Err(MalformedRequest::ShortHeader(readable));
        }
        let mut header = [0u8; HEADER_SIZE as usize];
        read_from_buffers(mem, &chain.readable, 0, &mut header)
            .map_err(|_| MalformedRequest::HeaderUnreadable)?;
        let request_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut sector_bytes = [0u8; 8];
        sector_bytes.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(sector_bytes);
        let kind = match request_type {
            T_IN => RequestKind::In,
            T_OUT => RequestKind::Out,
            T_FLUSH => RequestKind::Flush,
            T_GET_ID => RequestKind::GetId,
            other => RequestKind::Unsupported(other),
        };
        let data_len = match kind {
            RequestKind::Out => readable - HEADER_SIZE,
            _ => chain.writable_len() - 1,
        };
        Ok(Request {
            kind,
            sector,
            data_len,
        })
    }

    /// Checks the data range lies on the disk.
    pub fn check_range(&self, disk_sectors: u64) -> Result<u64, RequestError> {
        if self.data_len % SECTOR_SIZE != 0 {
            return Err(RequestError::UnalignedLength(self.data_len));
        }
        let offset = self.sector.checked_mul(SECTOR_SIZE);
        let end = offset.and_then(|o| o.checked_add(self.data_len));
        match (offset, end) {
            (Some(offset), Some(end)) if end <= disk_sectors * SECTOR_SIZE => Ok(offset),
            _ => Err(RequestError::OutOfRange {
                sector: self.sector,
                len: self.data_len,
                sectors: disk_sectors,
            }),
        }
    }
}

/// Writes the status byte: the last device-writable byte of the chain.
pub fn write_status(chain: &Chain, mem: &GuestMemoryMmap, status: u8) -> bool {
    let at = chain.writable_len() - 1;
    write_to_buffers(mem, &chain.writable, at, &[status]).is_ok()
}

/// Disk → guest: reads `len` bytes at `offset` of `file` straight into the writable buffers
/// (`preadv`, no copy through the VMM).
pub fn read_disk(
    file: &File,
    offset: u64,
    chain: &Chain,
    len: u64,
    mem: &GuestMemoryMmap,
) -> Result<(), RequestError> {
    let iovecs =
        guest_iovecs(mem, segments(&chain.writable, 0, len)).map_err(RequestError::GuestMemory)?;
    transfer(file, offset, iovecs, Direction::DiskToGuest)
}

/// Guest → disk: writes the `len` data bytes after the header to `file` at `offset`, straight
/// from the readable buffers (`pwritev`).
pub fn write_disk(
    file: &File,
    offset: u64,
    chain: &Chain,
    len: u64,
    mem: &GuestMemoryMmap,
) -> Result<(), RequestError> {
    let iovecs = guest_iovecs(mem, segments(&chain.readable, HEADER_SIZE, len))
        .map_err(RequestError::GuestMemory)?;
    transfer(file, offset, iovecs, Direction::GuestToDisk)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    DiskToGuest,
    GuestToDisk,
}

/// Moves all bytes of `iovecs` between guest memory and `file` from `offset`, resuming after
/// short transfers and `EINTR`. Reading past the end of the file (a disk image shrunk under
/// the VM) is an error, never a partial success.
fn transfer(
    file: &File,
    mut offset: u64,
    mut iovecs: Vec<libc::iovec>,
    direction: Direction,
) -> Result<(), RequestError> {
    let mut first = 0;
    while first < iovecs.len() {
        let pending = &iovecs[first..];
        let count = pending.len().min(IOV_MAX) as libc::c_int;
        let at = libc::off_t::try_from(offset).map_err(|_| {
            RequestError::Io(std::io::Error::from(std::io::ErrorKind::InvalidInput))
        })?;
        let done = match direction {
            // SAFETY: every iovec points into a guest memory mapping that `mem` (held by the
            // caller for the whole call) keeps mapped, and covers a range `get_slice` checked
            // to lie inside it; the kernel only writes within those ranges. The guest may
            // touch the same memory meanwhile, which is its own affair, as with DMA.
            Direction::DiskToGuest => unsafe {
                libc::preadv(file.as_raw_fd(), pending.as_ptr(), count, at)
            },
            // SAFETY: as above; the kernel only reads the ranges.
            Direction::GuestToDisk => unsafe {
                libc::pwritev(file.as_raw_fd(), pending.as_ptr(), count, at)
            },
        };
        if done < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(RequestError::Io(err));
        }
        if done == 0 {
            return Err(RequestError::Io(std::io::Error::from(
                std::io::ErrorKind::UnexpectedEof,
            )));
        }
        let mut done = done as usize;
        offset += done as u64;
        while done > 0 {
            let iov = &mut iovecs[first];
            if done >= iov.iov_len {
                done -= iov.iov_len;
                first += 1;
            } else {
                // SAFETY: `done < iov_len`, so the advanced base stays inside the same range.
                iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(done).cast() };
                iov.iov_len -= done;
                done = 0;
            }
        }
    }
    Ok(())
}
