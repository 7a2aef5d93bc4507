//! The device side: POST each message, feed the reply to the session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::tls::{Certificate, RootCerts, TlsConfig};

use super::{TransportError, HMAC_HEADER};
use crate::session::{ClientSession, CommandExecutor, Transmit};

/// The largest reply body read (a DM message is bounded by our MaxMsgSize anyway).
const MAX_REPLY_BYTES: u64 = 16 << 20;

/// An HTTP reply to a posted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    pub content_type: Option<String>,
    /// The `x-syncml-hmac` header, if any.
    pub hmac: Option<String>,
    pub body: Vec<u8>,
}

/// An HTTP(S) client for DM sessions.
#[derive(Debug, Clone)]
pub struct DmHttpClient {
    agent: ureq::Agent,
}

impl DmHttpClient {
    /// A client whose requests time out after `timeout`, trusting the usual web roots for HTTPS.
    pub fn new(timeout: Duration) -> Self {
        Self::with_roots(timeout, RootCerts::WebPki)
    }

    /// A client trusting only the DER certificate `root` for HTTPS (e.g. a private DM server CA).
    pub fn with_root_certificate(timeout: Duration, root: &[u8]) -> Self {
        let certs = vec![Certificate::from_der(root).to_owned()];
        Self::with_roots(timeout, RootCerts::Specific(Arc::new(certs)))
    }

    /// A client trusting only the DER certificates `roots` for HTTPS (a CA file's certificates).
    pub fn with_root_certificates<C: AsRef<[u8]>>(timeout: Duration, roots: &[C]) -> Self {
        let certs = roots
            .iter()
            .map(|root| Certificate::from_der(root.as_ref()).to_owned())
            .collect();
        Self::with_roots(timeout, RootCerts::Specific(Arc::new(certs)))
    }

    fn with_roots(timeout: Duration, roots: RootCerts) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .build();
        Self {
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// POSTs one message to its target.
    pub fn post(&self, transmit: &Transmit) -> Result<HttpReply, TransportError> {
        let url = &transmit.target_uri;
        let failed = |source| TransportError::Http {
            url: url.clone(),
            source: Box::new(source),
        };
        let mut request = self
            .agent
            .post(url)
            .header("Content-Type", transmit.content_type)
            .header("Accept", transmit.content_type);
        if let Some(hmac) = &transmit.hmac {
            request = request.header(HMAC_HEADER, hmac);
        }
        let mut response = request.send(&transmit.body[..]).map_err(failed)?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let status = response.status().as_u16();
        let content_type = header("content-type");
        let hmac = header(HMAC_HEADER);
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_REPLY_BYTES)
            .read_to_vec()
            .map_err(failed)?;
        Ok(HttpReply {
            status,
            content_type,
            hmac,
            body,
        })
    }

    /// Runs `session` to its end: POST each message it produces, hand each reply back. An HTTP
    /// failure ends the session ([`crate::session::EndReason::Transport`]) and is returned.
    pub fn run(
        &self,
        session: &mut ClientSession,
        executor: &mut dyn CommandExecutor,
    ) -> Result<(), TransportError> {
        let span = tracing::debug_span!("dm_session", session = session.session_id());
        let _entered = span.enter();
        loop {
            session.handle_timeout(Instant::now());
            let Some(transmit) = session
                .poll_transmit(Instant::now())
                .map_err(TransportError::Session)?
            else {
                return Ok(());
            };
            let reply = match self.post(&transmit) {
                Ok(reply) => reply,
                Err(err) => {
                    tracing::warn!(error = %err, "DM message not delivered");
                    session.transport_failed(err.to_string());
                    return Err(err);
                }
            };
            tracing::debug!(url = %transmit.target_uri, status = reply.status, "DM message exchanged");
            if reply.status != 200 {
                let err = TransportError::Status {
                    url: transmit.target_uri.clone(),
                    status: reply.status,
                };
                session.transport_failed(err.to_string());
                return Err(err);
            }
            session.handle_bytes(
                &reply.body,
                reply.content_type.as_deref(),
                reply.hmac.as_deref(),
                executor,
                Instant::now(),
            );
        }
    }
}
