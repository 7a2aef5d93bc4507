//! The connection state machine and credit flow control on a real Unix socket pair.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use super::*;

const GUEST_CID: u64 = 3;
const GUEST_PORT: u32 = 1025;
const HOST_PORT: u32 = 52;

fn guest_packet(op: u16) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port: GUEST_PORT,
        dst_port: HOST_PORT,
        len: 0,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 64 * 1024,
        fwd_cnt: 0,
    }
}

/// A guest-initiated connection, established (its RESPONSE taken), and the host's end.
fn established() -> (Connection<UnixStream>, UnixStream) {
    let (ours, host) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    host.set_nonblocking(true).unwrap();
    let mut conn = Connection::guest_initiated(ours, &guest_packet(op::REQUEST));
    let response = conn.recv_pkt(4096, |_, _| unreachable!()).unwrap();
    assert_eq!(response.op, op::RESPONSE);
    assert_eq!(
        (response.src_port, response.dst_port),
        (HOST_PORT, GUEST_PORT)
    );
    assert_eq!(response.buf_alloc, BUF_ALLOC);
    assert!(!conn.has_pending_rx());
    (conn, host)
}

fn read_into(buf: &mut Vec<u8>) -> impl FnOnce(&mut UnixStream, usize) -> io::Result<usize> + '_ {
    move |s, max| {
        buf.resize(max, 0);
        let n = s.read(&mut buf[..max])?;
        buf.truncate(n);
        Ok(n)
    }
}

fn rw(len: usize, fwd_cnt: u32) -> Header {
    Header {
        len: len as u32,
        fwd_cnt,
        ..guest_packet(op::RW)
    }
}

#[test]
fn guest_data_reaches_the_host_stream_and_host_data_the_guest() {
    let (mut conn, mut host) = established();
    conn.send_pkt(&rw(5, 0), b"hello");
    let mut got = [0u8; 5];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");

    host.write_all(b"world!").unwrap();
    conn.notify_readable();
    assert!(conn.has_pending_rx());
    let mut buf = Vec::new();
    let hdr = conn.recv_pkt(4096, read_into(&mut buf)).unwrap();
    assert_eq!((hdr.op, hdr.len), (op::RW, 6));
    assert_eq!(hdr.fwd_cnt, 5, "our forwarded count rides on every packet");
    assert_eq!(buf, b"world!");
    // Nothing more to read: the next attempt finds the stream empty and yields nothing.
    assert!(conn.recv_pkt(4096, read_into(&mut Vec::new())).is_none());
    assert!(!conn.has_pending_rx());
}

#[test]
fn host_data_stops_at_the_guests_credit_and_resumes_with_a_credit_update() {
    let (mut conn, mut host) = established();
    host.write_all(&vec![7u8; 70 * 1024]).unwrap();
    conn.notify_readable();
    let mut sent = 0;
    while let Some(hdr) = conn.recv_pkt(4096, read_into(&mut Vec::new())) {
        if hdr.op == op::CREDIT_REQUEST {
            break;
        }
        assert_eq!(hdr.op, op::RW);
        sent += hdr.len;
    }
    assert_eq!(sent, 64 * 1024, "exactly the guest's buf_alloc");
    assert_eq!(conn.peer_credit(), 0);
    assert!(!conn.has_pending_rx(), "one credit request only");
    assert!(conn.recv_pkt(4096, |_, _| unreachable!()).is_none());

    // The guest's application read 16 KiB: it says so.
    conn.send_pkt(
        &Header {
            fwd_cnt: 16 * 1024,
            ..guest_packet(op::CREDIT_UPDATE)
        },
        &[],
    );
    assert!(conn.has_pending_rx());
    let hdr = conn
        .recv_pkt(64 * 1024, read_into(&mut Vec::new()))
        .unwrap();
    assert_eq!(
        (hdr.op, hdr.len),
        (op::RW, 6 * 1024),
        "the rest of the host data"
    );
}

#[test]
fn a_slow_host_buffers_guest_data_and_credit_updates_follow_the_flush() {
    let (mut conn, mut host) = established();
    let chunk = vec![1u8; 60 * 1024];
    let mut written = 0usize;
    // Fill the socket's buffer and then some of ours.
    while conn.tx_buffered() == 0 {
        conn.send_pkt(&rw(chunk.len(), 0), &chunk);
        written += chunk.len();
    }
    assert_eq!(conn.state(), ConnState::Established);
    // Beyond the credit we announced: the guest broke the protocol and is reset.
    let mut over = conn.tx_buffered();
    while over + chunk.len() <= BUF_ALLOC as usize {
        conn.send_pkt(&rw(chunk.len(), 0), &chunk);
        written += chunk.len();
        over += chunk.len();
    }
    assert_eq!(conn.tx_buffered(), over);
    // The host reads everything: the buffer flushes, and the guest gets its credit back.
    let mut drained = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while drained < written {
        match host.read(&mut buf) {
            Ok(n) => drained += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => conn.notify_writable(),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(conn.tx_buffered(), 0);
    let hdr = conn.recv_pkt(4096, |_, _| unreachable!()).unwrap();
    assert_eq!(hdr.op, op::CREDIT_UPDATE);
    assert_eq!(hdr.fwd_cnt as usize, written);

    conn.send_pkt(&rw(chunk.len(), 0), &chunk);
    let too_much = BUF_ALLOC as usize + 1;
    conn.send_pkt(&rw(too_much, 0), &vec![0u8; too_much]);
    assert_eq!(conn.state(), ConnState::Resetting, "over the credit: reset");
    let rst = conn.recv_pkt(4096, |_, _| unreachable!()).unwrap();
    assert_eq!(rst.op, op::RST);
    assert!(conn.is_dead());
}

#[test]
fn shutdowns_half_close_then_reset() {
    let (mut conn, mut host) = established();
    conn.send_pkt(&rw(3, 0), b"abc");
    conn.send_pkt(
        &Header {
            flags: shutdown::SEND,
            ..guest_packet(op::SHUTDOWN)
        },
        &[],
    );
    host.set_nonblocking(false).unwrap();
    let mut got = Vec::new();
    host.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"abc", "the host reads the data, then end of file");
    // The host can still answer; the guest reads it.
    host.write_all(b"ok").unwrap();
    conn.notify_readable();
    let mut buf = Vec::new();
    let hdr = conn.recv_pkt(4096, read_into(&mut buf)).unwrap();
    assert_eq!((hdr.op, buf.as_slice()), (op::RW, &b"ok"[..]));
    // The host closes: the guest hears SHUTDOWN(SEND).
    drop(host);
    conn.notify_readable();
    let hdr = conn.recv_pkt(4096, read_into(&mut Vec::new())).unwrap();
    assert_eq!((hdr.op, hdr.flags), (op::SHUTDOWN, shutdown::SEND));
    // The guest closes its socket: SHUTDOWN(both) is answered with RST.
    conn.send_pkt(
        &Header {
            flags: shutdown::BOTH,
            ..guest_packet(op::SHUTDOWN)
        },
        &[],
    );
    assert_eq!(
        conn.recv_pkt(4096, |_, _| unreachable!()).unwrap().op,
        op::RST
    );
    assert!(conn.is_dead());
}

#[test]
fn host_initiated_connection_answers_ok_after_the_guests_response() {
    let (ours, mut host) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut conn = Connection::host_initiated(ours, 1 << 30, 5000, GUEST_CID);
    assert_eq!(conn.state(), ConnState::LocalInit);
    let req = conn.recv_pkt(4096, |_, _| unreachable!()).unwrap();
    assert_eq!(req.op, op::REQUEST);
    assert_eq!((req.src_cid, req.dst_cid), (HOST_CID, GUEST_CID));
    assert_eq!((req.src_port, req.dst_port), (1 << 30, 5000));
    // Data before the answer is a protocol error.
    let response = Header {
        src_port: 5000,
        dst_port: 1 << 30,
        ..guest_packet(op::RESPONSE)
    };
    conn.send_pkt(&response, &[]);
    assert_eq!(conn.state(), ConnState::Established);
    let mut line = [0u8; 14];
    host.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"OK 1073741824\n");

    // A guest that refuses (nobody listens on the port) answers RST: the connection is gone.
    let (ours, mut host) = UnixStream::pair().unwrap();
    let mut conn = Connection::host_initiated(ours, 1 << 30, 5001, GUEST_CID);
    conn.recv_pkt(4096, |_, _| unreachable!()).unwrap();
    conn.send_pkt(&guest_packet(op::RST), &[]);
    assert!(conn.is_dead());
    assert!(
        conn.recv_pkt(4096, |_, _| unreachable!()).is_none(),
        "no answer to an RST"
    );
    drop(conn);
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the host sees end of file without OK");
}

#[test]
fn unexpected_packets_reset_the_connection() {
    let (mut conn, _host) = established();
    conn.send_pkt(&guest_packet(op::RESPONSE), &[]);
    assert_eq!(conn.state(), ConnState::Resetting);
    assert!(conn.has_pending_rx());
    assert_eq!(conn.recv_pkt(0, |_, _| unreachable!()).unwrap().op, op::RST);

    let (mut conn, _host) = established();
    conn.send_pkt(&guest_packet(op::CREDIT_REQUEST), &[]);
    assert_eq!(
        conn.recv_pkt(4096, |_, _| unreachable!()).unwrap().op,
        op::CREDIT_UPDATE
    );
    conn.reset();
    assert_eq!(
        conn.recv_pkt(4096, |_, _| unreachable!()).unwrap().op,
        op::RST
    );
}
