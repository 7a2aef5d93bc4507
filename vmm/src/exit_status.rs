//! Exit statuses of the `vmm` process: the one place they are defined.
//!
//! | status | meaning |
//! | --- | --- |
//! | 0 | the guest powered off or rebooted, or the VM was stopped on request (API `Stop`/`Shutdown`), or suspended (API `Snapshot` without `keep_running`) |
//! | 1 | bad configuration, or the VM could not be started or restored (the message names the problem; e.g. a snapshot that is damaged, of another format version or of another layout) |
//! | 2 | the guest kernel panicked (reported through the pvpanic device) |
//! | 3 | triple fault (`KVM_EXIT_SHUTDOWN`) |
//! | 4 | KVM internal error or emulation failure: the host's KVM could not run this guest |
//! | 5 | internal error of the VMM itself |

/// The guest powered off or rebooted, or the VM was stopped on request.
pub const GUEST_STOPPED: i32 = 0;
/// Bad configuration, or the VM could not be started.
pub const BAD_CONFIG: i32 = 1;
/// The guest kernel panicked (pvpanic).
pub const GUEST_PANIC: i32 = 2;
/// A vCPU triple-faulted (`KVM_EXIT_SHUTDOWN`).
pub const TRIPLE_FAULT: i32 = 3;
/// KVM reported an internal error or failed to emulate an instruction.
pub const KVM_ERROR: i32 = 4;
/// The VMM itself failed.
pub const VMM_ERROR: i32 = 5;
