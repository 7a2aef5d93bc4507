//! The command-line forms of virtio devices and of the boot-time class policy:
//!
//! ```text
//! --disk id=ID,path=P[,class=storage|removable-storage][,read-only]   (class default: storage)
//! --net  id=ID,tap=NAME[,mac=aa:bb:cc:dd:ee:ff]                        (class: network)
//! --rng  id=ID                                                         (class: entropy)
//! --vsock [id=ID,]cid=N,uds=PATH                                       (class: host-channel)
//! --prohibit CLASS                                                     (repeatable)
//! ```
//!
//! Without `mac=`, a NIC gets the locally administered address `52:54:00:xx:xx:xx` with the
//! last three bytes taken from a hash of its id, so the address is stable across boots.

use std::path::PathBuf;

use crate::devices::virtio::config::MacParseError;
use crate::devices::virtio::{DeviceClass, DeviceConfig, DeviceKind, MacAddr};

/// Every class a policy can name.
pub const KNOWN_CLASSES: [DeviceClass; 5] = [
    DeviceClass::Storage,
    DeviceClass::RemovableStorage,
    DeviceClass::Network,
    DeviceClass::Entropy,
    DeviceClass::HostChannel,
];

/// What is wrong with a device argument.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceArgError {
    #[error("{arg:?}: {key:?} is not a known key here (known: {known})")]
    UnknownKey {
        arg: String,
        key: String,
        known: &'static str,
    },
    #[error("{arg:?}: {key} is given twice")]
    DuplicateKey { arg: String, key: String },
    #[error("{arg:?}: {key}= is missing")]
    MissingKey { arg: String, key: &'static str },
    #[error("{arg:?}: {key}= needs a value")]
    EmptyValue { arg: String, key: String },
    #[error(
        "{0:?} is not a device class (storage, removable-storage, network, entropy, host-channel)"
    )]
    UnknownClass(String),
    #[error("{arg:?}: a disk's class is storage or removable-storage, not {class}")]
    DiskClass { arg: String, class: DeviceClass },
    #[error("{arg:?}: cid={value:?} is not a number")]
    Cid { arg: String, value: String },
    #[error("{arg:?}")]
    Mac {
        arg: String,
        #[source]
        source: MacParseError,
    },
}

/// Parses a class name as used in configs and the API.
pub fn parse_class(name: &str) -> Result<DeviceClass, DeviceArgError> {
    KNOWN_CLASSES
        .into_iter()
        .find(|c| c.name() == name)
        .ok_or_else(|| DeviceArgError::UnknownClass(name.to_string()))
}

/// `key=value` pairs and bare flags of one argument, each key at most once.
struct Pairs<'a> {
    arg: &'a str,
    pairs: Vec<(&'a str, Option<&'a str>)>,
}

impl<'a> Pairs<'a> {
    fn parse(arg: &'a str, known: &'static str, keys: &[&str]) -> Result<Self, DeviceArgError> {
        let mut pairs: Vec<(&str, Option<&str>)> = Vec::new();
        for part in arg.split(',') {
            let (key, value) = match part.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (part, None),
            };
            if !keys.contains(&key) {
                return Err(DeviceArgError::UnknownKey {
                    arg: arg.to_string(),
                    key: key.to_string(),
                    known,
                });
            }
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(DeviceArgError::DuplicateKey {
                    arg: arg.to_string(),
                    key: key.to_string(),
                });
            }
            if value == Some("") {
                return Err(DeviceArgError::EmptyValue {
                    arg: arg.to_string(),
                    key: key.to_string(),
                });
            }
            pairs.push((key, value));
        }
        Ok(Self { arg, pairs })
    }

    /// The value of `key`, if given with one.
    fn value(&self, key: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| *v)
    }

    fn required(&self, key: &'static str) -> Result<&'a str, DeviceArgError> {
        self.value(key).ok_or(DeviceArgError::MissingKey {
            arg: self.arg.to_string(),
            key,
        })
    }

    /// Whether the bare flag `key` is present (with no value).
    fn flag(&self, key: &str) -> bool {
        self.pairs.iter().any(|(k, v)| *k == key && v.is_none())
    }
}

/// `--disk id=ID,path=P[,class=storage|removable-storage][,read-only]`.
pub fn parse_disk(arg: &str) -> Result<DeviceConfig, DeviceArgError> {
    let known = "id, path, class, read-only";
    let p = Pairs::parse(arg, known, &["id", "path", "class", "read-only"])?;
    if p.value("read-only").is_some() {
        return Err(DeviceArgError::UnknownKey {
            arg: arg.to_string(),
            key: "read-only=…".to_string(),
            known: "read-only is a flag without a value",
        });
    }
    let class = match p.value("class") {
        Some(name) => parse_class(name)?,
        None => DeviceClass::Storage,
    };
    if !matches!(class, DeviceClass::Storage | DeviceClass::RemovableStorage) {
        return Err(DeviceArgError::DiskClass {
            arg: arg.to_string(),
            class,
        });
    }
    Ok(DeviceConfig {
        id: p.required("id")?.to_string(),
        class,
        kind: DeviceKind::Block {
            path: PathBuf::from(p.required("path")?),
            read_only: p.flag("read-only"),
        },
        allowed: true,
    })
}

/// `--net id=ID,tap=NAME[,mac=M]`.
pub fn parse_net(arg: &str) -> Result<DeviceConfig, DeviceArgError> {
    let p = Pairs::parse(arg, "id, tap, mac", &["id", "tap", "mac"])?;
    let id = p.required("id")?;
    let mac = match p.value("mac") {
        Some(text) => text.parse().map_err(|source| DeviceArgError::Mac {
            arg: arg.to_string(),
            source,
        })?,
        None => default_mac(id),
    };
    Ok(DeviceConfig {
        id: id.to_string(),
        class: DeviceClass::Network,
        kind: DeviceKind::Net {
            tap_name: p.required("tap")?.to_string(),
            mac,
        },
        allowed: true,
    })
}

/// `--rng id=ID`.
pub fn parse_rng(arg: &str) -> Result<DeviceConfig, DeviceArgError> {
    let p = Pairs::parse(arg, "id", &["id"])?;
    Ok(DeviceConfig {
        id: p.required("id")?.to_string(),
        class: DeviceClass::Entropy,
        kind: DeviceKind::Rng,
        allowed: true,
    })
}

/// `--vsock [id=ID,]cid=N,uds=PATH` (id default `vsock0`).
pub fn parse_vsock(arg: &str) -> Result<DeviceConfig, DeviceArgError> {
    let p = Pairs::parse(arg, "id, cid, uds", &["id", "cid", "uds"])?;
    let cid_text = p.required("cid")?;
    let cid = cid_text.parse().map_err(|_| DeviceArgError::Cid {
        arg: arg.to_string(),
        value: cid_text.to_string(),
    })?;
    Ok(DeviceConfig {
        id: p.value("id").unwrap_or("vsock0").to_string(),
        class: DeviceClass::HostChannel,
        kind: DeviceKind::Vsock {
            cid,
            uds_path: PathBuf::from(p.required("uds")?),
        },
        allowed: true,
    })
}

/// Marks every device of a prohibited class as not allowed: it will not be created.
pub fn prohibit_classes(devices: &mut [DeviceConfig], prohibited: &[DeviceClass]) {
    for device in devices {
        if prohibited.contains(&device.class) {
            device.allowed = false;
        }
    }
}

/// `52:54:00` followed by three bytes of the FNV-1a hash of `id`.
pub fn default_mac(id: &str) -> MacAddr {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let b = hash.to_le_bytes();
    MacAddr([0x52, 0x54, 0x00, b[0], b[1], b[2]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_with_defaults_and_with_every_option() {
        let d = parse_disk("id=root,path=/img/root.raw").unwrap();
        assert_eq!(d.id, "root");
        assert_eq!(d.class, DeviceClass::Storage);
        assert_eq!(
            d.kind,
            DeviceKind::Block {
                path: "/img/root.raw".into(),
                read_only: false
            }
        );
        assert!(d.allowed);
        let d = parse_disk("id=usb0,path=/u.img,class=removable-storage,read-only").unwrap();
        assert_eq!(d.class, DeviceClass::RemovableStorage);
        assert_eq!(
            d.kind,
            DeviceKind::Block {
                path: "/u.img".into(),
                read_only: true
            }
        );
    }

    #[test]
    fn bad_disks_are_refused_with_the_reason() {
        assert!(matches!(
            parse_disk("id=a"),
            Err(DeviceArgError::MissingKey { key: "path", .. })
        ));
        assert!(matches!(
            parse_disk("id=a,path=/x,class=network"),
            Err(DeviceArgError::DiskClass { .. })
        ));
        assert!(matches!(
            parse_disk("id=a,path=/x,class=usb"),
            Err(DeviceArgError::UnknownClass(_))
        ));
        assert!(matches!(
            parse_disk("id=a,path=/x,size=3"),
            Err(DeviceArgError::UnknownKey { .. })
        ));
        assert!(matches!(
            parse_disk("id=a,id=b,path=/x"),
            Err(DeviceArgError::DuplicateKey { .. })
        ));
        assert!(matches!(
            parse_disk("id=,path=/x"),
            Err(DeviceArgError::EmptyValue { .. })
        ));
        assert!(parse_disk("id=a,path=/x,read-only=yes").is_err());
        assert!(parse_disk("").is_err());
    }

    #[test]
    fn net_gets_a_stable_local_mac_unless_given_one() {
        let n = parse_net("id=nic0,tap=vmtap0").unwrap();
        let DeviceKind::Net { tap_name, mac } = &n.kind else {
            panic!("{n:?}")
        };
        assert_eq!(tap_name, "vmtap0");
        assert_eq!(&mac.0[..3], &[0x52, 0x54, 0x00]);
        assert_eq!(*mac, default_mac("nic0"));
        assert_ne!(default_mac("nic0"), default_mac("nic1"));
        assert_eq!(n.class, DeviceClass::Network);
        let n = parse_net("id=nic0,tap=t,mac=52:54:00:aa:bb:cc").unwrap();
        assert!(
            matches!(n.kind, DeviceKind::Net { mac, .. } if mac.0 == [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc])
        );
        assert!(matches!(
            parse_net("id=nic0,tap=t,mac=zz"),
            Err(DeviceArgError::Mac { .. })
        ));
        assert!(parse_net("id=nic0").is_err());
    }

    #[test]
    fn rng_and_class_policy() {
        let mut devices = vec![
            parse_rng("id=rng0").unwrap(),
            parse_disk("id=usb0,path=/u,class=removable-storage").unwrap(),
            parse_disk("id=root,path=/r").unwrap(),
        ];
        assert_eq!(devices[0].class, DeviceClass::Entropy);
        prohibit_classes(&mut devices, &[parse_class("removable-storage").unwrap()]);
        let allowed: Vec<bool> = devices.iter().map(|d| d.allowed).collect();
        assert_eq!(allowed, [true, false, true]);
        assert!(parse_rng("id=r,tap=x").is_err());
        let v = parse_vsock("cid=5,uds=/run/vm.vsock").unwrap();
        assert_eq!(
            (v.id.as_str(), v.class),
            ("vsock0", DeviceClass::HostChannel)
        );
        assert_eq!(
            v.kind,
            DeviceKind::Vsock {
                cid: 5,
                uds_path: "/run/vm.vsock".into()
            }
        );
        assert_eq!(parse_vsock("id=v1,cid=9,uds=/v").unwrap().id, "v1");
        assert!(matches!(
            parse_vsock("cid=x,uds=/v"),
            Err(DeviceArgError::Cid { .. })
        ));
        assert!(matches!(
            parse_vsock("cid=3"),
            Err(DeviceArgError::MissingKey { key: "uds", .. })
        ));
        assert_eq!(
            parse_class("host-channel").unwrap(),
            DeviceClass::HostChannel
        );
        assert!(parse_class("wifi").is_err());
    }
}
