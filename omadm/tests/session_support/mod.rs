//! Shared set-up of the session tests: a device with a real DM tree (standard objects, a
//! handler-backed Exec node, an ACL-protected leaf) and a DM server application that queues
//! commands per device and records every event.

#![allow(
    dead_code,
    reason = "each test binary uses its own part of the support"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omadm::auth::{AuthScheme, Credentials, PeerAuth};
use omadm::model::{Command, ProtoVersion, SyncHdr};
use omadm::session::auth::DmAuth;
use omadm::session::{
    ClientConfig, ClientEvent, ClientSession, DevInfo, Encoding, GenericAlert, Initiation, Limits,
    ServerConfig, ServerEvent, ServerSession,
};
use omadm::status::StatusCode;
use omadm::transport::{
    DmHttpClient, DmHttpServer, HttpServerConfig, SessionHandler, TlsIdentity, TransportError,
};
use omadm::tree::std_objects::{
    install_standard_objects, DevDetailConfig, DevInfoConfig, DeviceConfig,
};
use omadm::tree::{
    AccessTypes, Acl, AclCommand, DmTree, DmUri, ExecRequest, Format, HandlerNode, Node,
    NodeHandler, Scope, TreeLimits,
};

pub const SERVER_ID: &str = "virmo-server";
pub const DEVICE_ID: &str = "virmo:host-1";
pub const DEVICE_USER: &str = "host-1";
pub const DEVICE_PASSWORD: &str = "device-secret";
pub const SERVER_USER: &str = "virmo-server";
pub const SERVER_PASSWORD: &str = "server-secret";

/// What the Exec handler was asked to run.
pub type ExecLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// `./Ops`: one executable node `Reboot`, answering 202 (runs asynchronously).
struct OpsHandler {
    log: ExecLog,
}

impl NodeHandler for OpsHandler {
    fn describe(&self, rel: &[String]) -> Option<HandlerNode> {
        (rel == ["Reboot"])
            .then(|| HandlerNode::leaf(Format::Null, AccessTypes::EXEC.union(AccessTypes::GET)))
    }

    fn children(&self, rel: &[String]) -> Result<Vec<String>, StatusCode> {
        if rel.is_empty() {
            Ok(vec!["Reboot".to_owned()])
        } else {
            Err(StatusCode::NOT_FOUND)
        }
    }

    fn get(&self, _rel: &[String]) -> Result<Vec<u8>, StatusCode> {
        Ok(Vec::new())
    }

    fn exec(&mut self, rel: &[String], request: ExecRequest<'_>) -> StatusCode {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.push((rel.join("/"), request.correlator.map(str::to_owned)));
        StatusCode::ACCEPTED_FOR_PROCESSING
    }
}

fn uri(path: &[&str]) -> DmUri {
    DmUri::from_segments(path.iter().copied())
}

/// The device's tree: standard objects; `./Vendor` with `Setting`, `Old` and `Locked` (whose
/// ACL lets only another server replace it); `./Ops` backed by a handler.
pub fn device_tree() -> (DmTree, ExecLog) {
    let mut root_acl = Acl::inherit();
    for command in AclCommand::ALL {
        root_acl = root_acl.grant(command, SERVER_ID);
    }
    let mut tree = DmTree::new(root_acl, TreeLimits::default()).expect("a tree");
    install_standard_objects(
        &mut tree,
        &DeviceConfig {
            dev_info: DevInfoConfig {
                dev_id: DEVICE_ID.into(),
                manufacturer: "VirMO".into(),
                model: "agent".into(),
                dm_version: "1.2".into(),
                lang: "en-US".into(),
            },
            dev_detail: DevDetailConfig {
                dev_type: "server".into(),
                oem: "VirMO".into(),
                fw_version: "1".into(),
                sw_version: "1".into(),
                hw_version: "1".into(),
                large_object: true,
            },
            accounts: Vec::new(),
        },
    )
    .expect("standard objects");
    let stored = AccessTypes::STORED;
    tree.put_node(
        &uri(&["Vendor"]),
        Node::interior(Scope::Dynamic, 0).with_access(stored),
    )
    .expect("Vendor");
    for name in ["Setting", "Old"] {
        tree.put_node(
            &uri(&["Vendor", name]),
            Node::leaf(Scope::Dynamic, Format::Chr, b"initial".to_vec(), 0).with_access(stored),
        )
        .expect("a leaf");
    }
    let locked_acl = Acl::inherit()
        .grant(AclCommand::Get, SERVER_ID)
        .grant(AclCommand::Replace, "another-server");
    tree.put_node(
        &uri(&["Vendor", "Locked"]),
        Node::leaf(Scope::Dynamic, Format::Chr, b"keep".to_vec(), 0)
            .with_access(stored)
            .with_acl(locked_acl),
    )
    .expect("Locked");
    tree.put_node(
        &uri(&["Ops"]),
        Node::interior(Scope::Permanent, 0).with_access(AccessTypes::GET),
    )
    .expect("Ops");
    let log = ExecLog::default();
    tree.mount(&uri(&["Ops"]), Box::new(OpsHandler { log: log.clone() }))
        .expect("mount");
    (tree, log)
}

/// The value of a stored leaf.
pub fn leaf(tree: &DmTree, path: &[&str]) -> Option<String> {
    tree.device_read(&uri(path))
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
}

/// The device's MD5 authentication with the server (both directions).
pub fn device_auth(password: &str) -> DmAuth {
    device_auth_with(AuthScheme::Md5, password, SERVER_PASSWORD)
}

/// The device's authentication: `password` is ours, `server_password` what we expect of the
/// server.
pub fn device_auth_with(scheme: AuthScheme, password: &str, server_password: &str) -> DmAuth {
    DmAuth::new(PeerAuth::new(
        scheme,
        Credentials::new(DEVICE_USER, password),
        Credentials::new(SERVER_USER, server_password),
    ))
}

pub fn client_config(server_url: &str, limits: Limits) -> ClientConfig {
    ClientConfig {
        proto: ProtoVersion::Dm12,
        server_uri: server_url.to_owned(),
        server_id: SERVER_ID.to_owned(),
        dev_info: DevInfo {
            dev_id: DEVICE_ID.into(),
            man: "VirMO".into(),
            model: "agent".into(),
            dm_version: "1.2".into(),
            lang: "en-US".into(),
        },
        encoding: Encoding::Xml,
        limits,
    }
}

/// A client session authenticating with `password` and checking the server's credentials.
pub fn client_session(
    server_url: &str,
    session_id: &str,
    password: &str,
    alerts: Vec<GenericAlert>,
    limits: Limits,
) -> ClientSession {
    client_session_with(
        server_url,
        session_id,
        device_auth(password),
        alerts,
        limits,
        Encoding::Xml,
    )
}

/// A client session with `auth` in both directions, speaking `encoding`.
pub fn client_session_with(
    server_url: &str,
    session_id: &str,
    auth: DmAuth,
    alerts: Vec<GenericAlert>,
    limits: Limits,
    encoding: Encoding,
) -> ClientSession {
    let mut config = client_config(server_url, limits);
    config.encoding = encoding;
    ClientSession::new(
        config,
        Initiation::Client {
            session_id: session_id.to_owned(),
        },
        alerts,
        Instant::now(),
    )
    .with_credentials(Box::new(auth.clone()))
    .with_server_verifier(Box::new(auth))
}

/// A client session of the device with its own password, no Generic Alert and [`limits`].
pub fn device_session(server_url: &str, session_id: &str) -> ClientSession {
    client_session(
        server_url,
        session_id,
        DEVICE_PASSWORD,
        Vec::new(),
        limits(),
    )
}

/// All events of a client session.
pub fn client_events(session: &mut ClientSession) -> Vec<ClientEvent> {
    std::iter::from_fn(|| session.poll_event()).collect()
}

/// The DM server application of the tests.
#[derive(Default)]
pub struct ServerState {
    /// Commands to send each device in its next session.
    pub queues: HashMap<String, Vec<Command>>,
    /// Every event, with the session it came from.
    pub events: Vec<(String, ServerEvent)>,
    pub sessions_opened: usize,
}

#[derive(Clone)]
pub struct TestServer {
    pub state: Arc<Mutex<ServerState>>,
    pub limits: Limits,
    pub scheme: AuthScheme,
}

impl TestServer {
    pub fn new(limits: Limits) -> Self {
        Self {
            state: Arc::default(),
            limits,
            scheme: AuthScheme::Md5,
        }
    }

    /// The same server authenticating with `scheme`.
    pub fn with_scheme(mut self, scheme: AuthScheme) -> Self {
        self.scheme = scheme;
        self
    }

    pub fn queue(&self, device: &str, commands: Vec<Command>) {
        self.lock().queues.insert(device.to_owned(), commands);
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The events of session `session_id`.
    pub fn events(&self, session_id: &str) -> Vec<ServerEvent> {
        self.lock()
            .events
            .iter()
            .filter(|(id, _)| id == session_id)
            .map(|(_, event)| event.clone())
            .collect()
    }

    /// Starts serving on loopback, over TLS when `tls` is given.
    pub fn spawn(&self, tls: Option<TlsIdentity>) -> DmHttpServer {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        let mut config = HttpServerConfig::new(addr);
        config.tls = tls;
        DmHttpServer::spawn(config, self.clone()).expect("the server starts")
    }
}

impl SessionHandler for TestServer {
    fn open(&mut self, first: &SyncHdr, encoding: Encoding) -> Option<ServerSession> {
        self.lock().sessions_opened += 1;
        let auth = DmAuth::new(PeerAuth::new(
            self.scheme,
            Credentials::new(SERVER_USER, SERVER_PASSWORD),
            Credentials::new(DEVICE_USER, DEVICE_PASSWORD),
        ));
        let config = ServerConfig {
            server_id: SERVER_ID.to_owned(),
            encoding,
            limits: self.limits,
        };
        Some(
            ServerSession::new(config, first, Instant::now())
                .with_verifier(Box::new(auth.clone()))
                .with_credentials(Box::new(auth)),
        )
    }

    fn update(&mut self, session: &mut ServerSession) {
        let mut state = self.lock();
        while let Some(event) = session.poll_event() {
            if let ServerEvent::SessionStarted { device_id, .. } = &event {
                for command in state.queues.remove(device_id).unwrap_or_default() {
                    session.enqueue(command);
                }
            }
            state.events.push((session.session_id().to_owned(), event));
        }
    }
}

/// Generous limits for tests (a short idle timeout so stuck sessions fail fast).
pub fn limits() -> Limits {
    Limits {
        idle_timeout: Duration::from_secs(10),
        ..Limits::default()
    }
}

/// An HTTP client with the tests' timeout.
pub fn http_client() -> DmHttpClient {
    DmHttpClient::new(Duration::from_secs(10))
}

/// The test server on loopback HTTP and the device's tree, with `commands` queued for the
/// device.
pub struct Served {
    pub server: TestServer,
    pub http: DmHttpServer,
    pub tree: DmTree,
    pub exec_log: ExecLog,
}

impl Served {
    /// A client session of the device with its own password, no Generic Alert and [`limits`].
    pub fn device_session(&self, session_id: &str) -> ClientSession {
        client_session(
            self.http.url(),
            session_id,
            DEVICE_PASSWORD,
            Vec::new(),
            limits(),
        )
    }

    /// A client session of the device with `auth`, speaking `encoding`.
    pub fn session_with(
        &self,
        session_id: &str,
        auth: DmAuth,
        encoding: Encoding,
    ) -> ClientSession {
        client_session_with(
            self.http.url(),
            session_id,
            auth,
            Vec::new(),
            limits(),
            encoding,
        )
    }

    /// Runs `session` to its end over HTTP, against the device's tree.
    pub fn run(&mut self, session: &mut ClientSession) -> Result<(), TransportError> {
        http_client().run(session, &mut self.tree)
    }

    /// The value of the stored leaf at `path` of the device's tree.
    pub fn leaf(&self, path: &[&str]) -> Option<String> {
        leaf(&self.tree, path)
    }

    /// The value of `./Vendor/Setting`, the leaf most tests change.
    pub fn setting(&self) -> Option<String> {
        self.leaf(&["Vendor", "Setting"])
    }
}

/// Serves `server` on loopback HTTP with `commands` queued for the device.
pub fn serve(server: TestServer, commands: Vec<Command>) -> Served {
    let http = server.spawn(None);
    let (tree, exec_log) = device_tree();
    server.queue(DEVICE_ID, commands);
    Served {
        server,
        http,
        tree,
        exec_log,
    }
}

/// The final status of request `request` (not of one of its members) in `events`.
pub fn final_status(events: &[ServerEvent], request: u64) -> Option<StatusCode> {
    events.iter().find_map(|event| match event {
        ServerEvent::Status {
            request: r,
            member: None,
            status,
        } if *r == request => Some(status.data),
        _ => None,
    })
}
