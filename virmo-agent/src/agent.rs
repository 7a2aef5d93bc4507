//! Wires the agent together: data directory, database, supervisor, local API, DM client and
//! Pkg#0 listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::alerts::{Wake, Wakeup};
use crate::config::AgentConfig;
use crate::layout::Layout;
use crate::store::{SqliteStore, Store, StoreError};
use crate::supervisor::Supervisor;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot prepare the data directory {0}")]
    DataDir(PathBuf, #[source] std::io::Error),
    #[error("another agent runs on the data directory {0}")]
    AlreadyRunning(PathBuf),
    #[error("the data directory path {0} must be absolute and contain no `,` or `=`")]
    BadDataDir(PathBuf),
    #[error("cannot open the database")]
    Store(#[from] StoreError),
    #[error("cannot build the DM tree")]
    Tree(#[from] omadm::tree::TreeError),
    #[error("cannot serve the local socket {0}")]
    LocalSocket(PathBuf, #[source] std::io::Error),
    #[error("cannot listen for Pkg#0 notifications")]
    Notification(#[from] omadm::transport::notify::NotifyError),
    #[error("cannot start a thread")]
    Thread(#[source] std::io::Error),
}

/// A running agent.
pub struct Agent {
    pub supervisor: Arc<Supervisor>,
    pub local_socket: PathBuf,
    /// Where the Pkg#0 listener is bound.
    pub notification_addr: Option<SocketAddr>,
    wakeup: Arc<Wakeup>,
    _lock: std::fs::File,
}

/// The `vmm` binary: the configured one, else `vmm` beside our own binary, else on `PATH`.
pub fn find_vmm(config: &AgentConfig) -> PathBuf {
    if let Some(bin) = &config.vmm_bin {
        return bin.clone();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("vmm")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("vmm"))
}

impl Agent {
    /// Starts the agent on `data_dir`.
    pub fn start(config: AgentConfig, data_dir: &Path) -> Result<Self, AgentError> {
        let text = data_dir.to_string_lossy();
        if !data_dir.is_absolute() || text.contains(',') || text.contains('=') {
            return Err(AgentError::BadDataDir(data_dir.to_path_buf()));
        }
        let layout = Layout::new(data_dir);
        layout
            .create()
            .map_err(|e| AgentError::DataDir(data_dir.to_path_buf(), e))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(layout.lock_file())
            .map_err(|e| AgentError::DataDir(data_dir.to_path_buf(), e))?;
        if !crate::sys::try_lock_exclusive(&lock)
            .map_err(|e| AgentError::DataDir(data_dir.to_path_buf(), e))?
        {
            return Err(AgentError::AlreadyRunning(data_dir.to_path_buf()));
        }
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&layout.database())?);
        let dev_id = match &config.device.dev_id {
            Some(id) => id.clone(),
            None => match store.meta("dev_id")? {
                Some(id) => id,
                None => {
                    let id = format!("virmo:{}", crate::model::new_uuid());
                    store.set_meta("dev_id", &id)?;
                    id
                }
            },
        };
        let wakeup = Arc::new(Wakeup::default());
        let vmm_bin = find_vmm(&config);
        tracing::info!(data = %data_dir.display(), vmm = %vmm_bin.display(), dev_id, "agent starting");
        let supervisor = Supervisor::new(
            config.clone(),
            layout.clone(),
            store.clone(),
            vmm_bin,
            wakeup.clone(),
        );
        supervisor.start()?;
        let local_socket = config
            .listen
            .local_socket
            .clone()
            .unwrap_or_else(|| layout.local_socket());
        crate::local::serve(
            supervisor.clone(),
            &local_socket,
            config.listen.local_socket_gid,
        )
        .map_err(|e| AgentError::LocalSocket(local_socket.clone(), e))?;
        let mut notification_addr = None;
        if let Some(server) = &config.server {
            let seeded = crate::dm::tree::seed_account(server);
            let account = match store.account()? {
                Some(stored) if stored.seed == seeded.seed => stored,
                stored => {
                    // A changed configuration wins; the nonces stay while the credentials they
                    // go with are the same (a new URL does not make the server a stranger).
                    let mut account = seeded;
                    if let Some(stored) = stored.filter(|s| {
                        s.server_id == account.server_id
                            && s.auth_type == account.auth_type
                            && s.client_name == account.client_name
                            && s.client_secret == account.client_secret
                            && s.server_name == account.server_name
                            && s.server_secret == account.server_secret
                    }) {
                        account.client_nonce = stored.client_nonce;
                        account.server_nonce = stored.server_nonce;
                        account.previous_server_nonces = stored.previous_server_nonces;
                    }
                    tracing::info!("DM account (re)seeded from the configuration");
                    store.save_account(&account)?;
                    account
                }
            };
            let tree =
                crate::dm::tree::build(&config, &dev_id, Some(&account), supervisor.clone())?;
            let account = Arc::new(Mutex::new(account));
            let live = crate::dm::LiveAuth::default();
            if let Some(addr) = config.listen.notification {
                notification_addr = Some(crate::dm::notify::spawn(
                    addr,
                    account.clone(),
                    live.clone(),
                    wakeup.clone(),
                )?);
            }
            let client = crate::dm::client::DmClient::new(
                tree,
                store.clone(),
                wakeup.clone(),
                server.clone(),
                account,
                crate::dm::tree::dev_info(&config, &dev_id),
                live,
            );

            std::thread::Builder::new()
                .name("dm-client".into())
                .spawn(move || client.run())
                .map_err(AgentError::Thread)?;
        } else {
            tracing::info!("no [server] configured: local management only");
        }
        Ok(Self {
            supervisor,
            local_socket,
            notification_addr,
            wakeup,
            _lock: lock,
        })
    }

    /// Stops the DM client and the monitor (VMs keep running).
    pub fn stop(&self) {
        self.supervisor.stop();
        self.wakeup.notify(Wake::Shutdown);
    }
}
