//! Data sharing between VMs (VirMO `DataSharing`): the [`policy`] (who may share with whom)
//! and the [`broker`] that routes streams between VMs over their vsock host channels while the
//! policy allows it. See docs/virmo-mo.md, "Data sharing".

pub mod broker;
pub mod policy;

pub use broker::{Broker, Decision, SharingError, Verdict, SHARING_PORT};
pub use policy::{Peers, SharingPolicy, VmSharing};
