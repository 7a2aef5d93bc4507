//! How a virtio-mmio device appears in the DSDT:
//! `Device (VRxx) { _HID "LNRO0005", _UID n, _CRS { Memory32Fixed(base, 0x200), Interrupt(gsi) } }`.

use acpi_tables::{aml, Aml, AmlSink};

use super::mmio::MMIO_WINDOW_SIZE;

/// Where the core placed one virtio-mmio device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDeviceInfo {
    /// Unique number among the VM's virtio-mmio devices (0..=255); names the AML device.
    pub uid: u8,
    /// Guest-physical base of the 0x200-byte register window (below 4 GiB).
    pub base: u32,
    /// The GSI the device's irqfd is registered on.
    pub gsi: u32,
}

impl MmioDeviceInfo {
    pub fn size(&self) -> u64 {
        MMIO_WINDOW_SIZE
    }

    /// The AML device name, `VRxx` with `xx` the UID in hex.
    pub fn aml_name(&self) -> String {
        format!("VR{:02X}", self.uid)
    }

    /// The same device as a kernel command line parameter, for boots without ACPI:
    /// `virtio_mmio.device=512@0xd0000000:5`.
    pub fn cmdline_param(&self) -> String {
        format!(
            "virtio_mmio.device={}@{:#x}:{}",
            MMIO_WINDOW_SIZE, self.base, self.gsi
        )
    }
}

impl Aml for MmioDeviceInfo {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let memory = aml::Memory32Fixed::new(true, self.base, MMIO_WINDOW_SIZE as u32);
        // Edge-triggered, active-high, exclusive: the irqfd pulses the line.
        let interrupt = aml::Interrupt::new(true, true, false, false, self.gsi);
        let crs = aml::ResourceTemplate::new(vec![&memory, &interrupt]);
        let hid = aml::Name::new("_HID".into(), &"LNRO0005");
        let uid_value = u32::from(self.uid);
        let uid = aml::Name::new("_UID".into(), &uid_value);
        let crs_name = aml::Name::new("_CRS".into(), &crs);
        aml::Device::new(self.aml_name().as_str().into(), vec![&hid, &uid, &crs_name])
            .to_aml_bytes(sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsdt_entry_names_hid_window_and_gsi() {
        let info = MmioDeviceInfo {
            uid: 3,
            base: 0xd000_0400,
            gsi: 7,
        };
        let mut bytes = Vec::new();
        info.to_aml_bytes(&mut bytes);
        let find = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert_eq!(&bytes[0..2], &[0x5b, 0x82], "DeviceOp");
        assert!(find(b"VR03"));
        assert!(find(b"LNRO0005\0"));
        assert!(find(&0xd000_0400u32.to_le_bytes()), "window base");
        assert!(find(&0x200u32.to_le_bytes()), "window size");
        assert!(
            find(&[0x89, 6, 0, 0x03, 1, 7, 0, 0, 0]),
            "extended interrupt, GSI 7"
        );
        assert_eq!(info.cmdline_param(), "virtio_mmio.device=512@0xd0000400:7");
    }
}
