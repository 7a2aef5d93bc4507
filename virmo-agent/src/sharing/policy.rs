//! The data-sharing policy between VMs (VirMO `DataSharing/Allowed` and `DataSharing/Peers`):
//! per VM a sharing flag and the peers it accepts. Sharing between A and B is allowed only when
//! both have the flag and each names the other (or `*`): the relation is symmetric, and a VM
//! the policy does not know shares with nobody (default prohibit).

use std::collections::{BTreeSet, HashMap};

/// The peers a VM accepts (`Peers`: `*` or comma-separated VM IDs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peers {
    Any,
    Only(BTreeSet<String>),
}

impl Peers {
    /// Parses the `Peers` node's value: `*`, or VM IDs separated by commas (blanks ignored).
    pub fn parse(text: &str) -> Peers {
        if text.trim() == "*" {
            return Peers::Any;
        }
        Peers::Only(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    pub fn contains(&self, vm: &str) -> bool {
        match self {
            Peers::Any => true,
            Peers::Only(set) => set.contains(vm),
        }
    }
}

/// One VM's `DataSharing` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmSharing {
    pub allowed: bool,
    pub peers: Peers,
}

impl Default for VmSharing {
    /// `Allowed` false, no peers: the VirMO defaults.
    fn default() -> Self {
        VmSharing {
            allowed: false,
            peers: Peers::Only(BTreeSet::new()),
        }
    }
}

/// The settings of every VM, by VM ID.
#[derive(Clone, Debug, Default)]
pub struct SharingPolicy {
    vms: HashMap<String, VmSharing>,
}

impl SharingPolicy {
    pub fn set(&mut self, vm: &str, sharing: VmSharing) {
        self.vms.insert(vm.to_string(), sharing);
    }

    pub fn remove(&mut self, vm: &str) {
        self.vms.remove(vm);
    }

    /// Whether VMs `a` and `b` may share (symmetric; never a VM with itself).
    pub fn allows(&self, a: &str, b: &str) -> bool {
        let (Some(sa), Some(sb)) = (self.vms.get(a), self.vms.get(b)) else {
            return false;
        };
        a != b && sa.allowed && sb.allowed && sa.peers.contains(b) && sb.peers.contains(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharing(allowed: bool, peers: &str) -> VmSharing {
        VmSharing {
            allowed,
            peers: Peers::parse(peers),
        }
    }

    #[test]
    fn sharing_needs_both_flags_and_both_peer_lists_and_is_symmetric() {
        let mut p = SharingPolicy::default();
        assert!(!p.allows("a", "b"), "default: prohibited");
        p.set("a", sharing(true, "b"));
        assert!(!p.allows("a", "b"), "b is not in the policy");
        p.set("b", sharing(true, "x, a"));
        assert!(p.allows("a", "b") && p.allows("b", "a"));
        p.set("b", sharing(false, "a"));
        assert!(!p.allows("a", "b") && !p.allows("b", "a"), "b's flag off");
        p.set("b", sharing(true, "*"));
        assert!(p.allows("a", "b"));
        assert!(!p.allows("c", "b"), "c is unknown, even to a `*` peer");
        p.set("c", sharing(true, "*"));
        assert!(
            p.allows("b", "c") && p.allows("c", "b"),
            "both accept anyone"
        );
        assert!(!p.allows("a", "c"), "a names only b");
        assert!(!p.allows("b", "b"), "never with itself");
        p.remove("b");
        assert!(!p.allows("a", "b"));
    }

    #[test]
    fn peers_parse_like_the_virmo_node() {
        assert_eq!(Peers::parse(" * "), Peers::Any);
        let p = Peers::parse("vm-1, vm-2,,");
        assert!(p.contains("vm-1") && p.contains("vm-2") && !p.contains(""));
        assert_eq!(Peers::parse(""), Peers::Only(BTreeSet::new()));
    }
}
