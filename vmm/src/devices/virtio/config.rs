//! Pure-data description of a virtio device, as the VM config carries it.
//!
//! A device is declared with a peripheral [`DeviceClass`] (what it means to the administrator),
//! a [`DeviceKind`] (what emulates it) and an `allowed` switch. A device prohibited at boot is not
//! created at all; the core checks [`DeviceConfig::allowed`] before building it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Peripheral class of a device: what the administrator allows or prohibits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum DeviceClass {
    /// The VM's own disk.
    Storage,
    /// An extra disk (the USB-storage analogue).
    RemovableStorage,
    /// A network card.
    Network,
    /// A hardware random number generator.
    Entropy,
    /// A stream channel between the VM and host processes (virtio-vsock).
    HostChannel,
}

impl DeviceClass {
    /// The name used in configs and in the VirMO tree.
    pub fn name(self) -> &'static str {
        match self {
            DeviceClass::Storage => "storage",
            DeviceClass::RemovableStorage => "removable-storage",
            DeviceClass::Network => "network",
            DeviceClass::Entropy => "entropy",
            DeviceClass::HostChannel => "host-channel",
        }
    }
}

impl fmt::Display for DeviceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What emulates the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum DeviceKind {
    /// virtio-blk on a raw image file.
    Block {
        path: PathBuf,
        #[serde(default)]
        read_only: bool,
    },
    /// virtio-net on an existing (or creatable) tap interface.
    Net { tap_name: String, mac: MacAddr },
    /// virtio-rng fed by the host's `getrandom`.
    Rng,
    /// virtio-vsock: the guest has CID `cid`; host processes reach it through the Unix socket
    /// `uds_path` (`CONNECT <port>`), and its connections to host port P reach `<uds_path>_P`.
    Vsock { cid: u64, uds_path: PathBuf },
}

/// One virtio device of a VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    /// Stable name of the peripheral within its VM (`[A-Za-z0-9_-]{1,32}`).
    pub id: String,
    pub class: DeviceClass,
    pub kind: DeviceKind,
    /// `false` at boot: the device is not created at all.
    #[serde(default = "default_allowed")]
    pub allowed: bool,
}

fn default_allowed() -> bool {
    true
}

/// Why a device config was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("device id {0:?} is not 1 to 32 characters of [A-Za-z0-9_-]")]
    BadId(String),
    #[error("device {id}: class {class} cannot be served by a {kind} device")]
    ClassKindMismatch {
        id: String,
        class: DeviceClass,
        kind: &'static str,
    },
    #[error("device {id}: tap name {name:?} is not 1 to 15 bytes without '/', NUL or spaces")]
    BadTapName { id: String, name: String },
    #[error("device {id}: MAC address {mac} is multicast; a NIC needs a unicast address")]
    MulticastMac { id: String, mac: MacAddr },
    #[error("device {id}: guest CID {cid} is reserved (a guest's CID is 3 to 4294967294)")]
    BadCid { id: String, cid: u64 },
    #[error("device {id}: socket path {path:?} is empty or too long ({max} bytes at most, leaving room for _<port>)")]
    BadUdsPath {
        id: String,
        path: PathBuf,
        max: usize,
    },
}

/// Longest vsock `uds_path`: `sockaddr_un` holds 107 bytes and a NUL, and `_4294967295`
/// must still fit behind it.
pub const MAX_UDS_PATH: usize = 107 - 11;

impl DeviceConfig {
    /// Checks the config is coherent, before anything is created.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 32
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(ConfigError::BadId(self.id.clone()));
        }
        let (kind_name, class_ok) = match &self.kind {
            DeviceKind::Block { .. } => (
                "block",
                matches!(
                    self.class,
                    DeviceClass::Storage | DeviceClass::RemovableStorage
                ),
            ),
            DeviceKind::Net { .. } => ("net", self.class == DeviceClass::Network),
            DeviceKind::Rng => ("rng", self.class == DeviceClass::Entropy),
            DeviceKind::Vsock { .. } => ("vsock", self.class == DeviceClass::HostChannel),
        };
        if !class_ok {
            return Err(ConfigError::ClassKindMismatch {
                id: self.id.clone(),
                class: self.class,
                kind: kind_name,
            });
        }
        if let DeviceKind::Net { tap_name, mac } = &self.kind {
            let name_ok = !tap_name.is_empty()
                && tap_name.len() < libc::IFNAMSIZ
                && tap_name
                    .bytes()
                    .all(|b| b != b'/' && b != 0 && !b.is_ascii_whitespace());
            if !name_ok {
                return Err(ConfigError::BadTapName {
                    id: self.id.clone(),
                    name: tap_name.clone(),
                });
            }
            if mac.0[0] & 1 != 0 {
                return Err(ConfigError::MulticastMac {
                    id: self.id.clone(),
                    mac: *mac,
                });
            }
        }
        if let DeviceKind::Vsock { cid, uds_path } = &self.kind {
            if *cid < 3 || *cid >= u64::from(u32::MAX) {
                return Err(ConfigError::BadCid {
                    id: self.id.clone(),
                    cid: *cid,
                });
            }
            let len = uds_path.as_os_str().len();
            if len == 0 || len > MAX_UDS_PATH {
                return Err(ConfigError::BadUdsPath {
                    id: self.id.clone(),
                    path: uds_path.clone(),
                    max: MAX_UDS_PATH,
                });
            }
        }
        Ok(())
    }
}

/// An Ethernet MAC address, written `aa:bb:cc:dd:ee:ff` in configs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// A MAC address string that is not six colon-separated hex bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("MAC address {0:?} is not six colon-separated hex bytes")]
pub struct MacParseError(String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(|| MacParseError(s.to_owned()))?;
            if part.len() != 2 {
                return Err(MacParseError(s.to_owned()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacParseError(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.to_owned()));
        }
        Ok(MacAddr(bytes))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_json_with_kebab_case_names() {
        let json = r#"{"id":"usb0","class":"removable-storage",
            "kind":{"type":"block","path":"/tmp/x.img","read_only":true}}"#;
        let cfg: DeviceConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.class, DeviceClass::RemovableStorage);
        assert!(cfg.allowed, "allowed defaults to true");
        assert_eq!(
            cfg.kind,
            DeviceKind::Block {
                path: "/tmp/x.img".into(),
                read_only: true
            }
        );
        cfg.validate().unwrap();
        let back: DeviceConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);

        let net = r#"{"id":"nic0","class":"network","allowed":false,
            "kind":{"type":"net","tap_name":"vm0tap","mac":"52:54:00:12:34:56"}}"#;
        let cfg: DeviceConfig = serde_json::from_str(net).unwrap();
        assert!(!cfg.allowed);
        cfg.validate().unwrap();
        assert!(serde_json::to_string(&cfg)
            .unwrap()
            .contains("\"52:54:00:12:34:56\""));
    }

    #[test]
    fn incoherent_configs_are_refused() {
        let mut cfg = DeviceConfig {
            id: "rng0".into(),
            class: DeviceClass::Network,
            kind: DeviceKind::Rng,
            allowed: true,
        };
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::ClassKindMismatch { .. })
        ));
        cfg.class = DeviceClass::Entropy;
        cfg.id = "bad id".into();
        assert!(matches!(cfg.validate(), Err(ConfigError::BadId(_))));

        let cfg = DeviceConfig {
            id: "nic0".into(),
            class: DeviceClass::Network,
            kind: DeviceKind::Net {
                tap_name: "a-name-that-is-too-long".into(),
                mac: "52:54:00:00:00:01".parse().unwrap(),
            },
            allowed: true,
        };
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::BadTapName { .. })
        ));
        let vsock = |cid: u64, path: &str| DeviceConfig {
            id: "vsock0".into(),
            class: DeviceClass::HostChannel,
            kind: DeviceKind::Vsock {
                cid,
                uds_path: path.into(),
            },
            allowed: true,
        };
        vsock(3, "/run/vm.vsock").validate().unwrap();
        assert!(matches!(
            vsock(2, "/run/vm.vsock").validate(),
            Err(ConfigError::BadCid { cid: 2, .. })
        ));
        assert!(matches!(
            vsock(u64::from(u32::MAX), "/v").validate(),
            Err(ConfigError::BadCid { .. })
        ));
        assert!(matches!(
            vsock(3, &"/x".repeat(60)).validate(),
            Err(ConfigError::BadUdsPath { .. })
        ));
        assert!(matches!(
            vsock(3, "").validate(),
            Err(ConfigError::BadUdsPath { .. })
        ));
        let json = r#"{"id":"vsock0","class":"host-channel","kind":{"type":"vsock","cid":7,"uds_path":"/run/v.sock"}}"#;
        let cfg: DeviceConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg, vsock(7, "/run/v.sock"));
        assert!("52:54:00:00:00".parse::<MacAddr>().is_err());
        assert!("52:54:00:00:00:zz".parse::<MacAddr>().is_err());
        assert!("52:54:00:00:00:01:02".parse::<MacAddr>().is_err());
    }
}
