//! virtio-vsock (virtio 1.2, 5.10): a host channel per VM with its own CID, served by the VMM
//! itself and bridged to Unix sockets on the host ([`muxer`]: guest port P ↔ `<uds>_P`, host
//! `CONNECT P` on `<uds>`). Stream sockets only.
//!
//! Queues: RX (0, packets to the guest), TX (1, packets from the guest), event (2, the
//! transport-reset event). Config space: the guest's CID (u64).
//!
//! Snapshots save the gate and the CID; the transport saves features and queues. Connections
//! are not saved: a restored device has none, and it tells the guest with a
//! `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` event as soon as the event queue runs, so every socket
//! the guest had connected is reset (its next read or write fails with `ECONNRESET`).
//!
//! Gate (class `host-channel`): prohibiting resets every connection (the guest gets `RST`s,
//! the host streams are closed) and refuses new ones both ways until allowed again.

mod connection;
mod muxer;
pub mod packet;
mod uds;

use crate::devices::virtio::guest_log::guest_warn;
use std::path::{Path, PathBuf};

use event_manager::EventSet;
use serde::{Deserialize, Serialize};

use self::muxer::{Muxer, MuxerError};
use self::packet::{Header, EVENT_TRANSPORT_RESET, HDR_SIZE};
use super::chain::{read_from_buffers, write_to_buffers};
use super::config::DeviceClass;
use super::device::{BackendFd, DeviceState, GateChange, QueueContext, RestoreError, VirtioDevice};
use super::spec::{features, DEVICE_ID_VSOCK};
use super::stats::{add, bump};

pub use self::uds::UdsError;

const RXQ: usize = 0;
const TXQ: usize = 1;
const EVQ: usize = 2;
const QUEUE_SIZES: [u16; 3] = [256, 256, 256];
/// Most host data put into one RX packet (Linux 6.1 gives 4 KiB buffers anyway).
const MAX_RX_PAYLOAD: usize = 64 * 1024;
/// Lowest CID a guest may have (0-2 are reserved: hypervisor, local, host).
pub const MIN_GUEST_CID: u64 = 3;

/// Saved state of a virtio-vsock device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockState {
    pub allowed: bool,
    pub cid: u64,
}

/// Why a vsock device could not be created.
#[derive(Debug, thiserror::Error)]
#[error("vsock on {path}")]
pub struct VsockError {
    path: PathBuf,
    #[source]
    source: MuxerError,
}

/// A virtio-vsock device.
#[derive(Debug)]
pub struct Vsock {
    cid: u64,
    muxer: Muxer,
    /// A transport-reset event is owed to the guest (after a restore).
    reset_event_due: bool,
    rx_data: Vec<u8>,
    tx_data: Vec<u8>,
}

impl Vsock {
    /// A device for a guest with CID `cid`, listening on `uds_path`.
    pub fn new(cid: u64, uds_path: &Path, allowed: bool) -> Result<Self, VsockError> {
        let muxer = Muxer::new(cid, uds_path.to_owned(), allowed).map_err(|source| VsockError {
            path: uds_path.to_owned(),
            source,
        })?;
        Ok(Vsock {
            cid,
            muxer,
            reset_event_due: false,
            rx_data: Vec::new(),
            tx_data: Vec::new(),
        })
    }

    /// Packets from the guest, as long as the RX side keeps up.
    fn process_tx(&mut self, ctx: &mut QueueContext<'_>) {
        while !self.muxer.backlogged() {
            let Some(chain) = ctx.pop(TXQ) else {
                return;
            };
            let mut raw = [0u8; HDR_SIZE];
            let parsed = read_from_buffers(ctx.mem, &chain.readable, 0, &mut raw)
                .ok()
                .filter(|&n| n == HDR_SIZE)
                .map(|_| Header::decode(&raw))
                .ok_or(packet::PacketError::ShortHeader(chain.readable_len()))
                .and_then(|hdr| hdr.check_tx(chain.readable_len()).map(|len| (hdr, len)));
            match parsed {
                Ok((hdr, len)) => {
                    self.tx_data.resize(len as usize, 0);
                    if read_from_buffers(
                        ctx.mem,
                        &chain.readable,
                        HDR_SIZE as u64,
                        &mut self.tx_data,
                    )
                    .is_ok()
                    {
                        add(&ctx.stats.bytes_from_guest, u64::from(len));
                        bump(&ctx.stats.completed_requests);
                        self.muxer.send_pkt(&hdr, &self.tx_data);
                    } else {
                        bump(&ctx.stats.invalid_chains);
                    }
                }
                Err(err) => {
                    guest_warn!(%err, "vsock: TX chain refused");
                    bump(&ctx.stats.invalid_chains);
                }
            }
            ctx.complete(TXQ, chain.head, 0);
        }
    }

    /// Packets for the guest, as long as it has RX buffers.
    fn process_rx(&mut self, ctx: &mut QueueContext<'_>) {
        while self.muxer.has_rx() {
            let Some(chain) = ctx.pop(RXQ) else {
                return;
            };
            let room = chain.writable_len();
            if room < HDR_SIZE as u64 {
                bump(&ctx.stats.invalid_chains);
                ctx.complete(RXQ, chain.head, 0);
                continue;
            }
            let max = ((room - HDR_SIZE as u64) as usize).min(MAX_RX_PAYLOAD);
            let data = &mut self.rx_data;
            let mut read = |stream: &mut std::os::unix::net::UnixStream, max: usize| {
                data.resize(max, 0);
                std::io::Read::read(stream, &mut data[..max])
            };
            let Some(hdr) = self.muxer.recv_pkt(max, &mut read) else {
                ctx.undo_pop(RXQ);
                return;
            };
            let payload = &self.rx_data[..hdr.len as usize];
            let written =
                write_to_buffers(ctx.mem, &chain.writable, 0, &hdr.encode()).and_then(|a| {
                    write_to_buffers(ctx.mem, &chain.writable, HDR_SIZE as u64, payload)
                        .map(|b| a + b)
                });
            match written {
                Ok(n) => {
                    add(&ctx.stats.bytes_to_guest, u64::from(hdr.len));
                    ctx.complete(RXQ, chain.head, n as u32);
                }
                Err(_) => {
                    bump(&ctx.stats.invalid_chains);
                    ctx.complete(RXQ, chain.head, 0);
                }
            }
        }
    }

    fn process_event_queue(&mut self, ctx: &mut QueueContext<'_>) {
        if !self.reset_event_due {
            return;
        }
        let Some(chain) = ctx.pop(EVQ) else {
            return;
        };
        let event = EVENT_TRANSPORT_RESET.to_le_bytes();
        match write_to_buffers(ctx.mem, &chain.writable, 0, &event) {
            Ok(4) => {
                self.reset_event_due = false;
                tracing::info!(cid = self.cid, "vsock: transport reset sent to the guest");
                ctx.complete(EVQ, chain.head, 4);
            }
            _ => {
                bump(&ctx.stats.invalid_chains);
                ctx.complete(EVQ, chain.head, 0);
            }
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        DEVICE_ID_VSOCK
    }

    fn class(&self) -> DeviceClass {
        DeviceClass::HostChannel
    }

    fn features(&self) -> u64 {
        features::VERSION_1
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn config_space(&self) -> Vec<u8> {
        self.cid.to_le_bytes().to_vec()
    }

    fn reset(&mut self) {
        self.muxer.drop_all();
        self.reset_event_due = false;
    }

    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext<'_>) {
        match index {
            RXQ => {
                self.process_rx(ctx);
                // TX may have waited for RX buffers.
                self.process_tx(ctx);
                self.process_rx(ctx);
            }
            TXQ => {
                self.process_tx(ctx);
                self.process_rx(ctx);
            }
            EVQ => self.process_event_queue(ctx),
            _ => {}
        }
    }

    fn backend_fds(&self) -> Vec<BackendFd> {
        vec![BackendFd {
            fd: self.muxer.epoll_fd(),
            events: EventSet::IN,
        }]
    }

    fn process_backend_event(&mut self, _token: usize, ctx: &mut QueueContext<'_>) {
        self.muxer.process_events();
        self.process_rx(ctx);
    }

    fn set_allowed(&mut self, allowed: bool) -> GateChange {
        self.muxer.set_allowed(allowed);
        GateChange::default()
    }

    fn allowed(&self) -> bool {
        self.muxer.allowed()
    }

    fn state(&self) -> DeviceState {
        DeviceState::Vsock(VsockState {
            allowed: self.muxer.allowed(),
            cid: self.cid,
        })
    }

    fn restore(&mut self, state: &DeviceState) -> Result<(), RestoreError> {
        let DeviceState::Vsock(s) = state else {
            return Err(RestoreError::WrongDeviceType {
                saved: state.type_name(),
                actual: "vsock",
            });
        };
        if s.cid != self.cid {
            return Err(RestoreError::ConfigMismatch(format!(
                "saved guest CID {} is not the configured {}",
                s.cid, self.cid
            )));
        }
        self.muxer.drop_all();
        self.muxer.set_allowed(s.allowed);
        self.reset_event_due = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
