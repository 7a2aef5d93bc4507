//! A simulated VirMO device for the tests and the bench: a real `omadm` DM client session over
//! real HTTP, on a real `omadm` DM tree whose `./VirMO` subtree is a small model of the VirMO
//! MO (VMs with a State, settings, Operations answered 202). No VMs run: an accepted operation
//! waits until [`SimDevice::finish_operations`] (the device finishing its work), and its
//! OperationComplete alert goes out in the next session, as the agent does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use omadm::auth::{AuthScheme, Credentials, PeerAuth};
use omadm::model::ProtoVersion;
use omadm::session::auth::DmAuth;
use omadm::session::{
    ClientConfig, ClientEvent, ClientSession, DevInfo, Encoding, EndReason, GenericAlert,
    Initiation, Limits,
};
use omadm::status::StatusCode;
use omadm::transport::{DmHttpClient, TransportError};
use omadm::tree::std_objects::{
    install_standard_objects, DevDetailConfig, DevInfoConfig, DeviceConfig,
};
use omadm::tree::{
    AccessTypes, Acl, AclCommand, DmTree, DmUri, ExecRequest, Format, HandlerNode, Node,
    NodeHandler, Scope, TreeLimits,
};

use crate::jobs;
use crate::model::{AuthKind, Enrollment};

pub mod postgres;

/// A temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            crate::random_hex(8),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// VM states (`VIRMO-TREE.md`).
pub mod state {
    pub const PROVISIONING: i64 = 10;
    pub const STOPPED: i64 = 20;
    pub const RUNNING: i64 = 30;
    pub const SUSPENDED: i64 = 40;
}

/// An Exec the device accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRecord {
    pub uri: String,
    pub vm: String,
    pub operation: String,
    pub correlator: Option<String>,
}

/// A simulated VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimVm {
    pub state: i64,
    pub lock_state: i64,
    /// Settings by their path under the VM (`Resources/VCPUs`...).
    pub settings: BTreeMap<String, String>,
}

/// The state the device's `./VirMO` handler and the tests share.
#[derive(Debug, Default)]
pub struct SimState {
    pub vms: BTreeMap<String, SimVm>,
    /// Every Exec accepted, in order.
    pub execs: Vec<ExecRecord>,
    /// Accepted and not finished yet.
    pub running: Vec<ExecRecord>,
    /// Result code forced on the next operation that finishes (e.g. 1500).
    pub fail_next: Option<i64>,
}

const OPERATIONS: [&str; 9] = [
    "Provision",
    "Start",
    "Stop",
    "Suspend",
    "Resume",
    "PartiallyLock",
    "FullyLock",
    "Unlock",
    "Delete",
];
const PERIPHERALS: [&str; 2] = ["disk0", "net0"];

fn setting_format(rest: &[&str]) -> Option<(Format, AccessTypes)> {
    let gr = AccessTypes::GET.union(AccessTypes::REPLACE);
    Some(match rest {
        ["Name"] => (Format::Chr, gr),
        ["Image", "PkgURL" | "PkgHash"] => (Format::Chr, gr),
        ["Resources", "VCPUs" | "MemoryMiB" | "StorageMiB" | "CPUQuota"] => (Format::Int, gr),
        ["Peripherals", y, "Allowed"] if PERIPHERALS.contains(y) => (Format::Bool, gr),
        ["DataSharing", "Allowed"] => (Format::Bool, gr),
        ["DataSharing", "Peers"] => (Format::Chr, gr),
        ["Lock", "UserUnlockAllowed"] => (Format::Bool, gr),
        ["Lock", "UserUnlockCode"] => (Format::Chr, AccessTypes::REPLACE),
        ["Firmware", "DownloadAndUpdate", "PkgURL"] => (Format::Chr, gr),
        _ => return None,
    })
}

/// `./VirMO` of the simulated device.
struct VirmoHandler(Arc<Mutex<SimState>>);

impl VirmoHandler {
    fn state(&self) -> MutexGuard<'_, SimState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn interior(access: AccessTypes) -> Option<HandlerNode> {
    Some(HandlerNode::interior(access, Scope::Permanent))
}

impl NodeHandler for VirmoHandler {
    fn describe(&self, rel: &[String]) -> Option<HandlerNode> {
        let p: Vec<&str> = rel.iter().map(String::as_str).collect();
        let state = self.state();
        let get = AccessTypes::GET;
        match p.as_slice() {
            [] => interior(get),
            ["Version"] => Some(HandlerNode::leaf(Format::Chr, get)),
            ["VM"] => interior(get.union(AccessTypes::ADD)),
            ["VM", x, rest @ ..] => {
                state.vms.get(*x)?;
                match rest {
                    [] => {
                        let mut node =
                            HandlerNode::interior(get.union(AccessTypes::DELETE), Scope::Dynamic);
                        node.format = Format::Node;
                        Some(node)
                    }
                    ["State"] | ["Lock", "State"] => Some(HandlerNode::leaf(Format::Int, get)),
                    ["Image" | "Resources" | "Peripherals" | "DataSharing" | "Lock" | "Firmware"
                    | "Operations"] => interior(get),
                    ["Peripherals", y] if PERIPHERALS.contains(y) => interior(get),
                    ["Firmware", "DownloadAndUpdate"] => interior(get.union(AccessTypes::EXEC)),
                    ["Operations", op] if OPERATIONS.contains(op) => Some(HandlerNode::leaf(
                        Format::Null,
                        get.union(AccessTypes::EXEC),
                    )),
                    rest => {
                        let (format, access) = setting_format(rest)?;
                        Some(HandlerNode::leaf(format, access))
                    }
                }
            }
            _ => None,
        }
    }

    fn children(&self, rel: &[String]) -> Result<Vec<String>, StatusCode> {
        let p: Vec<&str> = rel.iter().map(String::as_str).collect();
        let names = |list: &[&str]| Ok(list.iter().map(|s| (*s).to_owned()).collect());
        let state = self.state();
        match p.as_slice() {
            [] => names(&["Version", "VM"]),
            ["VM"] => Ok(state.vms.keys().cloned().collect()),
            ["VM", x, rest @ ..] => {
                if !state.vms.contains_key(*x) {
                    return Err(StatusCode::NOT_FOUND);
                }
                match rest {
                    [] => names(&[
                        "State",
                        "Name",
                        "Image",
                        "Resources",
                        "Peripherals",
                        "DataSharing",
                        "Lock",
                        "Firmware",
                        "Operations",
                    ]),
                    ["Image"] => names(&["PkgURL", "PkgHash"]),
                    ["Resources"] => names(&["VCPUs", "MemoryMiB", "StorageMiB", "CPUQuota"]),
                    ["Peripherals"] => names(&PERIPHERALS),
                    ["Peripherals", _] => names(&["Allowed"]),
                    ["DataSharing"] => names(&["Allowed", "Peers"]),
                    ["Lock"] => names(&["State", "UserUnlockAllowed", "UserUnlockCode"]),
                    ["Firmware"] => names(&["DownloadAndUpdate"]),
                    ["Firmware", "DownloadAndUpdate"] => names(&["PkgURL"]),
                    ["Operations"] => names(&OPERATIONS),
                    _ => Err(StatusCode::NOT_FOUND),
                }
            }
            _ => Err(StatusCode::NOT_FOUND),
        }
    }

    fn get(&self, rel: &[String]) -> Result<Vec<u8>, StatusCode> {
        let p: Vec<&str> = rel.iter().map(String::as_str).collect();
        let state = self.state();
        let text = match p.as_slice() {
            ["Version"] => "1.0".to_owned(),
            ["VM", x, rest @ ..] => {
                let vm = state.vms.get(*x).ok_or(StatusCode::NOT_FOUND)?;
                match rest {
                    ["State"] => vm.state.to_string(),
                    ["Lock", "State"] => vm.lock_state.to_string(),
                    ["Operations", _] => String::new(),
                    rest => {
                        let (format, _) = setting_format(rest).ok_or(StatusCode::NOT_FOUND)?;
                        let default = match format {
                            Format::Bool => "false",
                            Format::Int => "0",
                            _ => "",
                        };
                        vm.settings
                            .get(&rest.join("/"))
                            .cloned()
                            .unwrap_or_else(|| default.to_owned())
                    }
                }
            }
            _ => return Err(StatusCode::NOT_FOUND),
        };
        Ok(text.into_bytes())
    }

    fn add(&mut self, rel: &[String], format: Format, _value: &[u8]) -> Result<(), StatusCode> {
        let p: Vec<&str> = rel.iter().map(String::as_str).collect();
        let ["VM", x] = p.as_slice() else {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        };
        if format != Format::Node {
            return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        let mut state = self.state();
        if state.vms.contains_key(*x) {
            return Err(StatusCode::ALREADY_EXISTS);
        }
        state.vms.insert(
            (*x).to_owned(),
            SimVm {
                state: state::PROVISIONING,
                lock_state: 10,
                settings: BTreeMap::new(),
            },
        );
        Ok(())
    }

    fn replace(&mut self, rel: &[String], value: &[u8]) -> Result<(), StatusCode> {
        let p: Vec<&str> = rel.iter().map(String::as_str).collect();
        let ["VM", x, rest @ ..] = p.as_slice() else {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        };
        setting_format(rest).ok_or(StatusCode::COMMAND_NOT_ALLOWED)?;
        let mut state = self.state();
        let vm = state.vms.get_mut(*x).ok_or(StatusCode::NOT_FOUND)?;
        vm.settings
            .insert(rest.join("/"), String::from_utf8_lossy(value).into_owned());
        Ok(())
    }

    fn delete(&mut self, rel: &[String]) -> Result<(), StatusCode> {
        let p: Vec<&str> = rel.iter().map(String::as_str).collect();
        let ["VM", x] = p.as_slice() else {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        };
        self.state()
            .vms
            .remove(*x)
            .map(|_| ())
            .ok_or(StatusCode::NOT_FOUND)
    }

    fn exec(&mut self, rel: &[String], request: ExecRequest<'_>) -> StatusCode {
        let p: Vec<&str> = rel.iter().map(String::as_str).collect();
        let (x, operation) = match p.as_slice() {
            ["VM", x, "Operations", op] => (*x, *op),
            ["VM", x, "Firmware", "DownloadAndUpdate"] => (*x, "DownloadAndUpdate"),
            _ => return StatusCode::COMMAND_NOT_ALLOWED,
        };
        let mut state = self.state();
        if !state.vms.contains_key(x) {
            return StatusCode::NOT_FOUND;
        }
        let record = ExecRecord {
            uri: format!(
                "{}/{}",
                jobs::VIRMO_ROOT,
                rel.iter()
                    .map(|s| omadm::tree::uri::escape(s))
                    .collect::<Vec<_>>()
                    .join("/")
            ),
            vm: x.to_owned(),
            operation: operation.to_owned(),
            correlator: request.correlator.map(str::to_owned),
        };
        state.execs.push(record.clone());
        state.running.push(record);
        StatusCode::ACCEPTED_FOR_PROCESSING
    }
}

/// The outcome of one operation on a VM: its result code and the VM's new state.
fn finish(vm: &mut SimVm, operation: &str) -> i64 {
    use state::*;
    let next = match (operation, vm.state) {
        ("Provision", PROVISIONING | STOPPED) => Some(STOPPED),
        ("Start", STOPPED) => Some(RUNNING),
        ("Stop", RUNNING | SUSPENDED) => Some(STOPPED),
        ("Suspend", RUNNING) => Some(SUSPENDED),
        ("Resume", SUSPENDED) => Some(RUNNING),
        ("PartiallyLock", _) => {
            vm.lock_state = 20;
            Some(vm.state)
        }
        ("FullyLock", _) => {
            vm.lock_state = 30;
            Some(vm.state)
        }
        ("Unlock", _) => {
            vm.lock_state = 10;
            Some(vm.state)
        }
        ("Delete" | "DownloadAndUpdate", _) => Some(vm.state),
        _ => None,
    };
    match next {
        Some(next) => {
            vm.state = next;
            1200
        }
        None => 1403,
    }
}

/// How a simulated device is set up.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub id: String,
    pub auth: AuthKind,
    pub client_secret: String,
    pub server_name: String,
    pub server_secret: String,
    pub server_url: String,
    pub server_id: String,
    pub encoding: Encoding,
    pub http_timeout: Duration,
}

impl SimConfig {
    /// A device `id` with MD5 credentials derived from its ID, for a server at `server_url`.
    pub fn new(id: &str, server_url: &str, server_id: &str) -> Self {
        Self {
            id: id.to_owned(),
            auth: AuthKind::Md5,
            client_secret: format!("{id}-client-secret"),
            server_name: server_id.to_owned(),
            server_secret: format!("{id}-server-secret"),
            server_url: server_url.to_owned(),
            server_id: server_id.to_owned(),
            encoding: Encoding::Xml,
            http_timeout: Duration::from_secs(30),
        }
    }

    /// What the server must enroll for this device.
    pub fn enrollment(&self) -> Enrollment {
        Enrollment {
            id: self.id.clone(),
            auth: self.auth,
            client_name: self.id.clone(),
            client_secret: self.client_secret.clone(),
            server_name: self.server_name.clone(),
            server_secret: self.server_secret.clone(),
            notify_addr: None,
        }
    }
}

/// What one session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    pub reason: Option<EndReason>,
    /// Alerts the server acknowledged.
    pub delivered: usize,
    /// Alerts kept for the next session.
    pub undelivered: usize,
    pub transport_error: Option<String>,
}

/// A simulated device.
pub struct SimDevice {
    pub config: SimConfig,
    pub tree: DmTree,
    pub state: Arc<Mutex<SimState>>,
    auth: DmAuth,
    pending: Vec<GenericAlert>,
    next_session: u32,
    client: DmHttpClient,
}

impl std::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDevice")
            .field("id", &self.config.id)
            .finish_non_exhaustive()
    }
}

impl SimDevice {
    pub fn new(config: SimConfig) -> Self {
        let mut root_acl = Acl::inherit();
        for command in AclCommand::ALL {
            root_acl = root_acl.grant(command, config.server_id.as_str());
        }
        let mut tree = DmTree::new(root_acl, TreeLimits::default()).expect("a valid root ACL");
        install_standard_objects(
            &mut tree,
            &DeviceConfig {
                dev_info: DevInfoConfig {
                    dev_id: config.id.clone(),
                    manufacturer: "virmo".into(),
                    model: "simulator".into(),
                    dm_version: "1.2".into(),
                    lang: "en-US".into(),
                },
                dev_detail: DevDetailConfig {
                    dev_type: "simulator".into(),
                    oem: "virmo".into(),
                    fw_version: "1".into(),
                    sw_version: "1".into(),
                    hw_version: "1".into(),
                    large_object: true,
                },
                accounts: Vec::new(),
            },
        )
        .expect("the standard objects");
        let virmo = DmUri::from_segments(["VirMO"]);
        tree.put_node(
            &virmo,
            Node::interior(Scope::Permanent, 0).with_access(AccessTypes::GET),
        )
        .expect("./VirMO");
        let state = Arc::new(Mutex::new(SimState::default()));
        tree.mount(&virmo, Box::new(VirmoHandler(state.clone())))
            .expect("the VirMO handler");
        let scheme: AuthScheme = config.auth.scheme();
        let auth = DmAuth::new(PeerAuth::new(
            scheme,
            Credentials::new(config.id.clone(), config.client_secret.clone()),
            Credentials::new(config.server_name.clone(), config.server_secret.clone()),
        ));
        let client = DmHttpClient::new(config.http_timeout);
        Self::with_client(config, tree, state, auth, client)
    }

    fn with_client(
        config: SimConfig,
        tree: DmTree,
        state: Arc<Mutex<SimState>>,
        auth: DmAuth,
        client: DmHttpClient,
    ) -> Self {
        Self {
            config,
            tree,
            state,
            auth,
            pending: Vec::new(),
            next_session: 0,
            client,
        }
    }

    /// Shares an HTTP client (and its kept-alive connections) with other devices.
    pub fn use_client(&mut self, client: DmHttpClient) {
        self.client = client;
    }

    pub fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The device's authentication state (its nonces, to replay or corrupt in tests).
    pub fn auth(&self) -> &DmAuth {
        &self.auth
    }

    /// Alerts waiting for the next session.
    pub fn pending_alerts(&self) -> &[GenericAlert] {
        &self.pending
    }

    /// Queues an alert for the next session (e.g. a StateChanged).
    pub fn queue_alert(&mut self, alert: GenericAlert) {
        self.pending.push(alert);
    }

    /// Finishes every accepted operation: the VMs change state and an OperationComplete (or
    /// FUMO) alert with each Exec's correlator waits for the next session. Returns how many.
    pub fn finish_operations(&mut self) -> usize {
        let mut state = self.lock();
        let running = std::mem::take(&mut state.running);
        let mut alerts = Vec::new();
        for record in &running {
            let forced = state.fail_next.take();
            let code = match state.vms.get_mut(&record.vm) {
                Some(vm) => {
                    let code = finish(vm, &record.operation);
                    forced.unwrap_or(code)
                }
                None => 1404,
            };
            if record.operation == "Delete" && code == 1200 {
                state.vms.remove(&record.vm);
            }
            let mut alert = if record.operation == "DownloadAndUpdate" {
                let fumo = if code == 1200 { 200 } else { 410 };
                GenericAlert::new(
                    format!("{}downloadandupdate", jobs::FUMO_PREFIX),
                    "int",
                    fumo.to_string(),
                )
            } else {
                GenericAlert::new(jobs::OPERATION_COMPLETE, "int", code.to_string())
            }
            .with_source(record.uri.clone())
            .with_mark(if code == 1200 {
                "informational"
            } else {
                "major"
            });
            if let Some(correlator) = &record.correlator {
                alert = alert.with_correlator(correlator.clone());
            }
            alerts.push(alert);
        }
        drop(state);
        let count = alerts.len();
        self.pending.extend(alerts);
        count
    }

    fn client_session(&mut self, initiation: Initiation) -> ClientSession {
        let config = ClientConfig {
            proto: ProtoVersion::Dm12,
            server_uri: self.config.server_url.clone(),
            server_id: self.config.server_id.clone(),
            dev_info: DevInfo {
                dev_id: self.config.id.clone(),
                man: "virmo".into(),
                model: "simulator".into(),
                dm_version: "1.2".into(),
                lang: "en-US".into(),
            },
            encoding: self.config.encoding,
            limits: Limits::default(),
        };
        ClientSession::new(
            config,
            initiation,
            std::mem::take(&mut self.pending),
            Instant::now(),
        )
        .with_credentials(Box::new(self.auth.clone()))
        .with_server_verifier(Box::new(self.auth.clone()))
    }

    fn next_initiation(&mut self) -> Initiation {
        self.next_session = (self.next_session + 1) % 0x1_0000;
        Initiation::Client {
            session_id: self.next_session.to_string(),
        }
    }

    /// Runs one client-initiated session to its end, delivering the waiting alerts.
    pub fn session(&mut self) -> SessionReport {
        let initiation = self.next_initiation();
        self.run(initiation)
    }

    /// Runs the session a Pkg#0 asked for (Alert 1200, its session ID).
    pub fn notified_session(&mut self, session_id: u16) -> SessionReport {
        self.run(Initiation::Server {
            session_id: format!("{session_id:X}"),
        })
    }

    fn run(&mut self, initiation: Initiation) -> SessionReport {
        let mut session = self.client_session(initiation);
        let client = self.client.clone();
        let outcome = client.run(&mut session, &mut self.tree);
        self.report(&mut session, outcome.err())
    }

    fn report(
        &mut self,
        session: &mut ClientSession,
        error: Option<TransportError>,
    ) -> SessionReport {
        let mut report = SessionReport {
            reason: None,
            delivered: 0,
            undelivered: 0,
            transport_error: error.map(|e| error_chain(&e)),
        };
        while let Some(event) = session.poll_event() {
            match event {
                ClientEvent::AlertStatus { status, .. } if status.is_success() => {
                    report.delivered += 1;
                }
                ClientEvent::Ended {
                    reason,
                    undelivered,
                } => {
                    report.reason = Some(reason);
                    report.undelivered = undelivered.len();
                    self.pending.extend(undelivered);
                }
                _ => {}
            }
        }
        report
    }

    /// Opens a session and stops answering after `replies` replies of the server (a device
    /// that loses its network mid-session). The alerts it carried stay queued.
    pub fn abandon_session(&mut self, replies: usize) -> SessionReport {
        let initiation = self.next_initiation();
        let pending = self.pending.clone();
        let mut session = self.client_session(initiation);
        let mut error = None;
        for _ in 0..replies {
            let transmit = match session.poll_transmit(Instant::now()) {
                Ok(Some(transmit)) => transmit,
                _ => break,
            };
            match self.client.post(&transmit) {
                Ok(reply) => session.handle_bytes(
                    &reply.body,
                    reply.content_type.as_deref(),
                    reply.hmac.as_deref(),
                    &mut self.tree,
                    Instant::now(),
                ),
                Err(err) => {
                    error = Some(err);
                    break;
                }
            }
        }
        session.transport_failed("the device went away");
        let report = self.report(&mut session, error);
        // Whatever the server saw, the device could not tell: it keeps every alert.
        self.pending = pending;
        report
    }

    /// The bytes of this device's next package 1 (for replay tests), without sending it.
    pub fn package_one(&mut self) -> omadm::session::Transmit {
        let initiation = self.next_initiation();
        let pending = self.pending.clone();
        let mut session = self.client_session(initiation);
        let transmit = session
            .poll_transmit(Instant::now())
            .expect("package 1 encodes")
            .expect("package 1 is due");
        self.pending = pending;
        transmit
    }
}

/// An error and its sources, `: `-separated (what a transport failure was, down to its cause).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
