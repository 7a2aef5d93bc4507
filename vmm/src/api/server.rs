//! The API server: accepts HTTP/1.1 connections on a Unix socket, turns each request into a
//! [`VmRequest`] through the [route table](super::routes), hands it to the VM's [`VmControl`]
//! and writes the JSON answer.
//!
//! # Threads
//! One accept thread (`vmm-api`), and one thread per connection (`vmm-api-conn`), at most
//! [`MAX_CONNECTIONS`] at a time; while all are taken, the accept thread waits for one to end and
//! new clients wait in the socket's backlog (their own timeouts bound the wait). Requests on
//! one connection are served in order; [`VmControl::handle`] may be called from several
//! connection threads at once. Every connection has the deadlines of
//! [`Timeouts`]: an idle or stalled client cannot hold a thread. The threads log with `tracing`
//! inside the span that was current when [`ApiServer::spawn`] was called (the VM's span).
//!
//! # Ending the process after Stop, Shutdown and suspend
//! The VM must not end the process from inside [`VmControl::handle`]: the answer would be lost.
//! Instead it registers an [`ApiServer::after_response`] hook. The server calls the hook with
//! the request and the VM's result once the response has been written and flushed to the socket
//! (or failed to be, when the client has gone). A successful answer to a request that
//! [ends the process](VmRequest::ends_process) (`Stop`, `Shutdown`, and `Snapshot` without
//! `keep_running`) is sent with `Connection: close`, and nothing after it on that connection is
//! served. A response written to a Unix socket stays readable by the client after the server
//! process exits, so the hook may call `std::process::exit` directly:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use vmm::api::server::ApiServer;
//! # use vmm::control::{VmControl, VmRequest};
//! # fn run(vm: Arc<dyn VmControl>) -> Result<(), Box<dyn std::error::Error>> {
//! ApiServer::bind("/run/virmo/vm-1.sock".as_ref())?
//!     .after_response(|request, result| {
//!         if request.ends_process() && result.is_ok() {
//!             std::process::exit(0);
//!         }
//!     })
//!     .spawn(vm)?;
//! # Ok(()) }
//! ```
//!
//! Other connections may still be in the middle of a request when the hook exits: their clients
//! see the connection close without an answer, as they would if the VMM died.
//!
//! # The socket
//! [`ApiServer::bind`] makes the socket file `0600`: only the VMM's user (the agent that started
//! it) may drive the VM.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::http::connection::{Connection, ReadError, Timeouts};
use super::http::request::Version;
use super::http::{Request, Response};
use super::routes::{self, Dispatch};
use crate::control::{ControlError, VmControl, VmRequest, VmResponse};

/// At most this many connections are served at once.
pub const MAX_CONNECTIONS: usize = 8;

/// Stack size of a connection thread: parsing and JSON need little.
const CONNECTION_STACK_BYTES: usize = 256 * 1024;

/// Called after the response to a VM request has been flushed; see the module docs.
pub type AfterResponse = dyn Fn(&VmRequest, &Result<VmResponse, ControlError>) + Send + Sync;

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
    timeouts: Timeouts,
    after_response: Option<Arc<AfterResponse>>,
}

impl ApiServer {
    /// Binds `path`. A stale socket file (nobody listening) is replaced; a live one is refused,
    /// and so is any other kind of file. The socket file is made `0600`.
    pub fn bind(path: &Path) -> Result<Self, ApiServerError> {
        let bind_error = |source| ApiServerError::Bind {
            path: path.to_path_buf(),
            source,
        };
        if let Ok(metadata) = std::fs::symlink_metadata(path) {
            if !metadata.file_type().is_socket() {
                return Err(bind_error(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                )));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(ApiServerError::SocketInUse(path.to_path_buf()));
            }
            let _ = std::fs::remove_file(path);
        }
        let listener = UnixListener::bind(path).map_err(bind_error)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(bind_error)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            timeouts: Timeouts::default(),
            after_response: None,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the default client deadlines.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Sets the hook called after each response to a VM request has been flushed (see the
    /// module docs: this is where the VM ends the process after `Stop`, `Shutdown` and a
    /// `Snapshot` without `keep_running`).
    pub fn after_response(
        mut self,
        hook: impl Fn(&VmRequest, &Result<VmResponse, ControlError>) + Send + Sync + 'static,
    ) -> Self {
        self.after_response = Some(Arc::new(hook));
        self
    }

    /// Serves requests on a thread of its own until the process ends.
    pub fn spawn(self, control: Arc<dyn VmControl>) -> Result<JoinHandle<()>, ApiServerError> {
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("vmm-api".into())
            .spawn(move || {
                // The connection threads started from here inherit this filter.
                crate::seccomp::confine_current_thread(crate::seccomp::ThreadClass::Api);
                let _entered = span.enter();
                self.accept_loop(&control);
            })
            .map_err(ApiServerError::Spawn)
    }

    fn accept_loop(self, control: &Arc<dyn VmControl>) {
        tracing::info!(socket = %self.path.display(), "API server listening");
        let active = Arc::new(Active::default());
        for stream in self.listener.incoming() {
            let stream = match stream {
                Ok(stream) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "cannot accept an API connection");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let slot = Slot::take(&active);
            let served = Served {
                control: Arc::clone(control),
                after_response: self.after_response.clone(),
            };
            let timeouts = self.timeouts;
            let span = tracing::Span::current();
            let spawned = std::thread::Builder::new()
                .name("vmm-api-conn".into())
                .stack_size(CONNECTION_STACK_BYTES)
                .spawn(move || {
                    let _entered = span.enter();
                    let _slot = slot;
                    served.serve(Connection::new(stream, timeouts));
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start an API connection thread");
            }
        }
    }
}

/// How many connections are being served.
#[derive(Default)]
struct Active {
    count: Mutex<usize>,
    ended: Condvar,
}

/// A place among the [`MAX_CONNECTIONS`]; given back when dropped.
struct Slot(Arc<Active>);

impl Slot {
    /// Waits until fewer than [`MAX_CONNECTIONS`] are served, and takes a place.
    fn take(active: &Arc<Active>) -> Self {
        let mut count = lock(&active.count);
        if *count >= MAX_CONNECTIONS {
            tracing::debug!(limit = MAX_CONNECTIONS, "all API connections busy; waiting");
        }
        while *count >= MAX_CONNECTIONS {
            count = active
                .ended
                .wait(count)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *count += 1;
        Self(Arc::clone(active))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *lock(&self.0.count) -= 1;
        self.0.ended.notify_one();
    }
}

/// A counter stays valid even if a thread panicked while holding its lock.
fn lock(count: &Mutex<usize>) -> MutexGuard<'_, usize> {
    count.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a connection thread needs.
struct Served {
    control: Arc<dyn VmControl>,
    after_response: Option<Arc<AfterResponse>>,
}

impl Served {
    fn serve(&self, mut connection: Connection) {
        loop {
            let request = match connection.read_request() {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(e) => {
                    self.refuse(&mut connection, &e);
                    return;
                }
            };
            if !self.answer(&mut connection, request) {
                break;
            }
        }
        connection.close();
    }

    /// Answers one request; whether the connection stays open.
    fn answer(&self, connection: &mut Connection, request: Request) -> bool {
        let started = Instant::now();
        let head = &request.head;
        let (response, vm_result) = match routes::dispatch(&head.method, head.path(), &request.body)
        {
            Dispatch::Reply(response) => (response, None),
            Dispatch::Vm { request, responder } => {
                let result = self.control.handle(request.clone());
                (responder.reply(&result), Some((request, result)))
            }
        };
        let ends_process = matches!(
            &vm_result,
            Some((request, Ok(_))) if request.ends_process()
        );
        let keep_alive = head.keep_alive && !ends_process;
        let connection_header = match (keep_alive, head.version) {
            (false, _) => Some("close"),
            (true, Version::Http10) => Some("keep-alive"),
            (true, Version::Http11) => None,
        };
        let written = connection.write_response(&response, connection_header);
        log_request(&head.method, &head.target, &response, started, &written);
        if !keep_alive || written.is_err() {
            connection.close();
        }
        if let (Some(hook), Some((request, result))) = (&self.after_response, &vm_result) {
            hook(request, result);
        }
        keep_alive && written.is_ok()
    }

    fn refuse(&self, connection: &mut Connection, error: &ReadError) {
        match error.response() {
            Some(response) => {
                tracing::warn!(status = response.status.code(), error = %crate::error_chain(error), "API request refused");
                let _ = connection.write_response(&response, Some("close"));
                connection.linger_close();
            }
            None => {
                tracing::debug!(error = %crate::error_chain(error), "API connection dropped");
                connection.close();
            }
        }
    }
}

fn log_request(
    method: &str,
    target: &str,
    response: &Response,
    started: Instant,
    written: &io::Result<()>,
) {
    let status = response.status.code();
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match written {
        Err(e) => {
            tracing::warn!(method, uri = target, status, micros, error = %e, "API response not delivered");
        }
        Ok(()) if response.status.code() >= 500 => {
            let error = String::from_utf8_lossy(&response.body);
            tracing::error!(method, uri = target, status, micros, %error, "API request failed");
        }
        Ok(()) if method == "GET" => {
            tracing::debug!(method, uri = target, status, micros, "API request")
        }
        Ok(()) => tracing::info!(method, uri = target, status, micros, "API request"),
    }
}
