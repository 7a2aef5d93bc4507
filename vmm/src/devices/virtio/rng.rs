//! virtio-rng (virtio 1.2, 5.4): fills guest buffers from the host's `getrandom`.
//!
//! Gate: while prohibited, requests are held in the queue (not completed), so the guest's
//! reads block; allowing the device again completes them.

use serde::{Deserialize, Serialize};

use super::chain::write_to_buffers;
use super::config::DeviceClass;
use super::device::{DeviceState, GateChange, QueueContext, RestoreError, VirtioDevice};
use super::spec::{features, DEVICE_ID_RNG};
use super::stats::{add, bump};

const QUEUE_SIZES: [u16; 1] = [256];
/// Most bytes given for one request; the Linux driver asks for at most a page or so.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Saved state of a virtio-rng device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    pub allowed: bool,
}

/// The entropy device.
#[derive(Debug)]
pub struct Rng {
    allowed: bool,
    buf: Vec<u8>,
}

/// Fills `buf` from the kernel's random pool.
fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes for the whole call,
        // and getrandom writes at most that many bytes into it.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        done += n as usize;
    }
    Ok(())
}

impl Rng {
    pub fn new(allowed: bool) -> Self {
        Rng {
            allowed,
            buf: Vec::new(),
        }
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        DEVICE_ID_RNG
    }

    fn class(&self) -> DeviceClass {
        DeviceClass::Entropy
    }

    fn features(&self) -> u64 {
        features::VERSION_1
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn config_space(&self) -> Vec<u8> {
        Vec::new()
    }

    fn reset(&mut self) {}

    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext<'_>) {
        if index != 0 || !self.allowed {
            // Held: the requests stay in the available ring until the gate opens.
            return;
        }
        while let Some(chain) = ctx.pop(0) {
            let len = (chain.writable_len() as usize).min(MAX_REQUEST_BYTES);
            self.buf.resize(len, 0);
            let written = match fill_random(&mut self.buf) {
                Ok(()) => write_to_buffers(ctx.mem, &chain.writable, 0, &self.buf).unwrap_or(0),
                Err(err) => {
                    tracing::error!(%err, "getrandom failed");
                    bump(&ctx.stats.backend_errors);
                    0
                }
            };
            add(&ctx.stats.bytes_to_guest, written as u64);
            bump(&ctx.stats.completed_requests);
            ctx.complete(0, chain.head, written as u32);
        }
    }

    fn set_allowed(&mut self, allowed: bool) -> GateChange {
        self.allowed = allowed;
        GateChange::default()
    }

    fn allowed(&self) -> bool {
        self.allowed
    }

    fn state(&self) -> DeviceState {
        DeviceState::Rng(RngState {
            allowed: self.allowed,
        })
    }

    fn restore(&mut self, state: &DeviceState) -> Result<(), RestoreError> {
        match state {
            DeviceState::Rng(s) => {
                self.allowed = s.allowed;
                Ok(())
            }
            other => Err(RestoreError::WrongDeviceType {
                saved: other.type_name(),
                actual: "rng",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::mmio::VirtioMmioTransport;
    use crate::devices::virtio::test_utils::{bring_up, guest_memory, GuestQueue, DESC_WRITE};
    use vm_memory::{Bytes, GuestAddress};

    fn rng_device(allowed: bool) -> (vm_memory::GuestMemoryMmap, GuestQueue, VirtioMmioTransport) {
        let mem = guest_memory();
        let q = GuestQueue::new(&mem, 16);
        let mut t =
            VirtioMmioTransport::new("rng0", Box::new(Rng::new(allowed)), mem.clone()).unwrap();
        bring_up(&mut t, &[&q]);
        (mem, q, t)
    }

    #[test]
    fn rng_fills_guest_buffers_with_random_bytes() {
        let (mem, mut q, mut t) = rng_device(true);
        q.add_chain(&[(0x10_000, 64, DESC_WRITE), (0x20_000, 64, DESC_WRITE)]);
        t.run_queue(0);
        assert_eq!(q.used_entries(), vec![(0, 128)]);
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        mem.read_slice(&mut a, GuestAddress(0x10_000)).unwrap();
        mem.read_slice(&mut b, GuestAddress(0x20_000)).unwrap();
        assert!(a.iter().any(|&x| x != 0) && b.iter().any(|&x| x != 0));
        assert_ne!(a, b);
        assert_eq!(t.stats().bytes_to_guest, 128);
        assert_eq!(t.irq_evt().read().unwrap(), 1, "used-ring interrupt raised");
    }

    #[test]
    fn prohibited_rng_holds_requests_until_allowed_again() {
        let (_mem, mut q, mut t) = rng_device(true);
        let state = t.set_allowed(false);
        assert!(!state.allowed);
        assert_eq!(state.class, DeviceClass::Entropy);
        assert!(!t.set_allowed(false).allowed, "idempotent");
        q.add_chain(&[(0x10_000, 32, DESC_WRITE)]);
        t.run_queue(0);
        t.run_queue(0);
        assert_eq!(q.used_idx(), 0, "no bytes while prohibited");
        assert!(t.set_allowed(true).allowed);
        assert_eq!(
            q.used_entries(),
            vec![(0, 32)],
            "held request completed on allow"
        );
    }
}
