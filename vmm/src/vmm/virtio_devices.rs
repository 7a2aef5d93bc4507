//! The VM's virtio devices: built from [`VmConfig::devices`](crate::config::VmConfig), placed on
//! the MMIO bus with a window and a GSI of their own, described in the DSDT (`LNRO0005`), wired
//! to KVM (irqfd on the GSI, one ioeventfd per queue), served by an event loop thread, and
//! gated from the control API.
//!
//! A device whose `allowed` is false at boot is not created at all: no window, no DSDT entry, no
//! backend opened. It is still listed (as `allowed: false`) so the administrator sees the policy.

use std::sync::{Arc, Mutex, MutexGuard};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::IoEventAddress;
use vm_memory::GuestMemoryMmap;

use crate::api::types::{device_kind, DeviceInfo, DevicePolicy};
use crate::control::ControlError;
use crate::devices::bus::{Bus, BusDevice, BusError};
use crate::devices::resources::{ResourceError, Resources};
use crate::devices::virtio::mmio::regs;
use crate::devices::virtio::mmio::DeviceObserver;
use crate::devices::virtio::{
    BuildError, DeviceConfig, DeviceKind, MmioDevice, MmioDeviceInfo, VirtioMmioTransport,
    MMIO_WINDOW_SIZE,
};
use crate::vstate::vm::Vm;

mod event_loop;

use event_loop::EventLoop;

/// The most virtio-mmio devices one VM may have (their AML names are `VR00`..`VRFF`).
pub const MAX_DEVICES: usize = 256;

/// Why the virtio devices could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum VirtioSetupError {
    #[error("{0} virtio devices configured; at most {MAX_DEVICES} are supported")]
    TooMany(usize),
    #[error("device id {0} is used twice")]
    DuplicateId(String),
    #[error("device {0} is a second vsock device; a VM has one at most")]
    SecondVsock(String),
    #[error("cannot create device {id}")]
    Build {
        id: String,
        #[source]
        source: BuildError,
    },
    #[error("no resources left for device {id}")]
    Resources {
        id: String,
        #[source]
        source: ResourceError,
    },
    #[error("MMIO window {base:#x} of device {id} is above 4 GiB")]
    WindowAbove4G { id: String, base: u64 },
    #[error("cannot place device {id} on the MMIO bus")]
    Bus {
        id: String,
        #[source]
        source: BusError,
    },
    #[error("cannot register the interrupt (irqfd on GSI {gsi}) of device {id}")]
    Irqfd {
        id: String,
        gsi: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot register the notification (ioeventfd) of queue {queue} of device {id}")]
    Ioeventfd {
        id: String,
        queue: usize,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot create the device event loop")]
    EventLoop(#[source] std::io::Error),
}

/// One device that exists in the VM.
pub struct PlacedDevice {
    pub config: DeviceConfig,
    pub info: MmioDeviceInfo,
    pub transport: Arc<Mutex<VirtioMmioTransport>>,
    /// The device's counters and gate, read without the transport's lock (which a guest can
    /// keep busy).
    pub observer: DeviceObserver,
}

/// The VM's virtio devices, in config order.
pub struct VirtioDevices {
    /// Every configured device, present or not, in config order.
    configs: Vec<DeviceConfig>,
    placed: Vec<PlacedDevice>,
    event_loop: Mutex<Option<EventLoop>>,
}

impl std::fmt::Debug for VirtioDevices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioDevices")
            .field("configured", &self.configs.len())
            .field("placed", &self.placed.len())
            .finish_non_exhaustive()
    }
}

/// The transport as a device on the MMIO bus.
impl BusDevice for VirtioMmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.mmio_read(offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.mmio_write(offset, data);
    }
}

impl VirtioDevices {
    /// Creates the allowed devices of `configs`, places them and wires them to KVM; adds their
    /// DSDT entries to `resources`. The event loop is not running yet ([`VirtioDevices::start`]).
    pub fn attach(
        configs: &[DeviceConfig],
        vm: &Vm,
        memory: &GuestMemoryMmap,
        mmio: &Bus,
        resources: &mut Resources,
    ) -> Result<Self, VirtioSetupError> {
        if configs.len() > MAX_DEVICES {
            return Err(VirtioSetupError::TooMany(configs.len()));
        }
        for (i, config) in configs.iter().enumerate() {
            if configs[..i].iter().any(|c| c.id == config.id) {
                return Err(VirtioSetupError::DuplicateId(config.id.clone()));
            }
            let is_vsock = |c: &DeviceConfig| matches!(c.kind, DeviceKind::Vsock { .. });
            if is_vsock(config) && configs[..i].iter().any(is_vsock) {
                return Err(VirtioSetupError::SecondVsock(config.id.clone()));
            }
        }
        let mut placed = Vec::new();
        for config in configs {
            if !config.allowed {
                // Still checked: a bad config is refused even when the device is prohibited.
                config.validate().map_err(|e| VirtioSetupError::Build {
                    id: config.id.clone(),
                    source: BuildError::Config(e),
                })?;
                tracing::info!(id = %config.id, class = %config.class, "device prohibited at boot: not created");
                continue;
            }
            let uid = placed.len() as u8;
            placed.push(place(config, uid, vm, memory, mmio, resources)?);
        }
        Ok(Self {
            configs: configs.to_vec(),
            placed,
            event_loop: Mutex::new(None),
        })
    }

    /// Starts the event loop thread serving the devices' queues and backends.
    pub fn start(&self) -> Result<(), VirtioSetupError> {
        let mut slot = lock(&self.event_loop);
        if slot.is_some() || self.placed.is_empty() {
            return Ok(());
        }
        let mut manager = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new()
            .map_err(|e| VirtioSetupError::EventLoop(std::io::Error::other(format!("{e:?}"))))?;
        for device in &self.placed {
            manager.add_subscriber(device.transport.clone());
        }
        *slot = Some(EventLoop::spawn(manager).map_err(VirtioSetupError::EventLoop)?);
        Ok(())
    }

    /// Stops the event loop thread (e.g. to save the devices); [`VirtioDevices::start`] starts
    /// a new one. Returns once the thread has ended.
    pub fn stop(&self) {
        if let Some(event_loop) = lock(&self.event_loop).take() {
            event_loop.stop();
        }
    }

    /// The devices that exist in the VM, in config order.
    pub fn placed(&self) -> &[PlacedDevice] {
        &self.placed
    }

    /// Every configured device, present or prohibited at boot, in config order.
    pub fn configs(&self) -> &[DeviceConfig] {
        &self.configs
    }

    /// Every configured device with its effective policy.
    pub fn list(&self) -> Vec<DeviceInfo> {
        self.configs
            .iter()
            .map(|config| {
                // Never the transport's lock: a hostile guest keeps it busy.
                let live = self.find(&config.id).map(|p| &p.observer);
                let (allowed, rejected_requests) = match live {
                    Some(o) => (o.allowed(), o.stats().dropped_while_prohibited),
                    None => (false, 0),
                };
                DeviceInfo {
                    id: config.id.clone(),
                    class: config.class.name().to_string(),
                    kind: kind_name(&config.kind).to_string(),
                    allowed,
                    rejected_requests,
                }
            })
            .collect()
    }

    /// Allows or prohibits device `id` now. Idempotent; reports the effective state.
    ///
    /// A device prohibited at boot does not exist in the VM: prohibiting it again succeeds with
    /// `changed: false`, allowing it is [`ControlError::Unsupported`] (no hot-plug; the VM must
    /// be started again with the device allowed).
    pub fn set_policy(&self, id: &str, allowed: bool) -> Result<DevicePolicy, ControlError> {
        if !self.configs.iter().any(|c| c.id == id) {
            return Err(ControlError::NotFound(format!("no device {id}")));
        }
        let Some(device) = self.find(id) else {
            return if allowed {
                Err(ControlError::Unsupported(format!(
                    "device {id} was prohibited at boot and is not in the VM; \
                     start the VM again with it allowed"
                )))
            } else {
                Ok(DevicePolicy {
                    id: id.to_string(),
                    allowed: false,
                    changed: false,
                })
            };
        };
        let mut transport = lock(&device.transport);
        let before = transport.allowed();
        let gate = transport.set_allowed(allowed);
        Ok(DevicePolicy {
            id: gate.id,
            allowed: gate.allowed,
            changed: gate.allowed != before,
        })
    }

    fn find(&self, id: &str) -> Option<&PlacedDevice> {
        self.placed.iter().find(|p| p.config.id == id)
    }
}

/// Creates one device and wires it: window, GSI, bus, irqfd, ioeventfds, DSDT.
fn place(
    config: &DeviceConfig,
    uid: u8,
    vm: &Vm,
    memory: &GuestMemoryMmap,
    mmio: &Bus,
    resources: &mut Resources,
) -> Result<PlacedDevice, VirtioSetupError> {
    let id = || config.id.clone();
    let transport = VirtioMmioTransport::from_config(config, memory.clone())
        .map_err(|source| VirtioSetupError::Build { id: id(), source })?;
    let resource = |source| VirtioSetupError::Resources { id: id(), source };
    let base = resources
        .allocate_mmio(MMIO_WINDOW_SIZE)
        .map_err(resource)?;
    let gsi = resources.allocate_gsi().map_err(resource)?;
    let base32 =
        u32::try_from(base).map_err(|_| VirtioSetupError::WindowAbove4G { id: id(), base })?;
    let info = MmioDeviceInfo {
        uid,
        base: base32,
        gsi,
    };

    vm.fd()
        .register_irqfd(transport.irq_evt(), gsi)
        .map_err(|source| VirtioSetupError::Irqfd {
            id: id(),
            gsi,
            source,
        })?;
    let notify = IoEventAddress::Mmio(base + regs::QUEUE_NOTIFY);
    for (queue, evt) in transport.queue_evts().iter().enumerate() {
        vm.fd()
            .register_ioevent(evt, &notify, queue as u32)
            .map_err(|source| VirtioSetupError::Ioeventfd {
                id: id(),
                queue,
                source,
            })?;
    }
    let transport = Arc::new(Mutex::new(transport));
    mmio.insert(base, MMIO_WINDOW_SIZE, transport.clone())
        .map_err(|source| VirtioSetupError::Bus { id: id(), source })?;
    let mut aml = Vec::new();
    acpi_tables::Aml::to_aml_bytes(&info, &mut aml);
    resources.add_dsdt_aml(&aml);
    tracing::info!(id = %config.id, class = %config.class, base, gsi, "virtio device placed");
    let observer = lock(&transport).observer();
    Ok(PlacedDevice {
        config: config.clone(),
        info,
        transport,
        observer,
    })
}

/// The API's name of a device kind.
fn kind_name(kind: &DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Block { .. } => device_kind::BLOCK,
        DeviceKind::Net { .. } => device_kind::NET,
        DeviceKind::Rng => device_kind::RNG,
        DeviceKind::Vsock { .. } => device_kind::VSOCK,
    }
}

fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
