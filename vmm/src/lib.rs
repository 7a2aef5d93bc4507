//! `vmm`: a minimal virtual machine monitor on KVM.
//!
//! One VMM process runs one VM. It boots a stock Linux kernel (bzImage through the Linux boot
//! protocol, or an uncompressed vmlinux through PVH) with an initramfs, and is driven over an
//! HTTP/1.1 + JSON API on a Unix socket ([`api`]). The control surface is one typed request enum
//! ([`control::VmRequest`]); the HTTP server, the typed client and tests all go through it.
//!
//! Layers, bottom up: [`memory`] (guest RAM and the physical address map), [`arch`] (x86_64 CPU
//! state, boot protocols, ACPI tables), [`vstate`] (the KVM VM and its vCPU threads), [`devices`]
//! (port and MMIO buses and the platform devices), [`vmm`] (builds and runs a VM from a
//! [`config::VmConfig`] and implements [`control::VmControl`]). Every thread runs under its own
//! seccomp filter ([`seccomp`]).

pub mod api;
pub mod arch;
pub mod config;
pub mod control;
pub mod devices;
pub mod exit_status;
pub mod fuzz;
pub mod jail;
pub mod mapped_file;
pub mod memory;
pub mod seccomp;
pub mod snapshot;
pub mod stop;
pub mod vmm;
pub mod vstate;

/// Formats an error and its chain of sources as "outer: inner: innermost".
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
