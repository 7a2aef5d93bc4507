//! The administrator's view of a device's VMs, from its last known tree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::TreeNode;

/// One VM as the server last knew it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmView {
    /// The VM's node name.
    pub name: String,
    pub id: Option<String>,
    pub state: Option<i64>,
    /// `running`, `stopped`...
    pub state_name: Option<String>,
    pub lock_state: Option<i64>,
    /// Every other leaf under the VM, by its path (`Resources/VCPUs`...).
    pub values: BTreeMap<String, String>,
}

/// The name of a VM state.
pub fn state_name(state: i64) -> &'static str {
    match state {
        10 => "provisioning",
        20 => "stopped",
        30 => "running",
        40 => "suspended",
        50 => "failed",
        _ => "unknown",
    }
}

/// The VMs under `./VirMO/VM` of a tree.
pub fn vms_of(tree: &[TreeNode]) -> Vec<VmView> {
    let mut vms: BTreeMap<String, VmView> = BTreeMap::new();
    for node in tree {
        let Some(rest) = node.uri.strip_prefix("./VirMO/VM/") else {
            continue;
        };
        let (name, path) = rest.split_once('/').unwrap_or((rest, ""));
        let name = omadm::tree::uri::unescape(name).unwrap_or_else(|| name.to_owned());
        let vm = vms.entry(name.clone()).or_insert_with(|| VmView {
            name,
            ..VmView::default()
        });
        let Some(value) = node.value.clone() else {
            continue;
        };
        if path.is_empty() || node.format == "node" {
            continue;
        }
        match path {
            "ID" => vm.id = Some(value),
            "State" => {
                let state = value.trim().parse().ok();
                vm.state = state;
                vm.state_name = state.map(|s| state_name(s).to_owned());
            }
            "Lock/State" => vm.lock_state = value.trim().parse().ok(),
            path if path.starts_with("Operations") => {}
            path => {
                vm.values.insert(path.to_owned(), value);
            }
        }
    }
    vms.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vms_are_read_from_the_tree() {
        let node = |uri: &str, format: &str, value: Option<&str>| TreeNode {
            uri: uri.into(),
            format: format.into(),
            value: value.map(Into::into),
        };
        let tree = vec![
            node("./VirMO", "node", None),
            node("./VirMO/VM", "node", Some("work")),
            node("./VirMO/VM/work", "node", None),
            node("./VirMO/VM/work/State", "int", Some("30")),
            node("./VirMO/VM/work/Lock/State", "int", Some("10")),
            node("./VirMO/VM/work/Resources/VCPUs", "int", Some("2")),
            node("./VirMO/VM/my%20vm/State", "int", Some("40")),
        ];
        let vms = vms_of(&tree);
        assert_eq!(vms.len(), 2);
        assert_eq!(vms[0].name, "my vm");
        assert_eq!(vms[0].state_name.as_deref(), Some("suspended"));
        assert_eq!(vms[1].name, "work");
        assert_eq!((vms[1].state, vms[1].lock_state), (Some(30), Some(10)));
        assert_eq!(
            vms[1].values.get("Resources/VCPUs").map(String::as_str),
            Some("2")
        );
    }
}
