//! Delivery of Pkg#0 notifications over IP: the server sends the trigger message as one UDP
//! datagram (SMS and WAP push are not available to us); the device listens, verifies the digest with
//! [`crate::notification::verify`], and opens the session the notification asks for
//! ([`crate::session::Initiation::from_notification`]).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use crate::notification::{self, Notification, NotificationError};

/// A Pkg#0 message is at most this long: 16-byte digest, 8-byte header, 255-byte server ID and
/// vendor data; one datagram of this size is accepted, a longer one refused.
pub const MAX_NOTIFICATION_BYTES: usize = 2048;

/// Why a notification could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("cannot bind the notification socket to {addr}")]
    Bind {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot send the notification to {addr}")]
    Send {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("no notification arrived")]
    Receive(#[source] io::Error),
    #[error("the notification from {from} was refused")]
    Refused {
        from: SocketAddr,
        #[source]
        source: NotificationError,
    },
    #[error(
        "a datagram of more than {MAX_NOTIFICATION_BYTES} bytes from {0} is not a notification"
    )]
    TooLong(SocketAddr),
}

/// Sends an encoded notification (`notification::encode`) to a device's listener.
pub fn send(
    message: &[u8],
    device: impl ToSocketAddrs + std::fmt::Debug,
) -> Result<(), NotifyError> {
    let addr = format!("{device:?}");
    let target = device
        .to_socket_addrs()
        .map_err(|source| NotifyError::Send {
            addr: addr.clone(),
            source,
        })?
        .next()
        .ok_or_else(|| NotifyError::Send {
            addr: addr.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing"),
        })?;
    let local: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).map_err(|source| NotifyError::Bind {
        addr: local.to_string(),
        source,
    })?;
    socket
        .send_to(message, target)
        .map_err(|source| NotifyError::Send { addr, source })?;
    Ok(())
}

/// The device's notification listener.
pub struct NotificationListener {
    socket: UdpSocket,
}

impl NotificationListener {
    pub fn bind(addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<Self, NotifyError> {
        let text = format!("{addr:?}");
        let socket =
            UdpSocket::bind(addr).map_err(|source| NotifyError::Bind { addr: text, source })?;
        Ok(Self { socket })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Waits up to `timeout` for one datagram and verifies it. `credentials` maps the server ID
    /// in the message to that server's password and the nonces the device accepts (as in
    /// [`notification::verify`]). A refused datagram is an error; the listener stays usable.
    pub fn receive(
        &self,
        timeout: Duration,
        credentials: impl FnOnce(&str) -> Option<(String, Vec<Vec<u8>>)>,
    ) -> Result<Notification, NotifyError> {
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(NotifyError::Receive)?;
        let mut buffer = [0u8; MAX_NOTIFICATION_BYTES + 1];
        let (len, from) = self
            .socket
            .recv_from(&mut buffer)
            .map_err(NotifyError::Receive)?;
        if len > MAX_NOTIFICATION_BYTES {
            return Err(NotifyError::TooLong(from));
        }
        notification::verify(&buffer[..len], credentials)
            .map_err(|source| NotifyError::Refused { from, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notification::{encode, Initiator, UiMode};
    use crate::session::Initiation;

    fn sample() -> Notification {
        Notification {
            version: 12,
            ui_mode: UiMode::Background,
            initiator: Initiator::Server,
            session_id: 0x0abc,
            server_id: "virmo-server".into(),
            vendor_specific: Vec::new(),
        }
    }

    fn server_secret(id: &str) -> Option<(String, Vec<Vec<u8>>)> {
        (id == "virmo-server").then(|| ("s3cret".to_string(), vec![b"nonce-1".to_vec()]))
    }

    #[test]
    fn a_notification_crosses_loopback_and_opens_the_session_it_names() {
        let listener = NotificationListener::bind("127.0.0.1:0").unwrap();
        let message = encode(&sample(), "s3cret", b"nonce-1").unwrap();
        send(&message, listener.local_addr().unwrap()).unwrap();
        let received = listener
            .receive(Duration::from_secs(5), server_secret)
            .unwrap();
        assert_eq!(received, sample());
        assert_eq!(
            Initiation::from_notification(&received),
            Initiation::Server {
                session_id: "ABC".into()
            }
        );
    }

    #[test]
    fn a_forged_notification_is_refused_and_the_listener_goes_on() {
        let listener = NotificationListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let forged = encode(&sample(), "guessed", b"nonce-1").unwrap();
        send(&forged, addr).unwrap();
        let err = listener
            .receive(Duration::from_secs(5), server_secret)
            .unwrap_err();
        assert!(
            matches!(
                err,
                NotifyError::Refused {
                    source: NotificationError::BadDigest,
                    ..
                }
            ),
            "{err}"
        );
        send(&[0u8; 3], addr).unwrap();
        assert!(matches!(
            listener.receive(Duration::from_secs(5), server_secret),
            Err(NotifyError::Refused { .. })
        ));
        let good = encode(&sample(), "s3cret", b"nonce-1").unwrap();
        send(&good, addr).unwrap();
        assert!(listener
            .receive(Duration::from_secs(5), server_secret)
            .is_ok());
    }

    #[test]
    fn nothing_arriving_is_a_timeout_error() {
        let listener = NotificationListener::bind("127.0.0.1:0").unwrap();
        assert!(matches!(
            listener.receive(Duration::from_millis(50), server_secret),
            Err(NotifyError::Receive(_))
        ));
    }
}
