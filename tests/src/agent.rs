//! The agent under test: its process (started, killed with SIGKILL, started again on the same
//! data directory), an HTTP server for image bundles, and bundles made from the test guest.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virmo_agent::bundle::create::{write_bundle, BundleSpec};
use virmo_agent::local::protocol::{Request, Response};

use crate::dm_server::Accounts;
use crate::TestEnv;

/// The device ID the agents under test use.
pub const DEVICE_ID: &str = "virmo:test-device";

/// Where the agent binary is (`VIRMO_AGENT_BIN`, set by `cargo xtask test`).
pub fn agent_bin() -> PathBuf {
    std::env::var_os("VIRMO_AGENT_BIN")
        .map(PathBuf::from)
        .expect("VIRMO_AGENT_BIN is not set: run these tests with `cargo xtask test`")
}

/// Mounts cgroup2 on /sys/fs/cgroup when nothing is there (the runner's init mounts no
/// cgroups); the mount point, or `None` when no cgroup can be had.
pub fn cgroup_mount() -> Option<PathBuf> {
    let root = PathBuf::from("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() || root.join("cpu").exists() {
        return Some(root);
    }
    let _ = std::fs::create_dir_all(&root);
    let status = Command::new("mount")
        .args(["-t", "cgroup2", "none", "/sys/fs/cgroup"])
        .status()
        .ok()?;
    (status.success() && root.join("cgroup.controllers").exists()).then_some(root)
}

/// What an agent is started with.
#[derive(Debug, Clone)]
pub struct AgentSetup {
    pub data_dir: PathBuf,
    pub vmm: PathBuf,
    /// The configuration's `[server]`, `[device]` and `[listen]` tables: [`dm_account`] for the
    /// tests' DM server, or what `virmoctl enroll` printed.
    pub account: String,
    pub cgroup_mount: Option<PathBuf>,
    /// Extra TOML under `[limits]`.
    pub limits: String,
}

/// The `[server]`, `[device]` and `[listen]` tables for the tests' DM server at `url`: device
/// [`DEVICE_ID`], Pkg#0 on a free loopback port, short retries.
pub fn dm_account(url: &str, a: &Accounts) -> String {
    format!(
        r#"[server]
url = {url:?}
server_id = {sid:?}
auth = "{auth}"
client_name = {cn:?}
client_secret = {cs:?}
server_name = {sn:?}
server_secret = {ss:?}
{timing}
[device]
dev_id = {dev:?}
[listen]
notification = "127.0.0.1:0"
"#,
        sid = a.server_id,
        auth = match a.scheme {
            omadm::auth::AuthScheme::Hmac => "hmac",
            omadm::auth::AuthScheme::Basic => "basic",
            omadm::auth::AuthScheme::Md5 => "md5",
        },
        cn = a.device_user,
        cs = a.device_password,
        sn = a.server_user,
        ss = a.server_password,
        dev = DEVICE_ID,
        timing = SERVER_TIMING,
    )
}

/// `[server]` keys of the agents under test: no periodic session, quick alert retries.
pub const SERVER_TIMING: &str =
    "poll_interval_secs = 3600\nretry_min_secs = 1\nretry_max_secs = 4\nhttp_timeout_secs = 30\n";

/// A running `virmo-agent` process.
pub struct AgentProcess {
    child: Child,
    pub setup: AgentSetup,
    pub local_socket: PathBuf,
    pub pkg0: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl AgentProcess {
    /// Starts the agent and waits until it is ready.
    pub fn start(setup: &AgentSetup) -> Self {
        std::fs::create_dir_all(&setup.data_dir).expect("data dir");
        let config = setup.data_dir.with_extension("toml");
        let cgroup = setup
            .cgroup_mount
            .as_ref()
            .map(|m| {
                format!(
                    "[cgroup]\nmount = {:?}\nname = \"virmo-test\"\n",
                    m.display().to_string()
                )
            })
            .unwrap_or_default();
        let text = format!(
            r#"vmm_bin = {vmm:?}
{account}
[limits]
stop_deadline_secs = 20
unlock_hash_iterations = 2000
unlock_backoff_secs = 2
download_timeout_secs = 10
{limits}
{cgroup}"#,
            vmm = setup.vmm.display().to_string(),
            account = setup.account,
            limits = setup.limits,
        );
        std::fs::write(&config, text).expect("agent config");
        let mut child = Command::new(agent_bin())
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&setup.data_dir)
            .env(
                "RUST_LOG",
                std::env::var("VIRMO_TEST_AGENT_LOG")
                    .unwrap_or_else(|_| "info,virmo_agent=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start virmo-agent");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("virmo-agent: ready; ") {
                    let _ = tx.send(rest.to_owned());
                }
                // Operations as they end, on the real stderr (not captured by the test
                // harness): progress for whoever watches, and the runner's sign of life.
                if line.contains("operation done") || line.contains("operation failed") {
                    let plain = strip_ansi(&line);
                    let _ = writeln!(std::io::stderr(), "[agent] {plain}");
                }
                lines.lock().unwrap().push(line);
            }
        });
        let ready = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "the agent did not start:\n{}",
                    log.lock().unwrap().join("\n")
                )
            });
        // "local socket PATH, Pkg#0 on udp ADDR"
        let socket = ready
            .strip_prefix("local socket ")
            .and_then(|r| r.split(", ").next())
            .expect("the local socket");
        let pkg0 = ready
            .rsplit("udp ")
            .next()
            .and_then(|a| a.parse().ok())
            .expect("the Pkg#0 address");
        Self {
            child,
            setup: setup.clone(),
            local_socket: PathBuf::from(socket),
            pkg0,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the agent process, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// SIGKILL, as a crash or power loss would end it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn transcript(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// A request on the local socket.
    pub fn local(&self, request: Request) -> Response {
        virmo_agent::local::client::request(&self.local_socket, &request)
            .expect("the local API answers")
            .0
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `text` without ANSI colour sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether process `pid` runs (a zombie does not: a VMM whose agent died is reaped by init,
/// which in the runner may take its time).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// The running VMM processes of the agent on `data_dir` (their command line names it and an
/// API socket).
pub fn vmm_processes(data_dir: &Path) -> Vec<u32> {
    let needle = data_dir.display().to_string();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
                    let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                    let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
                    // A jailed VMM's keeper, not the jailed process in its own PID namespace.
                    let ours = virmo_agent::vmm_proc::in_our_pid_namespace(pid);
                    (cmdline.contains(&needle)
                        && cmdline.contains("--api-socket")
                        && ours
                        && alive(pid))
                    .then_some(pid)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Kills every VMM left under `data_dir` (the VMMs outlive the agent by design).
pub fn kill_vmms(data_dir: &Path) {
    for pid in vmm_processes(data_dir) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
}

/// The test guest running `scenario` (bzImage, test initramfs, 1 vCPU, 128 MiB, a 16 MiB
/// disk, an entropy device and an 8 MiB removable disk).
pub fn guest_spec(env: &TestEnv, scenario: &str, version: &str) -> BundleSpec {
    BundleSpec {
        name: format!("test-{scenario}"),
        version: version.into(),
        kernel: env.bzimage(),
        initramfs: Some(env.initramfs()),
        disk: None,
        cmdline: format!("console=ttyS0 quiet panic=-1 virmo.scenario={scenario}"),
        ready_marker: Some("VIRMO-GUEST-READY".into()),
        vcpus: 1,
        memory_mib: 128,
        storage_mib: 16,
        entropy: true,
        removable_mib: 8,
        network: false,
    }
}

/// Writes `spec` as `dir/name`; its path and `sha256:` hash.
pub fn write_spec(spec: &BundleSpec, dir: &Path, name: &str) -> (PathBuf, String) {
    let out = dir.join(name);
    let digest = write_bundle(spec, &out).expect("write a bundle");
    (out, format!("sha256:{}", virmo_agent::bundle::hex(&digest)))
}

/// A bundle of the test guest running `scenario`; its path and `sha256:` hash.
pub fn guest_bundle(env: &TestEnv, dir: &Path, scenario: &str, version: &str) -> (PathBuf, String) {
    write_spec(
        &guest_spec(env, scenario, version),
        dir,
        &format!("{scenario}-{version}.tar"),
    )
}

/// An HTTP file server with `Range` support. `cut` first responses stop halfway; `delay`
/// slows every 64 KiB sent (to catch a download in progress).
pub struct FileServer {
    pub base: String,
    pub requests: Arc<AtomicUsize>,
    pub ranged: Arc<AtomicUsize>,
    delay: Arc<Mutex<Duration>>,
}

impl FileServer {
    pub fn start(root: &Path, cut: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let ranged = Arc::new(AtomicUsize::new(0));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let root = root.to_path_buf();
        let (r, g, d) = (requests.clone(), ranged.clone(), delay.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (root, r, g, d) = (root.clone(), r.clone(), g.clone(), d.clone());
                std::thread::spawn(move || {
                    let n = r.fetch_add(1, Ordering::SeqCst);
                    let _ = serve_file(stream, &root, n < cut, &g, &d);
                });
            }
        });
        Self {
            base,
            requests,
            ranged,
            delay,
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    pub fn set_delay(&self, per_64k: Duration) {
        *self.delay.lock().unwrap() = per_64k;
    }
}

fn serve_file(
    mut stream: std::net::TcpStream,
    root: &Path,
    cut: bool,
    ranged: &AtomicUsize,
    delay: &Mutex<Duration>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut from = 0u64;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            from = v.trim().trim_end_matches('-').parse().unwrap_or(0);
            ranged.fetch_add(1, Ordering::SeqCst);
        }
    }
    let name = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_owned();
    let Ok(body) = std::fs::read(root.join(&name)) else {
        return stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let from = from.min(body.len() as u64) as usize;
    let rest = &body[from..];
    let head = if from > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
            rest.len(),
            body.len().saturating_sub(1),
            body.len()
        )
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            rest.len()
        )
    };
    stream.write_all(head.as_bytes())?;
    let send = if cut { &rest[..rest.len() / 2] } else { rest };
    for chunk in send.chunks(64 * 1024) {
        let pause = *delay.lock().unwrap();
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        stream.write_all(chunk)?;
    }
    stream.flush()
}

/// Waits until `f` holds.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `VIRMO-COUNTER=n` in a console log, on a line the guest finished: a suspend may
/// stop the guest in the middle of a line (`VIRMO-COUNTER=4` of what becomes `…=42` once it
/// goes on).
pub fn last_counter(console_log: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(console_log).ok()?;
    let finished = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    finished
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("VIRMO-COUNTER=")?.trim().parse().ok())
}
