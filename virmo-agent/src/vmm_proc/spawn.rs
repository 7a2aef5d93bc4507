//! Starting a VMM, adopting one after a restart, waiting for one to end.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmm::api::client::VmmClient;

use super::jail::VmmJail;
use super::proc_stat::{self, ProcState};
use super::{ExitInfo, ProcessError, POLL};
use crate::layout::VmPaths;
use crate::store::ProcessRecord;

/// The longest path a Unix socket address holds (`sun_path` less the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// The longest vsock socket path the VMM takes (room for `_<port>` after it).
pub const MAX_VSOCK_PATH: usize = 96;

/// A virtio device on the VMM's command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmmDevice {
    Disk {
        id: String,
        path: PathBuf,
        class: &'static str,
    },
    Rng {
        id: String,
    },
    /// A virtio-net on the tap `tap` (made by the agent for a jailed VMM, else by the VMM).
    Net {
        id: String,
        tap: String,
        mac: String,
    },
    /// A virtio-vsock host channel: guest CID `cid`, host side at the Unix socket `uds`.
    Vsock {
        id: String,
        cid: u32,
        uds: PathBuf,
    },
}

/// What to run.
#[derive(Debug, Clone)]
pub enum Launch {
    /// A cold boot.
    Boot {
        kernel: PathBuf,
        initramfs: Option<PathBuf>,
        cmdline: String,
        vcpus: u8,
        memory_mib: u64,
        devices: Vec<VmmDevice>,
    },
    /// `vmm --restore` of a snapshot folder (resume).
    Restore { snapshot: PathBuf },
}

/// A running VMM: the agent's child, or one adopted after a restart.
#[derive(Debug)]
pub struct VmmProcess {
    pub pid: u32,
    pub start_time: u64,
    child: Option<Child>,
    socket: PathBuf,
    vmm_log: PathBuf,
    exited: Option<ExitInfo>,
}

impl VmmProcess {
    /// Starts the VMM of VM `id` as `launch` says, with its files in `paths`, jailed if `jail`
    /// says how. Returns at once (see [`VmmProcess::wait_ready`]).
    pub fn spawn(
        vmm_bin: &Path,
        id: &str,
        paths: &VmPaths,
        launch: &Launch,
        jail: Option<&VmmJail>,
    ) -> Result<Self, ProcessError> {
        let socket_len = paths.socket.as_os_str().len();
        if socket_len > MAX_SOCKET_PATH {
            return Err(ProcessError::SocketPathTooLong(
                paths.socket.display().to_string(),
            ));
        }
        std::fs::create_dir_all(&paths.dir).map_err(ProcessError::Files)?;
        let console_input = open_console_input(&paths.console_in).map_err(ProcessError::Files)?;
        let fresh_boot = matches!(launch, Launch::Boot { .. });
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&paths.console_log)
            .map_err(ProcessError::Files)?;
        if fresh_boot {
            console.set_len(0).map_err(ProcessError::Files)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&paths.vmm_log)
            .map_err(ProcessError::Files)?;
        let log_err = log.try_clone().map_err(ProcessError::Files)?;
        let mut cmd = Command::new(vmm_bin);
        cmd.arg("--api-socket").arg(&paths.socket);
        match launch {
            Launch::Boot {
                kernel,
                initramfs,
                cmdline,
                vcpus,
                memory_mib,
                devices,
            } => {
                cmd.arg("--id").arg(id).arg("--kernel").arg(kernel);
                if let Some(initramfs) = initramfs {
                    cmd.arg("--initramfs").arg(initramfs);
                }
                cmd.args(["--cmdline", cmdline])
                    .args(["--vcpus", &vcpus.to_string()])
                    .args(["--memory-mib", &memory_mib.to_string()])
                    .args(["--console", "stdout"]);
                for device in devices {
                    match device {
                        VmmDevice::Disk { id, path, class } => {
                            cmd.arg("--disk")
                                .arg(format!("id={id},path={},class={class}", path.display()));
                        }
                        VmmDevice::Rng { id } => {
                            cmd.arg("--rng").arg(format!("id={id}"));
                        }
                        VmmDevice::Net { id, tap, mac } => {
                            cmd.arg("--net").arg(format!("id={id},tap={tap},mac={mac}"));
                        }
                        VmmDevice::Vsock { id, cid, uds } => {
                            if uds.as_os_str().len() > MAX_VSOCK_PATH {
                                return Err(ProcessError::SocketPathTooLong(
                                    uds.display().to_string(),
                                ));
                            }
                            cmd.arg("--vsock")
                                .arg(format!("id={id},cid={cid},uds={}", uds.display()));
                        }
                    }
                }
            }
            Launch::Restore { snapshot } => {
                cmd.arg("--restore").arg(snapshot).args([
                    "--memory-restore",
                    "lazy",
                    "--console",
                    "stdout",
                ]);
            }
        }
        if let Some(jail) = jail {
            cmd.arg("--jail").arg(&jail.arg);
        }
        // Its own process group: a signal to the agent's group (a terminal's Ctrl-C, a service
        // manager stopping the agent) does not reach the VM.
        cmd.process_group(0)
            .stdin(Stdio::from(console_input))
            .stdout(Stdio::from(console))
            .stderr(Stdio::from(log_err));
        drop(log);
        let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            bin: vmm_bin.display().to_string(),
            source,
        })?;
        let pid = child.id();
        let start_time = proc_stat::process_start_time(pid).unwrap_or(0);
        tracing::info!(vm = id, pid, "VMM started");
        Ok(Self {
            pid,
            start_time,
            child: Some(child),
            socket: paths.socket.clone(),
            vmm_log: paths.vmm_log.clone(),
            exited: None,
        })
    }

    /// The VMM recorded as `record`, if that very process still runs. Its API is not checked
    /// here.
    pub fn adopt(record: ProcessRecord, paths: &VmPaths) -> Option<Self> {
        if proc_stat::state(record.pid, record.start_time) != ProcState::Alive {
            return None;
        }
        Some(Self {
            pid: record.pid,
            start_time: record.start_time,
            child: None,
            socket: paths.socket.clone(),
            vmm_log: paths.vmm_log.clone(),
            exited: None,
        })
    }

    pub fn record(&self) -> ProcessRecord {
        ProcessRecord {
            pid: self.pid,
            start_time: self.start_time,
        }
    }

    /// Whether the agent started this VMM (rather than adopting it).
    pub fn is_child(&self) -> bool {
        self.child.is_some()
    }

    /// A client of its API socket.
    pub fn client(&self) -> VmmClient {
        VmmClient::new(&self.socket)
    }

    /// Waits until the API answers, or the process ends, or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), ProcessError> {
        let deadline = Instant::now() + timeout;
        let client = self
            .client()
            .with_timeouts(Duration::from_millis(200), Duration::from_secs(2));
        loop {
            if let Some(exit) = self.poll_exit() {
                return Err(ProcessError::ExitedEarly(exit.reason));
            }
            match client.version() {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(ProcessError::NotReady(e)),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// How it ended, if it has (reaps the child; never blocks).
    pub fn poll_exit(&mut self) -> Option<ExitInfo> {
        if self.exited.is_some() {
            return self.exited.clone();
        }
        let code = match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.code()),
                Ok(None) => None,
                Err(_) => Some(None),
            },
            None => match proc_stat::state(self.pid, self.start_time) {
                ProcState::Alive => None,
                ProcState::Gone | ProcState::Zombie => Some(None),
            },
        }?;
        let exit = ExitInfo {
            code,
            reason: last_reason(&self.vmm_log),
        };
        self.exited = Some(exit.clone());
        Some(exit)
    }

    /// Waits up to `timeout` for it to end.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitInfo> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.poll_exit() {
                return Some(exit);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGKILL, then waits for the end (a vCPU stuck in KVM may delay it).
    pub fn kill(&mut self, timeout: Duration) -> Option<ExitInfo> {
        if self.poll_exit().is_none() {
            match &mut self.child {
                Some(child) => {
                    let _ = child.kill();
                }
                None => {
                    if proc_stat::state(self.pid, self.start_time) == ProcState::Alive {
                        let _ = crate::sys::kill(self.pid, crate::sys::SIGKILL);
                    }
                }
            }
        }
        self.wait_exit(timeout)
    }
}

/// The console input FIFO, created if needed and opened read-write (so neither side ever sees
/// end-of-file, and opening does not wait for a peer).
fn open_console_input(path: &Path) -> std::io::Result<std::fs::File> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_fifo() => {}
        Ok(_) => {
            std::fs::remove_file(path)?;
            crate::sys::mkfifo(path, 0o600)?;
        }
        Err(_) => crate::sys::mkfifo(path, 0o600)?,
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// The last `vmm: ` line of the VMM's stderr log (its exit reason), read from the file's end.
pub fn last_reason(log: &Path) -> String {
    let Ok(mut file) = std::fs::File::open(log) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(4096)));
    let mut tail = Vec::new();
    let _ = file.read_to_end(&mut tail);
    String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .find(|line| line.starts_with("vmm: "))
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;
    use crate::test_support::TempDir;

    #[test]
    fn a_process_that_exits_is_seen_with_its_status_and_reason() {
        let dir = TempDir::new();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let paths = layout.vm("v1");
        // A stand-in for the VMM: prints its exit reason on stderr and exits 2.
        let script = dir.path().join("fake-vmm");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'vmm: the guest kernel panicked' >&2\nexit 2\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut process = VmmProcess::spawn(
            &script,
            "v1",
            &paths,
            &Launch::Restore {
                snapshot: paths.snapshot.clone(),
            },
            None,
        )
        .unwrap();
        let exit = process.wait_exit(Duration::from_secs(10)).unwrap();
        assert_eq!(exit.code, Some(2));
        assert_eq!(exit.reason, "vmm: the guest kernel panicked");
        assert!(!exit.is_clean());
        assert!(std::fs::symlink_metadata(&paths.console_in)
            .unwrap()
            .file_type()
            .is_fifo());
        assert!(matches!(
            process.wait_ready(Duration::from_millis(100)),
            Err(ProcessError::ExitedEarly(_))
        ));
    }

    #[test]
    fn a_process_of_its_own_outlives_and_is_adopted_by_its_record() {
        let dir = TempDir::new();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let paths = layout.vm("v2");
        let script = dir.path().join("fake-vmm");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut first = VmmProcess::spawn(
            &script,
            "v2",
            &paths,
            &Launch::Restore {
                snapshot: paths.snapshot.clone(),
            },
            None,
        )
        .unwrap();
        let record = first.record();
        assert!(first.poll_exit().is_none());
        let mut adopted = VmmProcess::adopt(record, &paths).unwrap();
        assert!(!adopted.is_child());
        let stale = ProcessRecord {
            start_time: record.start_time + 1,
            ..record
        };
        assert!(VmmProcess::adopt(stale, &paths).is_none());
        // Killing through the adopted handle; the parent handle reaps it.
        let _ = adopted.kill(Duration::from_millis(10));
        let exit = first.wait_exit(Duration::from_secs(10)).unwrap();
        assert_eq!(exit.code, None, "killed by a signal");
        assert!(adopted.wait_exit(Duration::from_secs(10)).is_some());
    }
}
