//! The vCPU threads: one per vCPU, each running [`Vcpu::run_once`] in a loop, with pause/resume.
//!
//! A pause (or exit) request sets the shared wish, then kicks every thread with a real-time
//! signal whose handler sets `kvm_run.immediate_exit`, so a thread about to enter `KVM_RUN`
//! returns at once and one inside it leaves it. A thread that sees the pause wish completes its
//! pending I/O and parks; [`VcpuSet::pause`] returns when all threads are parked (or gone).

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;

use kvm_bindings::kvm_run;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::vcpu::{Vcpu, VcpuEvent};
use crate::stop::{StopReason, StopSignal};

/// Why the vCPU threads could not be started or controlled.
#[derive(Debug, thiserror::Error)]
pub enum VcpuThreadError {
    #[error("cannot install the vCPU kick signal handler")]
    SignalHandler(#[source] vmm_sys_util::errno::Error),
    #[error("cannot start the thread of vCPU {index}")]
    Spawn {
        index: u8,
        #[source]
        source: std::io::Error,
    },
}

const WISH_RUN: u8 = 0;
const WISH_PAUSE: u8 = 1;
const WISH_EXIT: u8 = 2;

/// The signal used to kick vCPU threads out of `KVM_RUN`.
fn kick_signal() -> i32 {
    SIGRTMIN()
}

thread_local! {
    /// This thread's `kvm_run`, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is this thread's own kvm_run mapping, set by the vCPU thread
        // before it first runs and valid while the VcpuFd lives (the thread holds an Arc to it).
        // A single byte store is async-signal-safe.
        unsafe { (*run).immediate_exit = 1 };
    }
}

fn install_kick_handler() -> Result<(), VcpuThreadError> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = register_signal_handler(kick_signal(), handle_kick)
            .map_err(VcpuThreadError::SignalHandler);
    });
    result
}

/// Shared between the controller and the vCPU threads.
struct RunControl {
    /// WISH_RUN / WISH_PAUSE / WISH_EXIT, read lock-free on every exit.
    wish: AtomicU8,
    /// Number of threads parked or finished, under the lock.
    parked: Mutex<usize>,
    changed: Condvar,
}

impl RunControl {
    fn lock(&self) -> MutexGuard<'_, usize> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running vCPUs.
pub struct VcpuSet {
    vcpus: Vec<Arc<Mutex<Vcpu>>>,
    threads: Vec<JoinHandle<()>>,
    control: Arc<RunControl>,
}

impl VcpuSet {
    /// Starts one thread per vCPU. A vCPU that stops the VM (triple fault, KVM error, reset)
    /// raises the reason on `stop`.
    pub fn start(vcpus: Vec<Vcpu>, stop: Arc<StopSignal>) -> Result<Self, VcpuThreadError> {
        install_kick_handler()?;
        let control = Arc::new(RunControl {
            wish: AtomicU8::new(WISH_RUN),
            parked: Mutex::new(0),
            changed: Condvar::new(),
        });
        let vcpus: Vec<_> = vcpus.into_iter().map(|v| Arc::new(Mutex::new(v))).collect();
        let mut set = Self {
            vcpus: Vec::new(),
            threads: Vec::new(),
            control,
        };
        for vcpu in vcpus {
            let index = vcpu.lock().unwrap_or_else(|p| p.into_inner()).index();
            let thread_vcpu = Arc::clone(&vcpu);
            let thread_control = Arc::clone(&set.control);
            let thread_stop = Arc::clone(&stop);
            // Log lines of the vCPU carry the caller's span (the VM's ID) and the vCPU index.
            let span = tracing::info_span!(parent: tracing::Span::current(), "vcpu", index);
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || {
                    let _span = span.entered();
                    vcpu_thread(thread_vcpu, thread_control, thread_stop)
                });
            match spawned {
                Ok(handle) => {
                    set.vcpus.push(vcpu);
                    set.threads.push(handle);
                }
                Err(source) => {
                    set.exit();
                    return Err(VcpuThreadError::Spawn { index, source });
                }
            }
        }
        Ok(set)
    }

    /// The vCPUs. Lock one only while paused, or it waits for the vCPU's next exit.
    pub fn vcpus(&self) -> &[Arc<Mutex<Vcpu>>] {
        &self.vcpus
    }

    fn kick_all(&self) {
        for thread in &self.threads {
            // A thread that already finished cannot be signalled; that is fine.
            let _ = thread.kill(kick_signal());
        }
    }

    /// Parks every vCPU at a safe point; returns when all are parked.
    pub fn pause(&self) {
        self.control.wish.store(WISH_PAUSE, Ordering::SeqCst);
        self.kick_all();
        let mut parked = self.control.lock();
        while *parked < self.threads.len() {
            parked = self
                .control
                .changed
                .wait(parked)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Lets parked vCPUs run again.
    pub fn resume(&self) {
        let _guard = self.control.lock();
        self.control.wish.store(WISH_RUN, Ordering::SeqCst);
        self.control.changed.notify_all();
    }

    /// Stops every vCPU thread and waits for them.
    pub fn exit(&mut self) {
        {
            let _guard = self.control.lock();
            self.control.wish.store(WISH_EXIT, Ordering::SeqCst);
            self.control.changed.notify_all();
        }
        self.kick_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for VcpuSet {
    fn drop(&mut self) {
        self.exit();
    }
}

/// Waits while the wish is "pause"; returns false when the thread must end.
fn park_if_asked(vcpu: &Mutex<Vcpu>, control: &RunControl) -> bool {
    match control.wish.load(Ordering::SeqCst) {
        WISH_RUN => return true,
        WISH_EXIT => return false,
        _ => {}
    }
    {
        let mut vcpu = vcpu.lock().unwrap_or_else(|p| p.into_inner());
        vcpu.complete_pending_io();
        vcpu.notify_paused();
    }
    let mut parked = control.lock();
    *parked += 1;
    control.changed.notify_all();
    loop {
        match control.wish.load(Ordering::SeqCst) {
            WISH_PAUSE => {
                parked = control
                    .changed
                    .wait(parked)
                    .unwrap_or_else(|p| p.into_inner());
            }
            wish => {
                *parked -= 1;
                return wish == WISH_RUN;
            }
        }
    }
}

fn vcpu_thread(vcpu: Arc<Mutex<Vcpu>>, control: Arc<RunControl>, stop: Arc<StopSignal>) {
    crate::seccomp::confine_current_thread(crate::seccomp::ThreadClass::Vcpu);
    let index = {
        let mut guard = vcpu.lock().unwrap_or_else(|p| p.into_inner());
        let run: *mut kvm_run = guard.fd_mut().get_kvm_run();
        KVM_RUN.with(|cell| cell.set(run));
        guard.index()
    };
    let reason = loop {
        if !park_if_asked(&vcpu, &control) {
            break None;
        }
        let event = vcpu.lock().unwrap_or_else(|p| p.into_inner()).run_once();
        match event {
            Ok(VcpuEvent::Handled | VcpuEvent::Interrupted) => {}
            Ok(VcpuEvent::Halted) => {
                tracing::debug!(
                    vcpu = index,
                    "halted without an in-kernel irqchip; thread ends"
                );
                break None;
            }
            Ok(VcpuEvent::TripleFault) => break Some(StopReason::TripleFault { vcpu: index }),
            Ok(VcpuEvent::ResetRequested) => break Some(StopReason::Reboot),
            Ok(VcpuEvent::ShutdownRequested) => break Some(StopReason::PowerOff),
            Ok(VcpuEvent::KvmFailure(detail)) => {
                break Some(StopReason::KvmError {
                    vcpu: index,
                    detail,
                })
            }
            Err(e) => break Some(StopReason::VmmError(crate::error_chain(&e))),
        }
    };
    KVM_RUN.with(|cell| cell.set(std::ptr::null_mut()));
    if let Some(reason) = reason {
        stop.raise(reason);
    }
    // A finished thread counts as parked, so a pause never waits for it.
    let mut parked = control.lock();
    *parked += 1;
    control.changed.notify_all();
}
