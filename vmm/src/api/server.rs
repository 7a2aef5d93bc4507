//! The API server: accepts HTTP/1.1 connections on a Unix socket, turns each request into a
//! [`VmRequest`](crate::control::VmRequest), hands it to the VM's [`VmControl`] and writes the
//! JSON answer. (Skeleton: the routes are filled in by the API work.)

use std::io;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::control::VmControl;

/// Why the API socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("API socket {0} is already in use by a running process")]
    SocketInUse(PathBuf),
    #[error("cannot bind API socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the API server thread")]
    Spawn(#[source] io::Error),
}

/// A bound, not yet serving, API socket.
pub struct ApiServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ApiServer {
    /// Binds `path`. A stale socket file (nobody listening) is replaced; a live one is refused.
    pub fn bind(path: &Path) -> Result<Self, ApiServerError> {
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ApiServerError::SocketInUse(path.to_path_buf()));
            }
            let _ = std::fs::remove_file(path);
        }
        let listener = UnixListener::bind(path).map_err(|source| ApiServerError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves requests on a thread of its own until the process ends.
    pub fn spawn(self, control: Arc<dyn VmControl>) -> Result<JoinHandle<()>, ApiServerError> {
        std::thread::Builder::new()
            .name("vmm-api".into())
            .spawn(move || {
                let _control = control;
                for stream in self.listener.incoming() {
                    drop(stream);
                }
            })
            .map_err(ApiServerError::Spawn)
    }
}
