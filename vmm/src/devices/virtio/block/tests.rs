//! virtio-blk on a real temporary image file, driven through real queues in guest memory.

use std::os::unix::fs::FileExt;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::tempfile::TempFile;

use super::request::{S_IOERR, S_OK, S_UNSUPP, T_FLUSH, T_GET_ID, T_IN, T_OUT};
use super::Block;
use crate::devices::virtio::config::DeviceClass;
use crate::devices::virtio::mmio::{regs, VirtioMmioTransport};
use crate::devices::virtio::spec::interrupt::CONFIG_CHANGE;
use crate::devices::virtio::test_utils::{
    bring_up, guest_memory, read_reg, write_reg, GuestQueue, DESC_WRITE,
};

const HEADER: u64 = 0x10_000;
const DATA: u64 = 0x20_000;
const STATUS: u64 = 0x30_000;
const DISK_BYTES: u64 = 1 << 20;

struct Rig {
    mem: GuestMemoryMmap,
    q: GuestQueue,
    t: VirtioMmioTransport,
    image: TempFile,
}

fn rig(read_only: bool, class: DeviceClass) -> Rig {
    let image = TempFile::new().unwrap();
    image.as_file().set_len(DISK_BYTES).unwrap();
    let mem = guest_memory();
    let q = GuestQueue::new(&mem, 16);
    let block = Block::open(image.as_path(), read_only, class, true, "disk-serial-0").unwrap();
    let mut t = VirtioMmioTransport::new("disk0", Box::new(block), mem.clone()).unwrap();
    bring_up(&mut t, &[&q]);
    Rig { mem, q, t, image }
}

impl Rig {
    fn header(&self, request_type: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&request_type.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(HEADER)).unwrap();
        self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    }

    /// Submits a request with `len` data bytes at DATA and runs the device; returns the
    /// status byte and the used length.
    fn submit(&mut self, request_type: u32, sector: u64, len: u32) -> (u8, u32) {
        self.header(request_type, sector);
        let data_flags = if request_type == T_OUT { 0 } else { DESC_WRITE };
        let mut chain = vec![(HEADER, 16, 0)];
        if len > 0 {
            chain.push((DATA, len, data_flags));
        }
        chain.push((STATUS, 1, DESC_WRITE));
        self.q.add_chain(&chain);
        self.t.run_queue(0);
        let (_, used_len) = *self.q.used_entries().last().unwrap();
        (self.mem.read_obj(GuestAddress(STATUS)).unwrap(), used_len)
    }

    fn capacity(&mut self) -> u64 {
        let low = read_reg(&mut self.t, regs::CONFIG);
        let high = read_reg(&mut self.t, regs::CONFIG + 4);
        u64::from(low) | (u64::from(high) << 32)
    }
}

#[test]
fn blk_write_then_read_back_lands_in_the_image_file() {
    let mut r = rig(false, DeviceClass::Storage);
    assert_eq!(r.capacity(), DISK_BYTES / 512);
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    r.mem.write_slice(&pattern, GuestAddress(DATA)).unwrap();
    assert_eq!(r.submit(T_OUT, 8, 4096), (S_OK, 1));
    let mut on_disk = vec![0u8; 4096];
    r.image
        .as_file()
        .read_exact_at(&mut on_disk, 8 * 512)
        .unwrap();
    assert_eq!(on_disk, pattern, "data is in the file");

    r.mem.write_slice(&[0u8; 4096], GuestAddress(DATA)).unwrap();
    assert_eq!(r.submit(T_IN, 8, 4096), (S_OK, 4097));
    let mut back = vec![0u8; 4096];
    r.mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert_eq!(back, pattern);

    assert_eq!(r.submit(T_FLUSH, 0, 0), (S_OK, 1));
    assert_eq!(r.submit(T_GET_ID, 0, 20), (S_OK, 21));
    let mut id = [0u8; 20];
    r.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..13], b"disk-serial-0");
    assert_eq!(r.submit(11, 0, 0), (S_UNSUPP, 1), "discard is not offered");
    let stats = r.t.stats();
    assert_eq!((stats.bytes_from_guest, stats.bytes_to_guest), (4096, 4096));
    assert_eq!(stats.guest_errors(), 0);
}

#[test]
fn blk_serves_requests_split_over_many_descriptors() {
    let mut r = rig(false, DeviceClass::Storage);
    r.image.as_file().write_all_at(&[0xabu8; 1024], 0).unwrap();
    r.header(T_IN, 0);
    r.q.add_chain(&[
        (HEADER, 16, 0),
        (DATA, 100, DESC_WRITE),
        (DATA + 0x1000, 924, DESC_WRITE),
        (STATUS, 1, DESC_WRITE),
    ]);
    r.t.run_queue(0);
    let mut a = [0u8; 100];
    let mut b = [0u8; 924];
    r.mem.read_slice(&mut a, GuestAddress(DATA)).unwrap();
    r.mem
        .read_slice(&mut b, GuestAddress(DATA + 0x1000))
        .unwrap();
    assert!(a.iter().chain(b.iter()).all(|&x| x == 0xab));
    assert_eq!(r.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_OK);
}

#[test]
fn read_only_disk_offers_ro_and_refuses_writes_with_ioerr() {
    let mut r = rig(true, DeviceClass::RemovableStorage);
    write_reg(&mut r.t, regs::DEVICE_FEATURES_SEL, 0);
    assert_ne!(
        read_reg(&mut r.t, regs::DEVICE_FEATURES) & (1 << 5),
        0,
        "VIRTIO_BLK_F_RO"
    );
    r.mem
        .write_slice(&[0x55u8; 512], GuestAddress(DATA))
        .unwrap();
    assert_eq!(r.submit(T_OUT, 0, 512), (S_IOERR, 1));
    let mut on_disk = [0xffu8; 512];
    r.image.as_file().read_exact_at(&mut on_disk, 0).unwrap();
    assert_eq!(on_disk, [0u8; 512], "file untouched");
    assert_eq!(r.submit(T_IN, 0, 512).0, S_OK, "reads still work");
    assert_eq!(r.submit(T_FLUSH, 0, 0).0, S_OK);
    assert_eq!(r.t.stats().failed_requests, 1);
}

#[test]
fn out_of_range_and_malformed_requests_fail_without_touching_the_disk() {
    let mut r = rig(false, DeviceClass::Storage);
    let last_sector = DISK_BYTES / 512 - 1;
    assert_eq!(r.submit(T_IN, last_sector, 1024).0, S_IOERR, "past the end");
    assert_eq!(
        r.submit(T_IN, u64::MAX / 256, 512).0,
        S_IOERR,
        "offset overflow"
    );
    assert_eq!(r.submit(T_OUT, 0, 100).0, S_IOERR, "not whole sectors");
    assert_eq!(r.t.stats().failed_requests, 3);

    // A header shorter than 16 bytes.
    r.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    r.q.add_chain(&[(HEADER, 8, 0), (STATUS, 1, DESC_WRITE)]);
    r.t.run_queue(0);
    assert_eq!(r.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_IOERR);
    // No writable byte for the status at all: completed empty.
    r.q.add_chain(&[(HEADER, 16, 0)]);
    r.t.run_queue(0);
    assert_eq!(*r.q.used_entries().last().unwrap(), (11, 0));
    assert_eq!(r.t.stats().invalid_chains, 2);
}

#[test]
fn prohibited_removable_disk_reports_no_medium_and_fails_every_request() {
    let mut r = rig(false, DeviceClass::RemovableStorage);
    let generation = read_reg(&mut r.t, regs::CONFIG_GENERATION);
    let gate = r.t.set_allowed(false);
    assert!(!gate.allowed);
    assert_eq!(gate.class, DeviceClass::RemovableStorage);
    assert_eq!(r.capacity(), 0, "medium gone");
    assert_ne!(read_reg(&mut r.t, regs::CONFIG_GENERATION), generation);
    assert_eq!(
        read_reg(&mut r.t, regs::INTERRUPT_STATUS) & CONFIG_CHANGE,
        CONFIG_CHANGE
    );
    assert_eq!(r.t.irq_evt().read().unwrap(), 1);
    write_reg(&mut r.t, regs::INTERRUPT_ACK, CONFIG_CHANGE);

    // Idempotent: no second interrupt.
    assert!(!r.t.set_allowed(false).allowed);
    assert!(r.t.irq_evt().read().is_err(), "no interrupt pending");

    r.mem
        .write_slice(&[0x77u8; 512], GuestAddress(DATA))
        .unwrap();
    assert_eq!(r.submit(T_OUT, 0, 512).0, S_IOERR);
    assert_eq!(r.submit(T_IN, 0, 512).0, S_IOERR);
    assert_eq!(r.submit(T_FLUSH, 0, 0).0, S_IOERR);
    assert_eq!(r.submit(T_GET_ID, 0, 20).0, S_IOERR);
    let mut on_disk = [0xffu8; 512];
    r.image.as_file().read_exact_at(&mut on_disk, 0).unwrap();
    assert_eq!(on_disk, [0u8; 512]);
    assert_eq!(r.t.stats().dropped_while_prohibited, 4);

    assert!(r.t.set_allowed(true).allowed);
    assert_eq!(r.capacity(), DISK_BYTES / 512, "medium back");
    assert_eq!(
        read_reg(&mut r.t, regs::INTERRUPT_STATUS) & CONFIG_CHANGE,
        CONFIG_CHANGE
    );
    assert_eq!(r.submit(T_OUT, 0, 512).0, S_OK);
    r.image.as_file().read_exact_at(&mut on_disk, 0).unwrap();
    assert_eq!(on_disk, [0x77u8; 512]);
}

#[test]
fn block_state_survives_restore_and_refuses_a_different_image() {
    let mut r = rig(false, DeviceClass::Storage);
    r.t.set_allowed(false);
    let saved = r.t.state();
    let Rig { mem, t, image, .. } = r;
    drop(t); // releases the image lock, as the saving VMM process exits
    let block = Block::open(image.as_path(), false, DeviceClass::Storage, true, "x").unwrap();
    let mut fresh = VirtioMmioTransport::new("disk0", Box::new(block), mem.clone()).unwrap();
    fresh.restore(&saved).unwrap();
    assert!(!fresh.allowed());
    assert_eq!(fresh.state(), saved);

    let other = TempFile::new().unwrap();
    other.as_file().set_len(4096).unwrap();
    let block = Block::open(other.as_path(), false, DeviceClass::Storage, true, "x").unwrap();
    let mut wrong = VirtioMmioTransport::new("disk0", Box::new(block), mem.clone()).unwrap();
    assert!(wrong.restore(&saved).is_err());
}

/// Throughput of the request path (queue handling + `preadv`/`pwritev` into guest memory), on a
/// 64 MiB image in the page cache. Run with `--ignored --nocapture`, in release for numbers.
#[test]
#[ignore = "measurement, not a check"]
fn blk_sequential_throughput() {
    const IMAGE: u64 = 64 << 20;
    const REQUEST: u32 = 128 * 1024;
    let image = TempFile::new().unwrap();
    image.as_file().set_len(IMAGE).unwrap();
    let mem = guest_memory();
    let mut q = GuestQueue::new(&mem, 16);
    let block = Block::open(image.as_path(), false, DeviceClass::Storage, true, "bench").unwrap();
    let mut t = VirtioMmioTransport::new("disk0", Box::new(block), mem.clone()).unwrap();
    bring_up(&mut t, &[&q]);
    for (request_type, name) in [(T_OUT, "write"), (T_IN, "read")] {
        let start = std::time::Instant::now();
        let mut sector = 0;
        while sector * 512 < IMAGE {
            let mut h = [0u8; 16];
            h[0..4].copy_from_slice(&request_type.to_le_bytes());
            h[8..16].copy_from_slice(&sector.to_le_bytes());
            mem.write_slice(&h, GuestAddress(HEADER)).unwrap();
            let flags = if request_type == T_OUT { 0 } else { DESC_WRITE };
            q.add_chain(&[
                (HEADER, 16, 0),
                (0x100_000, REQUEST, flags),
                (STATUS, 1, DESC_WRITE),
            ]);
            t.run_queue(0);
            sector += u64::from(REQUEST) / 512;
        }
        let secs = start.elapsed().as_secs_f64();
        let mib_s = IMAGE as f64 / (1 << 20) as f64 / secs;
        println!(
            "virtio-blk sequential {name}: {mib_s:.0} MiB/s ({} KiB requests)",
            REQUEST / 1024
        );
        assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_OK);
        assert!(mib_s > 10.0);
    }
}

#[test]
fn prohibited_storage_disk_fails_requests_and_reports_no_medium_like_removable() {
    let mut r = rig(false, DeviceClass::Storage);
    let gate = r.t.set_allowed(false);
    assert_eq!((gate.class, gate.allowed), (DeviceClass::Storage, false));
    assert_eq!(r.capacity(), 0);
    assert_eq!(
        read_reg(&mut r.t, regs::INTERRUPT_STATUS) & CONFIG_CHANGE,
        CONFIG_CHANGE
    );
    assert_eq!(r.submit(T_IN, 0, 512).0, S_IOERR);
    assert!(r.t.set_allowed(true).allowed);
    assert_eq!(r.submit(T_IN, 0, 512).0, S_OK);
}

#[test]
fn a_writable_image_cannot_be_opened_twice() {
    let image = TempFile::new().unwrap();
    image.as_file().set_len(4096).unwrap();
    let _first = Block::open(image.as_path(), false, DeviceClass::Storage, true, "a").unwrap();
    let second = Block::open(image.as_path(), false, DeviceClass::Storage, true, "b");
    assert!(matches!(second, Err(super::BlockError::Locked { .. })));
    let shared = Block::open(image.as_path(), true, DeviceClass::Storage, true, "c");
    assert!(shared.is_err(), "no reader beside a writer");

    let ro = TempFile::new().unwrap();
    ro.as_file().set_len(4096).unwrap();
    let _a = Block::open(ro.as_path(), true, DeviceClass::RemovableStorage, true, "a").unwrap();
    let _b = Block::open(ro.as_path(), true, DeviceClass::RemovableStorage, true, "b").unwrap();
    assert!(Block::open(ro.as_path(), false, DeviceClass::Storage, true, "c").is_err());
}

/// An image shrunk under the VM: a read past its end fails with IOERR (never a half-filled
/// buffer reported as good), and the device keeps serving the part that still exists.
#[test]
fn a_read_past_the_end_of_a_shrunk_image_fails_with_ioerr() {
    let mut r = rig(false, DeviceClass::Storage);
    r.image.as_file().write_all_at(&[0x5au8; 512], 0).unwrap();
    r.image.as_file().set_len(4096).unwrap();
    assert_eq!(r.submit(T_IN, 8, 4096).0, S_IOERR, "past the end");
    assert_eq!(r.submit(T_IN, 4, 4096).0, S_IOERR, "straddling the end");
    assert_eq!(r.submit(T_IN, 0, 512), (S_OK, 513));
    let mut back = [0u8; 512];
    r.mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert_eq!(back, [0x5au8; 512]);
}
