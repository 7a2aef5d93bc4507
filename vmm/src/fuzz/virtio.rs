//! Guest-controlled virtio input: descriptor tables and rings a guest writes, the requests the
//! devices find in them, and the transport's MMIO registers.

use std::path::PathBuf;
use std::sync::OnceLock;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::Input;
use crate::devices::virtio::block::Block;
use crate::devices::virtio::chain::{walk_chain, MAX_INDIRECT_DESCRIPTORS};
use crate::devices::virtio::device::VirtioDevice;
use crate::devices::virtio::mmio::{regs, MmioDevice, VirtioMmioTransport};
use crate::devices::virtio::net::{Net, Tap};
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::spec::status;
use crate::devices::virtio::{DeviceClass, MacAddr};

/// Guest memory of the rigs: 1 MiB at 0.
const MEM_BYTES: u64 = 1 << 20;
/// The queue: 16 descriptors at 0x1000, the available ring after them, the used ring after.
const QUEUE_SIZE: u16 = 16;
const DESC: u64 = 0x1000;
const AVAIL: u64 = DESC + 16 * QUEUE_SIZE as u64;
const USED: u64 = (AVAIL + 6 + 2 * QUEUE_SIZE as u64 + 3) & !3;
/// An indirect table the descriptors may point at.
const INDIRECT: u64 = 0x3000;
/// Where buffers mostly point (so requests are often well-formed enough to reach the devices).
const DATA: u64 = 0x8000;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_BYTES as usize)]).expect("guest memory")
}

/// One descriptor from 8 fuzzer bytes: mostly inside the data area, sometimes anywhere (rings,
/// table, past the end of memory); flags and `next` as the guest likes.
fn descriptor(input: &mut Input) -> [u8; 16] {
    let selector = input.u8();
    let addr = if selector < 224 {
        DATA + u64::from(input.u16()) * 8
    } else {
        input.u64()
    };
    let len = if selector & 1 == 0 {
        u32::from(input.u16())
    } else {
        input.u32()
    };
    let flags = u16::from(input.u8() & 0x7);
    let next = u16::from(input.u8() % (QUEUE_SIZE as u8 + 2));
    let mut raw = [0u8; 16];
    raw[0..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..16].copy_from_slice(&next.to_le_bytes());
    raw
}

/// Writes a descriptor table (and an indirect table, and some data) from the input.
fn write_tables(mem: &GuestMemoryMmap, input: &mut Input) {
    for i in 0..u64::from(QUEUE_SIZE) {
        mem.write_slice(&descriptor(input), GuestAddress(DESC + 16 * i))
            .expect("descriptor table");
    }
    for i in 0..32 {
        mem.write_slice(&descriptor(input), GuestAddress(INDIRECT + 16 * i))
            .expect("indirect table");
    }
    let data = input.bytes(512);
    mem.write_slice(data, GuestAddress(DATA)).expect("data");
}

/// A descriptor chain walked from a guest-written table. Checks that an accepted chain names
/// only guest memory, holds at most the descriptors it can, and adds up to its totals.
pub fn descriptor_chain(data: &[u8]) {
    let mem = memory();
    let mut input = Input::new(data);
    let indirect_allowed = input.u8() & 1 == 1;
    let head = u16::from(input.u8() % (QUEUE_SIZE as u8 + 2));
    write_tables(&mem, &mut input);
    let Ok(chain) = walk_chain(&mem, GuestAddress(DESC), QUEUE_SIZE, head, indirect_allowed) else {
        return;
    };
    assert_eq!(chain.head, head);
    let count = chain.readable.len() + chain.writable.len();
    assert!(count <= QUEUE_SIZE as usize + MAX_INDIRECT_DESCRIPTORS as usize);
    for buffer in chain.readable.iter().chain(&chain.writable) {
        if buffer.len > 0 {
            assert!(
                mem.check_range(buffer.addr, buffer.len as usize),
                "{buffer:?} outside guest memory"
            );
        }
    }
    assert!(chain.readable_len() + chain.writable_len() <= u64::from(u32::MAX));
}

/// Which device a request target drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Block,
    Net,
    Rng,
}

/// A 64 KiB scratch disk image shared by the block runs of this process.
fn disk_image() -> &'static PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("vmm-fuzz-disk-{}", std::process::id()));
        let file = std::fs::File::create(&path).expect("scratch disk");
        file.set_len(64 << 10).expect("scratch disk size");
        path
    })
}

fn device(kind: DeviceKind) -> Option<Box<dyn VirtioDevice>> {
    Some(match kind {
        DeviceKind::Block => Box::new(
            Block::open(disk_image(), false, DeviceClass::Storage, true, "fuzz")
                .expect("scratch disk"),
        ),
        // A tap needs root and /dev/net/tun: without them there is nothing to fuzz here.
        DeviceKind::Net => {
            let name = format!("vfz{}", std::process::id() % 100_000);
            let tap = Tap::open(&name).ok()?;
            Box::new(Net::new(tap, MacAddr([2, 0, 0, 0, 0, 1]), true))
        }
        DeviceKind::Rng => Box::new(Rng::new(true)),
    })
}

fn write_reg(t: &mut VirtioMmioTransport, offset: u64, value: u32) {
    t.mmio_write(offset, &value.to_le_bytes());
}

fn read_reg(t: &mut VirtioMmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.mmio_read(offset, &mut b);
    u32::from_le_bytes(b)
}

/// The driver's side of initialisation: every offered feature, each queue at the rig's rings
/// (one set of rings, shared by all the device's queues), DRIVER_OK.
fn bring_up(t: &mut VirtioMmioTransport, queues: u32) {
    write_reg(t, regs::STATUS, 0);
    write_reg(t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    for sel in 0..2 {
        write_reg(t, regs::DEVICE_FEATURES_SEL, sel);
        let offered = read_reg(t, regs::DEVICE_FEATURES);
        write_reg(t, regs::DRIVER_FEATURES_SEL, sel);
        write_reg(t, regs::DRIVER_FEATURES, offered);
    }
    let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    write_reg(t, regs::STATUS, s);
    for q in 0..queues {
        write_reg(t, regs::QUEUE_SEL, q);
        write_reg(t, regs::QUEUE_NUM, u32::from(QUEUE_SIZE));
        write_reg(t, regs::QUEUE_DESC_LOW, DESC as u32);
        write_reg(t, regs::QUEUE_AVAIL_LOW, AVAIL as u32);
        write_reg(t, regs::QUEUE_USED_LOW, USED as u32);
        write_reg(t, regs::QUEUE_READY, 1);
    }
    write_reg(t, regs::STATUS, s | status::DRIVER_OK);
    assert_eq!(read_reg(t, regs::STATUS), s | status::DRIVER_OK);
}

fn ring_index(mem: &GuestMemoryMmap, ring: u64) -> u16 {
    mem.read_obj(GuestAddress(ring + 2)).expect("ring index")
}

/// Makes `heads` available, as a driver does.
fn publish(mem: &GuestMemoryMmap, heads: &[u16]) {
    let mut idx = ring_index(mem, AVAIL);
    for head in heads {
        let slot = AVAIL + 4 + 2 * u64::from(idx % QUEUE_SIZE);
        mem.write_obj(*head, GuestAddress(slot))
            .expect("avail ring");
        idx = idx.wrapping_add(1);
    }
    mem.write_obj(idx, GuestAddress(AVAIL + 2))
        .expect("avail idx");
}

/// Rounds of guest-written requests for `kind`'s device behind a real transport: each round
/// rewrites the tables, makes up to 4 chains available and lets the device run its queues.
/// Checks that the device completes only what was made available, with heads of the table,
/// and — for block and rng — that a well-formed request is still served afterwards.
pub fn device_requests(kind: DeviceKind, data: &[u8]) {
    let Some(device) = device(kind) else {
        return;
    };
    let queues = device.queue_max_sizes().len();
    let mem = memory();
    let mut t = VirtioMmioTransport::new("fuzz0", device, mem.clone()).expect("transport");
    bring_up(&mut t, queues as u32);
    let mut input = Input::new(data);
    let mut published: u16 = 0;
    while !input.is_empty() {
        write_tables(&mem, &mut input);
        let n = usize::from(input.u8() % 5);
        let heads: Vec<u16> = (0..n).map(|_| u16::from(input.u8()) % QUEUE_SIZE).collect();
        publish(&mem, &heads);
        published = published.wrapping_add(n as u16);
        for q in 0..queues {
            t.run_queue(q);
        }
        let used = ring_index(&mem, USED);
        assert!(
            published.wrapping_sub(used) <= published,
            "{used} used of {published} made available"
        );
        for i in 0..used.min(QUEUE_SIZE) {
            let id: u32 = mem
                .read_obj(GuestAddress(USED + 4 + 8 * u64::from(i)))
                .expect("used ring");
            assert!(id < u32::from(QUEUE_SIZE), "used id {id}");
        }
    }
    if kind != DeviceKind::Net {
        served_after(&mem, &mut t, kind);
    }
}

/// A well-formed request completes: a 64-byte rng read, or a block GET_ID.
fn served_after(mem: &GuestMemoryMmap, t: &mut VirtioMmioTransport, kind: DeviceKind) {
    let before = ring_index(mem, USED);
    let write = crate::devices::virtio::spec::desc_flags::WRITE;
    let next = crate::devices::virtio::spec::desc_flags::NEXT;
    let put = |index: u64, addr: u64, len: u32, flags: u16, next_index: u16| {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next_index.to_le_bytes());
        mem.write_slice(&raw, GuestAddress(DESC + 16 * index))
            .expect("descriptor");
    };
    match kind {
        DeviceKind::Rng => put(0, DATA, 64, write, 0),
        _ => {
            // GET_ID (type 8): header, 20-byte id, status byte.
            let mut header = [0u8; 16];
            header[0] = 8;
            mem.write_slice(&header, GuestAddress(DATA))
                .expect("header");
            put(0, DATA, 16, next, 1);
            put(1, DATA + 0x100, 20, write | next, 2);
            put(2, DATA + 0x200, 1, write, 0);
        }
    }
    publish(mem, &[0]);
    t.run_queue(0);
    let after = ring_index(mem, USED);
    assert_eq!(
        after,
        before.wrapping_add(1),
        "the well-formed request was served"
    );
    if kind == DeviceKind::Block {
        let status: u8 = mem.read_obj(GuestAddress(DATA + 0x200)).expect("status");
        assert_eq!(status, 0, "GET_ID answered OK");
    }
}

/// Register accesses to a transport (rng device behind it) in any order, size and value, with
/// the queue run as if notified. Checks that the identification registers never change, that
/// a reset (STATUS = 0) always resets, and that nothing panics.
pub fn mmio_registers(data: &[u8]) {
    let mem = memory();
    let mut t = VirtioMmioTransport::new("fuzz0", Box::new(Rng::new(true)), mem.clone())
        .expect("transport");
    let mut input = Input::new(data);
    while !input.is_empty() {
        let op = input.u8();
        let offset = if op & 0x80 == 0 {
            u64::from(input.u8()) * 4 % 0x200
        } else {
            u64::from(input.u16()) % 0x210
        };
        match op % 5 {
            0 => write_reg(&mut t, offset, input.u32()),
            1 => {
                let _ = read_reg(&mut t, offset);
            }
            2 => {
                let size = [1usize, 2, 8, 3][usize::from(input.u8() % 4)];
                let bytes = input.bytes(size).to_vec();
                t.mmio_write(offset, &bytes);
                let mut back = vec![0u8; size];
                t.mmio_read(offset, &mut back);
            }
            3 => {
                // The guest also writes the rings and tables themselves.
                let addr = u64::from(input.u16()) * 16 % MEM_BYTES;
                let bytes = input.bytes(16);
                let _ = mem.write_slice(bytes, GuestAddress(addr));
                t.run_queue(0);
            }
            _ => {
                write_reg(&mut t, regs::STATUS, 0);
                assert_eq!(read_reg(&mut t, regs::STATUS), 0, "reset");
                write_reg(&mut t, regs::QUEUE_SEL, 0);
                assert_eq!(read_reg(&mut t, regs::QUEUE_READY), 0, "reset queue");
            }
        }
        assert_eq!(read_reg(&mut t, regs::MAGIC_VALUE), regs::MAGIC);
        assert_eq!(read_reg(&mut t, regs::VERSION), 2);
        assert_eq!(read_reg(&mut t, regs::VENDOR_ID), regs::VENDOR);
    }
}
