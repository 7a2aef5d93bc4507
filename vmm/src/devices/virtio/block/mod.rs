//! virtio-blk (virtio 1.2, 5.2) on a raw image file.
//!
//! Requests are served synchronously on the event loop thread: IN, OUT, FLUSH, GET_ID; anything
//! else is answered UNSUPP. A read-only disk offers `VIRTIO_BLK_F_RO` and answers OUT with IOERR.
//!
//! Gate (classes `storage` and `removable-storage`): while prohibited, every request completes
//! with IOERR and the config space reports capacity 0, announced with a configuration-change
//! interrupt (the guest sees the medium gone); allowing restores the capacity the same way.

mod request;

use crate::devices::virtio::guest_log::guest_warn;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use self::request::{
    read_disk, write_disk, write_status, Request, RequestError, RequestKind, ID_BYTES, SECTOR_SIZE,
    S_IOERR, S_OK, S_UNSUPP,
};
use super::chain::{write_to_buffers, Chain};
use super::config::DeviceClass;
use super::device::{DeviceState, GateChange, QueueContext, RestoreError, VirtioDevice};
use super::spec::{features, DEVICE_ID_BLOCK};
use super::stats::{add, bump};

const QUEUE_SIZES: [u16; 1] = [256];
const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;
/// Size of `struct virtio_blk_config` up to and including the write-zeroes fields.
const CONFIG_SIZE: usize = 60;

/// Why a block device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot open disk image {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("disk image {} is in use by another process (lock held)", path.display())]
    Locked {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find the size of disk image {}", path.display())]
    Size {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Saved state of a virtio-blk device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockState {
    pub allowed: bool,
    pub read_only: bool,
    pub disk_sectors: u64,
}

/// A virtio-blk device on a raw image.
#[derive(Debug)]
pub struct Block {
    file: File,
    class: DeviceClass,
    read_only: bool,
    allowed: bool,
    disk_sectors: u64,
    serial: [u8; ID_BYTES],
}

/// Takes an advisory lock on the image for as long as `file` is open: exclusive for a writable
/// disk, shared for a read-only one, so two VMs never write the same image.
fn lock_image(file: &File, read_only: bool) -> std::io::Result<()> {
    let mode = if read_only {
        libc::LOCK_SH
    } else {
        libc::LOCK_EX
    };
    // SAFETY: flock takes no pointers; `file` is an open fd for the whole call.
    let ret = unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Block {
    /// Opens the raw image at `path`. `serial` (cut to 20 bytes) is what GET_ID answers.
    pub fn open(
        path: &Path,
        read_only: bool,
        class: DeviceClass,
        allowed: bool,
        serial: &str,
    ) -> Result<Self, BlockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: path.to_owned(),
                source,
            })?;
        lock_image(&file, read_only).map_err(|source| BlockError::Locked {
            path: path.to_owned(),
            source,
        })?;
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|source| BlockError::Size {
                path: path.to_owned(),
                source,
            })?;
        let mut id = [0u8; ID_BYTES];
        let n = serial.len().min(ID_BYTES);
        id[..n].copy_from_slice(&serial.as_bytes()[..n]);
        Ok(Block {
            file,
            class,
            read_only,
            allowed,
            disk_sectors: size / SECTOR_SIZE,
            serial: id,
        })
    }

    /// Capacity the guest sees: 0 while prohibited (medium gone).
    fn visible_sectors(&self) -> u64 {
        if self.allowed {
            self.disk_sectors
        } else {
            0
        }
    }

    /// Serves one request; returns the status and the data bytes written into the guest.
    fn serve(&mut self, request: &Request, chain: &Chain, ctx: &QueueContext<'_>) -> (u8, u32) {
        let result = match request.kind {
            _ if !self.allowed => Err(RequestError::Prohibited),
            RequestKind::In => request.check_range(self.disk_sectors).and_then(|offset| {
                read_disk(&self.file, offset, chain, request.data_len, ctx.mem)?;
                add(&ctx.stats.bytes_to_guest, request.data_len);
                Ok(request.data_len as u32)
            }),
            RequestKind::Out if self.read_only => Err(RequestError::ReadOnly),
            RequestKind::Out => request.check_range(self.disk_sectors).and_then(|offset| {
                write_disk(&self.file, offset, chain, request.data_len, ctx.mem)?;
                add(&ctx.stats.bytes_from_guest, request.data_len);
                Ok(0)
            }),
            RequestKind::Flush if self.read_only => Ok(0),
            RequestKind::Flush => self.file.sync_data().map(|()| 0).map_err(RequestError::Io),
            RequestKind::GetId => {
                let n = (request.data_len as usize).min(ID_BYTES);
                write_to_buffers(ctx.mem, &chain.writable, 0, &self.serial[..n])
                    .map(|written| written as u32)
                    .map_err(RequestError::GuestMemory)
            }
            RequestKind::Unsupported(_) => {
                bump(&ctx.stats.failed_requests);
                return (S_UNSUPP, 0);
            }
        };
        match result {
            Ok(written) => {
                bump(&ctx.stats.completed_requests);
                (S_OK, written)
            }
            Err(err) => {
                match err {
                    RequestError::Prohibited => bump(&ctx.stats.dropped_while_prohibited),
                    RequestError::Io(_) => bump(&ctx.stats.backend_errors),
                    _ => {}
                }
                tracing::debug!(%err, ?request, "block request failed");
                bump(&ctx.stats.failed_requests);
                (S_IOERR, 0)
            }
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        DEVICE_ID_BLOCK
    }

    fn class(&self) -> DeviceClass {
        self.class
    }

    fn features(&self) -> u64 {
        let ro = if self.read_only { F_RO } else { 0 };
        features::VERSION_1 | features::RING_INDIRECT_DESC | F_SEG_MAX | F_FLUSH | ro
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn config_space(&self) -> Vec<u8> {
        let mut config = vec![0u8; CONFIG_SIZE];
        config[0..8].copy_from_slice(&self.visible_sectors().to_le_bytes());
        // seg_max: data descriptors per request, leaving room for header and status.
        let seg_max = u32::from(QUEUE_SIZES[0]) - 2;
        config[12..16].copy_from_slice(&seg_max.to_le_bytes());
        config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        config
    }

    fn reset(&mut self) {}

    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext<'_>) {
        if index != 0 {
            return;
        }
        while let Some(chain) = ctx.pop(0) {
            let request = match Request::parse(&chain, ctx.mem) {
                Ok(request) => request,
                Err(err) => {
                    guest_warn!(%err, head = chain.head, "malformed block request");
                    bump(&ctx.stats.invalid_chains);
                    if chain.writable_len() > 0 {
                        write_status(&chain, ctx.mem, S_IOERR);
                        ctx.complete(0, chain.head, 1);
                    } else {
                        ctx.complete(0, chain.head, 0);
                    }
                    continue;
                }
            };
            let (status, written) = self.serve(&request, &chain, ctx);
            if !write_status(&chain, ctx.mem, status) {
                bump(&ctx.stats.invalid_chains);
            }
            ctx.complete(0, chain.head, written + 1);
        }
    }

    fn set_allowed(&mut self, allowed: bool) -> GateChange {
        let changed = self.allowed != allowed;
        self.allowed = allowed;
        GateChange {
            config_changed: changed,
        }
    }

    fn allowed(&self) -> bool {
        self.allowed
    }

    fn state(&self) -> DeviceState {
        DeviceState::Block(BlockState {
            allowed: self.allowed,
            read_only: self.read_only,
            disk_sectors: self.disk_sectors,
        })
    }

    fn restore(&mut self, state: &DeviceState) -> Result<(), RestoreError> {
        let DeviceState::Block(s) = state else {
            return Err(RestoreError::WrongDeviceType {
                saved: state.type_name(),
                actual: "block",
            });
        };
        if s.read_only != self.read_only || s.disk_sectors != self.disk_sectors {
            return Err(RestoreError::ConfigMismatch(format!(
                "saved disk read_only={} sectors={}, image read_only={} sectors={}",
                s.read_only, s.disk_sectors, self.read_only, self.disk_sectors
            )));
        }
        self.allowed = s.allowed;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
