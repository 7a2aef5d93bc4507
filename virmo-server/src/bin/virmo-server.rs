//! `virmo-server`: the VirMO server. `virmo-server --data-dir D` runs on embedded SQLite with
//! no other set-up; `--database-url postgres://…` shares a PostgreSQL database with other
//! server processes.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tracing_subscriber::EnvFilter;
use virmo_server::model::JobPolicy;
use virmo_server::server::{Server, ServerConfig};
use virmo_server::store::Retention;
use virmo_server::tls::ServerTls;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "The VirMO server: OMA DM for a fleet of VirMO devices"
)]
struct Args {
    /// The data directory (SQLite database, generated admin token).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A database URL instead of the data directory's SQLite (`postgres://user@host/db`,
    /// `postgres:///db?host=/run/postgresql`, `sqlite://PATH?mode=rwc`).
    #[arg(long, env = "VIRMO_DATABASE_URL")]
    database_url: Option<String>,
    /// Where to listen (DM endpoint `/dm`, admin API `/api/v1`); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The URL devices reach this server at (default: `http://` or, with --tls-cert,
    /// `https://`, and the bound address).
    #[arg(long)]
    public_url: Option<String>,
    /// Our DM ServerID (the agents' `server_id`).
    #[arg(long, default_value = "virmo-server")]
    server_id: String,
    /// The admin API's bearer token (default: from --admin-token-file, else generated into
    /// `<data-dir>/admin-token`).
    #[arg(long, env = "VIRMO_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// This process's name in the store (several processes on one PostgreSQL database).
    #[arg(long)]
    instance: Option<String>,
    /// PostgreSQL connections of this process.
    #[arg(long, default_value_t = 16)]
    max_connections: u32,
    /// Seconds between sweeps of idle sessions and job timeouts.
    #[arg(long, default_value_t = 1)]
    sweep_secs: u64,
    /// Default attempts of a job (sessions its commands may be sent in).
    #[arg(long, default_value_t = JobPolicy::default().max_attempts)]
    job_attempts: i64,
    /// Default time a job may wait for delivery before it expires (seconds).
    #[arg(long, default_value_t = JobPolicy::default().deliver_within_ms / 1000)]
    job_deliver_secs: i64,
    /// Default time an accepted operation may take to complete (seconds).
    #[arg(long, default_value_t = JobPolicy::default().complete_within_ms / 1000)]
    job_complete_secs: i64,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Days alerts, events and job statuses are kept (0: no age limit).
    #[arg(long, default_value_t = 30)]
    keep_days: i64,
    /// Rows of alerts, events and job statuses kept, each (0: no count limit).
    #[arg(long, default_value_t = 1_000_000)]
    keep_rows: i64,
    /// Seconds between prunings of old alerts, events and statuses.
    #[arg(long, default_value_t = 60)]
    prune_secs: u64,
}

fn admin_token(args: &Args) -> Result<String> {
    if let Some(token) = &args.admin_token {
        return Ok(token.trim().to_owned());
    }
    let path = match (&args.admin_token_file, &args.data_dir) {
        (Some(path), _) => path.clone(),
        (None, Some(dir)) => dir.join("admin-token"),
        (None, None) => bail!("give --admin-token, --admin-token-file or --data-dir"),
    };
    if path.exists() {
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the admin token from {}", path.display()))?;
        return Ok(token.trim().to_owned());
    }
    let token = virmo_server::admin::generate_secret().context("generating an admin token")?;
    write_private(&path, &token)?;
    eprintln!("virmo-server: a new admin token is in {}", path.display());
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{text}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("VIRMO_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(dir) = &args.data_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the data directory {}", dir.display()))?;
    }
    let database_url = match (&args.database_url, &args.data_dir) {
        (Some(url), _) => url.clone(),
        (None, Some(dir)) => virmo_server::store::sqlite_url(dir),
        (None, None) => bail!("give --data-dir (SQLite) or --database-url"),
    };
    let mut config = ServerConfig::new(args.listen, &database_url, &admin_token(&args)?);
    config.public_url = args.public_url.clone();
    config.server_id = args.server_id.clone();
    config.instance = args.instance.clone();
    config.max_connections = args.max_connections;
    config.sweep_every = Some(Duration::from_secs(args.sweep_secs.max(1)));
    config.default_policy = JobPolicy {
        max_attempts: args.job_attempts,
        deliver_within_ms: args.job_deliver_secs.saturating_mul(1000),
        complete_within_ms: args.job_complete_secs.saturating_mul(1000),
        ..JobPolicy::default()
    };
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(ServerTls::from_files(cert, key).context("reading the TLS identity")?);
    }
    config.retention = Retention {
        max_age_ms: (args.keep_days > 0).then(|| args.keep_days.saturating_mul(24 * 3600 * 1000)),
        max_rows: (args.keep_rows > 0).then_some(args.keep_rows),
        ..Retention::default()
    };
    config.prune_every = Some(Duration::from_secs(args.prune_secs.max(1)));
    let server = Server::start(config).await.context("starting the server")?;
    // One line on stdout for whoever started us (the port, when --listen asked for port 0).
    println!("virmo-server listening on {}", server.url());
    std::io::stdout().flush().ok();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping");
    server.shutdown().await;
    Ok(())
}
