//! The VM supervisor: owns every VM of the host, starts and ends their VMM processes, runs
//! operations as persisted jobs (`crate::jobs`), watches for guests that stop on their own,
//! and raises the alerts that report all of it. The DM tree handlers and the local user's
//! API go through it; it talks to VMMs only through their API sockets.

mod admission;
mod monitor;
mod recover;
mod settings;
mod slot;

pub use admission::Origin;
pub use settings::{Setting, LOCAL_CLASSES};
pub use slot::{SlotState, VmSlot, VmView};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::alerts::{self, Wake, Wakeup};
use crate::cgroup::Cgroups;
use crate::config::AgentConfig;
use crate::layout::Layout;
use crate::model::{unix_now, LockState, Operation, ResultCode, VmState};
use crate::sharing::{Broker, Peers, VmSharing};
use crate::store::{Change, JobRecord, Store, StoreError, StoredAlert, VmRecord};
use crate::unlock::RateLimit;
use crate::vmm_proc::Jailer;

/// Why a request to the supervisor was refused.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("no VM `{0}`")]
    NotFound(String),
    #[error("invalid value: {0}")]
    Invalid(String),
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error("the device's limit is reached: {0}")]
    Limit(String),
    #[error("the VM did not take the change: {0}")]
    Live(String),
    #[error("cannot store the change")]
    Store(#[from] StoreError),
}

/// What the device offers (`./VirMO/Capabilities`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub max_vms: u32,
    pub max_vcpus: u32,
    pub max_memory_mib: u64,
    pub max_storage_mib: u64,
    pub peripheral_classes: String,
    pub hypervisor: String,
}

/// The outcome of asking for an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Running as job `job_id`; its outcome follows as an alert.
    Accepted { job_id: i64 },
    /// Refused with this result code (alerted too, for a server request).
    Refused(ResultCode),
}

/// The outcome of a local unlock attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserUnlock {
    Unlocked,
    NotLocked,
    /// The server has not allowed the user to unlock this VM (or set no code).
    NotAllowed,
    WrongCode {
        attempts_left: u32,
    },
    /// Too many wrong codes: wait.
    Blocked {
        retry_after_secs: u64,
    },
}

/// The supervisor.
pub struct Supervisor {
    pub config: AgentConfig,
    pub layout: Layout,
    pub store: Arc<dyn Store>,
    pub cgroups: Cgroups,
    pub vmm_bin: PathBuf,
    /// How VMMs are jailed (`None`: unjailed).
    pub jailer: Option<Jailer>,
    pub wakeup: Arc<Wakeup>,
    pub capabilities: Capabilities,
    /// Routes streams between the VMs' host channels as their `DataSharing` allows.
    pub broker: Broker,
    slots: Mutex<BTreeMap<String, Arc<VmSlot>>>,
    /// Held while a CID is picked and stored (CIDs are unique among the VMs).
    cid_lock: Mutex<()>,
    /// One lock per image digest: VMs provisioned from the same bundle at once download and
    /// install it once.
    image_locks: Mutex<BTreeMap<String, Arc<Mutex<()>>>>,
    stopping: AtomicBool,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("data", &self.layout.root())
            .finish_non_exhaustive()
    }
}

/// The host's CPU count and memory.
fn host_resources() -> (u32, u64) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| meminfo_field(&text, "MemTotal:"))
        .unwrap_or(1 << 20);
    (cpus, mem_kib / 1024)
}

/// A `/proc/meminfo` field in KiB.
pub fn meminfo_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl Supervisor {
    /// A supervisor over the VMs in `store` (call [`Supervisor::start`] next).
    pub fn new(
        config: AgentConfig,
        layout: Layout,
        store: Arc<dyn Store>,
        vmm_bin: PathBuf,
        wakeup: Arc<Wakeup>,
    ) -> Arc<Self> {
        let (cpus, mem_mib) = host_resources();
        let limits = &config.limits;
        let capabilities = Capabilities {
            max_vms: limits.max_vms,
            max_vcpus: limits.max_vcpus.unwrap_or(cpus).min(255),
            max_memory_mib: limits.max_memory_mib.unwrap_or(mem_mib),
            max_storage_mib: limits.max_storage_mib,
            peripheral_classes: "storage,removable-storage,entropy,network,host-channel".into(),
            hypervisor: "KVM; Type II; virmo vmm".into(),
        };
        let cgroups = Cgroups::detect(&config.cgroup);
        let jailer = Jailer::new(&config.jail, &config.cgroup, &layout);
        Arc::new(Self {
            jailer,
            config,
            layout,
            store,
            cgroups,
            vmm_bin,
            wakeup,
            capabilities,
            broker: Broker::default(),
            slots: Mutex::new(BTreeMap::new()),
            cid_lock: Mutex::new(()),
            image_locks: Mutex::new(BTreeMap::new()),
            stopping: AtomicBool::new(false),
        })
    }

    /// Loads the VMs, re-adopts running VMMs, finishes interrupted operations and starts
    /// watching the VMs.
    pub fn start(self: &Arc<Self>) -> Result<(), StoreError> {
        recover::recover(self)?;
        monitor::spawn(self.clone());
        Ok(())
    }

    /// Stops watching (VMs keep running; jobs in progress are finished by the next agent).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub(crate) fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<VmSlot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock of the image `digest` (held while it is downloaded and installed).
    pub(crate) fn image_lock(&self, digest: &str) -> Arc<Mutex<()>> {
        self.image_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(digest.to_owned())
            .or_default()
            .clone()
    }

    pub(crate) fn insert_slot(&self, slot: Arc<VmSlot>) {
        self.slots().insert(slot.id.clone(), slot);
    }

    pub(crate) fn remove_slot(&self, id: &str) {
        self.slots().remove(id);
    }

    pub(crate) fn slot_by_id(&self, id: &str) -> Option<Arc<VmSlot>> {
        self.slots().get(id).cloned()
    }

    /// The slot of the VM whose node is `node` (not being deleted).
    pub fn find(&self, node: &str) -> Option<Arc<VmSlot>> {
        self.slots()
            .values()
            .find(|slot| {
                let state = slot.lock();
                state.record.node == node && !state.record.deleting
            })
            .cloned()
    }

    /// All VMs (not being deleted), by node name.
    pub fn views(&self) -> Vec<VmView> {
        let slots: Vec<_> = self.slots().values().cloned().collect();
        let mut views: Vec<VmView> = slots
            .iter()
            .map(|slot| slot.lock().view())
            .filter(|view| !view.record.deleting)
            .collect();
        views.sort_by(|a, b| a.record.node.cmp(&b.record.node));
        views
    }

    pub fn view(&self, node: &str) -> Option<VmView> {
        self.find(node).map(|slot| slot.lock().view())
    }

    /// Queues alerts together with other changes (one transaction) and wakes the DM client.
    pub(crate) fn commit(
        &self,
        mut changes: Vec<Change>,
        alerts: Vec<StoredAlert>,
    ) -> Result<(), StoreError> {
        let has_alerts = !alerts.is_empty();
        changes.extend(alerts.into_iter().map(Change::EnqueueAlert));
        self.store.apply(changes)?;
        if has_alerts {
            self.wakeup.notify(Wake::Alerts);
        }
        Ok(())
    }

    /// Stores `record` as the slot's new record.
    pub(crate) fn save_record(
        &self,
        state: &mut SlotState,
        record: VmRecord,
        alerts: Vec<StoredAlert>,
    ) -> Result<(), StoreError> {
        self.commit(vec![Change::SaveVm(record.clone())], alerts)?;
        state.record = record;
        Ok(())
    }

    /// Adds a VM (DM Add of `./VirMO/VM/<node>`).
    pub fn add_vm(&self, node: &str) -> Result<VmView, SupervisorError> {
        if !crate::model::valid_node_name(node) {
            return Err(SupervisorError::Invalid(format!(
                "`{node}` is not a valid VM name"
            )));
        }
        if self.find(node).is_some() {
            return Err(SupervisorError::NotAllowed(format!("`{node}` exists")));
        }
        if self.slots().len() >= self.capabilities.max_vms as usize {
            return Err(SupervisorError::Limit(format!(
                "{} VMs at most",
                self.capabilities.max_vms
            )));
        }
        let _cids = self.cid_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut record = VmRecord::new(crate::model::new_uuid(), node.to_owned());
        record.cid = Some(self.free_cid());
        self.store.apply(vec![Change::InsertVm(record.clone())])?;
        let slot = Arc::new(VmSlot::new(record, Vec::new()));
        let view = slot.lock().view();
        self.insert_slot(slot);
        tracing::info!(vm = %view.record.id, node, "VM added");
        Ok(view)
    }

    /// The lowest CID no VM has (from 3: 0-2 are reserved, 2 is the host). Call with
    /// `cid_lock` held, and store the CID before releasing it.
    fn free_cid(&self) -> u32 {
        let taken: std::collections::BTreeSet<u32> = self
            .slots()
            .values()
            .filter_map(|slot| slot.lock().record.cid)
            .collect();
        (3..u32::MAX).find(|cid| !taken.contains(cid)).unwrap_or(3)
    }

    /// Gives VM `slot` a CID if its record has none (a VM of an older agent).
    pub(crate) fn ensure_cid(&self, slot: &VmSlot) -> Result<(), StoreError> {
        let _cids = self.cid_lock.lock().unwrap_or_else(|p| p.into_inner());
        if slot.lock().record.cid.is_some() {
            return Ok(());
        }
        let cid = self.free_cid();
        let mut state = slot.lock();
        let mut record = state.record.clone();
        record.cid = Some(cid);
        self.save_record(&mut state, record, Vec::new())?;
        tracing::info!(vm = %slot.id, cid, "host channel CID given");
        Ok(())
    }

    /// What the host holds for VM `id` while its VMM runs, given back once it has ended: its
    /// cgroup, and the persistent tap made for a jailed VMM.
    pub(crate) fn release_host_resources(&self, id: &str) {
        self.cgroups.remove(id);
        let tap = crate::jobs::power::tap_name(id);
        if crate::vmm_proc::tap::exists(&tap) {
            if let Err(e) = crate::vmm_proc::tap::remove_persistent(&tap) {
                tracing::warn!(vm = id, error = %crate::error_chain(&e), "cannot remove the VM's tap");
            }
        }
    }

    /// Makes the broker serve VM `id`'s host channel (idempotent; its folder must exist).
    pub(crate) fn serve_sharing(&self, id: &str) -> Result<(), crate::sharing::SharingError> {
        self.broker.serve_vm(id, &self.layout.vm(id).vsock)
    }

    /// Forgets a VM that was added but never got files (rolling back an Atomic Add).
    pub fn forget_new_vm(&self, node: &str) -> Result<(), SupervisorError> {
        let slot = self
            .find(node)
            .ok_or_else(|| SupervisorError::NotFound(node.to_owned()))?;
        {
            let state = slot.lock();
            if state.busy.is_some() || state.record.image.installed.is_some() {
                return Err(SupervisorError::NotAllowed(
                    "the VM has been provisioned".into(),
                ));
            }
        }
        self.store.apply(vec![Change::ForgetVm(slot.id.clone())])?;
        self.remove_slot(&slot.id);
        Ok(())
    }

    /// Asks for `op` on VM `node`.
    pub fn request(
        self: &Arc<Self>,
        node: &str,
        op: Operation,
        origin: Origin,
    ) -> Result<Admission, SupervisorError> {
        let slot = self
            .find(node)
            .ok_or_else(|| SupervisorError::NotFound(node.to_owned()))?;
        self.request_on(&slot, op, origin)
    }

    pub(crate) fn request_on(
        self: &Arc<Self>,
        slot: &Arc<VmSlot>,
        op: Operation,
        origin: Origin,
    ) -> Result<Admission, SupervisorError> {
        let (source, correlator) = match &origin {
            Origin::Server { source, correlator } => (Some(source.clone()), correlator.clone()),
            Origin::ServerDelete | Origin::Local | Origin::UserUnlock => (None, None),
        };
        let params = if origin == Origin::UserUnlock {
            serde_json::json!({ "by_user": true })
        } else {
            serde_json::json!({})
        };
        let mut state = slot.lock();
        let record = &state.record;
        let verdict = if state.busy.is_some() {
            Err(ResultCode::NOT_ALLOWED_IN_STATE)
        } else {
            admission::check(
                op,
                record.state,
                record.lock.state,
                record.image.installed.is_some(),
                record.firmware.downloaded.is_some(),
                &origin,
            )
        };
        if let Err(code) = verdict {
            tracing::info!(vm = %slot.id, op = op.key(), %code, busy = ?state.busy, state = ?record.state, "operation refused");
            if source.is_some() {
                self.commit(
                    Vec::new(),
                    vec![crate::jobs::complete_alert(op, source, correlator, code)],
                )?;
            }
            return Ok(Admission::Refused(code));
        }
        // The job row and the state it starts from are stored together.
        let mut record = state.record.clone();
        let step = crate::jobs::first_step(op);
        if op == Operation::Provision {
            record.state = VmState::Provisioning;
        }
        if op == Operation::Delete {
            record.deleting = true;
        }
        let applied = self.store.apply(vec![
            Change::SaveVm(record.clone()),
            Change::InsertJob {
                vm_id: slot.id.clone(),
                op,
                step: step.to_owned(),
                correlator: correlator.clone(),
                source: source.clone(),
                params: params.clone(),
            },
        ])?;
        let job_id = applied.jobs[0];
        state.record = record;
        state.busy = Some(op);
        drop(state);
        let job = JobRecord {
            id: job_id,
            vm_id: slot.id.clone(),
            op,
            step: step.to_owned(),
            correlator,
            source,
            params,
            started_at: unix_now(),
        };
        tracing::info!(vm = %slot.id, op = op.key(), job = job_id, "operation accepted");
        crate::jobs::spawn(self.clone(), slot.clone(), job);
        Ok(Admission::Accepted { job_id })
    }

    /// Deletes VM `node` (DM Delete of its node): it leaves the tree at once; its VMM is
    /// stopped and its files removed by a job.
    pub fn delete_vm(self: &Arc<Self>, node: &str) -> Result<(), SupervisorError> {
        match self.request(node, Operation::Delete, Origin::ServerDelete)? {
            Admission::Accepted { .. } => Ok(()),
            Admission::Refused(code) => Err(SupervisorError::NotAllowed(format!(
                "the VM is busy ({code})"
            ))),
        }
    }

    /// A local unlock attempt with `code`.
    pub fn unlock_by_user(
        self: &Arc<Self>,
        node: &str,
        code: &str,
    ) -> Result<UserUnlock, SupervisorError> {
        let slot = self
            .find(node)
            .ok_or_else(|| SupervisorError::NotFound(node.to_owned()))?;
        let limit = RateLimit {
            max_attempts: self.config.limits.unlock_max_attempts,
            backoff_secs: self.config.limits.unlock_backoff_secs,
        };
        let now = unix_now();
        let stored = self
            .store
            .secret(&slot.id, crate::jobs::lock::CODE_SECRET)?;
        {
            let mut state = slot.lock();
            let lock = state.record.lock;
            if !lock.state.is_locked() {
                return Ok(UserUnlock::NotLocked);
            }
            if !lock.user_unlock_allowed || stored.is_none() {
                return Ok(UserUnlock::NotAllowed);
            }
            if state.busy.is_some() {
                return Err(SupervisorError::NotAllowed(
                    "an operation is in progress".into(),
                ));
            }
            if let Err(blocked) = limit.check(&lock, now) {
                return Ok(UserUnlock::Blocked {
                    retry_after_secs: blocked.retry_after_secs,
                });
            }
            // Hashing is slow on purpose; the slot stays locked meanwhile, so attempts are
            // serialised.
            let good = stored
                .as_deref()
                .is_some_and(|hash| crate::unlock::verify_code(code, hash));
            let mut record = state.record.clone();
            if !good {
                limit.failed(&mut record.lock, now);
                let attempts_left = if record.lock.blocked_until > now {
                    0
                } else {
                    limit.max_attempts - record.lock.failed_attempts
                };
                tracing::warn!(vm = %slot.id, "wrong unlock code");
                self.save_record(&mut state, record, Vec::new())?;
                return Ok(UserUnlock::WrongCode { attempts_left });
            }
            limit.succeeded(&mut record.lock);
            self.save_record(&mut state, record, Vec::new())?;
        }
        match self.request_on(&slot, Operation::Unlock, Origin::UserUnlock)? {
            Admission::Accepted { .. } => Ok(UserUnlock::Unlocked),
            Admission::Refused(code) => Err(SupervisorError::NotAllowed(format!(
                "unlock refused ({code})"
            ))),
        }
    }

    /// Whether the local user may reach VM `node` now (not locked), and the epoch that ends
    /// the access when it changes.
    pub fn local_access(&self, node: &str) -> Result<(Arc<VmSlot>, u64), ResultCode> {
        let slot = self.find(node).ok_or(ResultCode::NOT_FOUND)?;
        let state = slot.lock();
        if state.record.lock.state != LockState::Unlocked {
            return Err(ResultCode::LOCKED);
        }
        if state.record.state != VmState::Running {
            return Err(ResultCode::NOT_ALLOWED_IN_STATE);
        }
        let epoch = state.access_epoch;
        drop(state);
        Ok((slot, epoch))
    }

    /// Queued alerts, for the local user.
    pub fn pending_alerts(&self) -> Result<Vec<crate::store::AlertRecord>, StoreError> {
        self.store.alerts()
    }
}

/// The peripheral class of the vsock host channel.
pub const HOST_CHANNEL: &str = "host-channel";

/// Every provisioned VM's host channel (`Peripherals/vsock0`).
pub fn host_channel_peripheral() -> crate::store::Peripheral {
    crate::store::Peripheral {
        id: "vsock0".into(),
        class: HOST_CHANNEL.into(),
        allowed: true,
    }
}

/// VM `record`'s `DataSharing` as the broker's policy takes it.
pub fn sharing_policy(record: &VmRecord) -> VmSharing {
    VmSharing {
        allowed: record.sharing.allowed,
        peers: Peers::parse(&record.sharing.peers),
    }
}

/// The VM's own alerts helper.
pub fn state_alert(record: &VmRecord) -> StoredAlert {
    alerts::state_changed(&record.node, record.state)
}
