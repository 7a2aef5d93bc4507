//! Benchmarks that boot real guests: run in the nested-KVM runner, or directly on hardware KVM.

pub mod boot;
pub mod boot_loop;
pub mod io;
pub mod measure;
pub mod resume_work;
pub mod snapshot;
pub mod stress;
