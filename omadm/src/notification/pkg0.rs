//! The Package #0 trigger message:
//!
//! ```text
//! digest (128 bits) | version (10) | ui-mode (2) | initiator (1) | future-use (27) |
//! session-id (16) | server-id length (8) | server-id | vendor-specific ...
//! ```
//! Everything after the digest is the *trigger*; fields are big-endian bit fields. The digest is
//! `md5(b64(md5(server-id:password)):nonce:b64(md5(trigger)))` (raw 16 bytes), with the server's
//! password and nonce from the DMAcc credential that authenticates the server (SRVCRED).

use crate::auth::{constant_time_eq, md5};

/// Digest length in bytes.
pub const DIGEST_LEN: usize = 16;
/// The version field for DM Notification 1.2 (major × 10 + minor; 1.1 devices send 11).
pub const VERSION_1_2: u16 = 12;
/// Versions this decoder accepts (1.1 to 1.3).
const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u16> = 11..=13;
/// Digest + the fixed 8 header bytes.
const FIXED_LEN: usize = DIGEST_LEN + 8;

/// How the device should involve its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UiMode {
    NotSpecified = 0,
    Background = 1,
    Informative = 2,
    UserInteraction = 3,
}

impl UiMode {
    fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            1 => Self::Background,
            2 => Self::Informative,
            3 => Self::UserInteraction,
            _ => Self::NotSpecified,
        }
    }
}

/// Who asked for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// Started by the user (0).
    User = 0,
    /// Started by the server (1).
    Server = 1,
}

/// A decoded notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// 10 bits: 12 for DM Notification 1.2.
    pub version: u16,
    pub ui_mode: UiMode,
    pub initiator: Initiator,
    /// The DM session ID the device must use in the session it opens.
    pub session_id: u16,
    /// The server's ServerID (up to 255 bytes).
    pub server_id: String,
    /// The trigger body (vendor specific).
    pub vendor_specific: Vec<u8>,
}

/// Why a notification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("notification is {len} bytes, shorter than the {needed} its header needs")]
    Truncated { len: usize, needed: usize },
    #[error("notification version {0} is not supported (11 to 13)")]
    UnsupportedVersion(u16),
    #[error("notification server ID is not UTF-8")]
    ServerIdNotUtf8,
    #[error("notification server ID is {0} bytes; at most 255 fit")]
    ServerIdTooLong(usize),
    #[error("notification version {0} does not fit in 10 bits")]
    VersionTooLarge(u16),
    #[error("notification digest does not match the server's credentials")]
    BadDigest,
}

/// The trigger (header + body) of a notification, without the digest.
fn encode_trigger(n: &Notification) -> Result<Vec<u8>, NotificationError> {
    if n.version > 0x3ff {
        return Err(NotificationError::VersionTooLarge(n.version));
    }
    let id = n.server_id.as_bytes();
    let id_len =
        u8::try_from(id.len()).map_err(|_| NotificationError::ServerIdTooLong(id.len()))?;
    // version(10) ui(2) initiator(1) future(27) = 40 bits, then session id(16), id length(8).
    let head: u64 = (u64::from(n.version) << 54)
        | ((n.ui_mode as u64) << 52)
        | ((n.initiator as u64) << 51)
        | (u64::from(n.session_id) << 8)
        | u64::from(id_len);
    let mut trigger = Vec::with_capacity(8 + id.len() + n.vendor_specific.len());
    trigger.extend_from_slice(&head.to_be_bytes());
    trigger.extend_from_slice(id);
    trigger.extend_from_slice(&n.vendor_specific);
    Ok(trigger)
}

/// `md5(b64(md5(server-id:password)):nonce:b64(md5(trigger)))`.
pub fn trigger_digest(server_id: &str, password: &str, nonce: &[u8], trigger: &[u8]) -> [u8; 16] {
    use crate::auth::b64;
    let key = b64(&md5(&[server_id.as_bytes(), b":", password.as_bytes()]));
    let body = b64(&md5(&[trigger]));
    md5(&[key.as_bytes(), b":", nonce, b":", body.as_bytes()])
}

/// Encodes and signs a notification with the server's `password` and `nonce`.
pub fn encode(
    n: &Notification,
    password: &str,
    nonce: &[u8],
) -> Result<Vec<u8>, NotificationError> {
    let trigger = encode_trigger(n)?;
    let digest = trigger_digest(&n.server_id, password, nonce, &trigger);
    let mut message = Vec::with_capacity(DIGEST_LEN + trigger.len());
    message.extend_from_slice(&digest);
    message.extend_from_slice(&trigger);
    Ok(message)
}

/// Decodes a notification without checking its digest (the server ID is needed to find the
/// password first). Returns the notification and the digest it carries.
pub fn decode(message: &[u8]) -> Result<(Notification, [u8; DIGEST_LEN]), NotificationError> {
    let truncated = |needed| NotificationError::Truncated {
        len: message.len(),
        needed,
    };
    let (digest, rest) = message
        .split_first_chunk::<DIGEST_LEN>()
        .ok_or(truncated(FIXED_LEN))?;
    let (head, rest) = rest.split_first_chunk::<8>().ok_or(truncated(FIXED_LEN))?;
    let head = u64::from_be_bytes(*head);
    let version = ((head >> 54) & 0x3ff) as u16;
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(NotificationError::UnsupportedVersion(version));
    }
    let id_len = usize::from((head & 0xff) as u8);
    if rest.len() < id_len {
        return Err(truncated(FIXED_LEN + id_len));
    }
    let (id, vendor) = rest.split_at(id_len);
    let server_id = std::str::from_utf8(id)
        .map_err(|_| NotificationError::ServerIdNotUtf8)?
        .to_owned();
    let notification = Notification {
        version,
        ui_mode: UiMode::from_bits((head >> 52) as u8),
        initiator: if (head >> 51) & 1 == 1 {
            Initiator::Server
        } else {
            Initiator::User
        },
        session_id: ((head >> 8) & 0xffff) as u16,
        server_id,
        vendor_specific: vendor.to_vec(),
    };
    Ok((notification, *digest))
}

/// Decodes and verifies a notification. `credentials` maps the server ID found in the message
/// to the server's password and the candidate nonces (the stored SRVCRED nonce, and possibly a
/// reset nonce the device accepts when out of sync); the digest must match one of them.
pub fn verify(
    message: &[u8],
    credentials: impl FnOnce(&str) -> Option<(String, Vec<Vec<u8>>)>,
) -> Result<Notification, NotificationError> {
    let (notification, digest) = decode(message)?;
    let (password, nonces) =
        credentials(&notification.server_id).ok_or(NotificationError::BadDigest)?;
    let trigger = &message[DIGEST_LEN..];
    let matched = nonces.iter().fold(false, |found, nonce| {
        let expected = trigger_digest(&notification.server_id, &password, nonce, trigger);
        found | constant_time_eq(&expected, &digest)
    });
    if matched {
        Ok(notification)
    } else {
        Err(NotificationError::BadDigest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Notification {
        Notification {
            version: VERSION_1_2,
            ui_mode: UiMode::Background,
            initiator: Initiator::Server,
            session_id: 0x1234,
            server_id: "virmo-server".into(),
            vendor_specific: b"\x01vm=work".to_vec(),
        }
    }

    fn creds(id: &str) -> Option<(String, Vec<Vec<u8>>)> {
        (id == "virmo-server").then(|| ("serverpw".to_owned(), vec![b"stored-nonce".to_vec()]))
    }

    #[test]
    fn header_bits_are_where_the_spec_puts_them() {
        let msg = encode(&sample(), "serverpw", b"stored-nonce").unwrap();
        // version 12 = 0b0000001100, ui-mode 01, initiator 1, future use 0:
        // 00000011 00011000 00000000 00000000 00000000 | 0x12 0x34 | 12
        assert_eq!(
            &msg[16..24],
            &[0x03, 0x18, 0x00, 0x00, 0x00, 0x12, 0x34, 12]
        );
        assert_eq!(&msg[24..36], b"virmo-server");
        assert_eq!(&msg[36..], b"\x01vm=work");
    }

    #[test]
    fn digest_matches_an_independent_computation() {
        // Python: md5(b64(md5(b"virmo-server:serverpw")) + b":stored-nonce:" + b64(md5(trigger)))
        let msg = encode(&sample(), "serverpw", b"stored-nonce").unwrap();
        let hex: String = msg[..16].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, DIGEST_VECTOR);
    }

    const DIGEST_VECTOR: &str = "f09fd22ce8002ad57b003dd2ea16d863";

    #[test]
    fn round_trip_and_verify() {
        let msg = encode(&sample(), "serverpw", b"stored-nonce").unwrap();
        let (decoded, _) = decode(&msg).unwrap();
        assert_eq!(decoded, sample());
        assert_eq!(verify(&msg, creds).unwrap(), sample());
        // Another accepted nonce (e.g. after a reset) works too.
        let reset = encode(&sample(), "serverpw", b"0x00000000").unwrap();
        let both = |_: &str| {
            Some((
                "serverpw".to_owned(),
                vec![b"stored-nonce".to_vec(), b"0x00000000".to_vec()],
            ))
        };
        assert!(verify(&reset, both).is_ok());
        assert_eq!(verify(&reset, creds), Err(NotificationError::BadDigest));
    }

    #[test]
    fn every_ui_mode_and_initiator_round_trips() {
        for ui_mode in [
            UiMode::NotSpecified,
            UiMode::Background,
            UiMode::Informative,
            UiMode::UserInteraction,
        ] {
            for initiator in [Initiator::User, Initiator::Server] {
                let n = Notification {
                    ui_mode,
                    initiator,
                    vendor_specific: vec![],
                    ..sample()
                };
                let msg = encode(&n, "pw", b"").unwrap();
                assert_eq!(decode(&msg).unwrap().0, n);
            }
        }
    }

    #[test]
    fn tampering_is_detected() {
        let msg = encode(&sample(), "serverpw", b"stored-nonce").unwrap();
        for i in 0..msg.len() {
            let mut bad = msg.clone();
            bad[i] ^= 0x01;
            assert!(
                verify(&bad, creds).is_err(),
                "flipping a bit of byte {i} went unnoticed"
            );
        }
        assert_eq!(
            verify(
                &encode(&sample(), "wrongpw", b"stored-nonce").unwrap(),
                creds
            ),
            Err(NotificationError::BadDigest)
        );
        let unknown = Notification {
            server_id: "other".into(),
            ..sample()
        };
        assert_eq!(
            verify(
                &encode(&unknown, "serverpw", b"stored-nonce").unwrap(),
                creds
            ),
            Err(NotificationError::BadDigest)
        );
    }

    #[test]
    fn truncated_and_malformed_messages_are_typed_errors() {
        let msg = encode(&sample(), "serverpw", b"stored-nonce").unwrap();
        assert_eq!(
            decode(&msg[..10]),
            Err(NotificationError::Truncated {
                len: 10,
                needed: 24
            })
        );
        assert_eq!(
            decode(&msg[..23]),
            Err(NotificationError::Truncated {
                len: 23,
                needed: 24
            })
        );
        assert_eq!(
            decode(&msg[..30]),
            Err(NotificationError::Truncated {
                len: 30,
                needed: 36
            })
        );
        let mut v99 = msg.clone();
        v99[16] = 0x18; // version 96
        assert_eq!(decode(&v99), Err(NotificationError::UnsupportedVersion(96)));
        let mut not_utf8 = msg.clone();
        not_utf8[24] = 0xff;
        assert_eq!(decode(&not_utf8), Err(NotificationError::ServerIdNotUtf8));
        let long = Notification {
            server_id: "x".repeat(256),
            ..sample()
        };
        assert_eq!(
            encode(&long, "pw", b""),
            Err(NotificationError::ServerIdTooLong(256))
        );
        let big = Notification {
            version: 1024,
            ..sample()
        };
        assert_eq!(
            encode(&big, "pw", b""),
            Err(NotificationError::VersionTooLarge(1024))
        );
        assert!(decode(&[]).is_err());
    }
}
