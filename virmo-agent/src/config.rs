//! The agent's configuration: pure data, read from an optional TOML file, validated before
//! anything is created. `virmo-agent --data-dir D` alone gives a working local agent (no DM
//! server); the `[server]` table connects it to one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// How the agent authenticates with its DM server (both directions use the same scheme).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    Basic,
    #[default]
    Md5,
    Hmac,
}

impl AuthKind {
    pub fn scheme(self) -> omadm::auth::AuthScheme {
        match self {
            Self::Basic => omadm::auth::AuthScheme::Basic,
            Self::Md5 => omadm::auth::AuthScheme::Md5,
            Self::Hmac => omadm::auth::AuthScheme::Hmac,
        }
    }
}

/// The DM message encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EncodingKind {
    #[default]
    Xml,
    Wbxml,
}

/// `[server]`: the DM server account (seeds `./DMAcc`; the database keeps it afterwards).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where package 1 goes, e.g. `https://dm.example.com/dm`.
    pub url: String,
    /// The server's identity (`ServerID`; ACLs name it).
    pub server_id: String,
    #[serde(default)]
    pub auth: AuthKind,
    /// Our user name with the server (`CLCRED` `AAuthName`).
    pub client_name: String,
    /// Our secret (`CLCRED` `AAuthSecret`).
    pub client_secret: String,
    /// The name the server presents (`SRVCRED`); default: the server ID.
    #[serde(default)]
    pub server_name: Option<String>,
    /// The secret the server must present (`SRVCRED`), also the key of its Pkg#0 digests.
    pub server_secret: String,
    #[serde(default)]
    pub encoding: EncodingKind,
    /// Seconds between sessions the agent opens on its own.
    #[serde(default = "defaults::poll_interval")]
    pub poll_interval_secs: u64,
    /// First retry delay of a failed session with alerts to deliver (doubled up to the max).
    #[serde(default = "defaults::retry_min")]
    pub retry_min_secs: u64,
    #[serde(default = "defaults::retry_max")]
    pub retry_max_secs: u64,
    /// The HTTP timeout of one DM exchange.
    #[serde(default = "defaults::http_timeout")]
    pub http_timeout_secs: u64,
    /// PEM certificates an `https://` server must chain to (a private CA, or the server's own
    /// certificate); without it, the usual web roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("url", &self.url)
            .field("server_id", &self.server_id)
            .field("auth", &self.auth)
            .field("client_name", &self.client_name)
            .field("client_secret", &"<redacted>")
            .field("server_name", &self.server_name)
            .field("server_secret", &"<redacted>")
            .field("encoding", &self.encoding)
            .field("poll_interval_secs", &self.poll_interval_secs)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    pub fn server_name(&self) -> &str {
        self.server_name.as_deref().unwrap_or(&self.server_id)
    }
}

/// `[device]`: what `./DevInfo` and `./DevDetail` say.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// `DevId`; default: `virmo:` and an ID generated once and kept in the database.
    #[serde(default)]
    pub dev_id: Option<String>,
    #[serde(default = "defaults::manufacturer")]
    pub manufacturer: String,
    #[serde(default = "defaults::model")]
    pub model: String,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            dev_id: None,
            manufacturer: defaults::manufacturer(),
            model: defaults::model(),
        }
    }
}

/// `[listen]`: the agent's own endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// UDP address of the Pkg#0 listener (e.g. `0.0.0.0:2948`); none: no listener.
    #[serde(default)]
    pub notification: Option<SocketAddr>,
    /// The local user's socket (the `virmo` CLI); default `<data dir>/virmo.sock`.
    #[serde(default)]
    pub local_socket: Option<PathBuf>,
    /// Group ID allowed on the local socket (mode 0660); none: the agent's user only (0600).
    #[serde(default)]
    pub local_socket_gid: Option<u32>,
}

/// `[limits]`: what this device offers and how long things may take.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default = "defaults::max_vms")]
    pub max_vms: u32,
    /// Largest vCPU count of one VM; default: the host's CPU count.
    #[serde(default)]
    pub max_vcpus: Option<u32>,
    /// Largest memory of one VM; default: the host's memory.
    #[serde(default)]
    pub max_memory_mib: Option<u64>,
    /// Largest disk of one VM; default: 64 GiB.
    #[serde(default = "defaults::max_storage")]
    pub max_storage_mib: u64,
    /// Memory kept free for the host when starting a VM.
    #[serde(default = "defaults::host_reserve")]
    pub host_reserve_mib: u64,
    /// How long a guest has to power off before it is stopped by force.
    #[serde(default = "defaults::stop_deadline")]
    pub stop_deadline_secs: u64,
    /// How long a started VM's API has to come up.
    #[serde(default = "defaults::start_timeout")]
    pub start_timeout_secs: u64,
    /// How long a VM started with new firmware must keep running (or print its image's ready
    /// marker) to count as booted.
    #[serde(default = "defaults::boot_check")]
    pub boot_check_secs: u64,
    /// PBKDF2-HMAC-SHA256 iterations of the user unlock code's hash.
    #[serde(default = "defaults::unlock_iterations")]
    pub unlock_hash_iterations: u32,
    /// Wrong unlock codes allowed before the user must wait.
    #[serde(default = "defaults::unlock_attempts")]
    pub unlock_max_attempts: u32,
    /// The first wait after too many wrong codes (doubled with each further failure).
    #[serde(default = "defaults::unlock_backoff")]
    pub unlock_backoff_secs: u64,
    /// Largest image bundle accepted.
    #[serde(default = "defaults::max_bundle")]
    pub max_bundle_mib: u64,
    /// HTTP timeout of a bundle download (per read).
    #[serde(default = "defaults::download_timeout")]
    pub download_timeout_secs: u64,
    /// Download attempts (each resuming where the last one stopped).
    #[serde(default = "defaults::download_attempts")]
    pub download_attempts: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        toml::from_str("").expect("the defaults parse")
    }
}

/// `[cgroup]`: where VM CPU shares are applied.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupConfig {
    /// The cgroup file system's mount point.
    #[serde(default = "defaults::cgroup_mount")]
    pub mount: PathBuf,
    /// The agent's folder in it (one child per VM).
    #[serde(default = "defaults::cgroup_name")]
    pub name: String,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        Self {
            mount: defaults::cgroup_mount(),
            name: defaults::cgroup_name(),
        }
    }
}

/// `[jail]`: how the VMMs are confined (`vmm --jail`, docs/security.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailConfig {
    /// Jail every VMM (needs an agent running as root; a non-root agent runs them unjailed and
    /// says so once).
    #[serde(default = "defaults::jail_enabled")]
    pub enabled: bool,
    /// The first uid (and gid) given to VMMs: each running VM gets one of its own.
    #[serde(default = "defaults::jail_uid_base")]
    pub uid_base: u32,
    /// How many uids from `uid_base` on are the agent's to give.
    #[serde(default = "defaults::jail_uid_count")]
    pub uid_count: u32,
}

impl Default for JailConfig {
    fn default() -> Self {
        Self {
            enabled: defaults::jail_enabled(),
            uid_base: defaults::jail_uid_base(),
            uid_count: defaults::jail_uid_count(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The data directory (database, VMs, images); `--data-dir` overrides it.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// The `vmm` binary; default: `vmm` next to the agent's binary, else on `PATH`.
    #[serde(default)]
    pub vmm_bin: Option<PathBuf>,
    #[serde(default)]
    pub server: Option<ServerConfig>,
    #[serde(default)]
    pub device: DeviceConfig,
    #[serde(default)]
    pub listen: ListenConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub cgroup: CgroupConfig,
    #[serde(default)]
    pub jail: JailConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        toml::from_str("").expect("the defaults parse")
    }
}

mod defaults {
    use std::path::PathBuf;
    pub fn poll_interval() -> u64 {
        3600
    }
    pub fn retry_min() -> u64 {
        5
    }
    pub fn retry_max() -> u64 {
        600
    }
    pub fn http_timeout() -> u64 {
        60
    }
    pub fn manufacturer() -> String {
        "virmo".into()
    }
    pub fn model() -> String {
        "virmo-agent".into()
    }
    pub fn max_vms() -> u32 {
        256
    }
    pub fn max_storage() -> u64 {
        64 * 1024
    }
    pub fn host_reserve() -> u64 {
        256
    }
    pub fn stop_deadline() -> u64 {
        30
    }
    pub fn start_timeout() -> u64 {
        30
    }
    pub fn boot_check() -> u64 {
        60
    }
    pub fn unlock_iterations() -> u32 {
        200_000
    }
    pub fn unlock_attempts() -> u32 {
        3
    }
    pub fn unlock_backoff() -> u64 {
        30
    }
    pub fn max_bundle() -> u64 {
        16 * 1024
    }
    pub fn download_timeout() -> u64 {
        60
    }
    pub fn download_attempts() -> u32 {
        5
    }
    pub fn cgroup_mount() -> PathBuf {
        PathBuf::from("/sys/fs/cgroup")
    }
    pub fn cgroup_name() -> String {
        "virmo".into()
    }
    pub fn jail_enabled() -> bool {
        true
    }
    pub fn jail_uid_base() -> u32 {
        800_000
    }
    pub fn jail_uid_count() -> u32 {
        65_536
    }
}

impl AgentConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::new(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |why: String| Err(ConfigError::Invalid(why));
        let jail = &self.jail;
        if jail.uid_base == 0
            || jail.uid_count == 0
            || jail.uid_base.checked_add(jail.uid_count).is_none()
        {
            return invalid(
                "jail.uid_base and jail.uid_count must give uids above 0 that fit in 32 bits"
                    .into(),
            );
        }
        if let Some(server) = &self.server {
            if !(server.url.starts_with("http://") || server.url.starts_with("https://")) {
                return invalid(format!("server.url {:?} is not an http(s) URL", server.url));
            }
            if server.server_id.is_empty() || server.client_name.is_empty() {
                return invalid("server.server_id and server.client_name must not be empty".into());
            }
            if server.retry_min_secs == 0 || server.retry_max_secs < server.retry_min_secs {
                return invalid("server.retry_min_secs must be > 0 and <= retry_max_secs".into());
            }
            if server.poll_interval_secs == 0 {
                return invalid("server.poll_interval_secs must be > 0".into());
            }
        }
        let l = &self.limits;
        if l.max_vms == 0 || l.max_vcpus == Some(0) || l.max_memory_mib == Some(0) {
            return invalid("limits must not be 0".into());
        }
        if l.unlock_hash_iterations == 0 || l.unlock_max_attempts == 0 {
            return invalid("limits.unlock_* must not be 0".into());
        }
        if l.download_attempts == 0 {
            return invalid("limits.download_attempts must not be 0".into());
        }
        if self.cgroup.name.is_empty() || self.cgroup.name.contains('/') {
            return invalid("cgroup.name must be one path segment".into());
        }
        Ok(())
    }

    /// The data directory: `--data-dir` if given, else the file's `data_dir`, else
    /// `/var/lib/virmo`.
    pub fn resolve_data_dir(&self, cli: Option<&Path>) -> PathBuf {
        cli.map(Path::to_path_buf)
            .or_else(|| self.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("/var/lib/virmo"))
    }

    pub fn stop_deadline(&self) -> Duration {
        Duration::from_secs(self.limits.stop_deadline_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config = AgentConfig::from_toml("").unwrap();
        assert!(config.server.is_none());
        assert_eq!(config.limits.stop_deadline_secs, 30);
        assert_eq!(config.cgroup.name, "virmo");
        assert_eq!(
            config.resolve_data_dir(Some(Path::new("/d"))),
            PathBuf::from("/d")
        );
    }

    #[test]
    fn a_server_account_parses_and_its_secrets_are_not_printed() {
        let config = AgentConfig::from_toml(
            r#"
            [server]
            url = "http://127.0.0.1:8080/dm"
            server_id = "virmo-server"
            auth = "hmac"
            client_name = "host-1"
            client_secret = "client-pw"
            server_secret = "server-pw"
            [listen]
            notification = "127.0.0.1:2948"
            [limits]
            max_vms = 60
            "#,
        )
        .unwrap();
        let server = config.server.as_ref().unwrap();
        assert_eq!(server.auth, AuthKind::Hmac);
        assert_eq!(server.server_name(), "virmo-server");
        assert_eq!(config.limits.max_vms, 60);
        let printed = format!("{config:?}");
        assert!(!printed.contains("client-pw") && !printed.contains("server-pw"));
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for (text, why) in [
            ("[server]\nurl='ftp://x'\nserver_id='s'\nclient_name='c'\nclient_secret='a'\nserver_secret='b'", "http"),
            ("[limits]\nmax_vms = 0", "0"),
            ("[cgroup]\nname = 'a/b'", "segment"),
        ] {
            let err = AgentConfig::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        assert!(matches!(
            AgentConfig::from_toml("unknown = 1"),
            Err(ConfigError::Parse { .. })
        ));
    }
}
