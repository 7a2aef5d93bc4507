//! The host side of a vsock device ("hybrid vsock", as Firecracker calls it): guest
//! connections to host port P become Unix stream connections to `<uds_path>_P`; a host process
//! reaches guest port P by connecting to `<uds_path>` and writing `CONNECT P\n`, answered
//! `OK <host port>\n` once the guest accepted (or end of file if it refused).
//!
//! All host sockets sit in one epoll instance of the muxer, whose fd the device hands to the
//! event loop: the loop sees one readable fd, and the muxer then looks at its own events
//! ([`Muxer::process_events`]). Connection sockets are watched edge-triggered for input and
//! output, so a connection that cannot move (no guest buffer, no credit) costs no wakeups.

use crate::devices::virtio::guest_log::guest_warn;
use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

#[cfg(test)]
use super::connection::ConnState;
use super::connection::Connection;
use super::packet::{op, Header, HOST_CID, TYPE_STREAM};
use super::uds::{self, UdsError};

/// Connections per device at most; more are refused with `RST`.
pub const MAX_CONNECTIONS: usize = 1024;
/// Control packets (resets of unknown connections) waiting for an RX buffer, at most: beyond
/// this the device stops taking TX packets until the guest gives RX buffers.
const MAX_CONTROL_BACKLOG: usize = 256;
/// Longest `CONNECT <port>\n` line.
const MAX_HANDSHAKE: usize = 32;
/// First host port given to host-initiated connections (as Firecracker: 2^30 and up).
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// (host port, guest port).
type ConnKey = (u32, u32);

/// A host stream that has not finished its `CONNECT <port>\n` line.
#[derive(Debug)]
struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

/// Why the muxer could not be created.
#[derive(Debug, thiserror::Error)]
pub enum MuxerError {
    #[error("host socket")]
    Uds(#[from] UdsError),
    #[error("epoll instance")]
    Epoll(#[source] io::Error),
}

/// The connections of one vsock device and their host sockets.
#[derive(Debug)]
pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    epoll: Epoll,
    listener: UnixListener,
    handshakes: HashMap<RawFd, Handshake>,
    conns: HashMap<ConnKey, Connection<UnixStream>>,
    by_fd: HashMap<RawFd, ConnKey>,
    /// Connections with a packet due, served in turn.
    rx_ready: VecDeque<ConnKey>,
    /// Packets for the guest that belong to no connection (resets).
    control: VecDeque<Header>,
    next_local_port: u32,
    allowed: bool,
}

impl Muxer {
    pub fn new(guest_cid: u64, uds_path: PathBuf, allowed: bool) -> Result<Self, MuxerError> {
        let listener = uds::listen(&uds_path)?;
        let epoll = Epoll::new().map_err(MuxerError::Epoll)?;
        epoll
            .ctl(
                ControlOperation::Add,
                listener.as_raw_fd(),
                EpollEvent::new(EventSet::IN, listener.as_raw_fd() as u64),
            )
            .map_err(MuxerError::Epoll)?;
        Ok(Muxer {
            guest_cid,
            uds_path,
            epoll,
            listener,
            handshakes: HashMap::new(),
            conns: HashMap::new(),
            by_fd: HashMap::new(),
            rx_ready: VecDeque::new(),
            control: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
            allowed,
        })
    }

    /// The fd the event loop watches (readable when a host socket has an event).
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    pub fn allowed(&self) -> bool {
        self.allowed
    }

    #[cfg(test)]
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// A packet for the guest is due.
    pub fn has_rx(&self) -> bool {
        !self.control.is_empty() || !self.rx_ready.is_empty()
    }

    /// Too many packets wait for RX buffers: stop taking TX packets for now.
    pub fn backlogged(&self) -> bool {
        self.control.len() >= MAX_CONTROL_BACKLOG
    }

    /// Opens or closes the gate: closing resets every connection (the guest gets `RST`s, the
    /// host streams are closed); while closed, new connections are refused both ways.
    pub fn set_allowed(&mut self, allowed: bool) {
        self.allowed = allowed;
        if !allowed {
            for key in self.conns.keys().copied().collect::<Vec<_>>() {
                if let Some(conn) = self.conns.get_mut(&key) {
                    conn.reset();
                }
                self.schedule(key);
            }
            for (fd, _) in std::mem::take(&mut self.handshakes) {
                self.unwatch(fd);
            }
        }
    }

    /// Drops every connection without telling the guest (device reset, or the state before a
    /// restore: the guest hears of it through the transport-reset event).
    pub fn drop_all(&mut self) {
        for (_, conn) in std::mem::take(&mut self.conns) {
            self.unwatch(conn.fd());
        }
        for (fd, _) in std::mem::take(&mut self.handshakes) {
            self.unwatch(fd);
        }
        self.by_fd.clear();
        self.rx_ready.clear();
        self.control.clear();
    }

    fn unwatch(&self, fd: RawFd) {
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
    }

    fn schedule(&mut self, key: ConnKey) {
        if !self.rx_ready.contains(&key) {
            self.rx_ready.push_back(key);
        }
    }

    /// After anything happened to connection `key`: drop it if dead, queue it if it has a
    /// packet due.
    fn settle(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get(&key) else {
            return;
        };
        if conn.is_dead() {
            let conn = self.conns.remove(&key).expect("present");
            self.unwatch(conn.fd());
            self.by_fd.remove(&conn.fd());
            tracing::info!(
                host_port = key.0,
                guest_port = key.1,
                "vsock connection closed"
            );
        } else if conn.has_pending_rx() {
            self.schedule(key);
        }
    }

    fn refuse(&mut self, hdr: &Header) {
        if hdr.op != op::RST {
            let mut rst = hdr.reply(op::RST);
            rst.src_cid = HOST_CID;
            rst.dst_cid = self.guest_cid;
            self.control.push_back(rst);
        }
    }

    /// A packet the guest sent (its header, and the payload of an `RW`).
    pub fn send_pkt(&mut self, hdr: &Header, payload: &[u8]) {
        if hdr.src_cid != self.guest_cid {
            tracing::debug!(
                src_cid = hdr.src_cid,
                "vsock: packet with a foreign source CID dropped"
            );
            return;
        }
        if hdr.dst_cid != HOST_CID || hdr.type_ != TYPE_STREAM || !self.allowed {
            // Only the host is reachable through this device, by stream connections.
            self.refuse(hdr);
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.send_pkt(hdr, payload);
            self.settle(key);
            return;
        }
        if hdr.op != op::REQUEST {
            self.refuse(hdr);
            return;
        }
        if self.conns.len() >= MAX_CONNECTIONS {
            guest_warn!("vsock: too many connections; request refused");
            self.refuse(hdr);
            return;
        }
        let path = uds::port_path(&self.uds_path, hdr.dst_port);
        match uds::connect(&path) {
            Ok(stream) => {
                let conn = Connection::guest_initiated(stream, hdr);
                if self.watch(conn.fd(), ControlOperation::Add).is_err() {
                    self.refuse(hdr);
                    return;
                }
                tracing::info!(
                    host_port = key.0,
                    guest_port = key.1,
                    "vsock connection from the guest"
                );
                self.by_fd.insert(conn.fd(), key);
                self.conns.insert(key, conn);
                self.settle(key);
            }
            Err(err) => {
                tracing::info!(%err, path = %path.display(), "vsock: guest connection refused");
                self.refuse(hdr);
            }
        }
    }

    /// Watches a connection's stream for input and output, edge-triggered (`Add` for a new
    /// stream, `Modify` for a handshake stream that became a connection).
    fn watch(&self, fd: RawFd, op: ControlOperation) -> io::Result<()> {
        let events =
            EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
        self.epoll.ctl(op, fd, EpollEvent::new(events, fd as u64))
    }

    /// The next packet for the guest, if one is due. `read(stream, max)` reads host data for
    /// an `RW` packet (see [`Connection::recv_pkt`]).
    pub fn recv_pkt(
        &mut self,
        max_data: usize,
        read: &mut dyn FnMut(&mut UnixStream, usize) -> io::Result<usize>,
    ) -> Option<Header> {
        if let Some(hdr) = self.control.pop_front() {
            return Some(hdr);
        }
        while let Some(key) = self.rx_ready.pop_front() {
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            let pkt = conn.recv_pkt(max_data, |s, max| read(s, max));
            self.settle(key);
            if pkt.is_some() {
                return pkt;
            }
        }
        None
    }

    /// Handles what happened on the host sockets since the last call.
    pub fn process_events(&mut self) {
        /// Rounds of `epoll_wait` per call; anything left wakes the event loop again.
        const MAX_ROUNDS: usize = 16;
        let mut events = [EpollEvent::default(); 32];
        for _ in 0..MAX_ROUNDS {
            // Handling an event can make another ready at once (a handshake stream that
            // becomes a connection is re-armed with data waiting), so wait until none is.
            let n = match self.epoll.wait(0, &mut events) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(err) => {
                    tracing::error!(%err, "vsock: epoll_wait failed");
                    return;
                }
            };
            for event in &events[..n] {
                self.handle_event(event.fd(), event.event_set());
            }
        }
    }

    fn handle_event(&mut self, fd: RawFd, set: EventSet) {
        if fd == self.listener.as_raw_fd() {
            self.accept_all();
        } else if self.handshakes.contains_key(&fd) {
            self.read_handshake(fd);
        } else if let Some(&key) = self.by_fd.get(&fd) {
            if let Some(conn) = self.conns.get_mut(&key) {
                let hang_up = EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR;
                if set.intersects(EventSet::IN | hang_up) {
                    conn.notify_readable();
                }
                if set.intersects(EventSet::OUT | hang_up) {
                    conn.notify_writable();
                }
            }
            self.settle(key);
        }
    }

    fn accept_all(&mut self) {
        loop {
            match uds::accept(&self.listener) {
                Ok(stream) if self.allowed => {
                    let fd = stream.as_raw_fd();
                    let event = EpollEvent::new(EventSet::IN, fd as u64);
                    if self.epoll.ctl(ControlOperation::Add, fd, event).is_ok() {
                        self.handshakes.insert(
                            fd,
                            Handshake {
                                stream,
                                line: Vec::new(),
                            },
                        );
                    }
                }
                Ok(_) => tracing::info!("vsock: host connection refused: host channel prohibited"),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(err) => {
                    tracing::warn!(%err, "vsock: accept failed");
                    return;
                }
            }
        }
    }

    /// Reads the `CONNECT <port>\n` line byte by byte (so no data after it is taken).
    fn read_handshake(&mut self, fd: RawFd) {
        let Some(hs) = self.handshakes.get_mut(&fd) else {
            return;
        };
        let mut byte = [0u8; 1];
        let port = loop {
            match hs.stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break parse_connect(&hs.line),
                Ok(1) if hs.line.len() < MAX_HANDSHAKE => hs.line.push(byte[0]),
                Ok(_) => break None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => break None,
            }
        };
        let hs = self.handshakes.remove(&fd).expect("present");
        let Some(peer_port) = port else {
            tracing::info!("vsock: bad CONNECT line from the host; closed");
            self.unwatch(fd);
            return;
        };
        if self.conns.len() >= MAX_CONNECTIONS {
            tracing::warn!("vsock: too many connections; host connection closed");
            self.unwatch(fd);
            return;
        }
        let local_port = self.free_local_port(peer_port);
        let conn = Connection::host_initiated(hs.stream, local_port, peer_port, self.guest_cid);
        if self.watch(fd, ControlOperation::Modify).is_err() {
            self.unwatch(fd);
            return;
        }
        let key = (local_port, peer_port);
        tracing::info!(
            host_port = local_port,
            guest_port = peer_port,
            "vsock connection from the host"
        );
        self.by_fd.insert(fd, key);
        self.conns.insert(key, conn);
        self.settle(key);
    }

    fn free_local_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let port = self.next_local_port;
            self.next_local_port = self
                .next_local_port
                .checked_add(1)
                .unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&(port, peer_port)) {
                return port;
            }
        }
    }

    /// For tests: the state of connection (host port, guest port).
    #[cfg(test)]
    pub fn conn_state(&self, key: ConnKey) -> Option<ConnState> {
        self.conns.get(&key).map(|c| c.state())
    }
}

/// Parses `CONNECT <port>` (the newline already removed).
fn parse_connect(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let port = text.strip_prefix("CONNECT ")?.trim_end_matches('\r');
    port.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines_are_parsed_strictly() {
        assert_eq!(parse_connect(b"CONNECT 52"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 4294967295\r"), Some(u32::MAX));
        assert_eq!(parse_connect(b"CONNECT 4294967296"), None);
        assert_eq!(parse_connect(b"connect 52"), None);
        assert_eq!(parse_connect(b"CONNECT"), None);
        assert_eq!(parse_connect(b"CONNECT -1"), None);
        assert_eq!(parse_connect(b"CONNECT 5 2"), None);
        assert_eq!(parse_connect(&[0xff, 0xfe]), None);
    }

    #[test]
    fn local_ports_start_at_2_pow_30_and_wrap_around() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let mut m = Muxer::new(3, dir.as_path().join("v"), true).unwrap();
        assert_eq!(m.free_local_port(5), FIRST_LOCAL_PORT);
        assert_eq!(m.free_local_port(5), FIRST_LOCAL_PORT + 1);
        m.next_local_port = u32::MAX;
        assert_eq!(m.free_local_port(5), u32::MAX);
        assert_eq!(m.free_local_port(5), FIRST_LOCAL_PORT);
        assert_eq!(m.connection_count(), 0);
        assert!(!m.has_rx() && !m.backlogged());
        assert!(m.conn_state((1, 1)).is_none());
    }
}
