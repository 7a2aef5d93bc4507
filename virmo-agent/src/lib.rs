//! `virmo-agent`: the VirMO management object on a real device.
//!
//! One agent runs per host, beside the VMs. It exposes them to a DM server as the VirMO tree
//! (`docs/virmo-mo.md`), carries out every VirMO operation on real KVM guests (one `vmm`
//! process per running VM, driven through its API socket), and reports back with Generic
//! Alerts. Its state lives in an embedded SQLite database in its data directory.
//!
//! Layers, each knowing only the ones below it:
//!
//! ```text
//! dm (tree handlers, DM client, Pkg#0)   local (the user's CLI socket)
//!                 \                      /
//!                  supervisor (VMs, admission, monitor, recovery) ── jobs (persisted operations)
//!                 /            |              \
//!      vmm_proc (VMM processes)   bundle (download, install)   store (SQLite)
//! ```
#![deny(unsafe_code)]

pub mod agent;
pub mod alerts;
pub mod bundle;
pub mod cgroup;
pub mod config;
pub mod dm;
pub mod jobs;
pub mod layout;
pub mod local;
pub mod model;
pub mod sharing;
pub mod store;
pub mod supervisor;
mod sys;
pub mod unlock;
pub mod vmm_proc;

#[cfg(test)]
mod test_support;

/// An error and its sources, `: `-separated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
