//! virtio-net (virtio 1.2, 5.1) on a tap interface: one RX and one TX queue, MAC address and
//! link status in the config space; transmit offloads (checksum, TSO over IPv4 and IPv6).
//!
//! RX: frames are read from the tap (edge-triggered, drained to `EAGAIN`) into a host buffer
//! and copied into the next guest RX chain; a frame that finds no RX buffer waits until the
//! guest adds some (RX queue notification). TX: each chain goes to the tap as one frame with one
//! `writev` straight from guest memory. With `CSUM` and `HOST_TSO4/6` the guest may hand over
//! frames of up to 64 KiB with a partial checksum; the tap (which reads the same virtio-net
//! header) completes the checksum and segments them, and refuses a header that makes no sense.
//!
//! Gate (class `network`): while prohibited, no frame passes either way (TX chains are
//! completed without sending, tap frames are read and dropped), and the link status reads
//! down, announced with a configuration-change interrupt; allowing brings the link back up.

mod tap;

use crate::devices::virtio::guest_log::guest_warn;
use std::io;
use std::os::unix::io::AsRawFd;

use event_manager::EventSet;
use serde::{Deserialize, Serialize};

pub use self::tap::{Tap, TapError, VNET_HDR_SIZE};
use super::chain::{guest_iovecs, segments, write_to_buffers, IOV_MAX};
use super::config::{DeviceClass, MacAddr};
use super::device::{BackendFd, DeviceState, GateChange, QueueContext, RestoreError, VirtioDevice};
use super::spec::{features, DEVICE_ID_NET};
use super::stats::{add, bump};

const RX: usize = 0;
const TX: usize = 1;
const QUEUE_SIZES: [u16; 2] = [256, 256];
/// The device completes partial checksums of frames the guest sends.
const F_CSUM: u64 = 1 << 0;
const F_MAC: u64 = 1 << 5;
/// The device segments TCP-over-IPv4 / IPv6 frames the guest sends (needs `F_CSUM`).
const F_HOST_TSO4: u64 = 1 << 11;
const F_HOST_TSO6: u64 = 1 << 12;
const F_STATUS: u64 = 1 << 16;
const S_LINK_UP: u16 = 1;
/// Largest frame a tap hands out without offloads (64 KiB IP packet + Ethernet + VLAN), plus
/// the net header.
const MAX_FRAME: usize = VNET_HDR_SIZE + 65_550;

/// Saved state of a virtio-net device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    pub allowed: bool,
    pub mac: MacAddr,
    /// A frame read from the tap that was waiting for an RX buffer (net header included);
    /// empty when none was. It is delivered first after a restore, so no received frame is
    /// lost to a suspend.
    pub pending_rx: Vec<u8>,
}

/// A virtio-net device on a tap.
#[derive(Debug)]
pub struct Net {
    tap: Tap,
    mac: MacAddr,
    allowed: bool,
    /// A frame read from the tap that is waiting for an RX buffer (`rx_len > 0`).
    rx_frame: Vec<u8>,
    rx_len: usize,
}

impl Net {
    pub fn new(tap: Tap, mac: MacAddr, allowed: bool) -> Self {
        Net {
            tap,
            mac,
            allowed,
            rx_frame: vec![0; MAX_FRAME],
            rx_len: 0,
        }
    }

    /// Moves frames from the tap into guest RX buffers until the tap is empty or the guest
    /// has no buffer left.
    fn process_rx(&mut self, ctx: &mut QueueContext<'_>) {
        loop {
            if self.rx_len == 0 {
                match self.tap.read_frame(&mut self.rx_frame) {
                    Ok(n) if n > VNET_HDR_SIZE => self.rx_len = n,
                    Ok(_) => continue,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => {
                        tracing::error!(%err, tap = self.tap.name(), "tap read failed");
                        bump(&ctx.stats.backend_errors);
                        return;
                    }
                }
            }
            if !self.allowed || !ctx.active {
                bump(&ctx.stats.dropped_while_prohibited);
                self.rx_len = 0;
                continue;
            }
            let Some(chain) = ctx.pop(RX) else {
                // Keep the frame until the guest adds RX buffers.
                return;
            };
            let frame = &mut self.rx_frame[..self.rx_len];
            // num_buffers: always one buffer, as VIRTIO_NET_F_MRG_RXBUF is not offered.
            frame[10..12].copy_from_slice(&1u16.to_le_bytes());
            let len = if chain.writable_len() < frame.len() as u64 {
                guest_warn!(frame = frame.len(), "RX buffer too small; frame dropped");
                bump(&ctx.stats.failed_requests);
                0
            } else {
                match write_to_buffers(ctx.mem, &chain.writable, 0, frame) {
                    Ok(n) => {
                        add(&ctx.stats.bytes_to_guest, (n - VNET_HDR_SIZE) as u64);
                        bump(&ctx.stats.completed_requests);
                        n as u32
                    }
                    Err(_) => {
                        bump(&ctx.stats.invalid_chains);
                        0
                    }
                }
            };
            ctx.complete(RX, chain.head, len);
            self.rx_len = 0;
        }
    }

    /// Sends every frame the guest queued for transmission.
    fn process_tx(&mut self, ctx: &mut QueueContext<'_>) {
        while let Some(chain) = ctx.pop(TX) {
            let len = chain.readable_len() as usize;
            if len <= VNET_HDR_SIZE || len > MAX_FRAME {
                guest_warn!(len, "TX chain is not a frame");
                bump(&ctx.stats.invalid_chains);
            } else if !self.allowed {
                bump(&ctx.stats.dropped_while_prohibited);
            } else {
                match guest_iovecs(ctx.mem, segments(&chain.readable, 0, len as u64)) {
                    Ok(iovecs) if iovecs.len() <= IOV_MAX => {
                        match self.tap.write_frame_from(&iovecs) {
                            Ok(_) => {
                                add(&ctx.stats.bytes_from_guest, (len - VNET_HDR_SIZE) as u64);
                                bump(&ctx.stats.completed_requests);
                            }
                            Err(err) => {
                                // A full tap queue, or a net header the tap refuses, drops the
                                // frame, as a NIC would.
                                tracing::debug!(%err, "tap write failed; frame dropped");
                                bump(&ctx.stats.backend_errors);
                            }
                        }
                    }
                    _ => bump(&ctx.stats.invalid_chains),
                }
            }
            ctx.complete(TX, chain.head, 0);
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        DEVICE_ID_NET
    }

    fn class(&self) -> DeviceClass {
        DeviceClass::Network
    }

    fn features(&self) -> u64 {
        features::VERSION_1
            | features::RING_INDIRECT_DESC
            | F_MAC
            | F_STATUS
            | F_CSUM
            | F_HOST_TSO4
            | F_HOST_TSO6
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn config_space(&self) -> Vec<u8> {
        let mut config = vec![0u8; 12];
        config[0..6].copy_from_slice(&self.mac.0);
        let status = if self.allowed { S_LINK_UP } else { 0 };
        config[6..8].copy_from_slice(&status.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes()); // max_virtqueue_pairs
        config[10..12].copy_from_slice(&1500u16.to_le_bytes()); // mtu (not offered)
        config
    }

    fn reset(&mut self) {
        self.rx_len = 0;
    }

    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext<'_>) {
        match index {
            RX => self.process_rx(ctx),
            TX => self.process_tx(ctx),
            _ => {}
        }
    }

    fn backend_fds(&self) -> Vec<BackendFd> {
        vec![BackendFd {
            fd: self.tap.as_raw_fd(),
            events: EventSet::IN | EventSet::EDGE_TRIGGERED,
        }]
    }

    fn process_backend_event(&mut self, _token: usize, ctx: &mut QueueContext<'_>) {
        self.process_rx(ctx);
    }

    fn set_allowed(&mut self, allowed: bool) -> GateChange {
        let changed = self.allowed != allowed;
        self.allowed = allowed;
        if !allowed {
            self.rx_len = 0;
        }
        GateChange {
            config_changed: changed,
        }
    }

    fn allowed(&self) -> bool {
        self.allowed
    }

    fn state(&self) -> DeviceState {
        DeviceState::Net(NetState {
            allowed: self.allowed,
            mac: self.mac,
            pending_rx: self.rx_frame[..self.rx_len].to_vec(),
        })
    }

    fn restore(&mut self, state: &DeviceState) -> Result<(), RestoreError> {
        let DeviceState::Net(s) = state else {
            return Err(RestoreError::WrongDeviceType {
                saved: state.type_name(),
                actual: "net",
            });
        };
        if s.mac != self.mac {
            return Err(RestoreError::ConfigMismatch(format!(
                "saved MAC {} is not the configured {}",
                s.mac, self.mac
            )));
        }
        if !s.pending_rx.is_empty()
            && (s.pending_rx.len() <= VNET_HDR_SIZE || s.pending_rx.len() > self.rx_frame.len())
        {
            return Err(RestoreError::ConfigMismatch(format!(
                "saved pending RX frame of {} bytes is not a frame",
                s.pending_rx.len()
            )));
        }
        self.allowed = s.allowed;
        self.rx_frame[..s.pending_rx.len()].copy_from_slice(&s.pending_rx);
        self.rx_len = s.pending_rx.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
