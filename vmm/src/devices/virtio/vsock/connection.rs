//! One vsock stream connection between a guest socket and a host Unix stream: the connection
//! state machine and the credit flow control of virtio 1.2, 5.10.6.3, with no queue or epoll
//! of its own (the muxer feeds it the guest's packets and the host stream's readiness, and
//! asks it for the next packet for the guest).
//!
//! Credit: the guest may have at most [`BUF_ALLOC`] bytes in flight towards the host stream
//! (`tx_buf` holds what the stream did not take yet); we tell it how much we forwarded with
//! `fwd_cnt` in every packet, and proactively with a `CREDIT_UPDATE` once
//! [`CREDIT_UPDATE_THRESHOLD`] more bytes were forwarded since the last packet it got. Towards
//! the guest we send at most `peer_buf_alloc - (rx_cnt - peer_fwd_cnt)` bytes; with no credit
//! left we stop reading the host stream and send one `CREDIT_REQUEST`.
//!
//! Closing: a guest `SHUTDOWN` with `SEND` half-closes the host stream once `tx_buf` is
//! flushed; with both flags the connection answers `RST` (what Linux waits for) and is gone.
//! End of file on the host stream sends the guest a `SHUTDOWN` with `SEND` (the guest reads
//! end of file and may still write); a write or read error resets the connection.

use crate::devices::virtio::guest_log::guest_warn;
use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use super::packet::{op, shutdown, Header, HOST_CID, TYPE_STREAM};

/// Receive buffer we announce per connection: bytes of guest data we hold for a slow host
/// stream at most.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Forwarded bytes after which the guest is told about its new credit unasked.
pub const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;

/// What the host side of a connection is: a Unix stream (or, in tests, anything alike).
pub trait HostStream: Read + Write + AsRawFd {
    /// Half-closes the stream: the host reads end of file.
    fn shutdown_write(&self) -> io::Result<()>;
}

impl HostStream for UnixStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Opened by the host (`CONNECT <port>`): our `REQUEST` is due or sent, no answer yet.
    LocalInit,
    /// Both sides agreed; data flows.
    Established,
    /// An `RST` to the guest is due; the connection is gone once it is sent.
    Resetting,
    /// Gone: the muxer drops it (closing the host stream).
    Dead,
}

/// Control packets due to the guest (bits).
mod due {
    pub const REQUEST: u8 = 1;
    pub const RESPONSE: u8 = 2;
    pub const CREDIT_UPDATE: u8 = 4;
}

/// A connection between guest port `peer_port` and host port `local_port`.
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    pub local_port: u32,
    pub peer_port: u32,
    guest_cid: u64,
    state: ConnState,
    /// `OK <local_port>\n` is written to the host once the guest accepts (host-initiated).
    host_initiated: bool,
    due: u8,
    /// Guest data the host stream did not take yet (at most `BUF_ALLOC` bytes).
    tx_buf: VecDeque<u8>,
    /// Bytes of guest data written to the host stream.
    fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as the guest last heard it.
    last_fwd_cnt_to_peer: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// Bytes of host data sent to the guest.
    rx_cnt: Wrapping<u32>,
    /// `shutdown::*` flags the guest sent.
    peer_shutdown: u32,
    /// The host stream reached end of file (a `SHUTDOWN` went to the guest).
    host_eof: bool,
    /// We half-closed the host stream after the guest's `SHUTDOWN(SEND)`.
    host_write_shut: bool,
    /// The host stream may have data (cleared by a read that would block).
    readable: bool,
    /// A `CREDIT_REQUEST` went out and no credit came back yet.
    credit_requested: bool,
}

impl<S: HostStream> Connection<S> {
    /// A connection the guest asked for with `request` and the host accepted: `RESPONSE` due.
    pub fn guest_initiated(stream: S, request: &Header) -> Self {
        let mut conn = Self::new(stream, request.dst_port, request.src_port, request.src_cid);
        conn.state = ConnState::Established;
        conn.due = due::RESPONSE;
        conn.peer_buf_alloc = request.buf_alloc;
        conn.peer_fwd_cnt = Wrapping(request.fwd_cnt);
        conn
    }

    /// A connection the host asked for (`CONNECT peer_port`): `REQUEST` due.
    pub fn host_initiated(stream: S, local_port: u32, peer_port: u32, guest_cid: u64) -> Self {
        let mut conn = Self::new(stream, local_port, peer_port, guest_cid);
        conn.host_initiated = true;
        conn.due = due::REQUEST;
        conn
    }

    fn new(stream: S, local_port: u32, peer_port: u32, guest_cid: u64) -> Self {
        Connection {
            stream,
            local_port,
            peer_port,
            guest_cid,
            state: ConnState::LocalInit,
            host_initiated: false,
            due: 0,
            tx_buf: VecDeque::new(),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_to_peer: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            peer_shutdown: 0,
            host_eof: false,
            host_write_shut: false,
            readable: false,
            credit_requested: false,
        }
    }

    #[cfg(test)]
    pub fn state(&self) -> ConnState {
        self.state
    }

    pub fn is_dead(&self) -> bool {
        self.state == ConnState::Dead
    }

    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Bytes waiting for the host stream.
    #[cfg(test)]
    pub fn tx_buffered(&self) -> usize {
        self.tx_buf.len()
    }

    /// Resets the connection: an `RST` goes to the guest, then it is gone.
    pub fn reset(&mut self) {
        if self.state != ConnState::Dead {
            self.state = ConnState::Resetting;
        }
    }

    /// Credit the guest gives us: bytes we may still send it.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn may_send_data(&self) -> bool {
        self.state == ConnState::Established
            && self.peer_shutdown & shutdown::RCV == 0
            && !self.host_eof
    }

    /// A packet for the guest is due (control, or host data the guest has credit for).
    pub fn has_pending_rx(&self) -> bool {
        matches!(self.state, ConnState::Resetting)
            || (self.state != ConnState::Dead && self.due != 0)
            || (self.readable
                && self.may_send_data()
                && (self.peer_credit() > 0 || !self.credit_requested))
    }

    /// The host stream became readable (or hung up: the next read tells).
    pub fn notify_readable(&mut self) {
        self.readable = true;
    }

    /// The host stream can take more: flush what the guest sent.
    pub fn notify_writable(&mut self) {
        if self.state == ConnState::Established && !self.tx_buf.is_empty() {
            self.flush_tx();
            self.after_tx_progress();
        }
    }

    /// A packet the guest sent on this connection (its header, and the payload of an `RW`).
    pub fn send_pkt(&mut self, hdr: &Header, payload: &[u8]) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
        match (self.state, hdr.op) {
            (ConnState::Dead, _) => {}
            (_, op::RST) => self.state = ConnState::Dead,
            (ConnState::Resetting, _) => {}
            (ConnState::LocalInit, op::RESPONSE) => {
                self.state = ConnState::Established;
                if self.host_initiated {
                    let line = format!("OK {}\n", self.local_port);
                    // A fresh socket's buffer always takes the short line at once.
                    if !matches!(self.stream.write(line.as_bytes()), Ok(n) if n == line.len()) {
                        tracing::warn!(
                            port = self.local_port,
                            "vsock: cannot answer OK to the host"
                        );
                        self.reset();
                    }
                }
            }
            (ConnState::Established, op::RW) if self.peer_shutdown & shutdown::SEND == 0 => {
                self.write_data(payload)
            }
            (ConnState::Established, op::SHUTDOWN) => {
                self.peer_shutdown |= hdr.flags & shutdown::BOTH;
                self.after_tx_progress();
            }
            (ConnState::Established, op::CREDIT_REQUEST) => self.due |= due::CREDIT_UPDATE,
            (ConnState::Established, op::CREDIT_UPDATE) => {}
            (state, op) => {
                tracing::debug!(
                    ?state,
                    op,
                    port = self.local_port,
                    "vsock: unexpected packet; reset"
                );
                self.reset();
            }
        }
    }

    /// Guest data for the host stream: written at once if nothing is buffered, the rest kept.
    fn write_data(&mut self, payload: &[u8]) {
        if self.tx_buf.len() + payload.len() > BUF_ALLOC as usize {
            guest_warn!(
                port = self.local_port,
                "vsock: guest sent beyond its credit; reset"
            );
            self.reset();
            return;
        }
        let mut done = 0;
        if self.tx_buf.is_empty() {
            while done < payload.len() {
                match self.stream.write(&payload[done..]) {
                    Ok(0) => break,
                    Ok(n) => {
                        done += n;
                        self.fwd_cnt += Wrapping(n as u32);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(err) => {
                        tracing::debug!(%err, port = self.local_port, "vsock: host stream write failed; reset");
                        self.reset();
                        return;
                    }
                }
            }
        }
        self.tx_buf.extend(&payload[done..]);
        self.after_tx_progress();
    }

    /// Writes buffered guest data to the host stream until it is empty or the stream is full.
    fn flush_tx(&mut self) {
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match self.stream.write(front) {
                Ok(0) => return,
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(err) => {
                    tracing::debug!(%err, port = self.local_port, "vsock: host stream write failed; reset");
                    self.reset();
                    return;
                }
            }
        }
    }

    /// After data went out or a shutdown came in: credit update, half-close, final reset.
    fn after_tx_progress(&mut self) {
        if self.state != ConnState::Established {
            return;
        }
        if (self.fwd_cnt - self.last_fwd_cnt_to_peer).0 >= CREDIT_UPDATE_THRESHOLD {
            self.due |= due::CREDIT_UPDATE;
        }
        if !self.tx_buf.is_empty() {
            return;
        }
        if self.peer_shutdown & shutdown::SEND != 0 && !self.host_write_shut {
            self.host_write_shut = true;
            let _ = self.stream.shutdown_write();
        }
        if self.peer_shutdown == shutdown::BOTH {
            self.reset();
        }
    }

    fn header(&self, op: u16) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// The next packet for the guest, if one is due. For an `RW` packet, `read(stream, max)`
    /// reads at most `max` bytes of host data into the guest's buffer (at most `max_data`
    /// and the guest's credit); the header's `len` says how many it read.
    pub fn recv_pkt<F>(&mut self, max_data: usize, read: F) -> Option<Header>
    where
        F: FnOnce(&mut S, usize) -> io::Result<usize>,
    {
        let hdr = self.next_packet(max_data, read)?;
        // Every packet carries our credit.
        self.last_fwd_cnt_to_peer = self.fwd_cnt;
        self.due &= !due::CREDIT_UPDATE;
        Some(hdr)
    }

    fn next_packet<F>(&mut self, max_data: usize, read: F) -> Option<Header>
    where
        F: FnOnce(&mut S, usize) -> io::Result<usize>,
    {
        match self.state {
            ConnState::Dead => return None,
            ConnState::Resetting => {
                self.state = ConnState::Dead;
                return Some(self.header(op::RST));
            }
            _ => {}
        }
        if self.due & due::REQUEST != 0 {
            self.due &= !due::REQUEST;
            return Some(self.header(op::REQUEST));
        }
        if self.due & due::RESPONSE != 0 {
            self.due &= !due::RESPONSE;
            return Some(self.header(op::RESPONSE));
        }
        if self.readable && self.may_send_data() {
            let credit = self.peer_credit() as usize;
            if credit == 0 {
                if !self.credit_requested {
                    self.credit_requested = true;
                    return Some(self.header(op::CREDIT_REQUEST));
                }
            } else if max_data > 0 {
                match read(&mut self.stream, max_data.min(credit)) {
                    Ok(0) => {
                        self.host_eof = true;
                        self.readable = false;
                        let mut hdr = self.header(op::SHUTDOWN);
                        hdr.flags = shutdown::SEND;
                        return Some(hdr);
                    }
                    Ok(n) => {
                        self.rx_cnt += Wrapping(n as u32);
                        let mut hdr = self.header(op::RW);
                        hdr.len = n as u32;
                        return Some(hdr);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => self.readable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(err) => {
                        tracing::debug!(%err, port = self.local_port, "vsock: host stream read failed; reset");
                        self.state = ConnState::Dead;
                        return Some(self.header(op::RST));
                    }
                }
            }
        }
        if self.due & due::CREDIT_UPDATE != 0 {
            return Some(self.header(op::CREDIT_UPDATE));
        }
        None
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
