//! Shared helpers of the end-to-end tests: where the VMM binary and the guest images are, and a
//! running guest whose console can be awaited line by line.
//!
//! These tests boot real guests on real KVM. `cargo xtask test` runs them directly where the host's
//! KVM is hardware-backed and inside the nested-KVM runner otherwise, and tells them where things are
//! through `VIRMO_VMM_BIN` and `VIRMO_IMAGES_DIR`. Run any other way, they fail with a message saying
//! so: never a silent pass without KVM.

pub mod agent;
pub mod dm_server;
pub mod product;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod stress;
pub mod vsock;

/// Exit statuses of the `vmm` process (docs/vmm.md).
pub mod exit_status {
    pub const OK: i32 = 0;
    pub const BAD_CONFIG: i32 = 1;
    pub const GUEST_PANIC: i32 = 2;
    pub const TRIPLE_FAULT: i32 = 3;
    pub const KVM_ERROR: i32 = 4;
}

/// Where the VMM binary and the guest images are.
#[derive(Debug, Clone)]
pub struct TestEnv {
    pub vmm: PathBuf,
    pub images: PathBuf,
}

impl TestEnv {
    /// Reads the environment set by `cargo xtask test`; panics (fails the test) when it is missing
    /// or when there is no /dev/kvm.
    pub fn get() -> Self {
        let var = |name: &str| {
            std::env::var_os(name).map(PathBuf::from).unwrap_or_else(|| {
                panic!("{name} is not set: run the integration tests with `cargo xtask test`, which boots real guests on KVM (nested if need be)")
            })
        };
        let env = Self {
            vmm: var("VIRMO_VMM_BIN"),
            images: var("VIRMO_IMAGES_DIR"),
        };
        assert!(
            Path::new("/dev/kvm").exists(),
            "/dev/kvm is missing: these tests need KVM"
        );
        assert!(env.vmm.exists(), "no vmm binary at {}", env.vmm.display());
        env
    }

    pub fn bzimage(&self) -> PathBuf {
        self.images.join("bzImage")
    }

    pub fn vmlinux(&self) -> PathBuf {
        self.images.join("vmlinux")
    }

    pub fn initramfs(&self) -> PathBuf {
        self.images.join("initramfs.cpio.gz")
    }

    /// A VMM command line for the test guest running `scenario`.
    pub fn guest(&self, scenario: &str) -> GuestBuilder {
        GuestBuilder {
            env: self.clone(),
            kernel: self.bzimage(),
            initramfs: Some(self.initramfs()),
            cmdline: format!("console=ttyS0 quiet panic=-1 virmo.scenario={scenario}"),
            vcpus: 1,
            memory_mib: 128,
            api_socket: true,
            stdin: false,
            extra: Vec::new(),
        }
    }

    /// A VMM command line restoring the VM saved in the snapshot folder `snapshot`
    /// (`vmm --restore`), with an API socket of its own.
    pub fn restore(&self, snapshot: &Path) -> RestoreBuilder {
        RestoreBuilder {
            env: self.clone(),
            snapshot: snapshot.to_path_buf(),
            memory_restore: None,
            stdin: false,
            extra: Vec::new(),
        }
    }
}

/// How to start one VMM process.
pub struct GuestBuilder {
    env: TestEnv,
    pub kernel: PathBuf,
    pub initramfs: Option<PathBuf>,
    pub cmdline: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub api_socket: bool,
    /// Pipe the VMM's stdin (the guest's console input) so the test can type: [`Guest::send`].
    pub stdin: bool,
    pub extra: Vec<String>,
}

impl GuestBuilder {
    /// Lets the test type on the guest's console ([`Guest::send`]).
    pub fn with_console_input(mut self) -> Self {
        self.stdin = true;
        self
    }
    /// Replaces the kernel command line.
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.cmdline = cmdline.into();
        self
    }
    pub fn vcpus(mut self, n: u32) -> Self {
        self.vcpus = n;
        self
    }
    pub fn memory_mib(mut self, n: u64) -> Self {
        self.memory_mib = n;
        self
    }
    pub fn kernel(mut self, path: impl Into<PathBuf>) -> Self {
        self.kernel = path.into();
        self
    }
    pub fn initramfs(mut self, path: Option<PathBuf>) -> Self {
        self.initramfs = path;
        self
    }
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// Starts the VMM; its console (stdout) and stderr are collected.
    pub fn spawn(self) -> Guest {
        let dir = TempDir::new("guest");
        let socket = dir.path().join("api.sock");
        let mut cmd = Command::new(&self.env.vmm);
        cmd.arg("--kernel").arg(&self.kernel);
        if let Some(initramfs) = &self.initramfs {
            cmd.arg("--initramfs").arg(initramfs);
        }
        cmd.args(["--cmdline", &self.cmdline])
            .args(["--vcpus", &self.vcpus.to_string()])
            .args(["--memory-mib", &self.memory_mib.to_string()]);
        if self.api_socket {
            cmd.arg("--api-socket").arg(&socket);
        }
        cmd.args(&self.extra);
        Guest::spawn(cmd, socket, dir, self.stdin)
    }
}

/// How to start a VMM process that restores a snapshot.
pub struct RestoreBuilder {
    env: TestEnv,
    pub snapshot: PathBuf,
    /// `lazy` or `eager`; none: the VMM's default.
    pub memory_restore: Option<String>,
    pub stdin: bool,
    pub extra: Vec<String>,
}

impl RestoreBuilder {
    pub fn memory_restore(mut self, mode: &str) -> Self {
        self.memory_restore = Some(mode.to_string());
        self
    }
    pub fn with_console_input(mut self) -> Self {
        self.stdin = true;
        self
    }
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// Starts the VMM; its console (stdout) and stderr are collected.
    pub fn spawn(self) -> Guest {
        let dir = TempDir::new("restored");
        let socket = dir.path().join("api.sock");
        let mut cmd = Command::new(&self.env.vmm);
        cmd.arg("--restore").arg(&self.snapshot);
        if let Some(mode) = &self.memory_restore {
            cmd.args(["--memory-restore", mode]);
        }
        cmd.arg("--api-socket").arg(&socket);
        cmd.args(&self.extra);
        Guest::spawn(cmd, socket, dir, self.stdin)
    }
}

/// A running VMM process and its console.
pub struct Guest {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Everything printed so far (console and stderr), for failure messages.
    pub transcript: Arc<Mutex<Vec<String>>>,
    pub api_socket: PathBuf,
    _dir: TempDir,
}

impl Guest {
    /// A client of this guest's VMM API, once it answers (within 10 s).
    pub fn api_client(&self) -> vmm::api::client::VmmClient {
        let client = vmm::api::client::VmmClient::new(&self.api_socket);
        client
            .wait_ready(Duration::from_secs(10))
            .expect("API ready");
        client
    }

    fn spawn(mut cmd: Command, api_socket: PathBuf, dir: TempDir, stdin: bool) -> Self {
        let mut child = cmd
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the vmm process");
        let (tx, rx) = mpsc::channel();
        let transcript = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for (stream, tag) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, ""),
            (Box::new(stderr), "[vmm stderr] "),
        ] {
            let tx = tx.clone();
            let transcript = transcript.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).split(b'\n') {
                    let Ok(line) = line else { break };
                    let text = String::from_utf8_lossy(&line)
                        .trim_end_matches('\r')
                        .to_string();
                    transcript.lock().unwrap().push(format!("{tag}{text}"));
                    let _ = tx.send(format!("{tag}{text}"));
                }
            });
        }
        Self {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            transcript,
            api_socket,
            _dir: dir,
        }
    }

    /// Waits for a console line starting with `prefix`; returns the rest of the line.
    pub fn wait_for(&mut self, prefix: &str, timeout: Duration) -> String {
        self.try_wait_for(prefix, timeout).unwrap_or_else(|| {
            panic!(
                "no line starting with {prefix:?} within {timeout:?}; output so far:\n{}",
                self.transcript()
            )
        })
    }

    /// Like [`Guest::wait_for`], but `None` on timeout or end of output.
    pub fn try_wait_for(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(pos) = line.find(prefix) {
                        return Some(line[pos + prefix.len()..].to_string());
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None
                }
            }
        }
    }

    /// Console lines received so far and not yet consumed by a wait.
    pub fn drain(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Waits for the VMM process to end; `None` if it still runs after `timeout`.
    pub fn try_wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for vmm") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the VMM process to end (kills it and fails the test after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.try_wait_exit(timeout).unwrap_or_else(|| {
            let _ = self.child.kill();
            panic!(
                "the vmm did not exit within {timeout:?}; output:\n{}",
                self.transcript()
            )
        })
    }

    /// Types `text` on the guest's console (needs `with_console_input`).
    pub fn send(&mut self, text: &str) {
        let stdin = self
            .stdin
            .as_mut()
            .expect("the guest was started without console input");
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .expect("write to the guest's console");
    }

    /// Kills the VMM process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the VMM process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait for vmm").is_none()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn transcript(&self) -> String {
        self.transcript.lock().unwrap().join("\n")
    }

    /// Every line printed so far (console and stderr), consumed by waits or not.
    pub fn transcript_lines(&self) -> Vec<String> {
        self.transcript.lock().unwrap().clone()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        // A VMM whose vCPU thread is stuck inside KVM cannot die until KVM returns; never let
        // that hang the test run: give it 10 s, then leave it behind.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "virmo-tests: vmm process {} did not exit after SIGKILL; left behind",
            self.child.id()
        );
    }
}

/// The names in a folder (none when it does not exist).
pub fn dir_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The exit code of a finished process (panics when it was killed by a signal).
pub fn code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| panic!("the process was killed by a signal: {status:?}"))
}

/// CRC-32 (IEEE), as in snapshot manifests (bitwise: test data is small).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("virmo-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_matches_the_ieee_check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(super::crc32(b""), 0);
    }
}
