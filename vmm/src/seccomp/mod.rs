//! Seccomp filters per thread, the way Firecracker confines its threads: each thread of the VMM
//! installs the allow-list of its class right after it starts, before it handles anything a
//! guest or a client sent; any other syscall kills the process (or, in [`SeccompMode::Log`], is
//! allowed and logged by the kernel, for diagnosis). The filters are BPF programs built with
//! `seccompiler`; `ioctl` is allowed only with the KVM requests each thread needs.
//!
//! Filters are per thread (no `TSYNC`), and a thread started by a confined thread inherits its
//! filter: the API's connection threads run under the API filter.
//!
//! The binary calls [`init`] once with the mode from `--seccomp`, before any thread starts: the
//! filters compile on a thread of their own while the VM is prepared, and [`ready`] reports
//! whether they built; thread entry points call [`confine_current_thread`] (which waits for
//! them). Without [`init`] (library use, tests) threads run unconfined. See docs/seccomp.md.

mod classes;
mod kvm_ioctls;
mod rules;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

use crate::exit_status;

/// Whether and how threads are confined (`vmm --seccomp on|off|log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeccompMode {
    /// A syscall outside the thread's allow-list kills the process with `SIGSYS`.
    #[default]
    On,
    /// No filters.
    Off,
    /// Syscalls outside the allow-lists are allowed and logged by the kernel (audit, `dmesg`).
    Log,
}

impl std::str::FromStr for SeccompMode {
    type Err = SeccompError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            "log" => Ok(Self::Log),
            other => Err(SeccompError::UnknownMode(other.to_owned())),
        }
    }
}

impl std::fmt::Display for SeccompMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Log => "log",
        })
    }
}

/// The kinds of threads of a VMM process, each with its own allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThreadClass {
    /// The main thread once the VM is built and started.
    Main,
    /// A vCPU thread (`KVM_RUN` loop, port/MMIO device emulation).
    Vcpu,
    /// The API server's accept thread and its connection threads.
    Api,
    /// The stdin reader feeding the console.
    ConsoleInput,
    /// The virtio devices' event loop.
    VirtioEvents,
}

impl ThreadClass {
    pub const ALL: [ThreadClass; 5] = [
        Self::Main,
        Self::Vcpu,
        Self::Api,
        Self::ConsoleInput,
        Self::VirtioEvents,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Vcpu => "vcpu",
            Self::Api => "api",
            Self::ConsoleInput => "console-input",
            Self::VirtioEvents => "virtio-events",
        }
    }
}

/// Why filters could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("unknown seccomp mode `{0}` (expected on, off or log)")]
    UnknownMode(String),
    #[error("invalid seccomp rule")]
    Rule(#[source] seccompiler::BackendError),
    #[error("cannot build the seccomp filter of the {class} thread")]
    Build {
        class: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("cannot compile the seccomp filter of the {class} thread to BPF")]
    Compile {
        class: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("cannot install the seccomp filter of the {class} thread")]
    Install {
        class: &'static str,
        #[source]
        source: seccompiler::Error,
    },
    #[error("seccomp filters were already set up for this process")]
    AlreadyInitialised,
    #[error("cannot start the thread that builds the seccomp filters")]
    CompileThread(#[source] std::io::Error),
    #[error("the thread that builds the seccomp filters panicked")]
    CompileThreadPanicked,
}

/// The compiled filters of every thread class (empty in [`SeccompMode::Off`]).
#[derive(Debug)]
pub struct SeccompFilters {
    mode: SeccompMode,
    programs: HashMap<ThreadClass, BpfProgram>,
}

impl SeccompFilters {
    /// Builds and compiles the filter of every class for `mode`.
    pub fn build(mode: SeccompMode) -> Result<Self, SeccompError> {
        let mismatch = match mode {
            SeccompMode::Off => {
                return Ok(Self {
                    mode,
                    programs: HashMap::new(),
                })
            }
            SeccompMode::On => SeccompAction::KillProcess,
            SeccompMode::Log => SeccompAction::Log,
        };
        let mut programs = HashMap::new();
        for class in ThreadClass::ALL {
            let rules = classes::allow_list(class).to_seccompiler()?;
            let filter = SeccompFilter::new(
                rules,
                mismatch.clone(),
                SeccompAction::Allow,
                TargetArch::x86_64,
            )
            .map_err(|source| SeccompError::Build {
                class: class.name(),
                source,
            })?;
            let program = BpfProgram::try_from(filter).map_err(|source| SeccompError::Compile {
                class: class.name(),
                source,
            })?;
            programs.insert(class, program);
        }
        Ok(Self { mode, programs })
    }

    pub fn mode(&self) -> SeccompMode {
        self.mode
    }

    /// Installs the filter of `class` on the calling thread (nothing in [`SeccompMode::Off`]).
    /// It cannot be removed; threads this thread starts inherit it.
    pub fn apply(&self, class: ThreadClass) -> Result<(), SeccompError> {
        let Some(program) = self.programs.get(&class) else {
            return Ok(());
        };
        seccompiler::apply_filter(program).map_err(|source| SeccompError::Install {
            class: class.name(),
            source,
        })
    }
}

static FILTERS: OnceLock<SeccompFilters> = OnceLock::new();

/// The filters [`init`] is compiling, until [`ready`] collects them.
static COMPILING: Mutex<Option<JoinHandle<Result<SeccompFilters, SeccompError>>>> =
    Mutex::new(None);

/// Starts building the filters for this process on a thread of its own (`vmm-seccomp`, which
/// only compiles BPF and ends), so the VMM prepares its VM meanwhile; [`ready`] waits for them
/// and [`confine_current_thread`] installs them. Call once, before the VM's threads start.
pub fn init(mode: SeccompMode) -> Result<(), SeccompError> {
    let mut compiling = COMPILING.lock().unwrap_or_else(PoisonError::into_inner);
    if compiling.is_some() || FILTERS.get().is_some() {
        return Err(SeccompError::AlreadyInitialised);
    }
    let handle = std::thread::Builder::new()
        .name("vmm-seccomp".into())
        .spawn(move || SeccompFilters::build(mode))
        .map_err(SeccompError::CompileThread)?;
    *compiling = Some(handle);
    Ok(())
}

/// Waits until the filters [`init`] started are built; their build error if any. Without
/// [`init`], returns at once.
pub fn ready() -> Result<(), SeccompError> {
    let mut compiling = COMPILING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = compiling.take() {
        let filters = handle
            .join()
            .map_err(|_| SeccompError::CompileThreadPanicked)??;
        FILTERS
            .set(filters)
            .map_err(|_| SeccompError::AlreadyInitialised)?;
    }
    Ok(())
}

/// Installs the filter of `class` on the calling thread if [`init`] was called (waiting for
/// it to be built). A thread asked to run confined never runs unconfined: if the filter cannot
/// be built or installed, the process ends with [`exit_status::VMM_ERROR`].
pub fn confine_current_thread(class: ThreadClass) {
    if let Err(e) = ready() {
        eprintln!("vmm: error: {}", crate::error_chain(&e));
        std::process::exit(exit_status::VMM_ERROR);
    }
    let Some(filters) = FILTERS.get() else {
        return;
    };
    if let Err(e) = filters.apply(class) {
        eprintln!("vmm: error: {}", crate::error_chain(&e));
        std::process::exit(exit_status::VMM_ERROR);
    }
    tracing::debug!(class = class.name(), mode = %filters.mode, "seccomp filter installed");
}
