//! The running server: one HTTP(S) listener serving the DM endpoint (`/dm`) and the admin API
//! (`/api/v1`), the store, the sweeper that ends idle sessions and applies the jobs' timeouts,
//! and the pruning of old alerts, events and statuses ([`Retention`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt as _;
use omadm::session::Limits;

use crate::admin::{self, Admin};
use crate::clock::{Clock, SystemClock};
use crate::dm::{self, DmConfig, DmService};
use crate::model::JobPolicy;
use crate::store::{self, Retention, Store, StoreError};
use crate::tls::{ServerTls, TlsError, TlsListener};

/// The DM endpoint's path.
pub const DM_PATH: &str = "/dm";

/// How a server runs. Pure data, checked by [`Server::start`].
#[derive(Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `sqlite://…` or `postgres://…` (see [`store::open`]).
    pub database_url: String,
    /// Connections to PostgreSQL (SQLite always uses one).
    pub max_connections: u32,
    /// The URL devices reach this server at (default: `http://<bound address>`).
    pub public_url: Option<String>,
    /// Our ServerID.
    pub server_id: String,
    /// The bearer token of the admin API.
    pub admin_token: String,
    /// This process's name in the store's session tags (default: random).
    pub instance: Option<String>,
    pub limits: Limits,
    /// How often idle sessions and job timeouts are swept; `None`: never on its own (tests
    /// call [`Server::sweep`]).
    pub sweep_every: Option<Duration>,
    pub refresh_after_change: bool,
    pub default_policy: JobPolicy,
    /// Serve HTTPS with this identity (plain HTTP without it: loopback and development).
    pub tls: Option<ServerTls>,
    /// How many alerts, events and statuses are kept, and for how long.
    pub retention: Retention,
    /// How often old rows are pruned; `None`: never on its own (tests call [`Server::prune`]).
    pub prune_every: Option<Duration>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("database_url", &store::redact_url(&self.database_url))
            .field("public_url", &self.public_url)
            .field("server_id", &self.server_id)
            .field("admin_token", &"<redacted>")
            .field("sweep_every", &self.sweep_every)
            .field("tls", &self.tls)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// A server on `listen` with the database at `database_url` and the usual defaults.
    pub fn new(listen: SocketAddr, database_url: &str, admin_token: &str) -> Self {
        Self {
            listen,
            database_url: database_url.to_owned(),
            max_connections: 16,
            public_url: None,
            server_id: "virmo-server".to_owned(),
            admin_token: admin_token.to_owned(),
            instance: None,
            limits: Limits::default(),
            sweep_every: Some(Duration::from_secs(1)),
            refresh_after_change: true,
            default_policy: JobPolicy::default(),
            tls: None,
            retention: Retention::default(),
            prune_every: Some(Duration::from_secs(60)),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    #[error("cannot set up TLS")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// One pruning pass, logged.
async fn prune(store: &dyn Store, retention: &Retention, now: crate::clock::Millis) {
    match store.prune(retention, now).await {
        Ok(report) if report.total() > 0 => tracing::info!(?report, "old rows pruned"),
        Ok(_) => {}
        Err(err) => tracing::error!(error = %err, "cannot prune old rows"),
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    base_url: String,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    retention: Retention,
    dm: Arc<DmService>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the store, binds, and serves (on the current tokio runtime).
    pub async fn start(config: ServerConfig) -> Result<Self, ServerError> {
        Self::start_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(
        config: ServerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        if config.admin_token.trim().len() < 8 {
            return Err(ServerError::Config(
                "the admin token must be at least 8 characters".into(),
            ));
        }
        if config.server_id.trim().is_empty() {
            return Err(ServerError::Config("the server ID is empty".into()));
        }
        let store = store::open(&config.database_url, config.max_connections).await?;
        Self::start_with_store(config, store, clock).await
    }

    /// Serves with a store already open (`database_url` is then only shown in logs).
    pub async fn start_with_store(
        config: ServerConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        if config.admin_token.trim().len() < 8 {
            return Err(ServerError::Config(
                "the admin token must be at least 8 characters".into(),
            ));
        }
        let tls = config
            .tls
            .as_ref()
            .map(ServerTls::server_config)
            .transpose()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let base_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| {
                let scheme = if tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{addr}")
            })
            .trim_end_matches('/')
            .to_owned();
        let instance = config
            .instance
            .clone()
            .unwrap_or_else(|| crate::random_hex(4));
        let (changes, changes_rx) = tokio::sync::watch::channel(0u64);
        let dm = Arc::new(DmService::new(
            store.clone(),
            clock.clone(),
            DmConfig {
                server_id: config.server_id.clone(),
                base_url: format!("{base_url}{DM_PATH}"),
                limits: config.limits,
                instance,
                refresh_after_change: config.refresh_after_change,
            },
            changes,
        ));
        let admin = Arc::new(Admin::new(
            store.clone(),
            clock.clone(),
            dm.clone(),
            changes_rx,
            config.default_policy,
        ));
        let app = dm::router(dm.clone(), DM_PATH)
            .merge(admin::http::router(admin, config.admin_token.clone()));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        let mut serve_stop = stop_rx.clone();
        let shutdown = async move {
            let _ = serve_stop.wait_for(|stop| *stop).await;
        };
        match tls {
            Some(tls) => {
                let listener =
                    TlsListener::new(listener, tls).map_err(|source| ServerError::Bind {
                        addr: config.listen,
                        source,
                    })?;
                tasks.push(tokio::spawn(async move {
                    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown);
                    if let Err(err) = served.await {
                        tracing::error!(error = %err, "the HTTPS server stopped");
                    }
                }));
            }
            None => {
                let listener = listener.tap_io(|tcp| {
                    // Replies leave in one write only with Nagle off (see omadm's transport
                    // notes).
                    let _ = tcp.set_nodelay(true);
                });
                tasks.push(tokio::spawn(async move {
                    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown);
                    if let Err(err) = served.await {
                        tracing::error!(error = %err, "the HTTP server stopped");
                    }
                }));
            }
        }
        if let Some(every) = config.sweep_every {
            let dm = dm.clone();
            tasks.push(spawn_periodic(every, stop_rx.clone(), move || {
                let dm = dm.clone();
                async move {
                    dm.sweep_sessions(std::time::Instant::now()).await;
                    if let Err(err) = dm.sweep_jobs().await {
                        tracing::error!(error = %err, "cannot apply the job timeouts");
                    }
                }
            }));
        }
        if let Some(every) = config.prune_every {
            let store = store.clone();
            let clock = clock.clone();
            let retention = config.retention;
            tasks.push(spawn_periodic(every, stop_rx, move || {
                let (store, clock) = (store.clone(), clock.clone());
                async move { prune(store.as_ref(), &retention, clock.now()).await }
            }));
        }
        tracing::info!(%addr, url = %base_url, database = %store::redact_url(&config.database_url), "virmo-server listening");
        Ok(Self {
            addr,
            base_url,
            store,
            clock,
            retention: config.retention,
            dm,
            stop,
            tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http(s)://host:port`: the admin API's base.
    pub fn url(&self) -> &str {
        &self.base_url
    }

    /// Where devices post package 1.
    pub fn dm_url(&self) -> String {
        format!("{}{DM_PATH}", self.base_url)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn dm(&self) -> &Arc<DmService> {
        &self.dm
    }

    /// Ends the sessions idle at `now` and applies the jobs' timeouts (what the sweeper does).
    pub async fn sweep(
        &self,
        now: std::time::Instant,
    ) -> Result<crate::model::SweepReport, StoreError> {
        self.dm.sweep_sessions(now).await;
        self.dm.sweep_jobs().await
    }

    /// Prunes the alerts, events and statuses past the retention (what the pruner does).
    pub async fn prune(&self) -> Result<store::PruneReport, StoreError> {
        self.store.prune(&self.retention, self.clock.now()).await
    }

    /// Stops serving and waits for the tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Runs `work` every `period` (a missed tick delays the next, never bunches them) until `stop`
/// turns true.
fn spawn_periodic<F, Fut>(
    period: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut work: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            work().await;
        }
    })
}
