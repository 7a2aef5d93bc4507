//! The `vmm` binary: one VM per process.
//!
//! ```text
//! vmm --kernel K [--initramfs I] [--cmdline C] [--vcpus N] [--memory-mib M]
//!     [--console stdout|none|file:PATH] [--bzimage-boot pvh|linux] [--api-socket PATH] [--id ID]
//!     [--seccomp on|off|log] [--jail DIR,uid=N,gid=N[,…]]
//!     [--disk id=ID,path=P[,class=storage|removable-storage][,read-only]]…
//!     [--net id=ID,tap=NAME[,mac=M]]… [--rng id=ID]… [--vsock [id=ID,]cid=N,uds=PATH]
//!     [--prohibit CLASS]…
//! vmm --config vm.json [--prohibit CLASS]…
//! vmm --restore DIR [--memory-restore lazy|eager|hot] [--api-socket PATH] [--console C]
//!     [--vcpus N] [--memory-mib M]
//! ```
//!
//! `--restore` continues a VM saved by `PUT /v1/vm/snapshot` (suspend) in `DIR`; `--vcpus` and
//! `--memory-mib`, when given, must match the snapshot.
//!
//! `--jail` confines the process first thing (namespaces, a root holding only the VM's files,
//! an unprivileged uid, no capabilities, cgroup limits): `vmm::jail`, docs/security.md.
//!
//! Every thread runs under its seccomp filter (`vmm::seccomp`; `--seccomp off` disables them,
//! `--seccomp log` only logs what they would refuse).
//!
//! Exit statuses are listed in [`vmm::exit_status`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;

use vmm::api::server::ApiServer;
use vmm::config::{
    parse_class, parse_disk, parse_net, parse_rng, parse_vsock, prohibit_classes, BzImageBoot,
    ConsoleConfig, VmConfig, DEFAULT_CMDLINE,
};
use vmm::devices::virtio::{DeviceClass, DeviceConfig};
use vmm::exit_status;
use vmm::jail::{JailConfig, SocketFile, VmNeeds};
use vmm::seccomp::{self, SeccompMode, ThreadClass};
use vmm::snapshot::MemoryRestore;
use vmm::vmm::restore::RestoreOptions;
use vmm::vmm::{Launch, Vmm};

/// Runs one KVM virtual machine.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// A JSON VM config; excludes the other VM options.
    #[arg(long, conflicts_with_all = ["kernel", "initramfs", "cmdline", "vcpus", "memory_mib", "console", "bzimage_boot", "id", "disks", "nets", "rngs", "vsock", "restore"])]
    config: Option<PathBuf>,
    /// Continue the VM saved in this snapshot folder (no kernel is loaded; the devices are the
    /// saved VM's).
    #[arg(long, conflicts_with_all = ["kernel", "initramfs", "cmdline", "id", "disks", "nets", "rngs", "vsock", "prohibit"])]
    restore: Option<PathBuf>,
    /// With --restore: map the memory file and load pages on first touch (lazy), or read it all
    /// before the guest runs (eager).
    #[arg(long, requires = "restore", value_parser = parse_memory_restore)]
    memory_restore: Option<MemoryRestore>,
    /// Kernel: a bzImage, or an ELF vmlinux with a PVH entry point.
    #[arg(long, required_unless_present_any = ["config", "restore"])]
    kernel: Option<PathBuf>,
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = DEFAULT_CMDLINE)]
    cmdline: String,
    /// vCPUs, 1 up to what KVM allows and at most 255 (the MADT's xAPIC IDs) [default: 1; with
    /// --restore: the snapshot's, and another count is refused].
    #[arg(long)]
    vcpus: Option<u32>,
    /// Guest memory in MiB [default: 256; with --restore: the snapshot's, and another size is
    /// refused].
    #[arg(long)]
    memory_mib: Option<u64>,
    /// stdout, none or file:PATH [default: stdout; with --restore: as saved].
    #[arg(long)]
    console: Option<ConsoleConfig>,
    /// How a bzImage is entered: pvh (the VMM decompresses it; the fast path) or linux (the
    /// Linux boot protocol; the kernel decompresses itself).
    #[arg(long, default_value = "pvh")]
    bzimage_boot: BzImageBoot,
    /// Serve the control API on this Unix socket (overrides the config file's).
    #[arg(long)]
    api_socket: Option<PathBuf>,
    /// The VM's ID.
    #[arg(long, default_value = "vm")]
    id: String,
    /// A virtio disk: id=ID,path=P[,class=storage|removable-storage][,read-only] (repeatable).
    #[arg(long = "disk", value_parser = parse_disk)]
    disks: Vec<DeviceConfig>,
    /// A virtio NIC on a tap: id=ID,tap=NAME[,mac=M] (repeatable).
    #[arg(long = "net", value_parser = parse_net)]
    nets: Vec<DeviceConfig>,
    /// A virtio entropy device: id=ID (repeatable).
    #[arg(long = "rng", value_parser = parse_rng)]
    rngs: Vec<DeviceConfig>,
    /// A virtio-vsock host channel: [id=ID,]cid=N,uds=PATH (guest port P reaches PATH_P; host
    /// processes reach the guest by connecting to PATH and writing `CONNECT <port>\n`).
    #[arg(long = "vsock", value_parser = parse_vsock)]
    vsock: Option<DeviceConfig>,
    /// Boot-time policy: devices of this class are not created (still listed, not allowed).
    /// storage, removable-storage, network, entropy or host-channel; repeatable; also applies
    /// to --config.
    #[arg(long = "prohibit", value_parser = parse_class)]
    prohibit: Vec<DeviceClass>,
    /// Seccomp filters per thread: on (a syscall outside a thread's allow-list kills the
    /// process), off, or log (allowed, and logged by the kernel; for diagnosis).
    #[arg(long, default_value_t = SeccompMode::On)]
    seccomp: SeccompMode,
    /// Run jailed: DIR,uid=N,gid=N[,bind=PATH][,bind-ro=PATH][,net=new|host][,cgroup=NAME]
    /// [,cgroup-mount=PATH][,memory-mib=N][,cpu-percent=N][,nofile=N] (docs/security.md).
    #[arg(long)]
    jail: Option<JailConfig>,
}

/// What to run, decided from the command line before anything is created.
enum Plan {
    Boot(VmConfig),
    Restore(RestoreOptions),
}

impl Plan {
    fn api_socket(&self) -> Option<&Path> {
        match self {
            Plan::Boot(config) => config.api_socket.as_deref(),
            Plan::Restore(options) => options.api_socket.as_deref(),
        }
    }

    /// What the VMM opens once jailed.
    fn needs(&self) -> VmNeeds {
        match self {
            Plan::Boot(config) => VmNeeds::boot(config),
            Plan::Restore(options) => VmNeeds::restore(&options.dir, options.console.as_ref()),
        }
    }
}

impl Cli {
    fn into_plan(self) -> anyhow::Result<Plan> {
        Ok(match self.restore.clone() {
            Some(dir) => Plan::Restore(RestoreOptions {
                dir,
                memory: self.memory_restore.unwrap_or(MemoryRestore::Lazy),
                vcpus: vcpus_arg(self.vcpus)?,
                memory_mib: self.memory_mib,
                console: self.console,
                api_socket: self.api_socket,
            }),
            None => Plan::Boot(self.into_config()?),
        })
    }

    fn into_config(self) -> anyhow::Result<VmConfig> {
        // (`--seccomp` is a process setting, not part of the VM's config.)
        let mut config = match self.config {
            Some(path) => VmConfig::from_json_file(&path)?,
            None => VmConfig {
                id: self.id,
                kernel: self.kernel.context("--kernel is required")?,
                initramfs: self.initramfs,
                cmdline: self.cmdline,
                vcpus: vcpus_arg(self.vcpus)?.unwrap_or(1),
                memory_mib: self.memory_mib.unwrap_or(256),
                console: self.console.unwrap_or_default(),
                bzimage_boot: self.bzimage_boot,
                api_socket: None,
                devices: self
                    .disks
                    .into_iter()
                    .chain(self.nets)
                    .chain(self.rngs)
                    .chain(self.vsock)
                    .collect(),
            },
        };
        prohibit_classes(&mut config.devices, &self.prohibit);
        if self.api_socket.is_some() {
            config.api_socket = self.api_socket;
        }
        Ok(config)
    }
}

/// `--vcpus` as the VM config holds it; beyond 255 is refused by name.
fn vcpus_arg(vcpus: Option<u32>) -> anyhow::Result<Option<u8>> {
    vcpus
        .map(|n| {
            u8::try_from(n).map_err(|_| {
                anyhow::anyhow!(
                    "--vcpus {n}: more vCPUs than this VMM supports (255: xAPIC IDs in the MADT)"
                )
            })
        })
        .transpose()
}

/// Warnings and worse, but nothing from `virtio-queue`: every one of its messages is about a
/// guest's bad ring or queue set-up, which a guest can repeat as fast as it likes; the device
/// code counts them and logs them rate-limited (`devices::virtio::guest_log`).
const DEFAULT_LOG_FILTER: &str = "warn,virtio_queue=off";

fn main() -> ExitCode {
    let started = Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .init();

    // clap exits with 2 on usage errors, which is our "guest panic" status: map them to 1.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(exit_status::BAD_CONFIG as u8),
            };
        }
    };
    warn_if_software_kvm();
    let seccomp_mode = cli.seccomp;
    let jail = cli.jail.clone();
    // Unjailed, the KVM VM is created while the rest of the VM is prepared; jailed, after the
    // jail is set up (the set-up thread would stop the process from forking into its jail).
    let mut launch = None;
    if jail.is_none() {
        launch = match begin(started) {
            Ok(launch) => Some(launch),
            Err(code) => return code,
        };
    }
    let prepared = cli.into_plan().and_then(|plan| {
        let api = bind_api(plan.api_socket())?;
        if let Some(jail) = &jail {
            let socket = match &api {
                Some(api) => Some(SocketFile::of(api.path().to_path_buf())?),
                None => None,
            };
            vmm::jail::enter(jail, &plan.needs(), socket).context("cannot jail the VMM")?;
        }
        Ok((plan, api))
    });
    let (plan, api) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            eprintln!("vmm: error: {e:#}");
            return ExitCode::from(exit_status::BAD_CONFIG as u8);
        }
    };
    let launch = match launch.map_or_else(|| begin(started), Ok) {
        Ok(launch) => launch,
        Err(code) => return code,
    };
    let vmm = match start(plan, api, seccomp_mode, launch) {
        Ok(vmm) => vmm,
        Err(e) => {
            eprintln!("vmm: error: {e:#}");
            return ExitCode::from(exit_status::BAD_CONFIG as u8);
        }
    };
    // The VM is built and its threads run: from here the main thread only waits and ends it.
    seccomp::confine_current_thread(ThreadClass::Main);
    let reason = vmm.wait();
    vmm.shut_down();
    if let Some(path) = &vmm.config().api_socket {
        let _ = std::fs::remove_file(path);
    }
    eprintln!("vmm: {reason}");
    // Exit without unwinding the other threads (the API server, stdin reader).
    std::process::exit(reason.exit_status());
}

/// Starts creating the KVM VM (`Launch::begin`); an error ends `main` with status 1.
fn begin(started: Instant) -> Result<Launch, ExitCode> {
    Launch::begin(started).map_err(|e| {
        eprintln!("vmm: error: {}", vmm::error_chain(&e));
        ExitCode::from(exit_status::BAD_CONFIG as u8)
    })
}

/// Where this module is loaded, `/dev/kvm` is a software KVM: it emulates every guest instruction,
/// and a stock Linux guest spends minutes decompressing, then stops with an emulation failure.
const SOFTWARE_KVM_MODULE: &str = "/sys/module/kvm_pvm";

/// Says at once, before a silent wait, that this host's KVM cannot boot a stock guest.
fn warn_if_software_kvm() {
    if std::path::Path::new(SOFTWARE_KVM_MODULE).exists() {
        eprintln!(
            "vmm: warning: this host's /dev/kvm is a software KVM (kvm_pvm): it emulates guest \
             code, and a stock Linux guest will not boot here (minutes of silence, then an \
             emulation failure). Run guests in the nested-KVM runner instead: `cargo xtask demo`, \
             or `cargo xtask runner -- /virmo/bin/vmm ...` (docs/runner.md)."
        );
    }
}

fn parse_memory_restore(text: &str) -> Result<MemoryRestore, String> {
    match text {
        "lazy" => Ok(MemoryRestore::Lazy),
        "eager" => Ok(MemoryRestore::Eager),
        "hot" => Ok(MemoryRestore::Hot),
        other => Err(format!("{other:?} is not lazy, eager or hot")),
    }
}

fn start(
    plan: Plan,
    api: Option<ApiServer>,
    seccomp_mode: SeccompMode,
    launch: Launch,
) -> anyhow::Result<Arc<Vmm>> {
    // Before any thread starts: each confines itself with these filters. They build on a
    // thread of their own while the VM is prepared; `ready` below collects them.
    seccomp::init(seccomp_mode).context("cannot set up the seccomp filters")?;
    let vmm = match plan {
        Plan::Restore(options) => {
            let vmm = Vmm::restore(&options, launch, Box::new(|_| Ok(())))
                .with_context(|| format!("cannot restore the VM from {}", options.dir.display()))?;
            // Every log line of this VM carries its ID (the span is kept for the process's life).
            std::mem::forget(tracing::info_span!("vm", id = %vmm.config().id).entered());
            vmm
        }
        Plan::Boot(config) => {
            // Every log line of this VM carries its ID (the span is kept for the process's life).
            std::mem::forget(tracing::info_span!("vm", id = %config.id).entered());
            Vmm::build_with_devices(config, launch, Box::new(|_| Ok(())))?
        }
    };
    seccomp::ready().context("cannot set up the seccomp filters")?;
    let vmm = serve(Arc::new(vmm), api)?;
    vmm.start()?;
    Ok(vmm)
}

fn bind_api(path: Option<&Path>) -> anyhow::Result<Option<ApiServer>> {
    Ok(match path {
        Some(path) => Some(ApiServer::bind(path)?),
        None => None,
    })
}

/// Serves the API; after the answer to a suspend is flushed, the VM stops and `main` exits.
fn serve(vmm: Arc<Vmm>, api: Option<ApiServer>) -> anyhow::Result<Arc<Vmm>> {
    if let Some(api) = api {
        let hook_vmm = Arc::clone(&vmm);
        api.after_response(move |request, result| hook_vmm.after_answer(request, result))
            .spawn(vmm.clone())?;
    }
    Ok(vmm)
}
