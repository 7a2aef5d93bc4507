//! The `--jail` argument and what the jail must show: pure data, checked before anything is
//! created (docs/security.md, "The jail").
//!
//! ```text
//! --jail DIR,uid=N,gid=N[,bind=PATH]…[,bind-ro=PATH]…[,net=new|host][,cgroup=NAME]
//!        [,cgroup-mount=PATH][,memory-mib=N][,cpu-percent=N][,nofile=N]
//! ```

use std::path::{Component, Path, PathBuf};

use crate::config::{ConsoleConfig, VmConfig};
use crate::devices::virtio::DeviceKind;

/// Default `RLIMIT_NOFILE` of a jailed VMM (as Firecracker's jailer).
pub const DEFAULT_NOFILE: u64 = 2048;

/// Default cgroup file system mount point.
pub const DEFAULT_CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// A `--jail` argument that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("--jail {0:?}: the first item must be the jail folder (an absolute path)")]
    NoRoot(String),
    #[error("--jail: unknown key {0:?} (known: uid, gid, bind, bind-ro, net, cgroup, cgroup-mount, memory-mib, cpu-percent, nofile)")]
    UnknownKey(String),
    #[error("--jail: {key}={value:?} is not a valid value")]
    BadValue { key: &'static str, value: String },
    #[error("--jail: {0} is required")]
    Missing(&'static str),
    #[error("--jail: uid and gid must not be 0 (the jailed VMM runs unprivileged)")]
    Root,
    #[error(
        "--jail: {0} is not an absolute path (paths are the same inside and outside the jail)"
    )]
    Relative(PathBuf),
    #[error("--jail: a tap-backed network device needs the host's network namespace (net=host)")]
    NetNeedsHost,
    #[error("--jail: memory-mib and cpu-percent need cgroup=NAME")]
    LimitsWithoutCgroup,
}

/// Which network namespace the jailed VMM runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetNamespace {
    /// A new, empty one (only a down loopback): the default without network devices.
    New,
    /// The host's: needed to reach a tap interface (the default with network devices).
    Host,
}

/// The parsed `--jail` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailConfig {
    /// An existing, empty folder: the jail's root file system (a tmpfs) is mounted on it.
    pub root: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Folders or files shown read-write (`bind=`) or read-only (`bind-ro=`), at the same path.
    pub binds: Vec<Bind>,
    /// `None`: chosen from the devices ([`NetNamespace::Host`] when a tap is used).
    pub net: Option<NetNamespace>,
    /// The VMM's cgroup, relative to each controller's hierarchy.
    pub cgroup: Option<String>,
    pub cgroup_mount: PathBuf,
    pub memory_mib: Option<u64>,
    pub cpu_percent: Option<u32>,
    pub nofile: u64,
}

/// A host path shown in the jail at the same path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bind {
    pub path: PathBuf,
    pub writable: bool,
}

fn number<T: std::str::FromStr>(key: &'static str, value: &str) -> Result<T, SpecError> {
    value.parse().map_err(|_| SpecError::BadValue {
        key,
        value: value.to_owned(),
    })
}

/// `path` made absolute-only and free of `.`/`..` (lexically: binds are mirrored by name).
fn absolute(path: &Path) -> Result<PathBuf, SpecError> {
    if !path.is_absolute() {
        return Err(SpecError::Relative(path.to_path_buf()));
    }
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

impl std::str::FromStr for JailConfig {
    type Err = SpecError;

    fn from_str(arg: &str) -> Result<Self, SpecError> {
        let mut items = arg.split(',');
        let root = items
            .next()
            .filter(|r| !r.contains('=') && r.starts_with('/'))
            .ok_or_else(|| SpecError::NoRoot(arg.to_owned()))?;
        let mut config = JailConfig {
            root: absolute(Path::new(root))?,
            uid: 0,
            gid: 0,
            binds: Vec::new(),
            net: None,
            cgroup: None,
            cgroup_mount: PathBuf::from(DEFAULT_CGROUP_MOUNT),
            memory_mib: None,
            cpu_percent: None,
            nofile: DEFAULT_NOFILE,
        };
        let (mut uid, mut gid) = (None, None);
        for item in items.filter(|i| !i.is_empty()) {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            match key {
                "uid" => uid = Some(number("uid", value)?),
                "gid" => gid = Some(number("gid", value)?),
                "bind" | "bind-ro" => config.binds.push(Bind {
                    path: absolute(Path::new(value))?,
                    writable: key == "bind",
                }),
                "net" => {
                    config.net = Some(match value {
                        "new" => NetNamespace::New,
                        "host" => NetNamespace::Host,
                        _ => {
                            return Err(SpecError::BadValue {
                                key: "net",
                                value: value.to_owned(),
                            })
                        }
                    })
                }
                "cgroup" => {
                    let bad = value.is_empty()
                        || value.starts_with('/')
                        || value
                            .split('/')
                            .any(|p| p.is_empty() || p == "." || p == "..");
                    if bad {
                        return Err(SpecError::BadValue {
                            key: "cgroup",
                            value: value.to_owned(),
                        });
                    }
                    config.cgroup = Some(value.to_owned());
                }
                "cgroup-mount" => config.cgroup_mount = absolute(Path::new(value))?,
                "memory-mib" => config.memory_mib = Some(number("memory-mib", value)?),
                "cpu-percent" => config.cpu_percent = Some(number("cpu-percent", value)?),
                "nofile" => config.nofile = number("nofile", value)?,
                other => return Err(SpecError::UnknownKey(other.to_owned())),
            }
        }
        config.uid = uid.ok_or(SpecError::Missing("uid"))?;
        config.gid = gid.ok_or(SpecError::Missing("gid"))?;
        if config.uid == 0 || config.gid == 0 {
            return Err(SpecError::Root);
        }
        if config.cgroup.is_none() && (config.memory_mib.is_some() || config.cpu_percent.is_some())
        {
            return Err(SpecError::LimitsWithoutCgroup);
        }
        Ok(config)
    }
}

/// What the VMM will open after it is jailed, read from what it was asked to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmNeeds {
    /// Files and folders to show (kernel, initramfs, disks, console file, snapshot folder).
    pub binds: Vec<Bind>,
    /// A file the VMM creates (the console file): made before it is shown.
    pub create: Vec<PathBuf>,
    /// A tap device is used (`/dev/net/tun`, the host's network namespace).
    pub tap: bool,
}

impl VmNeeds {
    /// What a cold boot of `config` opens.
    pub fn boot(config: &VmConfig) -> Self {
        let mut needs = Self::default();
        needs.binds.push(Bind {
            path: config.kernel.clone(),
            writable: false,
        });
        if let Some(initramfs) = &config.initramfs {
            needs.binds.push(Bind {
                path: initramfs.clone(),
                writable: false,
            });
        }
        needs.console(&config.console);
        for device in &config.devices {
            match &device.kind {
                DeviceKind::Block { path, read_only } => needs.binds.push(Bind {
                    path: path.clone(),
                    writable: !read_only,
                }),
                DeviceKind::Net { .. } => needs.tap = true,
                DeviceKind::Rng => {}
                // The device creates `<uds>` and connects to `<uds>_<port>`: its folder must be
                // reachable and writable (keep it the VM's own folder).
                DeviceKind::Vsock { uds_path, .. } => {
                    if let Some(folder) = uds_path.parent() {
                        needs.binds.push(Bind {
                            path: folder.to_path_buf(),
                            writable: true,
                        });
                    }
                }
            }
        }
        needs
    }

    /// What a restore of the snapshot in `dir` opens before its saved devices: the folder
    /// (read-only; a later suspend needs its parent folder as a `bind=`). The saved VM's disks
    /// are not read before the jail: they must be under a `bind=` folder.
    pub fn restore(dir: &Path, console: Option<&ConsoleConfig>) -> Self {
        let mut needs = Self {
            binds: vec![Bind {
                path: dir.to_path_buf(),
                writable: false,
            }],
            ..Self::default()
        };
        if let Some(console) = console {
            needs.console(console);
        }
        needs
    }

    fn console(&mut self, console: &ConsoleConfig) {
        if let ConsoleConfig::File(path) = console {
            self.binds.push(Bind {
                path: path.clone(),
                writable: true,
            });
            self.create.push(path.clone());
        }
    }
}

/// The binds to make, in order: every path absolute and normalized, none inside another (the
/// outermost decides; of two equal paths, the writable one).
pub fn plan_binds(explicit: &[Bind], needs: &VmNeeds) -> Result<Vec<Bind>, SpecError> {
    let mut all = explicit
        .iter()
        .chain(&needs.binds)
        .map(|b| {
            Ok(Bind {
                path: absolute(&b.path)?,
                writable: b.writable,
            })
        })
        .collect::<Result<Vec<_>, SpecError>>()?;
    // Parents sort before their children; of equal paths, writable (true) first.
    all.sort_by(|a, b| a.path.cmp(&b.path).then(b.writable.cmp(&a.writable)));
    let mut kept: Vec<Bind> = Vec::new();
    for bind in all {
        if !kept.iter().any(|k| bind.path.starts_with(&k.path)) {
            kept.push(bind);
        }
    }
    Ok(kept)
}

/// The network namespace to use: as asked, else the host's only when a tap is used.
pub fn net_namespace(config: &JailConfig, needs: &VmNeeds) -> Result<NetNamespace, SpecError> {
    match (config.net, needs.tap) {
        (Some(NetNamespace::New), true) => Err(SpecError::NetNeedsHost),
        (Some(net), _) => Ok(net),
        (None, true) => Ok(NetNamespace::Host),
        (None, false) => Ok(NetNamespace::New),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(path: &str, writable: bool) -> Bind {
        Bind {
            path: PathBuf::from(path),
            writable,
        }
    }

    #[test]
    fn parses_a_full_spec() {
        let c: JailConfig =
            "/srv/jail/vm1,uid=1001,gid=1002,bind=/data/vm1,bind-ro=/img/../images,\
                             net=new,cgroup=virmo/vm-1,memory-mib=384,cpu-percent=50,nofile=512"
                .parse()
                .unwrap();
        assert_eq!(c.root, PathBuf::from("/srv/jail/vm1"));
        assert_eq!((c.uid, c.gid), (1001, 1002));
        assert_eq!(
            c.binds,
            vec![bind("/data/vm1", true), bind("/images", false)]
        );
        assert_eq!(c.net, Some(NetNamespace::New));
        assert_eq!(c.cgroup.as_deref(), Some("virmo/vm-1"));
        assert_eq!(c.cgroup_mount, PathBuf::from(DEFAULT_CGROUP_MOUNT));
        assert_eq!(
            (c.memory_mib, c.cpu_percent, c.nofile),
            (Some(384), Some(50), 512)
        );
    }

    #[test]
    fn refuses_what_cannot_be_jailed() {
        let err = |s: &str| s.parse::<JailConfig>().unwrap_err();
        assert_eq!(err("uid=1,gid=1"), SpecError::NoRoot("uid=1,gid=1".into()));
        assert_eq!(
            err("jail,uid=1,gid=1"),
            SpecError::NoRoot("jail,uid=1,gid=1".into())
        );
        assert_eq!(err("/j,gid=1"), SpecError::Missing("uid"));
        assert_eq!(err("/j,uid=0,gid=1"), SpecError::Root);
        assert_eq!(
            err("/j,uid=1,gid=1,bind=rel"),
            SpecError::Relative("rel".into())
        );
        assert_eq!(
            err("/j,uid=1,gid=1,foo=1"),
            SpecError::UnknownKey("foo".into())
        );
        assert!(matches!(
            err("/j,uid=x,gid=1"),
            SpecError::BadValue { key: "uid", .. }
        ));
        assert!(matches!(
            err("/j,uid=1,gid=1,cgroup=../x"),
            SpecError::BadValue { .. }
        ));
        assert!(matches!(
            err("/j,uid=1,gid=1,cgroup=/x"),
            SpecError::BadValue { .. }
        ));
        assert_eq!(
            err("/j,uid=1,gid=1,memory-mib=5"),
            SpecError::LimitsWithoutCgroup
        );
    }

    #[test]
    fn binds_inside_another_are_dropped_and_writable_wins() {
        let needs = VmNeeds {
            binds: vec![
                bind("/data/vm1/disk.img", true),
                bind("/images/k/bzImage", false),
                bind("/data/vm1/snapshot", false),
            ],
            create: vec![],
            tap: false,
        };
        let explicit = [bind("/data/vm1", true), bind("/images/k/bzImage", true)];
        assert_eq!(
            plan_binds(&explicit, &needs).unwrap(),
            vec![bind("/data/vm1", true), bind("/images/k/bzImage", true)]
        );
        // A sibling whose name starts the same is not inside.
        let needs = VmNeeds {
            binds: vec![bind("/data/vm10/disk.img", false)],
            ..VmNeeds::default()
        };
        assert_eq!(plan_binds(&explicit[..1], &needs).unwrap().len(), 2);
    }

    #[test]
    fn a_tap_needs_the_host_network() {
        let config: JailConfig = "/j,uid=1,gid=1".parse().unwrap();
        let tap = VmNeeds {
            tap: true,
            ..VmNeeds::default()
        };
        assert_eq!(net_namespace(&config, &tap), Ok(NetNamespace::Host));
        assert_eq!(
            net_namespace(&config, &VmNeeds::default()),
            Ok(NetNamespace::New)
        );
        let new: JailConfig = "/j,uid=1,gid=1,net=new".parse().unwrap();
        assert_eq!(net_namespace(&new, &tap), Err(SpecError::NetNeedsHost));
    }
}
