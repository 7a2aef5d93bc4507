//! The vsock device behind a real transport: the guest driver is played with hand-built
//! queues in real guest memory, the host side with real Unix sockets in a temporary folder.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::tempdir::TempDir;

use super::connection::BUF_ALLOC;
use super::packet::{op, shutdown, Header, HDR_SIZE, HOST_CID, TYPE_STREAM};
use super::*;
use crate::devices::virtio::mmio::VirtioMmioTransport;
use crate::devices::virtio::test_utils::{bring_up, guest_memory, GuestQueue, DESC_WRITE};

const CID: u64 = 7;
const QSIZE: u16 = 16;
const RX_BUF: u32 = (HDR_SIZE + 4096) as u32;
const TX_AREA: u64 = 0x80_0000;

struct Harness {
    mem: GuestMemoryMmap,
    rx: GuestQueue,
    tx: GuestQueue,
    ev: GuestQueue,
    t: VirtioMmioTransport,
    _dir: TempDir,
    uds: PathBuf,
    rx_seen: u16,
    tx_slot: u64,
}

fn rx_addr(head: u16) -> u64 {
    0x10_0000 + u64::from(head) * 0x2000
}

impl Harness {
    fn new() -> Self {
        let dir = TempDir::new().unwrap();
        let uds = dir.as_path().join("vm.vsock");
        let mem = guest_memory();
        let rx = GuestQueue::at(&mem, 0x1000, QSIZE);
        let tx = GuestQueue::at(&mem, 0x3000, QSIZE);
        let ev = GuestQueue::at(&mem, 0x5000, QSIZE);
        let vsock = Vsock::new(CID, &uds, true).unwrap();
        let mut t = VirtioMmioTransport::new("vsock0", Box::new(vsock), mem.clone()).unwrap();
        bring_up(&mut t, &[&rx, &tx, &ev]);
        let mut h = Harness {
            mem,
            rx,
            tx,
            ev,
            t,
            _dir: dir,
            uds,
            rx_seen: 0,
            tx_slot: 0,
        };
        h.post_rx(8);
        h
    }

    fn post_rx(&mut self, n: usize) {
        for _ in 0..n {
            let head = self.rx_peek_head();
            self.rx.add_chain(&[(rx_addr(head), RX_BUF, DESC_WRITE)]);
        }
        self.t.run_queue(RXQ);
    }

    /// The head index the next RX chain will get (single-descriptor chains cycle).
    fn rx_peek_head(&self) -> u16 {
        let posted: u16 = self.mem.read_obj(GuestAddress(self.rx.avail + 2)).unwrap();
        posted % QSIZE
    }

    /// The guest sends a packet (header and payload in two descriptors).
    fn send(&mut self, hdr: Header, payload: &[u8]) {
        let hdr = Header {
            len: payload.len() as u32,
            ..hdr
        };
        let base = TX_AREA + (self.tx_slot % u64::from(QSIZE)) * 0x1_0000;
        self.tx_slot += 1;
        self.mem
            .write_slice(&hdr.encode(), GuestAddress(base))
            .unwrap();
        let mut chain = vec![(base, HDR_SIZE as u32, 0)];
        if !payload.is_empty() {
            self.mem
                .write_slice(payload, GuestAddress(base + 0x100))
                .unwrap();
            chain.push((base + 0x100, payload.len() as u32, 0));
        }
        self.tx.add_chain(&chain);
        self.t.run_queue(TXQ);
    }

    /// Packets the device put in RX buffers since the last call; re-posts the buffers.
    fn received(&mut self) -> Vec<(Header, Vec<u8>)> {
        let used = self.rx.used_idx();
        let mut out = Vec::new();
        while self.rx_seen != used {
            let slot = self.rx.used + 4 + 8 * u64::from(self.rx_seen % QSIZE);
            let head: u32 = self.mem.read_obj(GuestAddress(slot)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(slot + 4)).unwrap();
            let mut raw = [0u8; HDR_SIZE];
            self.mem
                .read_slice(&mut raw, GuestAddress(rx_addr(head as u16)))
                .unwrap();
            let hdr = Header::decode(&raw);
            assert_eq!(len as usize, HDR_SIZE + hdr.len as usize, "used length");
            let mut data = vec![0u8; hdr.len as usize];
            self.mem
                .read_slice(
                    &mut data,
                    GuestAddress(rx_addr(head as u16) + HDR_SIZE as u64),
                )
                .unwrap();
            out.push((hdr, data));
            self.rx_seen = self.rx_seen.wrapping_add(1);
        }
        let n = out.len();
        self.post_rx(n);
        out
    }

    /// The host side did something: let the device look.
    fn host_event(&mut self) {
        std::thread::sleep(Duration::from_millis(20));
        self.t.run_backend(0);
    }

    fn guest(&self, src_port: u32, dst_port: u32, op: u16) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 256 * 1024,
            fwd_cnt: 0,
        }
    }

    fn ops(&mut self) -> Vec<u16> {
        self.received().into_iter().map(|(h, _)| h.op).collect()
    }
}

#[test]
fn config_space_holds_the_cid_and_the_device_is_a_host_channel() {
    let h = Harness::new();
    assert_eq!(h.t.device_type(), 19);
    assert_eq!(h.t.class(), DeviceClass::HostChannel);
    let mut t = h.t;
    let mut cid = [0u8; 8];
    crate::devices::virtio::MmioDevice::mmio_read(&mut t, 0x100, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), CID);
}

#[test]
fn guest_connects_to_a_host_port_and_data_flows_both_ways() {
    let mut h = Harness::new();
    let listener = UnixListener::bind(format!("{}_52", h.uds.display())).unwrap();
    h.send(h.guest(1025, 52, op::REQUEST), &[]);
    let got = h.received();
    assert_eq!(got.len(), 1);
    let (resp, _) = got[0];
    assert_eq!(resp.op, op::RESPONSE);
    assert_eq!((resp.src_cid, resp.dst_cid), (HOST_CID, CID));
    assert_eq!((resp.src_port, resp.dst_port), (52, 1025));
    assert_eq!(resp.buf_alloc, BUF_ALLOC);
    let (mut host, _) = listener.accept().unwrap();

    h.send(h.guest(1025, 52, op::RW), b"ping from the guest");
    let mut buf = [0u8; 19];
    host.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping from the guest");
    assert_eq!(h.t.stats().bytes_from_guest, 19);

    host.write_all(b"pong").unwrap();
    h.host_event();
    let got = h.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0.op, got[0].1.as_slice()), (op::RW, &b"pong"[..]));
    assert_eq!(got[0].0.fwd_cnt, 19);

    // The host closes: the guest hears SHUTDOWN(SEND); the guest closes: RST.
    drop(host);
    h.host_event();
    let got = h.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].0.op, got[0].0.flags),
        (op::SHUTDOWN, shutdown::SEND)
    );
    let mut bye = h.guest(1025, 52, op::SHUTDOWN);
    bye.flags = shutdown::BOTH;
    h.send(bye, &[]);
    assert_eq!(h.ops(), [op::RST]);
}

#[test]
fn host_connects_to_a_guest_port_with_connect_and_gets_ok() {
    let mut h = Harness::new();
    let mut host = UnixStream::connect(&h.uds).unwrap();
    host.write_all(b"CONNECT 5000\nearly data").unwrap();
    h.host_event();
    let got = h.received();
    assert_eq!(got.len(), 1, "{got:?}");
    let req = got[0].0;
    assert_eq!(req.op, op::REQUEST);
    assert_eq!(
        (req.src_cid, req.dst_cid, req.dst_port),
        (HOST_CID, CID, 5000)
    );
    assert!(req.src_port >= 1 << 30);
    // The guest accepts.
    h.send(h.guest(5000, req.src_port, op::RESPONSE), &[]);
    let mut line = vec![0u8; format!("OK {}\n", req.src_port).len()];
    host.read_exact(&mut line).unwrap();
    assert_eq!(line, format!("OK {}\n", req.src_port).as_bytes());
    // What the host wrote after its CONNECT line reaches the guest.
    h.host_event();
    let got = h.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].0.op, got[0].1.as_slice()),
        (op::RW, &b"early data"[..])
    );

    // A second host connection to a port nobody listens on: the guest answers RST, and the
    // host reads end of file without OK.
    let mut refused = UnixStream::connect(&h.uds).unwrap();
    refused.write_all(b"CONNECT 6000\n").unwrap();
    h.host_event();
    let got = h.received();
    let req = got[0].0;
    assert_eq!((req.op, req.dst_port), (op::REQUEST, 6000));
    h.send(h.guest(6000, req.src_port, op::RST), &[]);
    let mut rest = Vec::new();
    refused.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    // A bad line is closed at once.
    let mut bad = UnixStream::connect(&h.uds).unwrap();
    bad.write_all(b"HELLO 1\n").unwrap();
    h.host_event();
    assert!(h.received().is_empty());
    let mut rest = Vec::new();
    bad.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn guest_cannot_reach_another_cid_or_a_closed_port() {
    let mut h = Harness::new();
    // No socket for port 53 on the host.
    h.send(h.guest(1025, 53, op::REQUEST), &[]);
    // Another VM's CID, even with a host socket for the port.
    let _listener = UnixListener::bind(format!("{}_52", h.uds.display())).unwrap();
    let mut other = h.guest(1026, 52, op::REQUEST);
    other.dst_cid = 8;
    h.send(other, &[]);
    let got = h.received();
    assert_eq!(got.len(), 2);
    for (hdr, _) in &got {
        assert_eq!(hdr.op, op::RST);
        assert_eq!(hdr.dst_cid, CID);
    }
    assert_eq!((got[0].0.src_port, got[0].0.dst_port), (53, 1025));
    assert_eq!((got[1].0.src_port, got[1].0.dst_port), (52, 1026));
    // A foreign source CID is dropped without an answer; data on no connection is reset.
    let mut spoofed = h.guest(1027, 52, op::REQUEST);
    spoofed.src_cid = 9;
    h.send(spoofed, &[]);
    h.send(h.guest(1028, 52, op::RW), b"x");
    assert_eq!(h.ops(), [op::RST]);
}

#[test]
fn malformed_tx_chains_are_counted_and_returned() {
    let mut h = Harness::new();
    h.mem
        .write_slice(&[0u8; 20], GuestAddress(TX_AREA))
        .unwrap();
    h.tx.add_chain(&[(TX_AREA, 20, 0)]);
    h.t.run_queue(TXQ);
    // An RW announcing more payload than the chain has.
    let mut hdr = h.guest(1, 52, op::RW);
    hdr.len = 100;
    h.mem
        .write_slice(&hdr.encode(), GuestAddress(TX_AREA + 0x1000))
        .unwrap();
    h.tx.add_chain(&[(TX_AREA + 0x1000, HDR_SIZE as u32 + 10, 0)]);
    h.t.run_queue(TXQ);
    assert_eq!(h.tx.used_entries().len(), 2);
    assert_eq!(h.t.stats().invalid_chains, 2);
    assert!(h.received().is_empty());
}

#[test]
fn prohibiting_resets_connections_and_refuses_new_ones_until_allowed() {
    let mut h = Harness::new();
    let listener = UnixListener::bind(format!("{}_52", h.uds.display())).unwrap();
    h.send(h.guest(1025, 52, op::REQUEST), &[]);
    assert_eq!(h.ops(), [op::RESPONSE]);
    let (mut host, _) = listener.accept().unwrap();

    assert!(!h.t.set_allowed(false).allowed);
    assert_eq!(h.ops(), [op::RST], "the open connection is reset");
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the host stream is closed");

    h.send(h.guest(1026, 52, op::REQUEST), &[]);
    assert_eq!(h.ops(), [op::RST], "new guest connections are refused");
    let mut refused = UnixStream::connect(&h.uds).unwrap();
    refused.write_all(b"CONNECT 5000\n").unwrap();
    h.host_event();
    assert!(h.received().is_empty(), "no request reaches the guest");
    refused
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    match refused.read_to_end(&mut rest) {
        // Closed unread, the line may make it a reset rather than an end of file.
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
    }

    assert!(h.t.set_allowed(true).allowed);
    h.send(h.guest(1027, 52, op::REQUEST), &[]);
    assert_eq!(h.ops(), [op::RESPONSE]);
}

#[test]
fn restore_resets_the_guests_connections_with_a_transport_reset_event() {
    let mut h = Harness::new();
    let listener = UnixListener::bind(format!("{}_52", h.uds.display())).unwrap();
    h.send(h.guest(1025, 52, op::REQUEST), &[]);
    assert_eq!(h.ops(), [op::RESPONSE]);
    let (_host, _) = listener.accept().unwrap();
    h.ev.add_chain(&[(0x90_0000, 8, DESC_WRITE)]);
    h.t.run_queue(EVQ);
    assert!(h.ev.used_entries().is_empty(), "no event before a restore");
    let state = h.t.state();

    // The new process: a device on the same socket path (the old one's file is stale).
    let uds = h.uds.clone();
    drop(h.t);
    let vsock = Vsock::new(CID, &uds, true).unwrap();
    let mut t = VirtioMmioTransport::new("vsock0", Box::new(vsock), h.mem.clone()).unwrap();
    t.restore(&state).unwrap();
    // The restore kicked the queues; the loop runs them.
    t.run_queue(EVQ);
    assert_eq!(h.ev.used_entries(), vec![(0, 4)]);
    let event: u32 = h.mem.read_obj(GuestAddress(0x90_0000)).unwrap();
    assert_eq!(event, packet::EVENT_TRANSPORT_RESET);
    // The old connection is unknown now: its data is answered RST.
    h.t = t;
    h.send(h.guest(1025, 52, op::RW), b"after");
    assert_eq!(h.ops(), [op::RST]);

    // Another CID in the saved state is refused.
    let other = Vsock::new(CID + 1, &h._dir.as_path().join("other.vsock"), true).unwrap();
    let mut t = VirtioMmioTransport::new("vsock0", Box::new(other), h.mem.clone()).unwrap();
    assert!(matches!(
        t.restore(&state),
        Err(RestoreError::ConfigMismatch(_))
    ));
}

#[test]
fn host_data_waits_for_rx_buffers() {
    let mut h = Harness::new();
    let listener = UnixListener::bind(format!("{}_52", h.uds.display())).unwrap();
    h.send(h.guest(1025, 52, op::REQUEST), &[]);
    assert_eq!(h.ops(), [op::RESPONSE]);
    let (mut host, _) = listener.accept().unwrap();
    host.set_nonblocking(true).unwrap();
    // 12 packets' worth of data, 7 buffers posted (8 minus the one the response used, re-posted
    // by `received`: 8).
    let data: Vec<u8> = (0..12 * 4096).map(|i| (i % 251) as u8).collect();
    match host.write(&data) {
        Ok(n) => assert_eq!(n, data.len()),
        Err(e) if e.kind() == ErrorKind::WouldBlock => panic!("socket buffer too small"),
        Err(e) => panic!("{e}"),
    }
    h.host_event();
    let mut got = Vec::new();
    for _ in 0..4 {
        let packets = h.received();
        assert!(packets.len() <= 8);
        for (hdr, payload) in packets {
            assert_eq!(hdr.op, op::RW);
            got.extend(payload);
        }
    }
    assert_eq!(got, data, "all of it, in order, as buffers came back");
}
