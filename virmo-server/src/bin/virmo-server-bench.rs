//! `virmo-server-bench`: full DM sessions per second and job latency with a fleet of simulated
//! devices (real omadm clients over loopback HTTP, no VMs), on SQLite and on PostgreSQL.
//!
//! For each backend and fleet size: the devices are enrolled; then every device opens sessions
//! (package 1 with MD5 credentials → the server's reply with a command → package 3 → the
//! final message: two HTTP round trips), spread over client threads; then jobs: each is queued
//! through the admin API, taken by its device's next session (Exec, 202), and finished by the
//! OperationComplete alert of the session after (with the server's read-back of the tree).
//! Medians and 99th percentiles are printed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use omadm::transport::DmHttpClient;
use virmo_server::admin::client::AdminClient;
use virmo_server::admin::{AdminRequest, AdminResponse, JobRequest};
use virmo_server::clock::{Clock, SystemClock};
use virmo_server::jobs::Operation;
use virmo_server::server::{Server, ServerConfig};
use virmo_server::sim::postgres::Postgres;
use virmo_server::sim::{SimConfig, SimDevice, TempDir};
use virmo_server::tls::ServerTls;

#[derive(Debug, Parser)]
#[command(about = "Sessions per second and job latency of virmo-server with simulated devices")]
struct Args {
    /// Fleet sizes.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    devices: Vec<usize>,
    /// Backends: sqlite, postgres.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
    /// Client threads.
    #[arg(long, default_value_t = 6)]
    threads: usize,
    /// Idle sessions measured (at least one per device).
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Jobs measured.
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Server worker threads.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Transports: http, https (a self-signed certificate the clients trust).
    #[arg(long, value_delimiter = ',', default_value = "http")]
    transports: Vec<String>,
    /// A new connection (and, over https, a new TLS handshake) for every idle session, as
    /// the agent does, instead of each client thread keeping its connections alive.
    #[arg(long)]
    fresh_connections: bool,
}

const TOKEN: &str = "bench-admin-token";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// What one client thread gives back: its devices, its timings, its failures.
type ThreadResult = (Vec<(usize, SimDevice)>, Vec<Duration>, usize);

struct Outcome {
    rate: f64,
    median: Duration,
    p99: Duration,
    failures: usize,
}

/// Runs `work(device index)` over the devices on `threads` threads, `count` times in all.
fn spread(
    devices: &mut Vec<SimDevice>,
    threads: usize,
    count: usize,
    make_client: &(dyn Fn() -> DmHttpClient + Sync),
    work: impl Fn(&mut SimDevice, usize) -> (Duration, bool) + Sync,
) -> Outcome {
    let n = devices.len();
    let mut slices: Vec<Vec<(usize, SimDevice)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, device) in devices.drain(..).enumerate() {
        slices[i % threads].push((i, device));
    }
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<ThreadResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = slices
            .into_iter()
            .map(|mut slice| {
                let next = &next;
                let work = &work;
                scope.spawn(move || {
                    let mut times = Vec::new();
                    let mut failures = 0;
                    let client = make_client();
                    for (_, device) in slice.iter_mut() {
                        device.use_client(client.clone());
                    }
                    let mut k = 0;
                    while next.fetch_add(1, Ordering::Relaxed) < count {
                        let len = slice.len();
                        let (index, device) = &mut slice[k % len];
                        let (took, ok) = work(device, *index);
                        times.push(took);
                        failures += usize::from(!ok);
                        k += 1;
                    }
                    (slice, times, failures)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread"))
            .collect()
    });
    let elapsed = started.elapsed();
    let mut all: Vec<(usize, SimDevice)> = Vec::with_capacity(n);
    let mut times = Vec::new();
    let mut failures = 0;
    for (slice, t, f) in results {
        all.extend(slice);
        times.extend(t);
        failures += f;
    }
    all.sort_by_key(|(i, _)| *i);
    devices.extend(all.into_iter().map(|(_, d)| d));
    times.sort();
    Outcome {
        rate: times.len() as f64 / elapsed.as_secs_f64(),
        median: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
        failures,
    }
}

fn run(
    runtime: &tokio::runtime::Runtime,
    backend: &str,
    database_url: &str,
    fleet: usize,
    transport: &str,
    args: &Args,
) -> Result<()> {
    let mut config = ServerConfig::new("127.0.0.1:0".parse()?, database_url, TOKEN);
    config.sweep_every = Some(Duration::from_secs(5));
    config.max_connections = 8;
    let tls = match transport {
        "http" => None,
        "https" => Some(ServerTls::self_signed(&["127.0.0.1".to_owned()])?),
        other => bail!("unknown transport {other}"),
    };
    config.tls = tls.clone();
    let timeout = Duration::from_secs(60);
    let ca = match &tls {
        Some(tls) => virmo_server::tls::ca_certificates(&tls.certificate_chain_pem)?,
        None => Vec::new(),
    };
    let make_client = move || match ca.is_empty() {
        true => DmHttpClient::new(timeout),
        false => DmHttpClient::with_root_certificates(timeout, &ca),
    };
    let fresh = args.fresh_connections;
    let server = runtime
        .block_on(Server::start(config))
        .context("starting the server")?;
    let dm_url = server.dm_url();
    let store = server.store().clone();
    let started = Instant::now();
    let configs: Vec<SimConfig> = (0..fleet)
        .map(|i| SimConfig::new(&format!("bench-{i:05}"), &dm_url, "virmo-server"))
        .collect();
    runtime.block_on(async {
        for config in &configs {
            store
                .enroll(&config.enrollment(), SystemClock.now())
                .await?;
        }
        anyhow::Ok(())
    })?;
    let mut devices: Vec<SimDevice> = configs.into_iter().map(SimDevice::new).collect();
    let enrolled = started.elapsed();

    let sessions = args.sessions.max(fleet);
    let idle = spread(
        &mut devices,
        args.threads,
        sessions,
        &make_client,
        |device, _| {
            if fresh {
                device.use_client(make_client());
            }
            let start = Instant::now();
            let report = device.session();
            (
                start.elapsed(),
                report.reason == Some(omadm::session::EndReason::Completed),
            )
        },
    );

    let admin = match &tls {
        Some(tls) => AdminClient::with_ca_pem(server.url(), TOKEN, &tls.certificate_chain_pem)?,
        None => AdminClient::new(server.url(), TOKEN),
    };
    let jobs = args.jobs.min(fleet);
    let job_sessions = AtomicUsize::new(0);
    let job_started = Instant::now();
    let latency = spread(
        &mut devices,
        args.threads,
        jobs,
        &make_client,
        |device, _| {
            let start = Instant::now();
            let request = AdminRequest::Queue {
                device: device.config.id.clone(),
                job: JobRequest {
                    operation: Operation::Refresh,
                    idempotency_key: None,
                    policy: None,
                },
            };
            // Refresh is a Get; a provision exercises the Exec → 202 → alert path.
            let request = match request {
                AdminRequest::Queue {
                    device: id,
                    mut job,
                } => {
                    let vm = format!("vm{}", device.lock().execs.len());
                    job.operation = Operation::Provision {
                        vm,
                        pkg_url: "https://images.example/w.tar".into(),
                        pkg_hash: format!("sha256:{}", "ab".repeat(32)),
                        resources: Default::default(),
                    };
                    AdminRequest::Queue { device: id, job }
                }
                other => other,
            };
            let Ok(AdminResponse::Queued { job, .. }) = admin.send(&request) else {
                return (start.elapsed(), false);
            };
            let first = device.session();
            device.finish_operations();
            let second = device.session();
            job_sessions.fetch_add(2, Ordering::Relaxed);
            let ok = first.reason == Some(omadm::session::EndReason::Completed)
                && second.reason == Some(omadm::session::EndReason::Completed)
                && second.delivered == 1;
            let _ = job;
            (start.elapsed(), ok)
        },
    );
    let job_elapsed = job_started.elapsed();
    let done = runtime.block_on(store.jobs(&virmo_server::model::Filter {
        state: Some(virmo_server::model::JobState::Done),
        limit: Some(100_000),
        ..Default::default()
    }))?;
    println!(
        "| {backend} | {transport} | {fleet} | {:.0} | {} | {} | {:.0} | {} | {} | {}/{} | {} | {:.1} s |",
        idle.rate,
        ms(idle.median),
        ms(idle.p99),
        job_sessions.load(Ordering::Relaxed) as f64 / job_elapsed.as_secs_f64(),
        ms(latency.median),
        ms(latency.p99),
        done.len(),
        jobs,
        idle.failures + latency.failures,
        enrolled.as_secs_f64()
    );
    if idle.failures + latency.failures > 0 || done.len() != jobs {
        bail!("{backend} with {fleet} devices: sessions or jobs failed");
    }
    runtime.block_on(server.shutdown());
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIRMO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads.max(1))
        .enable_all()
        .build()?;
    println!(
        "{} client threads, {} server threads, {} idle sessions and {} jobs per run{}",
        args.threads,
        args.server_threads,
        args.sessions,
        args.jobs,
        if args.fresh_connections {
            ", a new connection per idle session"
        } else {
            ""
        }
    );
    println!("| backend | transport | devices | idle sessions/s | session median | session p99 | job sessions/s | job latency median | job latency p99 | jobs done | failures | enrolment |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut postgres: Option<Postgres> = None;
    for backend in &args.backends {
        for &fleet in &args.devices {
            for transport in &args.transports {
                let dir = TempDir::new("virmo-bench");
                let url = match backend.as_str() {
                    "sqlite" => virmo_server::store::sqlite_url(&dir.0),
                    "postgres" => {
                        let pg = postgres.get_or_insert_with(Postgres::start);
                        pg.database(&format!("bench_{fleet}_{transport}"))
                    }
                    other => bail!("unknown backend {other}"),
                };
                run(&runtime, backend, &url, fleet, transport, &args)?;
            }
        }
    }
    Ok(())
}
