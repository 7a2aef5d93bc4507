//! The virtio-vsock packet header (virtio 1.2, 5.10.6) and the numbers that go in it.
//!
//! Every packet on the RX and TX queues starts with this 44-byte little-endian header; the
//! payload of an `RW` packet follows it, possibly in other descriptors of the same chain.

/// Size of `struct virtio_vsock_hdr`.
pub const HDR_SIZE: usize = 44;
/// The CID of the host (well-known, `VMADDR_CID_HOST`).
pub const HOST_CID: u64 = 2;
/// The only socket type we carry: `VIRTIO_VSOCK_TYPE_STREAM`.
pub const TYPE_STREAM: u16 = 1;

/// `hdr.op` values.
pub mod op {
    pub const REQUEST: u16 = 1;
    pub const RESPONSE: u16 = 2;
    pub const RST: u16 = 3;
    pub const SHUTDOWN: u16 = 4;
    pub const RW: u16 = 5;
    pub const CREDIT_UPDATE: u16 = 6;
    pub const CREDIT_REQUEST: u16 = 7;
}

/// `hdr.flags` of a `SHUTDOWN` packet.
pub mod shutdown {
    /// The sender will receive no more data.
    pub const RCV: u32 = 1;
    /// The sender will send no more data.
    pub const SEND: u32 = 2;
    pub const BOTH: u32 = RCV | SEND;
}

/// The event queue's only event (virtio 1.2, 5.10.6.7): every connection is gone, the guest
/// re-reads the config space (its CID).
pub const EVENT_TRANSPORT_RESET: u32 = 0;

/// A decoded packet header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    /// Payload bytes that follow the header.
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    /// Receive buffer space of the sender for this connection.
    pub buf_alloc: u32,
    /// Bytes the sender has taken out of that buffer so far (wrapping).
    pub fwd_cnt: u32,
}

/// Why a TX chain does not hold a packet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("chain has {0} readable bytes, less than a {HDR_SIZE}-byte header")]
    ShortHeader(u64),
    #[error("header announces {len} payload bytes, the chain has {available}")]
    ShortPayload { len: u32, available: u64 },
    #[error("payload of {0} bytes exceeds the {max} bytes a packet may carry", max = MAX_PAYLOAD)]
    PayloadTooLarge(u32),
}

/// Largest payload the guest may put in one packet (Linux: `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PAYLOAD: u32 = 64 * 1024;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(raw)
}

impl Header {
    /// Decodes a header.
    pub fn decode(b: &[u8; HDR_SIZE]) -> Header {
        Header {
            src_cid: u64_at(b, 0),
            dst_cid: u64_at(b, 8),
            src_port: u32_at(b, 16),
            dst_port: u32_at(b, 20),
            len: u32_at(b, 24),
            type_: u16_at(b, 28),
            op: u16_at(b, 30),
            flags: u32_at(b, 32),
            buf_alloc: u32_at(b, 36),
            fwd_cnt: u32_at(b, 40),
        }
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HDR_SIZE] {
        let mut b = [0u8; HDR_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// Checks the header against the readable length of the chain that carried it. Only `RW`
    /// packets carry a payload; the `len` of any other packet is ignored (treated as 0).
    pub fn check_tx(&self, chain_readable: u64) -> Result<u32, PacketError> {
        if chain_readable < HDR_SIZE as u64 {
            return Err(PacketError::ShortHeader(chain_readable));
        }
        if self.op != op::RW {
            return Ok(0);
        }
        if self.len > MAX_PAYLOAD {
            return Err(PacketError::PayloadTooLarge(self.len));
        }
        let available = chain_readable - HDR_SIZE as u64;
        if u64::from(self.len) > available {
            return Err(PacketError::ShortPayload {
                len: self.len,
                available,
            });
        }
        Ok(self.len)
    }

    /// A reply on the same connection: addresses swapped, no payload, flags cleared.
    pub fn reply(&self, op: u16) -> Header {
        Header {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1025,
            dst_port: 52,
            len: 11,
            type_: TYPE_STREAM,
            op: op::RW,
            flags: 0,
            buf_alloc: 262_144,
            fwd_cnt: 0xdead_beef,
        }
    }

    #[test]
    fn header_round_trips_and_has_the_spec_layout() {
        let h = sample();
        let raw = h.encode();
        assert_eq!(Header::decode(&raw), h);
        // Offsets of struct virtio_vsock_hdr (packed, little endian).
        assert_eq!(&raw[0..8], &3u64.to_le_bytes());
        assert_eq!(&raw[8..16], &2u64.to_le_bytes());
        assert_eq!(&raw[16..20], &1025u32.to_le_bytes());
        assert_eq!(&raw[20..24], &52u32.to_le_bytes());
        assert_eq!(&raw[24..28], &11u32.to_le_bytes());
        assert_eq!(&raw[28..30], &1u16.to_le_bytes());
        assert_eq!(&raw[30..32], &5u16.to_le_bytes());
        assert_eq!(&raw[36..40], &262_144u32.to_le_bytes());
        assert_eq!(&raw[40..44], &0xdead_beefu32.to_le_bytes());
    }

    #[test]
    fn tx_lengths_are_checked_against_the_chain() {
        let h = sample();
        assert_eq!(h.check_tx(HDR_SIZE as u64 + 11), Ok(11));
        assert_eq!(h.check_tx(HDR_SIZE as u64 + 4096), Ok(11));
        assert_eq!(
            h.check_tx(HDR_SIZE as u64 + 10),
            Err(PacketError::ShortPayload {
                len: 11,
                available: 10
            })
        );
        assert_eq!(h.check_tx(43), Err(PacketError::ShortHeader(43)));
        let big = Header {
            len: MAX_PAYLOAD + 1,
            ..h
        };
        assert_eq!(
            big.check_tx(1 << 20),
            Err(PacketError::PayloadTooLarge(MAX_PAYLOAD + 1))
        );
        // Control packets carry no payload, whatever their len says.
        let request = Header {
            op: op::REQUEST,
            len: 999,
            ..h
        };
        assert_eq!(request.check_tx(HDR_SIZE as u64), Ok(0));
    }

    #[test]
    fn a_reply_swaps_the_addresses() {
        let r = sample().reply(op::RST);
        assert_eq!((r.src_cid, r.dst_cid), (HOST_CID, 3));
        assert_eq!((r.src_port, r.dst_port), (52, 1025));
        assert_eq!((r.op, r.len, r.type_), (op::RST, 0, TYPE_STREAM));
    }
}
