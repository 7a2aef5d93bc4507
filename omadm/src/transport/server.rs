//! The DM server side: a small HTTP(S) server whose workers route each POST to its session.
//!
//! A message to the base path opens a session (package 1) or, when the device ignored our
//! RespURI, finds it by device and SessionID; every reply names a RespURI of the form
//! `<base>/s/<token>` that routes straight to the session.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tiny_http::{Header, Method, Request, Response};

use super::{TransportError, HMAC_HEADER};
use crate::model::SyncHdr;
use crate::session::{Encoding, ServerSession};

/// Bodies above this are refused before reading (a session refuses above its own MaxMsgSize).
const MAX_BODY_BYTES: u64 = 16 << 20;
/// How often idle sessions are swept when no request arrives.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// The server application's side of the sessions.
pub trait SessionHandler: Send + 'static {
    /// Package 1 of a new session arrived in `encoding`: the session to run it (with its
    /// credential checks), or `None` to refuse the device (HTTP 403).
    fn open(&mut self, first: &SyncHdr, encoding: Encoding) -> Option<ServerSession>;

    /// The session handled a message or timed out: drain its events (`poll_event`) and queue
    /// commands (`enqueue`) for its next package.
    fn update(&mut self, session: &mut ServerSession);
}

/// A PEM certificate chain and private key for HTTPS.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    pub certificate_pem: Vec<u8>,
    pub private_key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

/// Where and how the server listens.
#[derive(Debug, Clone)]
pub struct HttpServerConfig {
    pub bind: SocketAddr,
    /// The path DM messages are POSTed to (e.g. `/dm`).
    pub path: String,
    /// HTTPS when set.
    pub tls: Option<TlsIdentity>,
    /// The URL devices reach us at (RespURIs start with it); default: the bound address.
    pub public_url: Option<String>,
    /// Worker threads serving requests.
    pub workers: usize,
}

impl HttpServerConfig {
    /// Plain HTTP on `bind`, path `/dm`, two workers.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            path: "/dm".to_owned(),
            tls: None,
            public_url: None,
            workers: 2,
        }
    }
}

struct Entry {
    session: ServerSession,
    token: String,
}

#[derive(Default)]
struct Sessions {
    by_key: HashMap<(String, String), Entry>,
    by_token: HashMap<String, (String, String)>,
}

struct Shared<H> {
    handler: Mutex<H>,
    sessions: Mutex<Sessions>,
    base_url: String,
    path: String,
    next_token: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running DM HTTP server.
pub struct DmHttpServer {
    server: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    addr: SocketAddr,
    url: String,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for DmHttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmHttpServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl DmHttpServer {
    /// Binds and starts serving with `handler`.
    pub fn spawn<H: SessionHandler>(
        config: HttpServerConfig,
        handler: H,
    ) -> Result<Self, TransportError> {
        let bind_failed = |reason: String| TransportError::Bind {
            addr: config.bind.to_string(),
            reason,
        };
        let scheme = match &config.tls {
            Some(tls) => {
                check_identity(tls)?;
                "https"
            }
            None => "http",
        };
        let listener = listen(config.bind).map_err(|err| bind_failed(err.to_string()))?;
        let ssl = config.tls.as_ref().map(|tls| tiny_http::SslConfig {
            certificate: tls.certificate_pem.clone(),
            private_key: tls.private_key_pem.clone(),
        });
        let server = tiny_http::Server::from_listener(listener, ssl)
            .map_err(|err| bind_failed(err.to_string()))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| bind_failed("not an IP socket".to_owned()))?;
        let base_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{addr}"));
        let url = format!("{base_url}{}", config.path);
        let server = Arc::new(server);
        let shared = Arc::new(Shared {
            handler: Mutex::new(handler),
            sessions: Mutex::new(Sessions::default()),
            base_url: url.clone(),
            path: config.path.clone(),
            next_token: AtomicU64::new(1),
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let workers = (0..config.workers.max(1))
            .map(|_| {
                let server = Arc::clone(&server);
                let shared = Arc::clone(&shared);
                let stopping = Arc::clone(&stopping);
                std::thread::spawn(move || serve(&server, &shared, &stopping))
            })
            .collect();
        Ok(Self {
            server,
            stopping,
            addr,
            url,
            workers,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL devices POST package 1 to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the workers and waits for them.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers.drain(..) {
            // A worker that panicked has nothing left to clean up.
            let _ = worker.join();
        }
    }
}

impl Drop for DmHttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A listening socket whose connections send small writes at once (`TCP_NODELAY`, inherited by
/// accepted sockets): the HTTP layer writes a response's head and body separately, and Nagle's
/// algorithm would hold the body until the peer's delayed ACK, some 40 ms per message.
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// Refuses PEM input the TLS layer would choke on (it panics on a missing key).
fn check_identity(tls: &TlsIdentity) -> Result<(), TransportError> {
    let has = |pem: &[u8], marker: &str| {
        pem.windows(marker.len())
            .any(|window| window == marker.as_bytes())
    };
    if !has(&tls.certificate_pem, "-----BEGIN CERTIFICATE-----") {
        return Err(TransportError::Tls(
            "the certificate is not a PEM certificate".to_owned(),
        ));
    }
    let key = &tls.private_key_pem;
    if has(key, "ENCRYPTED PRIVATE KEY")
        || !(has(key, "-----BEGIN PRIVATE KEY-----") || has(key, "-----BEGIN RSA PRIVATE KEY-----"))
    {
        return Err(TransportError::Tls(
            "the private key is not an unencrypted PKCS#8 or RSA PEM key".to_owned(),
        ));
    }
    Ok(())
}

fn serve<H: SessionHandler>(server: &tiny_http::Server, shared: &Shared<H>, stopping: &AtomicBool) {
    while !stopping.load(Ordering::SeqCst) {
        match server.recv_timeout(SWEEP_EVERY) {
            Ok(Some(request)) => {
                let reply = handle(shared, request);
                // The device hung up: its session times out.
                let _ = reply;
            }
            Ok(None) => sweep(shared),
            Err(_) => return,
        }
    }
}

/// Ends the sessions idle past their timeout.
fn sweep<H: SessionHandler>(shared: &Shared<H>) {
    let now = Instant::now();
    let mut ended = Vec::new();
    {
        let mut sessions = lock(&shared.sessions);
        let expired: Vec<(String, String)> = sessions
            .by_key
            .iter()
            .filter(|(_, entry)| entry.session.poll_timeout().is_none_or(|at| at <= now))
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            if let Some(entry) = sessions.by_key.remove(&key) {
                sessions.by_token.remove(&entry.token);
                ended.push(entry.session);
            }
        }
    }
    for mut session in ended {
        session.handle_timeout(now);
        tracing::info!(
            device = session.device_id(),
            session = session.session_id(),
            "DM session timed out"
        );
        lock(&shared.handler).update(&mut session);
    }
}

fn header_value<'r>(request: &'r Request, name: &'static str) -> Option<&'r str> {
    request
        .headers()
        .iter()
        .find(|header| header.field.equiv(name))
        .map(|header| header.value.as_str())
}

fn plain(status: u16, text: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(text).with_status_code(status)
}

fn handle<H: SessionHandler>(shared: &Shared<H>, mut request: Request) -> std::io::Result<()> {
    sweep(shared);
    let url = request.url().to_owned();
    let token = match url.strip_prefix(shared.path.as_str()) {
        Some("") => None,
        Some(rest) => match rest.strip_prefix("/s/") {
            Some(token) => Some(token.to_owned()),
            None => return request.respond(plain(404, "no such DM endpoint")),
        },
        None => return request.respond(plain(404, "no such DM endpoint")),
    };
    if *request.method() != Method::Post {
        return request.respond(plain(405, "DM messages are POSTed"));
    }
    let content_type = header_value(&request, "Content-Type").map(str::to_owned);
    let Some(encoding) = content_type.as_deref().and_then(Encoding::from_media_type) else {
        return request.respond(plain(
            415,
            "expected application/vnd.syncml.dm+xml or +wbxml",
        ));
    };
    let hmac = header_value(&request, HMAC_HEADER).map(str::to_owned);
    let mut body = Vec::new();
    if request
        .as_reader()
        .take(MAX_BODY_BYTES + 1)
        .read_to_end(&mut body)
        .is_err()
        || body.len() as u64 > MAX_BODY_BYTES
    {
        return request.respond(plain(413, "message too large"));
    }
    let msg = match encoding.decode(&body) {
        Ok(msg) => msg,
        Err(err) => {
            tracing::warn!(%url, error = %err, "refused a body that is not a DM message");
            return request.respond(plain(400, &format!("not a DM message: {err}")));
        }
    };
    let span = tracing::debug_span!(
        "dm_session",
        device = %msg.hdr.source.loc_uri,
        session = %msg.hdr.session_id,
        msg_id = msg.hdr.msg_id
    );
    let _entered = span.enter();
    let mut entry = match take_session(shared, token.as_deref(), &msg.hdr, encoding) {
        Ok(entry) => entry,
        Err(Refusal::NoSession) => {
            return request.respond(plain(400, "the message belongs to no session"))
        }
        Err(Refusal::DeviceRefused) => {
            return request.respond(plain(403, "the device may not open a session"))
        }
    };
    let now = Instant::now();
    entry
        .session
        .handle_presented(msg, Some((&body, hmac.as_deref())), now);
    lock(&shared.handler).update(&mut entry.session);
    let reply = entry.session.poll_transmit(now);
    if entry.session.is_ended() {
        tracing::info!(reason = ?entry.session.end_reason(), "DM session ended");
        lock(&shared.handler).update(&mut entry.session);
    } else {
        put_session(shared, entry);
    }
    match reply {
        Ok(Some(transmit)) => {
            let mut response = Response::from_data(transmit.body);
            if let Ok(header) = Header::from_bytes("Content-Type", transmit.content_type) {
                response = response.with_header(header);
            }
            if let Some(mac) = transmit.hmac {
                if let Ok(header) = Header::from_bytes(HMAC_HEADER, mac) {
                    response = response.with_header(header);
                }
            }
            request.respond(response)
        }
        Ok(None) => request.respond(plain(500, "the session has nothing to answer")),
        Err(err) => request.respond(plain(500, &format!("cannot encode the reply: {err}"))),
    }
}

/// Why a message found no session.
enum Refusal {
    NoSession,
    DeviceRefused,
}

/// The session a message belongs to (taken out of the table while it is handled), or a new one
/// for package 1.
fn take_session<H: SessionHandler>(
    shared: &Shared<H>,
    token: Option<&str>,
    hdr: &SyncHdr,
    encoding: Encoding,
) -> Result<Entry, Refusal> {
    let key = (hdr.source.loc_uri.clone(), hdr.session_id.clone());
    {
        let mut sessions = lock(&shared.sessions);
        let key = match token {
            Some(token) => sessions
                .by_token
                .get(token)
                .ok_or(Refusal::NoSession)?
                .clone(),
            None => key.clone(),
        };
        if let Some(entry) = sessions.by_key.remove(&key) {
            sessions.by_token.remove(&entry.token);
            return Ok(entry);
        }
        if token.is_some() {
            return Err(Refusal::NoSession);
        }
    }
    let session = lock(&shared.handler)
        .open(hdr, encoding)
        .ok_or(Refusal::DeviceRefused)?;
    let token = session_token(shared.next_token.fetch_add(1, Ordering::Relaxed));
    let resp_uri = format!("{}/s/{token}", shared.base_url);
    Ok(Entry {
        session: session.with_resp_uri(resp_uri),
        token,
    })
}

/// A RespURI token: random, so that one device cannot guess another's session URL, with a
/// counter that keeps it unique should the random source fail.
fn session_token(counter: u64) -> String {
    let mut random = [0u8; 12];
    // Without randomness the counter alone still routes correctly.
    let _ = getrandom::fill(&mut random);
    let hex: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{hex}{counter:x}")
}

fn put_session<H>(shared: &Shared<H>, entry: Entry) {
    let key = (
        entry.session.device_id().to_owned(),
        entry.session.session_id().to_owned(),
    );
    let mut sessions = lock(&shared.sessions);
    sessions.by_token.insert(entry.token.clone(), key.clone());
    sessions.by_key.insert(key, entry);
}
