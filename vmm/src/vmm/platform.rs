//! The devices of the VM (the platform devices every VM has, then the virtio devices of its
//! config, then those of the `extra_devices` hook), placed the same way whether the VM boots a
//! kernel or is restored from a snapshot: same ports, interrupt lines, MMIO windows, DSDT and
//! snapshot IDs.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use vm_memory::GuestMemoryMmap;

use super::virtio_devices::VirtioDevices;
use super::virtio_persist::virtio_id;
use super::{DeviceSetup, ExtraDevices, VmmError};
use crate::config::VmConfig;
use crate::devices::acpi_pm::{self, AcpiPm, Ged};
use crate::devices::bus::Bus;
use crate::devices::console::ConsoleOutput;
use crate::devices::i8042::{I8042, I8042_PORT, I8042_PORT_LEN};
use crate::devices::persist::PersistRegistry;
use crate::devices::pvpanic::{self, PvPanic, PVPANIC_PORT, PVPANIC_PORT_LEN};
use crate::devices::resources::Resources;
use crate::devices::rtc::{self, CmosRtc, RTC_PORT, RTC_PORT_LEN};
use crate::devices::serial::{self, SerialDevice, COM1_GSI, COM1_PORT, COM1_PORT_LEN};
use crate::stop::StopSignal;
use crate::vstate::vm::Vm;

/// Snapshot IDs of the platform devices.
pub const SERIAL_ID: &str = "serial0";
pub const RTC_ID: &str = "rtc0";
pub const I8042_ID: &str = "i8042";
pub const PVPANIC_ID: &str = "pvpanic";
pub const ACPI_PM_ID: &str = "acpi-pm";
pub const GED_ID: &str = "acpi-ged";

/// The buses with their devices, and what the VM keeps of them.
pub(super) struct Devices {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub resources: Resources,
    pub serial: Arc<Mutex<SerialDevice>>,
    pub ged: Arc<Mutex<Ged>>,
    pub stop: Arc<StopSignal>,
    pub persist: PersistRegistry,
    pub virtio: VirtioDevices,
}

impl Devices {
    /// Places the platform devices, then calls `extra_devices` (virtio), in a fixed order.
    pub fn build(
        vm: &Vm,
        memory: &GuestMemoryMmap,
        config: &VmConfig,
        vmm_started: Instant,
        extra_devices: ExtraDevices<'_>,
    ) -> Result<Self, VmmError> {
        let stop = Arc::new(StopSignal::new());
        let pio = Arc::new(Bus::new("pio"));
        let mmio = Arc::new(Bus::new("mmio"));
        let mut resources = Resources::new();
        let mut persist = PersistRegistry::new();

        let console =
            ConsoleOutput::open(&config.console, vmm_started).map_err(VmmError::Console)?;
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            vm.irq_line(COM1_GSI)?,
            console,
        )));
        pio.insert(COM1_PORT, COM1_PORT_LEN, serial.clone())?;
        persist.add(SERIAL_ID, serial.clone())?;
        resources.add_dsdt_aml(&serial::dsdt_aml());

        let rtc = Arc::new(Mutex::new(CmosRtc::new()));
        pio.insert(RTC_PORT, RTC_PORT_LEN, rtc.clone())?;
        persist.add(RTC_ID, rtc)?;
        resources.add_dsdt_aml(&rtc::dsdt_aml());

        let i8042 = Arc::new(Mutex::new(I8042::new(Arc::clone(&stop))));
        pio.insert(I8042_PORT, I8042_PORT_LEN, i8042.clone())?;
        persist.add(I8042_ID, i8042)?;

        let pvpanic = Arc::new(Mutex::new(PvPanic::new(Arc::clone(&stop))));
        pio.insert(PVPANIC_PORT, PVPANIC_PORT_LEN, pvpanic.clone())?;
        persist.add(PVPANIC_ID, pvpanic)?;
        resources.add_dsdt_aml(&pvpanic::dsdt_aml());

        let pm = Arc::new(Mutex::new(AcpiPm::new(Arc::clone(&stop))));
        pio.insert(acpi_pm::PM_PORT, acpi_pm::PM_PORT_LEN, pm.clone())?;
        persist.add(ACPI_PM_ID, pm)?;

        let ged_gsi = resources.allocate_gsi()?;
        let ged = Arc::new(Mutex::new(Ged::new(vm.irq_line(ged_gsi)?)));
        pio.insert(acpi_pm::GED_PORT, acpi_pm::GED_PORT_LEN, ged.clone())?;
        persist.add(GED_ID, ged.clone())?;
        resources.add_dsdt_aml(&acpi_pm::dsdt_aml(ged_gsi));

        let virtio = VirtioDevices::attach(&config.devices, vm, memory, &mmio, &mut resources)?;
        for device in virtio.placed() {
            persist.add(virtio_id(&device.config.id), device.transport.clone())?;
        }

        extra_devices(&mut DeviceSetup {
            vm,
            memory,
            pio: &pio,
            mmio: &mmio,
            resources: &mut resources,
            stop: &stop,
            persist: &mut persist,
        })?;

        Ok(Self {
            pio,
            mmio,
            resources,
            serial,
            ged,
            stop,
            persist,
            virtio,
        })
    }
}
