//! Transport tests, with the real entropy device behind the transport.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vm_memory::{Bytes, GuestAddress};

use super::regs;
use super::{MmioDevice, VirtioMmioTransport};
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::spec::features;
use crate::devices::virtio::spec::{status, DEVICE_ID_RNG};
use crate::devices::virtio::test_utils::{
    bring_up, bring_up_without, guest_memory, read_reg, write_reg, GuestQueue, DESC_WRITE,
};

fn rng_transport() -> (vm_memory::GuestMemoryMmap, VirtioMmioTransport) {
    let mem = guest_memory();
    let t = VirtioMmioTransport::new("rng0", Box::new(Rng::new(true)), mem.clone()).unwrap();
    (mem, t)
}

const ACK_DRIVER: u32 = status::ACKNOWLEDGE | status::DRIVER;

#[test]
fn identification_registers_follow_virtio_mmio_v2() {
    let (_mem, mut t) = rng_transport();
    assert_eq!(read_reg(&mut t, regs::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(read_reg(&mut t, regs::VERSION), 2);
    assert_eq!(read_reg(&mut t, regs::DEVICE_ID), DEVICE_ID_RNG);
    assert_eq!(read_reg(&mut t, regs::QUEUE_NUM_MAX), 256);
    write_reg(&mut t, regs::DEVICE_FEATURES_SEL, 1);
    assert_eq!(
        read_reg(&mut t, regs::DEVICE_FEATURES),
        1,
        "VERSION_1 is bit 32"
    );
    assert_eq!(t.stats().guest_errors(), 0);
}

#[test]
fn feature_negotiation_refuses_unoffered_bits_and_legacy_drivers() {
    let (_mem, mut t) = rng_transport();
    write_reg(&mut t, regs::STATUS, status::ACKNOWLEDGE);
    write_reg(&mut t, regs::STATUS, ACK_DRIVER);
    // Bit 0 is not offered by the rng.
    write_reg(&mut t, regs::DRIVER_FEATURES_SEL, 0);
    write_reg(&mut t, regs::DRIVER_FEATURES, 1);
    write_reg(&mut t, regs::DRIVER_FEATURES_SEL, 1);
    write_reg(&mut t, regs::DRIVER_FEATURES, 1);
    write_reg(&mut t, regs::STATUS, ACK_DRIVER | status::FEATURES_OK);
    assert_eq!(
        read_reg(&mut t, regs::STATUS),
        ACK_DRIVER,
        "FEATURES_OK refused"
    );

    // Without VERSION_1 (a legacy driver): refused too.
    write_reg(&mut t, regs::DRIVER_FEATURES_SEL, 0);
    write_reg(&mut t, regs::DRIVER_FEATURES, 0);
    write_reg(&mut t, regs::DRIVER_FEATURES_SEL, 1);
    write_reg(&mut t, regs::DRIVER_FEATURES, 0);
    write_reg(&mut t, regs::STATUS, ACK_DRIVER | status::FEATURES_OK);
    assert_eq!(read_reg(&mut t, regs::STATUS), ACK_DRIVER);

    // A feature page past the second one.
    write_reg(&mut t, regs::DRIVER_FEATURES_SEL, 7);
    write_reg(&mut t, regs::DRIVER_FEATURES, 1);
    assert_eq!(t.stats().bad_feature_negotiations, 3);

    // The right set is accepted; features cannot change afterwards.
    write_reg(&mut t, regs::DRIVER_FEATURES_SEL, 1);
    write_reg(&mut t, regs::DRIVER_FEATURES, 1);
    write_reg(&mut t, regs::STATUS, ACK_DRIVER | status::FEATURES_OK);
    assert_eq!(
        read_reg(&mut t, regs::STATUS),
        ACK_DRIVER | status::FEATURES_OK
    );
    write_reg(&mut t, regs::DRIVER_FEATURES, 0);
    assert_eq!(t.stats().bad_feature_negotiations, 4);
}

#[test]
fn status_steps_cannot_be_skipped_or_undone() {
    let (_mem, mut t) = rng_transport();
    write_reg(&mut t, regs::STATUS, status::DRIVER_OK);
    assert_eq!(read_reg(&mut t, regs::STATUS), 0);
    write_reg(&mut t, regs::STATUS, status::ACKNOWLEDGE);
    write_reg(
        &mut t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER_OK,
    );
    write_reg(&mut t, regs::STATUS, ACK_DRIVER);
    write_reg(&mut t, regs::STATUS, status::DRIVER); // clears ACKNOWLEDGE
    write_reg(
        &mut t,
        regs::STATUS,
        ACK_DRIVER | status::DEVICE_NEEDS_RESET,
    );
    assert_eq!(read_reg(&mut t, regs::STATUS), ACK_DRIVER);
    assert_eq!(t.stats().bad_status_transitions, 4);
    write_reg(&mut t, regs::STATUS, ACK_DRIVER | status::FAILED);
    assert_eq!(read_reg(&mut t, regs::STATUS), ACK_DRIVER | status::FAILED);
    write_reg(&mut t, regs::STATUS, 0);
    assert_eq!(read_reg(&mut t, regs::STATUS), 0, "reset");
}

#[test]
fn bad_queue_setup_is_refused_and_counted() {
    let (mem, mut t) = rng_transport();
    // Queue registers before FEATURES_OK are refused.
    write_reg(&mut t, regs::QUEUE_NUM, 16);
    bring_up_features_only(&mut t);
    write_reg(&mut t, regs::QUEUE_NUM, 100); // not a power of two
    write_reg(&mut t, regs::QUEUE_NUM, 512); // above the maximum
    write_reg(&mut t, regs::QUEUE_DESC_LOW, 0x1001); // misaligned
    write_reg(&mut t, regs::QUEUE_SEL, 5); // no such queue
    write_reg(&mut t, regs::QUEUE_NUM, 16);
    assert_eq!(read_reg(&mut t, regs::QUEUE_NUM_MAX), 0);
    write_reg(&mut t, regs::QUEUE_SEL, 0);
    // Rings outside guest memory: the queue does not become ready.
    write_reg(&mut t, regs::QUEUE_NUM, 16);
    write_reg(&mut t, regs::QUEUE_DESC_HIGH, 0x10);
    write_reg(&mut t, regs::QUEUE_READY, 1);
    assert_eq!(read_reg(&mut t, regs::QUEUE_READY), 0);
    assert_eq!(t.stats().bad_queue_configs, 6);
    // Fixed up, the queue becomes ready, and then cannot be changed.
    let q = GuestQueue::new(&mem, 16);
    write_reg(&mut t, regs::QUEUE_DESC_HIGH, 0);
    write_reg(&mut t, regs::QUEUE_DESC_LOW, q.desc as u32);
    write_reg(&mut t, regs::QUEUE_AVAIL_LOW, q.avail as u32);
    write_reg(&mut t, regs::QUEUE_USED_LOW, q.used as u32);
    write_reg(&mut t, regs::QUEUE_READY, 1);
    assert_eq!(read_reg(&mut t, regs::QUEUE_READY), 1);
    write_reg(&mut t, regs::QUEUE_NUM, 8);
    assert_eq!(t.stats().bad_queue_configs, 7);
}

fn bring_up_features_only(t: &mut VirtioMmioTransport) {
    write_reg(t, regs::STATUS, status::ACKNOWLEDGE);
    write_reg(t, regs::STATUS, ACK_DRIVER);
    write_reg(t, regs::DRIVER_FEATURES_SEL, 1);
    write_reg(t, regs::DRIVER_FEATURES, 1);
    write_reg(t, regs::STATUS, ACK_DRIVER | status::FEATURES_OK);
}

#[test]
fn notifications_before_driver_ok_are_ignored_and_counted() {
    let (mem, mut t) = rng_transport();
    let mut q = GuestQueue::new(&mem, 16);
    q.add_chain(&[(0x10_000, 16, DESC_WRITE)]);
    t.run_queue(0);
    t.run_queue(3);
    assert_eq!(q.used_idx(), 0);
    assert_eq!(t.stats().early_notifications, 2);
    bring_up(&mut t, &[&q]);
    t.run_queue(0);
    assert_eq!(q.used_entries(), vec![(0, 16)]);
}

#[test]
fn bad_mmio_accesses_read_zero_and_are_counted() {
    let (_mem, mut t) = rng_transport();
    let mut two = [0xffu8; 2];
    t.mmio_read(regs::MAGIC_VALUE, &mut two);
    assert_eq!(two, [0, 0]);
    assert_eq!(read_reg(&mut t, 0x0f0), 0); // unknown register
    assert_eq!(read_reg(&mut t, regs::QUEUE_NOTIFY), 0); // write-only
    write_reg(&mut t, regs::MAGIC_VALUE, 1); // read-only
    t.mmio_write(regs::STATUS, &[1]); // narrow write
    let mut cfg = [0xffu8; 4];
    t.mmio_read(regs::CONFIG, &mut cfg); // the rng has no config space
    assert_eq!(cfg, [0; 4]);
    t.mmio_read(u64::MAX, &mut cfg); // absurd offset
    t.mmio_write(regs::CONFIG + 4, &[1, 2]);
    assert_eq!(t.stats().bad_mmio_accesses, 8);
    assert_eq!(read_reg(&mut t, regs::STATUS), 0);
}

#[test]
fn queue_notify_write_and_interrupt_ack() {
    let (mem, mut t) = rng_transport();
    let mut q = GuestQueue::new(&mem, 16);
    bring_up(&mut t, &[&q]);
    write_reg(&mut t, regs::QUEUE_NOTIFY, 0);
    assert_eq!(
        t.queue_evts()[0].read().unwrap(),
        1,
        "handed to the event loop"
    );
    write_reg(&mut t, regs::QUEUE_NOTIFY, 9);
    assert_eq!(t.stats().early_notifications, 1);
    q.add_chain(&[(0x10_000, 8, DESC_WRITE)]);
    t.run_queue(0);
    assert_eq!(read_reg(&mut t, regs::INTERRUPT_STATUS), 1);
    write_reg(&mut t, regs::INTERRUPT_ACK, 1);
    assert_eq!(read_reg(&mut t, regs::INTERRUPT_STATUS), 0);
}

#[test]
fn the_event_loop_serves_ioeventfd_notifications() {
    let (mem, mut t) = rng_transport();
    let mut q = GuestQueue::new(&mem, 16);
    bring_up(&mut t, &[&q]);
    let queue_evt = t.queue_evts()[0].try_clone().unwrap();
    let irq_evt = t.irq_evt().try_clone().unwrap();
    let shared = Arc::new(Mutex::new(t));
    let mut manager = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
    manager.add_subscriber(shared.clone());
    q.add_chain(&[(0x10_000, 32, DESC_WRITE)]);
    queue_evt.write(1).unwrap(); // what KVM does on the guest's QueueNotify write
    let handled = manager.run_with_timeout(1000).unwrap();
    assert_eq!(handled, 1);
    assert_eq!(q.used_entries(), vec![(0, 32)]);
    assert_eq!(irq_evt.read().unwrap(), 1);
}

#[test]
fn reset_returns_queues_and_features_to_power_on_values() {
    let (mem, mut t) = rng_transport();
    let q = GuestQueue::new(&mem, 16);
    bring_up(&mut t, &[&q]);
    write_reg(&mut t, regs::STATUS, 0);
    assert_eq!(read_reg(&mut t, regs::STATUS), 0);
    assert_eq!(read_reg(&mut t, regs::QUEUE_READY), 0);
    assert_eq!(read_reg(&mut t, regs::INTERRUPT_STATUS), 0);
    bring_up(&mut t, &[&q]);
    assert_eq!(t.stats().guest_errors(), 0);
}

#[test]
fn state_round_trips_through_serde_and_restores_a_running_device() {
    let (mem, mut t) = rng_transport();
    let mut q = GuestQueue::new(&mem, 16);
    bring_up(&mut t, &[&q]);
    q.add_chain(&[(0x10_000, 8, DESC_WRITE)]);
    t.run_queue(0);
    t.set_allowed(false);
    let saved = t.state();
    let json = serde_json::to_string(&saved).unwrap();

    let mut fresh =
        VirtioMmioTransport::new("rng0", Box::new(Rng::new(true)), mem.clone()).unwrap();
    fresh
        .restore(&serde_json::from_str(&json).unwrap())
        .unwrap();
    assert_eq!(fresh.state(), saved);
    assert!(!fresh.allowed());
    assert_eq!(
        fresh.queue_evts()[0].read().unwrap(),
        1,
        "queues kicked after restore"
    );
    q.add_chain(&[(0x11_000, 8, DESC_WRITE)]);
    fresh.set_allowed(true);
    assert_eq!(q.used_entries(), vec![(0, 8), (1, 8)]);

    // A state for another device type, or with rings outside memory, is refused.
    let mut bad = saved.clone();
    bad.id = "rng1".into();
    assert!(fresh.restore(&bad).is_err(), "another device's state");
    let mut bad = saved.clone();
    bad.device_type = 2;
    assert!(fresh.restore(&bad).is_err());
    let mut bad = saved;
    bad.queues[0].used_ring = 1 << 40;
    assert!(fresh.restore(&bad).is_err());
}

/// xorshift64*: deterministic garbage without a dependency.
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A guest that writes garbage into every register and into its rings and descriptor table
/// (with buffer addresses mostly inside guest memory, so requests really reach the disk)
/// never panics the device nor makes it loop.
#[test]
fn garbage_registers_rings_and_descriptors_never_panic_or_hang() {
    let image = vmm_sys_util::tempfile::TempFile::new().unwrap();
    image.as_file().set_len(1 << 20).unwrap();
    let started = std::time::Instant::now();
    let (mut refused, mut served) = (0, 0);
    for seed in 1..=300u64 {
        let mut g = Garbage(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mem = guest_memory();
        let block = crate::devices::virtio::block::Block::open(
            image.as_path(),
            false,
            crate::devices::virtio::config::DeviceClass::Storage,
            true,
            "fuzz",
        )
        .unwrap();
        let mut t = VirtioMmioTransport::new("fuzz", Box::new(block), mem.clone()).unwrap();
        let mut q = GuestQueue::new(&mem, 16);
        for round in 0..200 {
            match g.next() % 6 {
                0 => {
                    let offset = (g.next() % 0x120) & !3;
                    write_reg(&mut t, offset, g.next() as u32);
                }
                1 => {
                    let offset = g.next() % 0x140;
                    let mut buf = [0u8; 8];
                    let len = 1 + (g.next() % 8) as usize;
                    t.mmio_read(offset, &mut buf[..len]);
                }
                _ if round == 0 => bring_up(&mut t, &[&q]),
                2 if g.next() % 8 == 0 => bring_up(&mut t, &[&q]),
                3 => {
                    // Garbage descriptor: address inside memory most of the time.
                    let index = (g.next() % 16) as u16;
                    let addr = if g.next() % 4 == 0 {
                        g.next()
                    } else {
                        g.next() % (16 << 20)
                    };
                    let len = g.next() as u32 % 0x3000;
                    let flags = g.next() as u16 & 0x7;
                    let next = g.next() as u16 % 20;
                    q.write_descriptor(index, addr, len, flags, next);
                }
                4 if g.next() % 2 == 0 => {
                    // A well-formed chain amid the garbage: header, data, status byte.
                    q.add_chain(&[
                        (0x10_000, 16, 0),
                        (0x20_000, 512, DESC_WRITE),
                        (0x30_000, 1, DESC_WRITE),
                    ]);
                }
                4 => {
                    // Garbage in the available ring, including its index.
                    let off = g.next() % (4 + 2 * 16);
                    mem.write_obj(g.next() as u16, GuestAddress(q.avail + off))
                        .unwrap();
                }
                _ => t.run_queue((g.next() % 3) as usize),
            }
        }
        let stats = t.stats();
        refused += stats.invalid_chains;
        served += stats.completed_requests + stats.failed_requests;
    }
    assert!(refused > 100, "garbage was refused: {refused}");
    assert!(served > 10, "some garbage reached the disk: {served}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

/// Interrupt status after each of `requests` one-buffer entropy requests, with `used_event`
/// set to `used_event`, and the `avail_event` the device published after each.
fn interrupts_and_avail_events(declined: u64, used_event: u16, requests: u16) -> Vec<(u32, u16)> {
    let (mem, mut t) = rng_transport();
    let mut q = GuestQueue::new(&mem, 16);
    bring_up_without(&mut t, &[&q], declined);
    let used_event_at = GuestAddress(q.avail + 4 + 2 * u64::from(q.size));
    let avail_event_at = GuestAddress(q.used + 4 + 8 * u64::from(q.size));
    mem.write_obj(used_event, used_event_at).unwrap();
    (0..requests)
        .map(|n| {
            q.add_chain(&[(0x10_000 + u64::from(n) * 0x100, 8, DESC_WRITE)]);
            t.run_queue(0);
            let status = read_reg(&mut t, regs::INTERRUPT_STATUS);
            write_reg(&mut t, regs::INTERRUPT_ACK, status);
            (status, mem.read_obj::<u16>(avail_event_at).unwrap())
        })
        .collect()
}

/// With EVENT_IDX the device interrupts only when its used index passes the driver's
/// `used_event`, and after emptying a queue it publishes `avail_event` (where it stopped), so
/// the driver notifies at its next buffer. Without EVENT_IDX every request interrupts and the
/// used ring's `avail_event` is left alone.
#[test]
fn event_idx_interrupts_at_used_event_and_publishes_avail_event() {
    let (_, mut t) = rng_transport();
    write_reg(&mut t, regs::DEVICE_FEATURES_SEL, 0);
    assert_ne!(
        read_reg(&mut t, regs::DEVICE_FEATURES) & (features::RING_EVENT_IDX as u32),
        0,
        "EVENT_IDX offered"
    );
    assert_eq!(
        interrupts_and_avail_events(0, 2, 4),
        vec![(0, 1), (0, 2), (1, 3), (0, 4)],
        "interrupt once used passes used_event 2"
    );
    assert_eq!(
        interrupts_and_avail_events(features::RING_EVENT_IDX, 2, 3),
        vec![(1, 0), (1, 0), (1, 0)]
    );
}

/// A guest that makes a full ring of looping chains available (every one walks the whole
/// table before it is refused) gets one budget of work per event, and the queue is put back
/// on the event loop for the rest: the device's lock and the event loop are not held for the
/// whole ring (before the budget: 255 chains × 256 descriptors in one go, 25 ms a chain in a
/// debug VMM in the nested runner, so ~6 s per notification, while the guest kept adding).
#[test]
fn looping_chains_are_refused_one_budget_per_event_and_the_rest_is_deferred() {
    use crate::devices::virtio::device::DESCRIPTORS_PER_RUN;
    use crate::devices::virtio::test_utils::DESC_NEXT;
    let (mem, mut t) = rng_transport();
    let q = GuestQueue::new(&mem, 256);
    for i in 0..256u16 {
        q.write_descriptor(i, 0x10_000, 8, DESC_NEXT | DESC_WRITE, (i + 1) % 256);
    }
    for _ in 0..255 {
        q.publish(0);
    }
    bring_up(&mut t, &[&q]);
    let per_run = u16::try_from(DESCRIPTORS_PER_RUN / 256).unwrap();
    let mut runs = 0;
    loop {
        let before = q.used_idx();
        t.run_queue(0);
        runs += 1;
        let done = q.used_idx() - before;
        assert!(done <= per_run, "{done} looping chains in one run");
        let kicked = t.queue_evts()[0].read().is_ok();
        if q.used_idx() == 255 {
            break;
        }
        assert!(
            kicked,
            "the rest is left for the next turn of the event loop"
        );
        assert!(runs < 255, "no progress");
    }
    assert_eq!(runs, 255usize.div_ceil(usize::from(per_run)));
    assert_eq!(t.stats().invalid_chains, 255);
    // And the device still serves a good request.
    q.write_descriptor(0, 0x10_000, 8, DESC_WRITE, 0);
    q.publish(0);
    t.run_queue(0);
    assert_eq!(q.used_entries()[255], (0, 8));
}

/// The API lists devices through observers: they answer while the transport's lock is held
/// (as the event loop holds it while it works on a hostile guest's queues) and follow the gate.
#[test]
fn observers_read_the_gate_and_counters_without_the_transport_lock() {
    let (_mem, mut t) = rng_transport();
    let observer = t.observer();
    assert!(observer.allowed());
    t.set_allowed(false);
    write_reg(&mut t, 0x1fc, 1); // a bad access, counted
    let shared = Arc::new(Mutex::new(t));
    let held = shared.lock().unwrap();
    let reader = std::thread::spawn(move || (observer.allowed(), observer.stats()));
    let (allowed, stats) = reader.join().unwrap();
    drop(held);
    assert!(!allowed);
    assert_eq!(stats.bad_mmio_accesses, 1);
}
