//! The sharing broker: routes a stream from VM A to port P of VM B over the VMs' vsock host
//! channels, only while the policy allows A and B to share.
//!
//! For each VM the broker listens on `<uds>_1024` ([`SHARING_PORT`]), the host port its guest
//! reaches with `connect(2, 1024)`. The guest writes `CONNECT <vm-id> <port>\n`; the caller is
//! known by the socket the stream arrived on (a guest can reach only its own `<uds>_*`), so it
//! cannot pass for another VM. Allowed: the broker connects to B's `<uds>` with
//! `CONNECT <port>`, answers A `OK\n` once B accepted, and copies both ways. Prohibited (or B
//! unknown): `DENIED\n` and closed at once; B refusing: `REFUSED\n`. A policy change cuts every
//! open route it no longer allows (both streams shut down: each guest reads end of file, a
//! writer's next write fails). Every decision is logged with both VM IDs and the last
//! [`KEPT_DECISIONS`] are kept in [`Broker::decisions`].
//!
//! The listening socket is made connectable by anyone who reaches it (mode 0666): it lives in
//! the VM's own folder, which only root and that VM's jailed VMM (whatever uid it runs as) can
//! reach.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::policy::{SharingPolicy, VmSharing};

/// Host port (on each VM's vsock) where the guest asks the broker for another VM.
pub const SHARING_PORT: u32 = 1024;
/// Longest request line.
const MAX_LINE: usize = 128;
/// Time a guest gets to send its request line, and the peer VM to accept.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many of the last decisions [`Broker::decisions`] keeps (all are logged).
pub const KEPT_DECISIONS: usize = 1024;

/// What the broker decided about a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Routed to the peer.
    Allowed,
    /// The policy does not allow these two VMs to share (or the peer is unknown).
    Prohibited,
    /// Allowed, but the peer VM did not accept (nobody listens on the port).
    Refused,
    /// An open route cut because the policy no longer allows it.
    Revoked,
}

/// One logged decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub from: String,
    pub to: String,
    pub port: u32,
    pub verdict: Verdict,
}

/// Why a VM could not be added to the broker.
#[derive(Debug, thiserror::Error)]
pub enum SharingError {
    #[error("VM {0} is already served by the broker")]
    Duplicate(String),
    #[error("VM {vm} is served at {served}, not {asked}")]
    OtherSocket {
        vm: String,
        served: PathBuf,
        asked: PathBuf,
    },
    #[error("cannot listen on {path}")]
    Listen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An open route: who to whom, and the two streams (clones the broker can shut down).
struct Route {
    from: String,
    to: String,
    port: u32,
    streams: [UnixStream; 2],
}

/// A VM the broker serves.
struct Served {
    /// Its vsock device's socket.
    uds: PathBuf,
    /// Where the broker listens for it (`<uds>_1024`).
    listen: PathBuf,
    /// Tells its listener thread apart from a later one for the same VM.
    generation: u64,
}

#[derive(Default)]
struct State {
    policy: SharingPolicy,
    vms: HashMap<String, Served>,
    next_generation: u64,
    routes: HashMap<u64, Route>,
    next_route: u64,
    decisions: VecDeque<Decision>,
}

/// The broker; cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct Broker {
    state: Arc<Mutex<State>>,
    /// Bytes copied through all routes.
    bytes: Arc<AtomicU64>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Broker {
    pub fn new(policy: SharingPolicy) -> Self {
        let broker = Broker::default();
        lock(&broker.state).policy = policy;
        broker
    }

    /// Serves VM `vm` whose vsock device listens at `uds`: listens on `<uds>_1024` in a thread
    /// of its own until [`Broker::remove_vm`]. A VM served already is refused.
    pub fn add_vm(&self, vm: &str, uds: &Path) -> Result<(), SharingError> {
        let mut state = lock(&self.state);
        if state.vms.contains_key(vm) {
            return Err(SharingError::Duplicate(vm.to_string()));
        }
        self.listen(&mut state, vm, uds)
    }

    /// As [`Broker::add_vm`], but a VM served already at `uds` is fine (nothing changes).
    pub fn serve_vm(&self, vm: &str, uds: &Path) -> Result<(), SharingError> {
        let mut state = lock(&self.state);
        match state.vms.get(vm) {
            Some(served) if served.uds == uds && served.listen.exists() => Ok(()),
            Some(served) if served.uds != uds => Err(SharingError::OtherSocket {
                vm: vm.to_string(),
                served: served.uds.clone(),
                asked: uds.to_owned(),
            }),
            // Its socket file is gone (its folder was remade): listen again.
            Some(_) => {
                stop_listener(&mut state, vm);
                self.listen(&mut state, vm, uds)
            }
            None => self.listen(&mut state, vm, uds),
        }
    }

    fn listen(&self, state: &mut State, vm: &str, uds: &Path) -> Result<(), SharingError> {
        let mut name = uds.as_os_str().to_owned();
        name.push(format!("_{SHARING_PORT}"));
        let path = PathBuf::from(name);
        let listen_error = |source| SharingError::Listen {
            path: path.clone(),
            source,
        };
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(listen_error)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
            .map_err(listen_error)?;
        let generation = state.next_generation;
        state.next_generation += 1;
        state.vms.insert(
            vm.to_string(),
            Served {
                uds: uds.to_owned(),
                listen: path,
                generation,
            },
        );
        let broker = self.clone();
        let vm = vm.to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let current = lock(&broker.state)
                    .vms
                    .get(&vm)
                    .is_some_and(|s| s.generation == generation);
                if !current {
                    break;
                }
                let broker = broker.clone();
                let vm = vm.clone();
                std::thread::spawn(move || broker.serve(&vm, stream));
            }
        });
        Ok(())
    }

    /// Stops serving VM `vm` (deleted): its listener ends, its socket file goes, its policy is
    /// forgotten and its open routes are cut.
    pub fn remove_vm(&self, vm: &str) {
        let mut state = lock(&self.state);
        stop_listener(&mut state, vm);
        state.policy.remove(vm);
        cut_disallowed(&mut state);
    }

    /// Replaces VM `vm`'s settings and cuts the routes the policy no longer allows.
    pub fn set_policy(&self, vm: &str, sharing: VmSharing) {
        let mut state = lock(&self.state);
        tracing::info!(vm, allowed = sharing.allowed, peers = ?sharing.peers, "sharing policy");
        state.policy.set(vm, sharing);
        cut_disallowed(&mut state);
    }

    /// Every decision so far, in order.
    pub fn decisions(&self) -> Vec<Decision> {
        lock(&self.state).decisions.iter().cloned().collect()
    }

    pub fn open_routes(&self) -> usize {
        lock(&self.state).routes.len()
    }

    /// Bytes copied through all routes so far.
    pub fn bytes_routed(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// One stream from VM `from`'s guest.
    fn serve(&self, from: &str, mut a: UnixStream) {
        let _ = a.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
        let asked = std::time::Instant::now();
        let Some((to, port)) = read_request(&mut a) else {
            tracing::info!(from, "sharing: bad request line; closed");
            return;
        };
        let target = {
            let mut state = lock(&self.state);
            let target = state.vms.get(&to).map(|s| s.uds.clone());
            if target.is_none() || !state.policy.allows(from, &to) {
                record(&mut state, from, &to, port, Verdict::Prohibited);
                drop(state);
                let _ = a.write_all(b"DENIED\n");
                return;
            }
            target.expect("checked")
        };
        let Some(b) = connect_guest(&target, port) else {
            record(&mut lock(&self.state), from, &to, port, Verdict::Refused);
            let _ = a.write_all(b"REFUSED\n");
            return;
        };
        let _ = a.set_read_timeout(None);
        // Registered and checked under the lock: a revocation cannot slip in between.
        let id = {
            let mut state = lock(&self.state);
            if !state.policy.allows(from, &to) {
                record(&mut state, from, &to, port, Verdict::Prohibited);
                drop(state);
                let _ = a.write_all(b"DENIED\n");
                return;
            }
            let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
                return;
            };
            let id = state.next_route;
            state.next_route += 1;
            state.routes.insert(
                id,
                Route {
                    from: from.to_string(),
                    to: to.clone(),
                    port,
                    streams: [a2, b2],
                },
            );
            record(&mut state, from, &to, port, Verdict::Allowed);
            id
        };
        if a.write_all(b"OK\n").is_ok() {
            tracing::debug!(from, to = %to, port, set_up_us = asked.elapsed().as_micros() as u64, "sharing: route open");
            self.splice(a, b);
        }
        if let Some(route) = lock(&self.state).routes.remove(&id) {
            tracing::info!(from = %route.from, to = %route.to, port, "sharing: route closed");
        }
    }

    /// Copies both ways until both directions ended (or the route was cut).
    fn splice(&self, a: UnixStream, b: UnixStream) {
        let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
            return;
        };
        let bytes = self.bytes.clone();
        let back = std::thread::spawn(move || pump(b2, a2, &bytes));
        pump(a, b, &self.bytes);
        let _ = back.join();
    }
}

/// Copies `from` to `to` until end of file or an error, then half-closes `to`.
fn pump(mut from: UnixStream, mut to: UnixStream, bytes: &AtomicU64) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// Ends VM `vm`'s listener (it exits at its next wake-up, which this provokes) and removes
/// its socket file.
fn stop_listener(state: &mut State, vm: &str) {
    if let Some(served) = state.vms.remove(vm) {
        let _ = UnixStream::connect(&served.listen);
        let _ = std::fs::remove_file(&served.listen);
    }
}

/// Cuts every open route the policy no longer allows.
fn cut_disallowed(state: &mut State) {
    let cut: Vec<u64> = state
        .routes
        .iter()
        .filter(|(_, r)| !state.policy.allows(&r.from, &r.to))
        .map(|(&id, _)| id)
        .collect();
    for id in cut {
        if let Some(route) = state.routes.remove(&id) {
            for s in &route.streams {
                let _ = s.shutdown(Shutdown::Both);
            }
            record(state, &route.from, &route.to, route.port, Verdict::Revoked);
        }
    }
}

fn record(state: &mut State, from: &str, to: &str, port: u32, verdict: Verdict) {
    tracing::info!(from, to, port, ?verdict, "sharing decision");
    if state.decisions.len() >= KEPT_DECISIONS {
        state.decisions.pop_front();
    }
    state.decisions.push_back(Decision {
        from: from.to_string(),
        to: to.to_string(),
        port,
        verdict,
    });
}

/// Reads `CONNECT <vm-id> <port>\n` byte by byte (nothing after it is taken).
fn read_request(stream: &mut UnixStream) -> Option<(String, u32)> {
    let line = read_line(stream)?;
    let mut parts = line.strip_prefix("CONNECT ")?.split(' ');
    let vm = parts.next().filter(|v| !v.is_empty())?.to_string();
    let port = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((vm, port))
}

fn read_line(stream: &mut UnixStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return String::from_utf8(line).ok(),
            Ok(1) if line.len() < MAX_LINE => line.push(byte[0]),
            _ => return None,
        }
    }
}

/// Connects to guest port `port` through a VM's vsock socket (`CONNECT port` → `OK …`).
fn connect_guest(uds: &Path, port: u32) -> Option<UnixStream> {
    let mut stream = UnixStream::connect(uds).ok()?;
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).ok()?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .ok()?;
    let line = read_line(&mut stream)?;
    line.starts_with("OK ").then_some(())?;
    stream.set_read_timeout(None).ok()?;
    Some(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    fn ask(listen: &Path, line: &str) -> String {
        let mut stream = UnixStream::connect(listen).unwrap();
        stream.write_all(line.as_bytes()).unwrap();
        read_line(&mut stream).unwrap_or_default()
    }

    #[test]
    fn a_vm_is_served_once_until_removed() {
        let dir = TempDir::new();
        let (uds_a, uds_b) = (dir.path().join("a.vsock"), dir.path().join("b.vsock"));
        let listen_a = dir.path().join("a.vsock_1024");
        let broker = Broker::default();
        broker.serve_vm("vm-a", &uds_a).unwrap();
        broker.serve_vm("vm-a", &uds_a).unwrap();
        assert!(matches!(
            broker.add_vm("vm-a", &uds_a),
            Err(SharingError::Duplicate(_))
        ));
        assert!(matches!(
            broker.serve_vm("vm-a", &uds_b),
            Err(SharingError::OtherSocket { .. })
        ));
        let mode = std::fs::metadata(&listen_a).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o666, "a jailed VMM of any uid connects");
        broker.serve_vm("vm-b", &uds_b).unwrap();
        // Nobody allowed anything: denied, and logged with both IDs.
        assert_eq!(ask(&listen_a, "CONNECT vm-b 5000\n"), "DENIED");
        assert_eq!(
            broker.decisions(),
            [Decision {
                from: "vm-a".into(),
                to: "vm-b".into(),
                port: 5000,
                verdict: Verdict::Prohibited
            }]
        );
        // Its socket file gone (the folder remade): served again.
        std::fs::remove_file(&listen_a).unwrap();
        broker.serve_vm("vm-a", &uds_a).unwrap();
        assert!(listen_a.exists());
        broker.remove_vm("vm-a");
        assert!(!listen_a.exists());
        assert!(UnixStream::connect(&listen_a).is_err());
        broker.add_vm("vm-a", &uds_a).unwrap();
    }

    #[test]
    fn request_lines_are_parsed_strictly() {
        let parse = |text: &[u8]| {
            let (mut a, mut b) = UnixStream::pair().unwrap();
            b.write_all(text).unwrap();
            drop(b);
            read_request(&mut a)
        };
        assert_eq!(parse(b"CONNECT vm-b 5000\n"), Some(("vm-b".into(), 5000)));
        assert_eq!(parse(b"CONNECT vm-b 5000"), None, "no newline");
        assert_eq!(parse(b"CONNECT  5000\n"), None);
        assert_eq!(parse(b"CONNECT vm-b 5000 x\n"), None);
        assert_eq!(parse(b"CONNECT vm-b x\n"), None);
        assert_eq!(parse(b"HELLO\n"), None);
        assert_eq!(parse(&[b'x'; 200]), None);
    }
}
