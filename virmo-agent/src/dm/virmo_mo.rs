//! The `./VirMO` management object: a [`NodeHandler`] over the supervisor. Values are read from
//! the VMs' records; Replace changes a setting; Add and Delete of `VM/<x>` create and delete
//! VMs; Exec of `Operations/*` (and the firmware nodes) starts an operation and answers 202,
//! its outcome following as a Generic Alert with the Exec's Correlator.
//!
//! Inside an Atomic, changes are undone on rollback (an undo log of previous values) and
//! Execs and Deletes wait for the commit: nothing irreversible happens before it.

use std::sync::Arc;

use omadm::status::StatusCode;
use omadm::tree::{AccessTypes, ExecRequest, Format, HandlerNode, NodeHandler, Scope};

use crate::model::Operation;
use crate::supervisor::{Admission, Origin, Setting, Supervisor, SupervisorError, VmView};

const G: AccessTypes = AccessTypes::GET;
const GR: AccessTypes = AccessTypes::GET.union(AccessTypes::REPLACE);
const GX: AccessTypes = AccessTypes::GET.union(AccessTypes::EXEC);

/// The mount point.
pub const MOUNT: &str = "VirMO";

/// What an Atomic will do at commit, or undo at rollback.
#[derive(Debug, Clone)]
enum Deferred {
    Exec {
        node: String,
        op: Operation,
        source: String,
        correlator: Option<String>,
    },
    Delete {
        node: String,
    },
}

#[derive(Debug, Clone)]
enum Undo {
    Added(String),
    Changed(String, Setting),
}

#[derive(Debug, Default)]
struct AtomicState {
    undo: Vec<Undo>,
    deferred: Vec<Deferred>,
}

/// The handler.
pub struct VirmoMo {
    sup: Arc<Supervisor>,
    /// The DevInfo `Man` of the VMs.
    manufacturer: String,
    atomic: Option<AtomicState>,
}

impl VirmoMo {
    pub fn new(sup: Arc<Supervisor>, manufacturer: String) -> Self {
        Self {
            sup,
            manufacturer,
            atomic: None,
        }
    }
}

fn path(rel: &[String]) -> Vec<&str> {
    rel.iter().map(String::as_str).collect()
}

fn interior(access: AccessTypes) -> HandlerNode {
    HandlerNode::interior(access, Scope::Permanent)
}

fn leaf(format: Format, access: AccessTypes) -> HandlerNode {
    HandlerNode::leaf(format, access)
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

const VM_CHILDREN: [&str; 11] = [
    "ID",
    "Name",
    "State",
    "Image",
    "Resources",
    "Peripherals",
    "DataSharing",
    "Lock",
    "Firmware",
    "Operations",
    "Ext",
];

fn status_of(error: &SupervisorError) -> StatusCode {
    match error {
        SupervisorError::NotFound(_) => StatusCode::NOT_FOUND,
        SupervisorError::Invalid(_) => StatusCode::BAD_REQUEST,
        SupervisorError::NotAllowed(_) => StatusCode::FORBIDDEN,
        SupervisorError::Limit(_) => StatusCode::DEVICE_FULL,
        SupervisorError::Live(_) | SupervisorError::Store(_) => StatusCode::COMMAND_FAILED,
    }
}

fn text(value: &[u8]) -> Result<String, StatusCode> {
    String::from_utf8(value.to_vec()).map_err(|_| StatusCode::BAD_REQUEST)
}

fn number<T: std::str::FromStr>(value: &[u8]) -> Result<T, StatusCode> {
    text(value)?
        .trim()
        .parse()
        .map_err(|_| StatusCode::BAD_REQUEST)
}

fn boolean(value: &[u8]) -> Result<bool, StatusCode> {
    match value {
        b"true" => Ok(true),
        b"false" => Ok(false),
        _ => Err(StatusCode::BAD_REQUEST),
    }
}

fn bool_text(b: bool) -> Vec<u8> {
    if b {
        b"true".to_vec()
    } else {
        b"false".to_vec()
    }
}

impl VirmoMo {
    fn describe_vm(view: &VmView, rest: &[&str]) -> Option<HandlerNode> {
        let firmware_exec = ["Download", "Update", "DownloadAndUpdate"];
        Some(match rest {
            [] => HandlerNode {
                scope: Scope::Dynamic,
                ..interior(G.union(AccessTypes::ADD).union(AccessTypes::DELETE))
            },
            ["ID"] => leaf(Format::Chr, G),
            ["Name"] => leaf(Format::Chr, GR),
            ["State"] => leaf(Format::Int, G),
            ["Image" | "Resources" | "Peripherals" | "DataSharing" | "Lock" | "Firmware"
            | "Operations" | "Ext"] => interior(G),
            ["Image", "PkgURL" | "PkgHash"] => leaf(Format::Chr, GR),
            ["Image", "PkgVersion"] => leaf(Format::Chr, G),
            ["Resources", "VCPUs" | "MemoryMiB" | "StorageMiB" | "CPUQuota"] => {
                leaf(Format::Int, GR)
            }
            ["Peripherals", y] if view.peripherals.iter().any(|p| p.id == *y) => interior(G),
            ["Peripherals", y, "Class"] if view.peripherals.iter().any(|p| p.id == *y) => {
                leaf(Format::Chr, G)
            }
            ["Peripherals", y, "Allowed"] if view.peripherals.iter().any(|p| p.id == *y) => {
                leaf(Format::Bool, GR)
            }
            ["DataSharing", "Allowed"] => leaf(Format::Bool, GR),
            ["DataSharing", "Peers"] => leaf(Format::Chr, GR),
            ["Lock", "State"] => leaf(Format::Int, G),
            ["Lock", "UserUnlockAllowed"] => leaf(Format::Bool, GR),
            ["Lock", "UserUnlockCode"] => leaf(Format::Chr, AccessTypes::REPLACE),
            ["Firmware", "PkgName" | "PkgVersion"] => leaf(Format::Chr, G),
            ["Firmware", "State"] => leaf(Format::Int, G),
            ["Firmware", x] if firmware_exec.contains(x) => interior(GX),
            ["Firmware", "Download" | "DownloadAndUpdate", "PkgURL"] => leaf(Format::Chr, GR),
            ["Firmware", "Update", "PkgData"] => leaf(Format::Bin, AccessTypes::REPLACE),
            ["Operations", op] if Operation::from_node_name(op).is_some() => {
                leaf(Format::Null, AccessTypes::EXEC)
            }
            ["Ext", "DevInfo" | "DevDetail"] => interior(G),
            ["Ext", "DevInfo", "DevId" | "Man" | "Mod" | "DmV" | "Lang"] => leaf(Format::Chr, G),
            ["Ext", "DevDetail", "DevTyp" | "OEM" | "FwV" | "SwV" | "HwV"] => leaf(Format::Chr, G),
            _ => return None,
        })
    }

    fn vm_children(view: &VmView, rest: &[&str]) -> Result<Vec<String>, StatusCode> {
        Ok(match rest {
            [] => names(&VM_CHILDREN),
            ["Image"] => names(&["PkgURL", "PkgHash", "PkgVersion"]),
            ["Resources"] => names(&["VCPUs", "MemoryMiB", "StorageMiB", "CPUQuota"]),
            ["Peripherals"] => view.peripherals.iter().map(|p| p.id.clone()).collect(),
            ["Peripherals", _] => names(&["Class", "Allowed"]),
            ["DataSharing"] => names(&["Allowed", "Peers"]),
            ["Lock"] => names(&["State", "UserUnlockAllowed", "UserUnlockCode"]),
            ["Firmware"] => names(&[
                "PkgName",
                "PkgVersion",
                "Download",
                "Update",
                "DownloadAndUpdate",
                "State",
            ]),
            ["Firmware", "Download" | "DownloadAndUpdate"] => names(&["PkgURL"]),
            ["Firmware", "Update"] => names(&["PkgData"]),
            ["Operations"] => Operation::EXEC_NODES
                .iter()
                .map(|op| op.node_name().to_owned())
                .collect(),
            ["Ext"] => names(&["DevInfo", "DevDetail"]),
            ["Ext", "DevInfo"] => names(&["DevId", "Man", "Mod", "DmV", "Lang"]),
            ["Ext", "DevDetail"] => names(&["DevTyp", "OEM", "FwV", "SwV", "HwV"]),
            _ => return Err(StatusCode::NOT_FOUND),
        })
    }

    fn vm_value(&self, view: &VmView, rest: &[&str]) -> Result<Vec<u8>, StatusCode> {
        let r = &view.record;
        let image = r.image.installed.as_ref();
        let firmware = r
            .firmware
            .downloaded
            .as_ref()
            .or(r.firmware.current.as_ref());
        let s = |v: &str| Ok(v.as_bytes().to_vec());
        match rest {
            ["ID"] => s(&r.id),
            ["Name"] => s(&r.name),
            ["State"] => s(&r.state.code().to_string()),
            ["Image", "PkgURL"] => s(&r.image.pkg_url),
            ["Image", "PkgHash"] => s(&r.image.pkg_hash),
            ["Image", "PkgVersion"] => s(image.map_or("", |i| i.version.as_str())),
            ["Resources", "VCPUs"] => s(&r.vcpus().to_string()),
            ["Resources", "MemoryMiB"] => s(&r.memory_mib().to_string()),
            ["Resources", "StorageMiB"] => s(&r.storage_mib().to_string()),
            ["Resources", "CPUQuota"] => s(&r.resources.cpu_quota.to_string()),
            ["Peripherals", y, field] => {
                let p = view
                    .peripherals
                    .iter()
                    .find(|p| p.id == *y)
                    .ok_or(StatusCode::NOT_FOUND)?;
                match *field {
                    "Class" => s(&p.class),
                    _ => Ok(bool_text(p.allowed)),
                }
            }
            ["DataSharing", "Allowed"] => Ok(bool_text(r.sharing.allowed)),
            ["DataSharing", "Peers"] => s(&r.sharing.peers),
            ["Lock", "State"] => s(&r.lock.state.code().to_string()),
            ["Lock", "UserUnlockAllowed"] => Ok(bool_text(r.lock.user_unlock_allowed)),
            ["Firmware", "PkgName"] => s(firmware.map_or("", |f| f.name.as_str())),
            ["Firmware", "PkgVersion"] => s(firmware.map_or("", |f| f.version.as_str())),
            ["Firmware", "State"] => s(&r.firmware.state.to_string()),
            ["Firmware", "Download", "PkgURL"] => s(&r.firmware.download_url),
            ["Firmware", "DownloadAndUpdate", "PkgURL"] => s(&r.firmware.download_and_update_url),
            ["Ext", "DevInfo", leaf] => match *leaf {
                "DevId" => s(&r.id),
                "Man" => s(&self.manufacturer),
                "Mod" => s(image.map_or("", |i| i.name.as_str())),
                "DmV" => s("1.3"),
                _ => s("en-US"),
            },
            ["Ext", "DevDetail", leaf] => match *leaf {
                "DevTyp" => s("virtual machine"),
                "OEM" => s(&self.manufacturer),
                "FwV" => s(r
                    .firmware
                    .current
                    .as_ref()
                    .map(|f| f.version.as_str())
                    .or(image.map(|i| i.kernel_version.as_str()))
                    .unwrap_or("")),
                "SwV" => s(image.map_or("", |i| i.version.as_str())),
                _ => s(&format!("{} vCPU, {} MiB", r.vcpus(), r.memory_mib())),
            },
            _ => Err(StatusCode::NOT_FOUND),
        }
    }

    fn setting(&self, rest: &[&str], value: &[u8]) -> Result<Setting, StatusCode> {
        Ok(match rest {
            ["Name"] => Setting::Name(text(value)?),
            ["Image", "PkgURL"] => Setting::PkgUrl(text(value)?),
            ["Image", "PkgHash"] => Setting::PkgHash(text(value)?),
            ["Resources", "VCPUs"] => Setting::Vcpus(number(value)?),
            ["Resources", "MemoryMiB"] => Setting::MemoryMib(number(value)?),
            ["Resources", "StorageMiB"] => Setting::StorageMib(number(value)?),
            ["Resources", "CPUQuota"] => Setting::CpuQuota(number(value)?),
            ["Peripherals", y, "Allowed"] => Setting::PeripheralAllowed {
                id: (*y).to_owned(),
                allowed: boolean(value)?,
            },
            ["DataSharing", "Allowed"] => Setting::SharingAllowed(boolean(value)?),
            ["DataSharing", "Peers"] => Setting::SharingPeers(text(value)?),
            ["Lock", "UserUnlockAllowed"] => Setting::UserUnlockAllowed(boolean(value)?),
            ["Lock", "UserUnlockCode"] => {
                let code = text(value)?;
                if code.is_empty() {
                    Setting::UserUnlockCode(None)
                } else {
                    let iterations = self.sup.config.limits.unlock_hash_iterations;
                    Setting::UserUnlockCode(Some(crate::unlock::hash_code(&code, iterations)))
                }
            }
            ["Firmware", "Download", "PkgURL"] => Setting::FirmwareDownloadUrl(text(value)?),
            ["Firmware", "DownloadAndUpdate", "PkgURL"] => {
                Setting::FirmwareDownloadAndUpdateUrl(text(value)?)
            }
            ["Firmware", "Update", "PkgData"] => {
                return Err(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)
            }
            _ => return Err(StatusCode::COMMAND_NOT_ALLOWED),
        })
    }

    /// Starts `op` on `node` now (202: the outcome follows as an alert, also for a refusal).
    fn start_operation(
        &self,
        node: &str,
        op: Operation,
        source: String,
        correlator: Option<String>,
    ) -> StatusCode {
        match self
            .sup
            .request(node, op, Origin::Server { source, correlator })
        {
            Ok(Admission::Accepted { .. } | Admission::Refused(_)) => {
                StatusCode::ACCEPTED_FOR_PROCESSING
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "Exec failed");
                status_of(&e)
            }
        }
    }

    fn run_deferred(&self, deferred: Deferred) {
        match deferred {
            Deferred::Exec {
                node,
                op,
                source,
                correlator,
            } => {
                self.start_operation(&node, op, source, correlator);
            }
            Deferred::Delete { node } => {
                if let Err(e) = self.sup.delete_vm(&node) {
                    tracing::warn!(error = %crate::error_chain(&e), "deferred Delete failed");
                }
            }
        }
    }
}

impl NodeHandler for VirmoMo {
    fn describe(&self, rel: &[String]) -> Option<HandlerNode> {
        let p = path(rel);
        Some(match p.as_slice() {
            ["Version"] => leaf(Format::Chr, G),
            ["Capabilities"] => interior(G),
            ["Capabilities", "MaxVMs" | "MaxVCPUs" | "MaxMemoryMiB" | "MaxStorageMiB"] => {
                leaf(Format::Int, G)
            }
            ["Capabilities", "PeripheralClasses" | "Hypervisor"] => leaf(Format::Chr, G),
            ["VM"] => interior(G.union(AccessTypes::ADD)),
            ["VM", x, rest @ ..] => {
                let view = self.sup.view(x)?;
                return Self::describe_vm(&view, rest);
            }
            _ => return None,
        })
    }

    fn children(&self, rel: &[String]) -> Result<Vec<String>, StatusCode> {
        let p = path(rel);
        match p.as_slice() {
            [] => Ok(names(&["Version", "Capabilities", "VM"])),
            ["Capabilities"] => Ok(names(&[
                "MaxVMs",
                "MaxVCPUs",
                "MaxMemoryMiB",
                "MaxStorageMiB",
                "PeripheralClasses",
                "Hypervisor",
            ])),
            ["VM"] => Ok(self
                .sup
                .views()
                .into_iter()
                .map(|v| v.record.node)
                .collect()),
            ["VM", x, rest @ ..] => {
                let view = self.sup.view(x).ok_or(StatusCode::NOT_FOUND)?;
                Self::vm_children(&view, rest)
            }
            _ => Err(StatusCode::NOT_FOUND),
        }
    }

    fn get(&self, rel: &[String]) -> Result<Vec<u8>, StatusCode> {
        let p = path(rel);
        let caps = &self.sup.capabilities;
        let s = |v: String| Ok(v.into_bytes());
        match p.as_slice() {
            ["Version"] => s("1.0".into()),
            ["Capabilities", "MaxVMs"] => s(caps.max_vms.to_string()),
            ["Capabilities", "MaxVCPUs"] => s(caps.max_vcpus.to_string()),
            ["Capabilities", "MaxMemoryMiB"] => s(caps.max_memory_mib.to_string()),
            ["Capabilities", "MaxStorageMiB"] => s(caps.max_storage_mib.to_string()),
            ["Capabilities", "PeripheralClasses"] => s(caps.peripheral_classes.clone()),
            ["Capabilities", "Hypervisor"] => s(caps.hypervisor.clone()),
            ["VM", x, rest @ ..] => {
                let view = self.sup.view(x).ok_or(StatusCode::NOT_FOUND)?;
                self.vm_value(&view, rest)
            }
            _ => Err(StatusCode::NOT_FOUND),
        }
    }

    fn add(&mut self, rel: &[String], format: Format, _value: &[u8]) -> Result<(), StatusCode> {
        let p = path(rel);
        let ["VM", x] = p.as_slice() else {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        };
        if format != Format::Node {
            return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        self.sup.add_vm(x).map_err(|e| status_of(&e))?;
        if let Some(atomic) = &mut self.atomic {
            atomic.undo.push(Undo::Added((*x).to_owned()));
        }
        Ok(())
    }

    fn replace(&mut self, rel: &[String], value: &[u8]) -> Result<(), StatusCode> {
        let p = path(rel);
        let ["VM", x, rest @ ..] = p.as_slice() else {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        };
        let setting = self.setting(rest, value)?;
        let previous = self.sup.change(x, setting).map_err(|e| {
            tracing::info!(error = %crate::error_chain(&e), "Replace refused");
            status_of(&e)
        })?;
        if let Some(atomic) = &mut self.atomic {
            atomic.undo.push(Undo::Changed((*x).to_owned(), previous));
        }
        Ok(())
    }

    fn delete(&mut self, rel: &[String]) -> Result<(), StatusCode> {
        let p = path(rel);
        let ["VM", x] = p.as_slice() else {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        };
        if let Some(atomic) = &mut self.atomic {
            atomic.deferred.push(Deferred::Delete {
                node: (*x).to_owned(),
            });
            return Ok(());
        }
        self.sup.delete_vm(x).map_err(|e| status_of(&e))
    }

    fn exec(&mut self, rel: &[String], request: ExecRequest<'_>) -> StatusCode {
        let p = path(rel);
        let (x, op) = match p.as_slice() {
            ["VM", x, "Operations", name] => match Operation::from_node_name(name) {
                Some(op) => (*x, op),
                None => return StatusCode::NOT_FOUND,
            },
            ["VM", x, "Firmware", "Download"] => (*x, Operation::FirmwareDownload),
            ["VM", x, "Firmware", "Update"] => (*x, Operation::FirmwareUpdate),
            ["VM", x, "Firmware", "DownloadAndUpdate"] => {
                (*x, Operation::FirmwareDownloadAndUpdate)
            }
            _ => return StatusCode::COMMAND_NOT_ALLOWED,
        };
        let source = format!(
            "./{MOUNT}/{}",
            rel.iter()
                .map(|s| omadm::tree::uri::escape(s))
                .collect::<Vec<_>>()
                .join("/")
        );
        let correlator = request.correlator.map(str::to_owned);
        if let Some(atomic) = &mut self.atomic {
            atomic.deferred.push(Deferred::Exec {
                node: x.to_owned(),
                op,
                source,
                correlator,
            });
            return StatusCode::ACCEPTED_FOR_PROCESSING;
        }
        self.start_operation(x, op, source, correlator)
    }

    fn atomic_begin(&mut self) -> Result<(), StatusCode> {
        self.atomic = Some(AtomicState::default());
        Ok(())
    }

    fn atomic_commit(&mut self) {
        if let Some(atomic) = self.atomic.take() {
            for deferred in atomic.deferred {
                self.run_deferred(deferred);
            }
        }
    }

    fn atomic_rollback(&mut self) -> Result<(), StatusCode> {
        let Some(atomic) = self.atomic.take() else {
            return Ok(());
        };
        let mut failed = false;
        for undo in atomic.undo.into_iter().rev() {
            let result = match undo {
                Undo::Added(node) => self.sup.forget_new_vm(&node),
                Undo::Changed(node, previous) => self.sup.change(&node, previous).map(|_| ()),
            };
            if let Err(e) = result {
                tracing::error!(error = %crate::error_chain(&e), "Atomic rollback step failed");
                failed = true;
            }
        }
        if failed {
            Err(StatusCode::ATOMIC_ROLLBACK_FAILED)
        } else {
            Ok(())
        }
    }
}
