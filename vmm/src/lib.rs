//! `vmm`: a minimal virtual machine monitor on KVM.
//!
//! One VMM process runs one VM. It boots a stock Linux kernel (bzImage through the Linux boot
//! protocol, or an uncompressed vmlinux through PVH) with an initramfs, and is driven over an
//! HTTP/1.1 + JSON API on a Unix socket ([`api`]). The control surface is one typed request enum
//! ([`control::VmRequest`]); the HTTP server, the typed client and tests all go through it.

pub mod api;
pub mod control;
pub mod devices;
pub mod snapshot;
