//! Pkg#0: tells a device with a notification listener that a job waits, so that it opens a
//! session now rather than at its next poll. Best effort: the job is served at the device's
//! next session anyway.

use omadm::notification::{encode, Initiator, Notification, UiMode};

use crate::model::Device;

/// Why a notification was not sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("device `{0}` has no notification address")]
    NoAddress(String),
    #[error("cannot build the notification")]
    Encode(#[source] omadm::notification::NotificationError),
    #[error("cannot send the notification")]
    Send(#[source] omadm::transport::notify::NotifyError),
}

/// Sends `device` a Pkg#0 asking for a server-initiated session; returns its session ID.
pub fn notify(device: &Device, server_id: &str) -> Result<u16, NotifyError> {
    let addr = device
        .enrollment
        .notify_addr
        .as_deref()
        .ok_or_else(|| NotifyError::NoAddress(device.id().to_owned()))?;
    let mut random = [0u8; 2];
    let _ = getrandom::fill(&mut random);
    let session_id = u16::from_be_bytes(random).max(1);
    let notification = Notification {
        version: omadm::notification::VERSION_1_2,
        ui_mode: UiMode::Background,
        initiator: Initiator::Server,
        session_id,
        server_id: server_id.to_owned(),
        vendor_specific: Vec::new(),
    };
    let message = encode(
        &notification,
        &device.enrollment.server_secret,
        &device.nonce_server,
    )
    .map_err(NotifyError::Encode)?;
    omadm::transport::notify::send(&message, addr).map_err(NotifyError::Send)?;
    Ok(session_id)
}
