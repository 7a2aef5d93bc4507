//! HTTPS for the DM endpoint and the admin API: rustls (on ring, the stack the DM clients' ureq
//! already uses) under axum. [`ServerTls`] is the certificate chain and key as PEM text;
//! [`TlsListener`] is an axum [`Listener`] that accepts TCP connections and runs each TLS
//! handshake in a task of its own (a slow or silent client holds up nobody), handing only
//! finished handshakes to the HTTP server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A handshake not finished in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Finished handshakes waiting for the HTTP server to take them.
const ACCEPT_BACKLOG: usize = 256;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no PEM certificate found")]
    NoCertificate,
    #[error("the certificates are not valid PEM")]
    BadCertificate(#[source] rustls::pki_types::pem::Error),
    #[error("the key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    BadKey(#[source] rustls::pki_types::pem::Error),
    #[error("the certificate and key do not make a TLS server identity")]
    Identity(#[source] rustls::Error),
    #[error("cannot generate a self-signed certificate")]
    Generate(#[source] rcgen::Error),
}

/// The server's TLS identity: its certificate chain (leaf first) and private key, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub certificate_chain_pem: Vec<u8>,
    pub private_key_pem: Vec<u8>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("certificate_chain_pem", &self.certificate_chain_pem.len())
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

impl ServerTls {
    /// Reads the PEM files `--tls-cert` and `--tls-key` name.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        Ok(Self {
            certificate_chain_pem: read(cert)?,
            private_key_pem: read(key)?,
        })
    }

    /// A self-signed certificate for `names` (DNS names or IP addresses) and its key: what
    /// `--tls-self-signed` and the bench serve; clients trust the certificate itself (its PEM
    /// is the CA file).
    pub fn self_signed(names: &[String]) -> Result<Self, TlsError> {
        let certified =
            rcgen::generate_simple_self_signed(names.to_vec()).map_err(TlsError::Generate)?;
        Ok(Self {
            certificate_chain_pem: certified.cert.pem().into_bytes(),
            private_key_pem: certified.signing_key.serialize_pem().into_bytes(),
        })
    }

    /// The rustls configuration (HTTP/1.1 by ALPN), checked: the key must match the leaf.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let chain = ca_certificates(&self.certificate_chain_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&self.private_key_pem).map_err(TlsError::BadKey)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Identity)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(TlsError::Identity)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The certificates of a PEM CA file (DER), at least one.
pub fn ca_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::BadCertificate)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

/// An axum listener serving TLS: handshakes run in their own tasks; the HTTP server gets the
/// finished ones.
pub struct TlsListener {
    local: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `config` on an already bound `listener`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (done, ready) = tokio::sync::mpsc::channel(ACCEPT_BACKLOG);
        let acceptor = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), done));
        Ok(Self {
            local,
            ready,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    done: tokio::sync::mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors and the like: wait rather than spin (as axum does).
                tracing::warn!(error = %err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Replies leave in one write only with Nagle off (see omadm's transport notes).
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let done = done.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = done.send((stream, peer)).await;
                }
                Ok(Err(err)) => {
                    tracing::info!(%peer, error = %err, "TLS handshake failed");
                }
                Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop never ends while we hold its handle; should it die, serve nothing.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_needs_a_certificate_and_its_key() {
        let good = ServerTls::self_signed(&["localhost".to_owned()]).expect("certificate");
        assert!(good.server_config().is_ok());
        let no_cert = ServerTls {
            certificate_chain_pem: b"not pem".to_vec(),
            ..good.clone()
        };
        assert!(matches!(
            no_cert.server_config(),
            Err(TlsError::NoCertificate)
        ));
        let other = ServerTls::self_signed(&["localhost".to_owned()]).expect("certificate");
        let mismatched = ServerTls {
            private_key_pem: other.private_key_pem,
            ..good.clone()
        };
        assert!(matches!(
            mismatched.server_config(),
            Err(TlsError::Identity(_))
        ));
        assert!(!format!("{good:?}").contains("PRIVATE KEY"));
    }
}
