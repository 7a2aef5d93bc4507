//! The VM's configuration: pure data, (de)serialisable, validated before anything is created.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::arch::x86_64::boot::{KernelFormat, KernelFormatError};
use crate::devices::virtio::DeviceConfig;
use crate::memory::{CMDLINE_MAX_LEN, MIB};

mod device_args;

pub use device_args::{
    default_mac, parse_class, parse_disk, parse_net, parse_rng, parse_vsock, prohibit_classes,
    DeviceArgError, KNOWN_CLASSES,
};

/// The smallest guest memory accepted, in MiB.
pub const MIN_MEMORY_MIB: u64 = 32;
/// Default kernel command line when none is given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 quiet panic=-1";

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleConfig {
    /// The VMM's stdout; the VMM's stdin is the console input.
    #[default]
    Stdout,
    /// Appended to a file; no input.
    File(PathBuf),
    /// Discarded.
    None,
}

impl std::str::FromStr for ConsoleConfig {
    type Err = ConfigError;

    /// Parses `stdout`, `none` or `file:PATH`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" => Ok(Self::Stdout),
            "none" => Ok(Self::None),
            _ => match s.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(Self::File(PathBuf::from(path))),
                _ => Err(ConfigError::BadConsole(s.to_string())),
            },
        }
    }
}

/// How a bzImage kernel is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BzImageBoot {
    /// The VMM decompresses the bzImage's payload (LZ4) and enters the kernel at its PVH entry
    /// point, skipping the guest's own decompressor (and so its KASLR). Falls back to `linux`
    /// when the payload is not LZ4 or the kernel has no PVH entry point.
    #[default]
    Pvh,
    /// The Linux 64-bit boot protocol: the kernel decompresses (and relocates) itself.
    Linux,
}

impl std::str::FromStr for BzImageBoot {
    type Err = ConfigError;

    /// Parses `pvh` or `linux`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pvh" => Ok(Self::Pvh),
            "linux" => Ok(Self::Linux),
            _ => Err(ConfigError::BadBzImageBoot(s.to_string())),
        }
    }
}

/// Everything needed to build one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// The VM's ID (VirMO uses a UUID); reported by `GetInfo`.
    #[serde(default = "default_id")]
    pub id: String,
    /// A bzImage (Linux boot protocol) or an uncompressed ELF vmlinux with a PVH entry point.
    pub kernel: PathBuf,
    #[serde(default)]
    pub initramfs: Option<PathBuf>,
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    #[serde(default)]
    pub console: ConsoleConfig,
    /// How a bzImage kernel is entered (ignored for an ELF vmlinux).
    #[serde(default)]
    pub bzimage_boot: BzImageBoot,
    /// Where to serve the control API; none means no API.
    #[serde(default)]
    pub api_socket: Option<PathBuf>,
    /// virtio devices, in the order the guest finds them; `allowed: false` = not created.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
}

fn default_id() -> String {
    "vm".to_string()
}
fn default_cmdline() -> String {
    DEFAULT_CMDLINE.to_string()
}
fn default_vcpus() -> u8 {
    1
}
fn default_memory_mib() -> u64 {
    256
}

/// Limits of the host the VM must fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// `KVM_CAP_MAX_VCPUS`.
    pub max_vcpus: usize,
    /// Physical memory of the host, in MiB.
    pub memory_mib: u64,
}

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not a valid VM config")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("console {0:?} is not one of stdout, none, file:PATH")]
    BadConsole(String),
    #[error("bzImage boot {0:?} is not one of pvh, linux")]
    BadBzImageBoot(String),
    #[error("kernel {path}")]
    Kernel {
        path: PathBuf,
        #[source]
        source: KernelFormatError,
    },
    #[error("initramfs {path} cannot be read")]
    Initramfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("initramfs {0} is empty")]
    EmptyInitramfs(PathBuf),
    #[error("the VM needs at least 1 vCPU")]
    NoVcpus,
    #[error("{requested} vCPUs requested but this host's KVM allows at most {max}")]
    TooManyVcpus { requested: u8, max: usize },
    #[error("{0} MiB of memory is too small: at least {MIN_MEMORY_MIB} MiB is needed")]
    MemoryTooSmall(u64),
    #[error("{requested} MiB of memory requested but the host has only {host} MiB")]
    MemoryTooLarge { requested: u64, host: u64 },
    #[error("kernel command line is {0} bytes long; at most {CMDLINE_MAX_LEN} are allowed")]
    CmdlineTooLong(usize),
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("VM id must not be empty")]
    EmptyId,
}

impl VmConfig {
    /// A config with defaults for everything but the kernel.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            id: default_id(),
            kernel: kernel.into(),
            initramfs: None,
            cmdline: default_cmdline(),
            vcpus: default_vcpus(),
            memory_mib: default_memory_mib(),
            console: ConsoleConfig::default(),
            bzimage_boot: BzImageBoot::default(),
            api_socket: None,
            devices: Vec::new(),
        }
    }

    /// Reads a JSON config file.
    pub fn from_json_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Guest memory in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib * MIB
    }

    /// Checks everything that does not depend on the host: returns the kernel's format.
    pub fn validate(&self) -> Result<KernelFormat, ConfigError> {
        self.validate_machine()?;
        self.validate_boot_files()
    }

    /// Checks the machine's shape (ID, vCPUs, memory, command line) but not the boot files;
    /// enough for a VM whose memory comes from a snapshot.
    pub fn validate_machine(&self) -> Result<(), ConfigError> {
        if self.id.is_empty() {
            return Err(ConfigError::EmptyId);
        }
        if self.vcpus == 0 {
            return Err(ConfigError::NoVcpus);
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(ConfigError::MemoryTooSmall(self.memory_mib));
        }
        if self.cmdline.len() > CMDLINE_MAX_LEN {
            return Err(ConfigError::CmdlineTooLong(self.cmdline.len()));
        }
        if self.cmdline.contains('\0') {
            return Err(ConfigError::CmdlineNul);
        }
        Ok(())
    }

    /// Checks the kernel and initramfs files; returns the kernel's format.
    pub fn validate_boot_files(&self) -> Result<KernelFormat, ConfigError> {
        let format = KernelFormat::detect(&self.kernel).map_err(|source| ConfigError::Kernel {
            path: self.kernel.clone(),
            source,
        })?;
        if let Some(initramfs) = &self.initramfs {
            let meta = std::fs::metadata(initramfs).map_err(|source| ConfigError::Initramfs {
                path: initramfs.clone(),
                source,
            })?;
            if meta.len() == 0 {
                return Err(ConfigError::EmptyInitramfs(initramfs.clone()));
            }
        }
        Ok(format)
    }

    /// Checks the config against the host's limits.
    pub fn validate_for_host(&self, host: HostLimits) -> Result<(), ConfigError> {
        if usize::from(self.vcpus) > host.max_vcpus {
            return Err(ConfigError::TooManyVcpus {
                requested: self.vcpus,
                max: host.max_vcpus,
            });
        }
        if self.memory_mib > host.memory_mib {
            return Err(ConfigError::MemoryTooLarge {
                requested: self.memory_mib,
                host: host.memory_mib,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file that looks like a bzImage to the format check: "HdrS" at 0x202.
    fn fake_bzimage(dir: &Path) -> PathBuf {
        let path = dir.join("bzImage");
        let mut bytes = vec![0u8; 0x400];
        bytes[0x202..0x206].copy_from_slice(b"HdrS");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmm-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn valid_config_passes_and_detects_bzimage() {
        let dir = temp_dir("valid");
        let mut config = VmConfig::new(fake_bzimage(&dir));
        let initrd = dir.join("initrd");
        std::fs::File::create(&initrd)
            .unwrap()
            .write_all(b"x")
            .unwrap();
        config.initramfs = Some(initrd);
        assert_eq!(config.validate().unwrap(), KernelFormat::BzImage);
    }

    #[test]
    fn zero_vcpus_refused() {
        let dir = temp_dir("vcpus");
        let mut config = VmConfig::new(fake_bzimage(&dir));
        config.vcpus = 0;
        let err = config.validate().unwrap_err();
        assert!(matches!(err, ConfigError::NoVcpus));
        assert!(err.to_string().contains("vCPU"));
    }

    #[test]
    fn small_memory_refused() {
        let dir = temp_dir("mem");
        let mut config = VmConfig::new(fake_bzimage(&dir));
        config.memory_mib = 16;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::MemoryTooSmall(16))
        ));
    }

    #[test]
    fn missing_initramfs_named_in_error() {
        let dir = temp_dir("initrd");
        let mut config = VmConfig::new(fake_bzimage(&dir));
        config.initramfs = Some(dir.join("does-not-exist"));
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("does-not-exist"), "{err}");
    }

    #[test]
    fn kernel_that_is_neither_bzimage_nor_elf_refused() {
        let dir = temp_dir("kernel");
        let path = dir.join("not-a-kernel");
        std::fs::write(&path, vec![0x55u8; 0x1000]).unwrap();
        let err = VmConfig::new(&path).validate().unwrap_err();
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(text.contains("neither a bzImage nor an ELF"), "{text}");
        assert!(text.contains("not-a-kernel"), "{text}");
    }

    #[test]
    fn missing_kernel_refused() {
        let err = VmConfig::new("/nonexistent/kernel").validate().unwrap_err();
        assert!(matches!(err, ConfigError::Kernel { .. }));
    }

    #[test]
    fn host_limits_enforced() {
        let mut config = VmConfig::new("k");
        config.vcpus = 8;
        config.memory_mib = 1024;
        let host = HostLimits {
            max_vcpus: 4,
            memory_mib: 2048,
        };
        assert!(matches!(
            config.validate_for_host(host),
            Err(ConfigError::TooManyVcpus {
                requested: 8,
                max: 4
            })
        ));
        config.vcpus = 2;
        config.memory_mib = 4096;
        assert!(matches!(
            config.validate_for_host(host),
            Err(ConfigError::MemoryTooLarge { .. })
        ));
        config.memory_mib = 512;
        assert!(config.validate_for_host(host).is_ok());
    }

    #[test]
    fn console_parses_the_three_forms() {
        assert_eq!(
            "stdout".parse::<ConsoleConfig>().unwrap(),
            ConsoleConfig::Stdout
        );
        assert_eq!(
            "none".parse::<ConsoleConfig>().unwrap(),
            ConsoleConfig::None
        );
        assert_eq!(
            "file:/tmp/x".parse::<ConsoleConfig>().unwrap(),
            ConsoleConfig::File("/tmp/x".into())
        );
        assert!("file:".parse::<ConsoleConfig>().is_err());
        assert!("tty".parse::<ConsoleConfig>().is_err());
    }

    #[test]
    fn json_devices_parse_with_their_policy() {
        use crate::devices::virtio::{DeviceClass, DeviceKind};
        let json = r#"{"kernel": "/k", "devices": [
            {"id": "root", "class": "storage", "kind": {"type": "block", "path": "/r.img"}},
            {"id": "usb0", "class": "removable-storage",
             "kind": {"type": "block", "path": "/u.img", "read_only": true}, "allowed": false},
            {"id": "rng0", "class": "entropy", "kind": {"type": "rng"}}]}"#;
        let config: VmConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.devices.len(), 3);
        assert!(config.devices[0].allowed, "allowed defaults to true");
        assert!(!config.devices[1].allowed);
        assert_eq!(config.devices[1].class, DeviceClass::RemovableStorage);
        assert_eq!(config.devices[2].kind, DeviceKind::Rng);
        assert!(serde_json::from_str::<VmConfig>(r#"{"kernel": "/k"}"#)
            .unwrap()
            .devices
            .is_empty());
        let bad = r#"{"kernel": "/k", "devices": [{"id": "x", "class": "wifi", "kind": {"type": "rng"}}]}"#;
        assert!(serde_json::from_str::<VmConfig>(bad).is_err());
    }

    #[test]
    fn json_round_trip_and_defaults() {
        let json = r#"{"kernel": "/k", "memory_mib": 128, "console": {"file": "/tmp/c"}}"#;
        let config: VmConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.vcpus, 1);
        assert_eq!(config.memory_mib, 128);
        assert_eq!(config.console, ConsoleConfig::File("/tmp/c".into()));
        let back: VmConfig =
            serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(back, config);
        assert!(serde_json::from_str::<VmConfig>(r#"{"kernel": "/k", "cpus": 2}"#).is_err());
    }
}
