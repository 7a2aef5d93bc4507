//! A DM server for the agent's tests, built on `omadm`'s real server session and HTTP
//! transport (no mocks): commands are queued per device, sent in the device's next session
//! (opened by a Pkg#0 the test sends, or by the device itself), and every status, result and
//! Generic Alert is recorded with the time it arrived.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use omadm::auth::{AuthScheme, Credentials, PeerAuth};
use omadm::model::{format, Command, Container, Exec, Item, ItemCommand, Meta, SyncHdr};
use omadm::notification::{Initiator, Notification, UiMode};
use omadm::session::auth::DmAuth;
use omadm::session::{
    Encoding, GenericAlert, Limits, RequestId, ServerConfig, ServerEvent, ServerSession,
};
use omadm::transport::{DmHttpServer, HttpServerConfig, SessionHandler};

/// The accounts on both sides.
#[derive(Debug, Clone)]
pub struct Accounts {
    pub server_id: String,
    pub server_user: String,
    pub server_password: String,
    pub device_user: String,
    pub device_password: String,
    pub scheme: AuthScheme,
}

impl Default for Accounts {
    fn default() -> Self {
        Self {
            server_id: "virmo-test-server".into(),
            server_user: "virmo-test-server".into(),
            server_password: "server-secret".into(),
            device_user: "host-1".into(),
            device_password: "device-secret".into(),
            scheme: AuthScheme::Md5,
        }
    }
}

/// The final status of a queued command and its results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// Atomic/Sequence members' statuses, in order.
    pub members: Vec<u16>,
    /// `(source URI, value)` of a Get's results.
    pub results: Vec<(String, String)>,
}

impl Reply {
    /// The value of a Get with one result.
    pub fn value(&self) -> &str {
        self.results.first().map_or("", |(_, v)| v.as_str())
    }
}

/// A Generic Alert as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub alert: GenericAlert,
}

impl Received {
    pub fn data(&self) -> String {
        self.alert
            .data
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct State {
    queues: HashMap<String, VecDeque<(u64, Command)>>,
    next_id: u64,
    /// (session id, session request) → our id.
    in_flight: HashMap<(String, RequestId), u64>,
    replies: HashMap<u64, Reply>,
    alerts: Vec<Received>,
    sessions: usize,
    ended: usize,
    auth: HashMap<String, DmAuth>,
}

#[derive(Clone)]
struct Handler {
    state: Arc<(Mutex<State>, Condvar)>,
    accounts: Accounts,
}

impl Handler {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SessionHandler for Handler {
    fn open(&mut self, first: &SyncHdr, encoding: Encoding) -> Option<ServerSession> {
        let device = first.source.loc_uri.clone();
        let accounts = self.accounts.clone();
        let mut state = self.lock();
        state.sessions += 1;
        // One authentication state per device, kept across sessions (its nonces).
        let auth = state
            .auth
            .entry(device)
            .or_insert_with(|| {
                DmAuth::new(PeerAuth::new(
                    accounts.scheme,
                    Credentials::new(&accounts.server_user, &accounts.server_password),
                    Credentials::new(&accounts.device_user, &accounts.device_password),
                ))
            })
            .clone();
        let config = ServerConfig {
            server_id: accounts.server_id.clone(),
            encoding,
            limits: Limits {
                idle_timeout: Duration::from_secs(60),
                ..Limits::default()
            },
        };
        Some(
            ServerSession::new(config, first, Instant::now())
                .with_verifier(Box::new(auth.clone()))
                .with_credentials(Box::new(auth)),
        )
    }

    fn update(&mut self, session: &mut ServerSession) {
        let session_id = session.session_id().to_owned();
        let mut state = self.lock();
        while let Some(event) = session.poll_event() {
            match event {
                ServerEvent::SessionStarted { device_id, .. } => {
                    let queued: Vec<_> = state
                        .queues
                        .get_mut(&device_id)
                        .map(|q| q.drain(..).collect())
                        .unwrap_or_default();
                    for (id, command) in queued {
                        let request = session.enqueue(command);
                        state.in_flight.insert((session_id.clone(), request), id);
                    }
                }
                ServerEvent::GenericAlert(alert) => state.alerts.push(Received {
                    at: Instant::now(),
                    alert,
                }),
                ServerEvent::Status {
                    request,
                    member,
                    status,
                } => {
                    if let Some(id) = state.in_flight.get(&(session_id.clone(), request)).copied() {
                        let reply = state.replies.entry(id).or_insert(Reply {
                            status: 0,
                            members: Vec::new(),
                            results: Vec::new(),
                        });
                        match member {
                            None => reply.status = status.data.0,
                            Some(_) => reply.members.push(status.data.0),
                        }
                    }
                }
                ServerEvent::NotSent { request, status } => {
                    if let Some(id) = state.in_flight.get(&(session_id.clone(), request)).copied() {
                        state.replies.insert(
                            id,
                            Reply {
                                status: status.0,
                                members: Vec::new(),
                                results: Vec::new(),
                            },
                        );
                    }
                }
                ServerEvent::Results {
                    request, results, ..
                } => {
                    if let Some(id) = state.in_flight.get(&(session_id.clone(), request)).copied() {
                        let reply = state.replies.entry(id).or_insert(Reply {
                            status: 0,
                            members: Vec::new(),
                            results: Vec::new(),
                        });
                        for item in &results.items {
                            reply.results.push((
                                item.source_uri().unwrap_or_default().to_owned(),
                                item.data
                                    .as_ref()
                                    .map(|d| d.to_string_lossy().into_owned())
                                    .unwrap_or_default(),
                            ));
                        }
                    }
                }
                ServerEvent::Ended { unanswered, .. } => {
                    state.ended += 1;
                    for request in unanswered {
                        if let Some(id) =
                            state.in_flight.get(&(session_id.clone(), request)).copied()
                        {
                            state.replies.entry(id).or_insert(Reply {
                                status: 0,
                                members: Vec::new(),
                                results: Vec::new(),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        drop(state);
        self.state.1.notify_all();
    }
}

/// The test DM server.
pub struct DmServer {
    http: DmHttpServer,
    handler: Handler,
    pub accounts: Accounts,
}

impl DmServer {
    /// Serves on loopback HTTP.
    pub fn start(accounts: Accounts) -> Self {
        // `VIRMO_TEST_LOG=debug` shows the server side's own log (sessions, refused bodies).
        if let Ok(filter) = std::env::var("VIRMO_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .try_init();
        }
        let handler = Handler {
            state: Arc::default(),
            accounts: accounts.clone(),
        };
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        let http = DmHttpServer::spawn(HttpServerConfig::new(addr), handler.clone())
            .expect("the DM server starts");
        Self {
            http,
            handler,
            accounts,
        }
    }

    pub fn url(&self) -> String {
        self.http.url().to_owned()
    }

    /// Sessions opened so far.
    pub fn sessions(&self) -> usize {
        self.handler.lock().sessions
    }

    /// Queues commands for `device`'s next session; their IDs.
    pub fn queue(&self, device: &str, commands: Vec<Command>) -> Vec<u64> {
        let mut state = self.handler.lock();
        let mut ids = Vec::new();
        for command in commands {
            state.next_id += 1;
            let id = state.next_id;
            state
                .queues
                .entry(device.to_owned())
                .or_default()
                .push_back((id, command));
            ids.push(id);
        }
        ids
    }

    /// Sends a Pkg#0 to the device's listener (digest with the nonce the device gave us).
    pub fn notify(&self, device: &str, listener: SocketAddr) {
        let nonce = {
            let state = self.handler.lock();
            state
                .auth
                .get(device)
                .map(|auth| auth.lock().nonce_for_sending().to_vec())
                .unwrap_or_default()
        };
        let notification = Notification {
            version: omadm::notification::VERSION_1_2,
            ui_mode: UiMode::Background,
            initiator: Initiator::Server,
            session_id: {
                let mut state = self.handler.lock();
                state.next_id += 1;
                (state.next_id % 0xffff) as u16 + 1
            },
            server_id: self.accounts.server_id.clone(),
            vendor_specific: Vec::new(),
        };
        let message =
            omadm::notification::encode(&notification, &self.accounts.server_password, &nonce)
                .expect("a notification");
        omadm::transport::notify::send(&message, listener).expect("the notification is sent");
    }

    /// Waits for the final statuses of `ids`.
    pub fn wait_replies(&self, ids: &[u64], timeout: Duration) -> Vec<Reply> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.handler.state;
        let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if ids.iter().all(|id| state.replies.contains_key(id)) {
                return ids.iter().map(|id| state.replies[id].clone()).collect();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no replies to {ids:?} within {timeout:?} ({} sessions so far)",
                state.sessions
            );
            state = cond
                .wait_timeout(state, left.min(Duration::from_millis(200)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Queues `commands`, notifies the device, waits for the replies.
    pub fn run(&self, device: &str, listener: SocketAddr, commands: Vec<Command>) -> Vec<Reply> {
        let ids = self.queue(device, commands);
        self.notify(device, listener);
        self.wait_replies(&ids, Duration::from_secs(120))
    }

    /// All alerts received so far.
    pub fn alerts(&self) -> Vec<Received> {
        self.handler.lock().alerts.clone()
    }

    /// Waits for an alert matching `pred`.
    pub fn wait_alert(&self, timeout: Duration, pred: impl Fn(&GenericAlert) -> bool) -> Received {
        self.try_wait_alert(timeout, pred).unwrap_or_else(|| {
            panic!(
                "no such alert within {timeout:?}; received: {:#?}",
                self.alerts()
                    .iter()
                    .map(|r| (
                        &r.alert.alert_type,
                        &r.alert.source,
                        &r.alert.correlator,
                        r.data()
                    ))
                    .collect::<Vec<_>>()
            )
        })
    }

    pub fn try_wait_alert(
        &self,
        timeout: Duration,
        pred: impl Fn(&GenericAlert) -> bool,
    ) -> Option<Received> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.handler.state;
        let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(found) = state.alerts.iter().find(|r| pred(&r.alert)) {
                return Some(found.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = cond
                .wait_timeout(state, left.min(Duration::from_millis(200)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits for the OperationComplete of `correlator`; its result code.
    pub fn outcome(&self, correlator: &str, timeout: Duration) -> u16 {
        self.wait_alert(timeout, |a| a.correlator.as_deref() == Some(correlator))
            .data()
            .parse()
            .expect("a result code")
    }
}

/// `Get uri`.
pub fn get(uri: &str) -> Command {
    Command::Get(ItemCommand::new(0, vec![Item::target(uri)]))
}

/// `Replace uri` with `value` of `fmt` (`chr`, `int`, `bool`).
pub fn replace(uri: &str, fmt: &str, value: &str) -> Command {
    Command::Replace(ItemCommand::new(
        0,
        vec![Item::target(uri)
            .with_meta(Meta::with_format(fmt))
            .with_data(value)],
    ))
}

/// `Add uri` of an interior node.
pub fn add_node(uri: &str) -> Command {
    Command::Add(ItemCommand::new(
        0,
        vec![Item::target(uri).with_meta(Meta::with_format(format::NODE))],
    ))
}

/// `Delete uri`.
pub fn delete(uri: &str) -> Command {
    Command::Delete(ItemCommand::new(0, vec![Item::target(uri)]))
}

/// `Exec uri` with a Correlator.
pub fn exec(uri: &str, correlator: &str) -> Command {
    Command::Exec(Exec::new(0, Item::target(uri)).with_correlator(correlator))
}

/// An Atomic of `commands`.
pub fn atomic(commands: Vec<Command>) -> Command {
    Command::Atomic(Container::new(0, commands))
}
