//! virtio-net on a real tap device, in a private network namespace of the test thread.
//!
//! Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN for the namespace) and /dev/net/tun. The far end of
//! the tap is an AF_PACKET socket bound to the tap interface: what the device writes to the tap
//! arrives there, and what is sent there comes out of the tap into the guest's RX buffers.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{Net, Tap, VNET_HDR_SIZE};
use crate::devices::virtio::config::{DeviceClass, MacAddr};
use crate::devices::virtio::mmio::{regs, VirtioMmioTransport};
use crate::devices::virtio::spec::interrupt::CONFIG_CHANGE;
use crate::devices::virtio::test_utils::{
    bring_up, guest_memory, read_reg, write_reg, GuestQueue, DESC_WRITE,
};

const TAP_NAME: &str = "vmtap0";
/// IEEE 802 local experimental ethertype: nothing else on the link uses it.
const TEST_ETHERTYPE: [u8; 2] = [0x88, 0xb5];
const RX_BUFS: u64 = 0x100_000;
const TX_BUF: u64 = 0x200_000;
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// Moves the calling thread into a fresh network namespace.
fn enter_private_netns() {
    // SAFETY: unshare takes no pointers; CLONE_NEWNET only changes this thread's namespace.
    let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        ret,
        0,
        "unshare(CLONE_NEWNET): {}",
        io::Error::last_os_error()
    );
}

fn set_link_up(name: &str) {
    // SAFETY: plain socket creation, no pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: `fd` is a fresh socket we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid `ifreq`.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags of the valid `ifreq` we pass.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) };
    assert_eq!(ret, 0);
    // SAFETY: the kernel just wrote `ifru_flags`, so reading that union member is valid.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the valid `ifreq` we pass.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) };
    assert_eq!(ret, 0, "SIOCSIFFLAGS: {}", io::Error::last_os_error());
}

/// An AF_PACKET socket on the host side of the tap.
struct Wire(OwnedFd);

impl Wire {
    fn bind(name: &str) -> Wire {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket creation, no pointers.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
        // SAFETY: `fd` is a fresh socket we own.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let cname = CString::new(name).unwrap();
        // SAFETY: `cname` is a valid NUL-terminated string for the call.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        assert_ne!(ifindex, 0);
        // SAFETY: all-zero is a valid `sockaddr_ll`.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: `addr` is a valid sockaddr_ll and the length says so.
        let ret = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(ret, 0, "bind: {}", io::Error::last_os_error());
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        // SAFETY: SO_RCVTIMEO reads one valid `timeval` of the given length.
        let ret = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        assert_eq!(ret, 0);
        Wire(sock)
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is valid for reads of its length during the call.
        let n = unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            io::Error::last_os_error()
        );
    }

    /// Waits up to `wait` for a frame with the test ethertype.
    fn recv_test_frame(&self, wait: Duration) -> Option<Vec<u8>> {
        self.recv_frames(wait, |f| f.len() >= 14 && f[12..14] == TEST_ETHERTYPE, true)
            .into_iter()
            .next()
    }

    /// The frames `wanted` accepts that arrive within `wait` (only the first with `first`).
    fn recv_frames(
        &self,
        wait: Duration,
        wanted: impl Fn(&[u8]) -> bool,
        first: bool,
    ) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 1 << 16];
        let mut frames = Vec::new();
        while Instant::now() < deadline {
            // SAFETY: `buf` is valid for writes of its length during the call.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 && wanted(&buf[..n as usize]) {
                frames.push(buf[..n as usize].to_vec());
                if first {
                    break;
                }
            }
        }
        frames
    }
}

fn test_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6]; // broadcast
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&TEST_ETHERTYPE);
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

struct Rig {
    mem: GuestMemoryMmap,
    rx: GuestQueue,
    tx: GuestQueue,
    t: VirtioMmioTransport,
    wire: Wire,
}

fn rig() -> Rig {
    enter_private_netns();
    let tap = Tap::open(TAP_NAME).expect("open tap (needs root and /dev/net/tun)");
    set_link_up(TAP_NAME);
    let wire = Wire::bind(TAP_NAME);
    let mem = guest_memory();
    let rx = GuestQueue::at(&mem, 0x1000, 16);
    let tx = GuestQueue::at(&mem, 0x8000, 16);
    let net = Net::new(tap, MacAddr(GUEST_MAC), true);
    let mut t = VirtioMmioTransport::new("nic0", Box::new(net), mem.clone()).unwrap();
    bring_up(&mut t, &[&rx, &tx]);
    Rig {
        mem,
        rx,
        tx,
        t,
        wire,
    }
}

impl Rig {
    fn transmit(&mut self, frame: &[u8]) {
        self.transmit_with_header(&[0u8; VNET_HDR_SIZE], frame);
    }

    fn transmit_with_header(&mut self, header: &[u8; VNET_HDR_SIZE], frame: &[u8]) {
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(frame);
        self.mem.write_slice(&bytes, GuestAddress(TX_BUF)).unwrap();
        // Header and frame in separate descriptors, as Linux does.
        self.tx.add_chain(&[
            (TX_BUF, VNET_HDR_SIZE as u32, 0),
            (TX_BUF + VNET_HDR_SIZE as u64, frame.len() as u32, 0),
        ]);
        self.t.run_queue(1);
    }

    fn post_rx_buffers(&mut self, count: u64) {
        for i in 0..count {
            self.rx
                .add_chain(&[(RX_BUFS + i * 0x1000, 1526, DESC_WRITE)]);
        }
        self.t.run_queue(0);
    }

    /// Runs the tap handler until a test frame shows up in an RX buffer (or `wait` passes).
    fn receive_test_frame(&mut self, wait: Duration) -> Option<(Vec<u8>, Vec<u8>)> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            self.t.run_backend(0);
            for (id, len) in self.rx.used_entries() {
                let mut buf = vec![0u8; len as usize];
                let addr = RX_BUFS + u64::from(id) * 0x1000;
                self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
                if buf.len() > VNET_HDR_SIZE + 14
                    && buf[VNET_HDR_SIZE + 12..][..2] == TEST_ETHERTYPE
                {
                    let frame = buf.split_off(VNET_HDR_SIZE);
                    return Some((buf, frame));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    fn link_status(&mut self) -> u16 {
        let mut b = [0u8; 2];
        crate::devices::virtio::mmio::MmioDevice::mmio_read(&mut self.t, regs::CONFIG + 6, &mut b);
        u16::from_le_bytes(b)
    }
}

#[test]
fn net_tx_frame_comes_out_of_the_tap() {
    let mut r = rig();
    let mut mac = [0u8; 6];
    crate::devices::virtio::mmio::MmioDevice::mmio_read(&mut r.t, regs::CONFIG, &mut mac);
    assert_eq!(mac, GUEST_MAC);
    assert_eq!(r.link_status(), 1, "link up");

    let frame = test_frame(b"virmo tx test");
    r.transmit(&frame);
    assert_eq!(r.tx.used_entries(), vec![(0, 0)]);
    let got = r
        .wire
        .recv_test_frame(Duration::from_secs(2))
        .expect("frame on the wire");
    assert_eq!(got, frame);
    assert_eq!(r.t.stats().bytes_from_guest, frame.len() as u64);
}

#[test]
fn net_frame_written_into_the_tap_arrives_in_an_rx_buffer() {
    let mut r = rig();
    r.post_rx_buffers(8);
    let frame = test_frame(b"virmo rx test");
    r.wire.send(&frame);
    let (hdr, got) = r
        .receive_test_frame(Duration::from_secs(2))
        .expect("frame in an RX buffer");
    assert_eq!(got, frame);
    assert_eq!(&hdr[10..12], &1u16.to_le_bytes(), "num_buffers = 1");
    assert_eq!(&hdr[..10], &[0u8; 10], "no offload flags");
}

#[test]
fn prohibited_network_passes_no_frame_either_way_and_reports_link_down() {
    let mut r = rig();
    r.post_rx_buffers(8);
    let gate = r.t.set_allowed(false);
    assert!(!gate.allowed);
    assert_eq!(gate.class, DeviceClass::Network);
    assert_eq!(r.link_status(), 0, "link down");
    assert_eq!(
        read_reg(&mut r.t, regs::INTERRUPT_STATUS) & CONFIG_CHANGE,
        CONFIG_CHANGE
    );
    write_reg(&mut r.t, regs::INTERRUPT_ACK, CONFIG_CHANGE);
    assert!(!r.t.set_allowed(false).allowed, "idempotent");
    assert_eq!(
        read_reg(&mut r.t, regs::INTERRUPT_STATUS) & CONFIG_CHANGE,
        0,
        "no second config interrupt"
    );

    r.transmit(&test_frame(b"must not pass"));
    assert_eq!(r.tx.used_entries().len(), 1, "TX buffer given back");
    assert!(r.wire.recv_test_frame(Duration::from_millis(300)).is_none());
    r.wire.send(&test_frame(b"must not arrive"));
    assert!(r.receive_test_frame(Duration::from_millis(300)).is_none());
    assert!(r.t.stats().dropped_while_prohibited >= 2);

    assert!(r.t.set_allowed(true).allowed);
    assert_eq!(r.link_status(), 1);
    let frame = test_frame(b"passes again");
    r.transmit(&frame);
    assert_eq!(
        r.wire.recv_test_frame(Duration::from_secs(2)),
        Some(frame.clone())
    );
    r.wire.send(&frame);
    let (_, got) = r
        .receive_test_frame(Duration::from_secs(2))
        .expect("RX again");
    assert_eq!(got, frame);
}

/// The tap's frame that found no RX buffer is part of the saved state, and a restore delivers
/// it once the guest has buffers: a suspend loses no received frame.
#[test]
fn a_frame_waiting_for_an_rx_buffer_survives_save_and_restore() {
    use crate::devices::virtio::device::DeviceState;

    let mut r = rig();
    let frame = test_frame(b"waits across a suspend");
    r.wire.send(&frame);
    let deadline = Instant::now() + Duration::from_secs(2);
    let saved = loop {
        r.t.run_backend(0);
        let state = r.t.state();
        let DeviceState::Net(net) = &state.device else {
            panic!("not a net state: {state:?}");
        };
        if net.pending_rx.get(VNET_HDR_SIZE..) == Some(&frame[..]) {
            break state;
        }
        if !net.pending_rx.is_empty() {
            // The host's own traffic on the new link (IPv6 MLD, ...): forget it, wait for ours.
            let mut forget = state.clone();
            if let DeviceState::Net(net) = &mut forget.device {
                net.pending_rx.clear();
            }
            r.t.restore(&forget)
                .expect("restore without a pending frame");
            continue;
        }
        assert!(Instant::now() < deadline, "the frame never left the tap");
        std::thread::sleep(Duration::from_millis(5));
    };

    // A state without the frame forgets it; the saved one brings it back.
    let mut without = saved.clone();
    if let DeviceState::Net(net) = &mut without.device {
        net.pending_rx.clear();
    }
    r.t.restore(&without)
        .expect("restore without a pending frame");
    assert!(matches!(&r.t.state().device, DeviceState::Net(net) if net.pending_rx.is_empty()));
    r.t.restore(&saved).expect("restore with the pending frame");

    r.post_rx_buffers(4);
    let (_, got) = r
        .receive_test_frame(Duration::from_secs(2))
        .expect("the saved frame in an RX buffer");
    assert_eq!(got, frame);

    let mut broken = saved;
    if let DeviceState::Net(net) = &mut broken.device {
        net.pending_rx.truncate(VNET_HDR_SIZE);
    }
    assert!(
        r.t.restore(&broken).is_err(),
        "a header alone is not a frame"
    );
}

/// An Ethernet + IPv4 + TCP frame from the guest's MAC carrying `payload` to port 7.
fn tcp_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xffu8; 6];
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 20 + payload.len()) as u16;
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
    ];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    // Ports 40000 → 7, seq 1, data offset 5 words, ACK|PSH, window 65535.
    f.extend_from_slice(&[
        0x9c, 0x40, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff,
    ]);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// With TSO the guest hands over one TCP frame far larger than the MTU and leaves the checksum
/// to the device: the tap takes it whole (as one frame or as MTU-sized segments, depending on
/// who segments) and every payload byte comes out; a GSO header that makes no sense is refused
/// by the tap, counted, and the chain still completes.
#[test]
fn net_tso_frame_leaves_the_tap_whole_and_a_nonsense_gso_header_is_dropped() {
    let mut r = rig();
    let offered = {
        write_reg(&mut r.t, regs::DEVICE_FEATURES_SEL, 0);
        read_reg(&mut r.t, regs::DEVICE_FEATURES)
    };
    for (bit, name) in [(0, "CSUM"), (11, "HOST_TSO4"), (12, "HOST_TSO6")] {
        assert_ne!(offered & (1 << bit), 0, "{name} offered");
    }

    let payload: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
    let frame = tcp_frame(&payload);
    let mut header = [0u8; VNET_HDR_SIZE];
    header[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
    header[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
    header[2..4].copy_from_slice(&54u16.to_le_bytes()); // hdr_len
    header[4..6].copy_from_slice(&1448u16.to_le_bytes()); // gso_size
    header[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start: the TCP header
    header[8..10].copy_from_slice(&16u16.to_le_bytes()); // csum_offset: its checksum field
    r.transmit_with_header(&header, &frame);
    let is_ours = |f: &[u8]| f.len() > 54 && f[12..14] == [0x08, 0x00] && f[36..38] == [0, 7];
    let got: Vec<u8> = r
        .wire
        .recv_frames(Duration::from_secs(1), is_ours, false)
        .iter()
        .flat_map(|f| f[54..].to_vec())
        .collect();
    assert_eq!(got.len(), payload.len(), "every payload byte left the tap");
    assert_eq!(got, payload);
    assert_eq!(r.t.stats().backend_errors, 0);

    let mut nonsense = header;
    nonsense[1] = 0x7f; // no such GSO type
    r.transmit_with_header(&nonsense, &frame);
    assert_eq!(r.tx.used_entries().len(), 2, "both chains completed");
    assert_eq!(r.t.stats().backend_errors, 1, "the tap refused the second");
}

#[test]
fn malformed_tx_chains_are_refused_and_counted() {
    let mut r = rig();
    // Shorter than the net header.
    r.tx.add_chain(&[(TX_BUF, 4, 0)]);
    // Device-writable only: nothing to send.
    r.tx.add_chain(&[(TX_BUF, 64, DESC_WRITE)]);
    r.t.run_queue(1);
    assert_eq!(r.tx.used_entries().len(), 2);
    assert_eq!(r.t.stats().invalid_chains, 2);
    assert!(r.wire.recv_test_frame(Duration::from_millis(200)).is_none());
}

/// TX throughput of the device path (chain check, gather, tap write) with full-size frames.
/// Run with `--ignored --nocapture`, in release for numbers.
#[test]
#[ignore = "measurement, not a check"]
fn net_tx_throughput() {
    const FRAMES: u32 = 50_000;
    let mut r = rig();
    let frame = test_frame(&[0x5a; 1500]);
    let mut bytes = vec![0u8; VNET_HDR_SIZE];
    bytes.extend_from_slice(&frame);
    r.mem.write_slice(&bytes, GuestAddress(TX_BUF)).unwrap();
    let start = Instant::now();
    for _ in 0..FRAMES {
        r.tx.add_chain(&[(TX_BUF, bytes.len() as u32, 0)]);
        r.t.run_queue(1);
    }
    let secs = start.elapsed().as_secs_f64();
    let gbit = f64::from(FRAMES) * frame.len() as f64 * 8.0 / secs / 1e9;
    println!(
        "virtio-net TX: {:.0} frames/s, {gbit:.2} Gbit/s ({}-byte frames)",
        f64::from(FRAMES) / secs,
        frame.len()
    );
    assert_eq!(r.t.stats().completed_requests, u64::from(FRAMES));
}
