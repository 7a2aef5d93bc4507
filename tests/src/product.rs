//! The product's own front ends under test: a `virmo-server` process (embedded SQLite in its
//! data directory), the administrator's `virmoctl` and the device user's `virmo` CLI, as
//! separate processes. `cargo xtask test` says where their binaries are (`VIRMO_SERVER_BIN`,
//! `VIRMOCTL_BIN`, `VIRMO_CLI_BIN`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use virmo_server::admin::{JobView, VmView};
use virmo_server::model::{AlertRecord, Event, JobState};

use crate::agent::{wait_until, SERVER_TIMING};

fn bin(var: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{var} is not set: run these tests with `cargo xtask test`"))
}

/// The `virmo` binary (the device user's CLI).
pub fn virmo_cli_bin() -> PathBuf {
    bin("VIRMO_CLI_BIN")
}

/// A running `virmo-server` on loopback, on SQLite in its data directory.
pub struct ServerProcess {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `virmo-server --data-dir D --listen 127.0.0.1:0` and waits for its ready line.
    pub fn start(data_dir: &Path) -> Self {
        let mut child = Command::new(bin("VIRMO_SERVER_BIN"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .env("VIRMO_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start virmo-server");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("the ready line");
        let url = first
            .trim()
            .strip_prefix("virmo-server listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "virmo-server did not start ({first:?}):\n{}",
                    log.lock().unwrap().join("\n")
                )
            })
            .to_owned();
        Self {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    /// `virmoctl` for this server, with the admin token it generated.
    pub fn virmoctl(&self) -> Virmoctl {
        Virmoctl {
            url: self.url.clone(),
            token_file: self.data_dir.join("admin-token"),
        }
    }

    pub fn transcript(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `virmoctl` CLI of one server.
#[derive(Debug, Clone)]
pub struct Virmoctl {
    pub url: String,
    pub token_file: PathBuf,
}

impl Virmoctl {
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(bin("VIRMOCTL_BIN"))
            .args(["--server", &self.url, "--token-file"])
            .arg(&self.token_file)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("virmoctl runs")
    }

    /// Its standard output; the command must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "virmoctl {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `virmoctl --json ARGS`, parsed.
    pub fn json<T: DeserializeOwned>(&self, args: &[&str]) -> T {
        let text = self.ok(&[&["--json"], args].concat());
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("virmoctl --json {args:?}: {e}: {text}"))
    }

    /// `virmoctl ARGS --watch` for a verb that queues a job: it must end `done` (exit status 0,
    /// the last line says so). The job with its responses, as the server recorded them.
    pub fn job(&self, args: &[&str]) -> JobView {
        let out = self.ok(&[args, &["--watch"]].concat());
        let id: i64 = out
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("job "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no `job N queued` line: {out}"));
        assert!(
            out.trim_end().ends_with(&format!("job {id} done")),
            "virmoctl {args:?} --watch: {out}"
        );
        let view: JobView = self.json(&["job", &id.to_string()]);
        assert_eq!(view.job.state, JobState::Done, "{view:?}");
        view
    }

    pub fn alerts(&self, device: &str) -> Vec<AlertRecord> {
        self.json(&["alerts", "--device", device, "--limit", "1000"])
    }

    pub fn events(&self, device: &str) -> Vec<Event> {
        self.json(&["events", "--device", device, "--limit", "1000"])
    }

    pub fn vms(&self, device: &str) -> Vec<VmView> {
        self.json(&["vms", device])
    }

    /// Waits until the server's last known view of `vm` satisfies `f` (the server reads the
    /// tree back in the session after a job or an alert).
    pub fn wait_vm(&self, device: &str, vm: &str, what: &str, f: impl Fn(Option<&VmView>) -> bool) {
        wait_until(Duration::from_secs(60), what, || {
            f(self.vms(device).iter().find(|v| v.name == vm))
        });
    }
}

/// A UDP port free on loopback now (for the agent's Pkg#0 listener, named at enrolment).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

/// The agent configuration `virmoctl enroll` printed, with the tests' timing in `[server]`.
pub fn with_test_timing(enrolled: &str) -> String {
    assert!(enrolled.contains("[server]\n"), "{enrolled}");
    enrolled.replacen("[server]\n", &format!("[server]\n{SERVER_TIMING}"), 1)
}

/// `virmo --socket SOCKET ARGS` (the device user's CLI).
pub fn virmo(socket: &Path, args: &[&str]) -> Output {
    Command::new(virmo_cli_bin())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("virmo runs")
}
