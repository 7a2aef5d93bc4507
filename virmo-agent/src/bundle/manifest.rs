//! `virmo-bundle.toml`, the manifest of an image bundle.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The manifest's name inside the bundle.
pub const MANIFEST_NAME: &str = "virmo-bundle.toml";

/// The bundle format version this agent reads.
pub const FORMAT: u32 = 1;

/// How the VM boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    /// The kernel file (bzImage or ELF vmlinux with a PVH note).
    pub kernel: String,
    #[serde(default)]
    pub initramfs: Option<String>,
    pub cmdline: String,
    /// A console line prefix the guest prints once it has booted (used to confirm new firmware).
    #[serde(default)]
    pub ready_marker: Option<String>,
    /// The kernel's release, for the VM's DevDetail.
    #[serde(default)]
    pub kernel_version: Option<String>,
}

/// The VM's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub vcpus: u8,
    pub memory_mib: u64,
    /// The disk's size; the disk file is grown to it (or created empty).
    pub storage_mib: u64,
}

/// Peripherals besides the VM's own disk.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Devices {
    /// A virtio-rng (`rng0`, class `entropy`).
    #[serde(default)]
    pub entropy: bool,
    /// An empty removable disk of this size (`usb0`, class `removable-storage`); 0: none.
    #[serde(default)]
    pub removable_mib: u64,
    /// A virtio-net (`net0`, class `network`) on a tap of its own.
    #[serde(default)]
    pub network: bool,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub version: String,
    pub boot: Boot,
    pub resources: Resources,
    /// The disk image file, if the bundle has one.
    #[serde(default)]
    pub disk: Option<String>,
    #[serde(default)]
    pub devices: Devices,
    /// sha256 (hex) of every file in the bundle but the manifest.
    pub files: BTreeMap<String, String>,
}

impl Manifest {
    /// Parses and checks a manifest.
    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        manifest.check()?;
        Ok(manifest)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a manifest serialises")
    }

    /// Internal consistency: known format, sane resources, every named file listed.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "bundle format {} is not supported (this agent reads {FORMAT})",
                self.format
            ));
        }
        if self.resources.vcpus == 0 || self.resources.memory_mib < 32 {
            return Err("resources: at least 1 vCPU and 32 MiB".into());
        }
        for name in self
            .referenced()
            .chain(self.files.keys().map(String::as_str))
        {
            if !valid_file_name(name) {
                return Err(format!("`{name}` is not a plain file name"));
            }
        }
        for name in self.referenced() {
            if !self.files.contains_key(name) {
                return Err(format!("`{name}` has no sha256 in [files]"));
            }
        }
        for digest in self.files.values() {
            if super::parse_pkg_hash(digest).is_none() {
                return Err(format!("`{digest}` is not a sha256"));
            }
        }
        Ok(())
    }

    /// The files the manifest uses.
    pub fn referenced(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.boot.kernel.as_str())
            .chain(self.boot.initramfs.as_deref())
            .chain(self.disk.as_deref())
    }
}

/// One path segment of printable ASCII, not the manifest's own name.
pub fn valid_file_name(name: &str) -> bool {
    crate::model::valid_node_name(name) && name != MANIFEST_NAME
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: FORMAT,
            name: "counter".into(),
            version: "1.0".into(),
            boot: Boot {
                kernel: "kernel".into(),
                initramfs: Some("initramfs".into()),
                cmdline: "console=ttyS0".into(),
                ready_marker: Some("VIRMO-GUEST-READY".into()),
                kernel_version: None,
            },
            resources: Resources {
                vcpus: 1,
                memory_mib: 128,
                storage_mib: 16,
            },
            disk: None,
            devices: Devices {
                entropy: true,
                ..Devices::default()
            },
            files: [
                ("kernel".to_string(), "00".repeat(32)),
                ("initramfs".to_string(), "11".repeat(32)),
            ]
            .into(),
        }
    }

    #[test]
    fn round_trips_and_checks() {
        let m = sample();
        assert_eq!(Manifest::parse(&m.to_toml()).unwrap(), m);
        let mut bad = sample();
        bad.files.remove("initramfs");
        assert!(bad.check().unwrap_err().contains("initramfs"));
        let mut bad = sample();
        bad.boot.kernel = "../etc/passwd".into();
        assert!(bad.check().is_err());
        let mut bad = sample();
        bad.format = 2;
        assert!(bad.check().unwrap_err().contains("format 2"));
    }
}
