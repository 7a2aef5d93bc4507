//! PostgreSQL: the storage suite SQLite passes, and two server processes sharing one database
//! that deliver every job exactly once. The cluster is Debian's PostgreSQL, started by the test
//! itself on a Unix socket in a temporary directory (see `support/pg.rs`).

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};

use support::TempDir;
use virmo_server::admin::client::AdminClient;
use virmo_server::admin::{AdminRequest, AdminResponse, EnrollRequest, JobRequest};
use virmo_server::jobs::Operation;
use virmo_server::model::{AuthKind, Filter, JobState};
use virmo_server::sim::postgres::Postgres;
use virmo_server::sim::{SimConfig, SimDevice};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_suite_passes_on_postgresql() {
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("postgres");
    let url = pg.database("conformance");
    let store = virmo_server::store::open(&url, 8).await.expect("open");
    assert_eq!(store.backend(), virmo_server::store::Backend::Postgres);
    virmo_server::store::conformance::run_all(store.clone()).await;
    // A second open (another server process starting) finds the schema migrated.
    let again = virmo_server::store::open(&url, 4).await.expect("reopen");
    assert!(!again.devices().await.expect("devices").is_empty());
    drop(pg);
}

const TOKEN: &str = "two-process-token";

/// A `virmo-server` process on `database_url`.
struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    fn start(database_url: &str, instance: &str, dir: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_virmo-server"))
            .args(["--database-url", database_url, "--listen", "127.0.0.1:0"])
            .args(["--instance", instance, "--admin-token", TOKEN])
            .env("VIRMO_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join(format!("{instance}.log"))).expect("log"))
            .spawn()
            .expect("virmo-server starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the ready line");
        let url = line
            .trim()
            .strip_prefix("virmo-server listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self { child, url }
    }

    fn admin(&self) -> AdminClient {
        AdminClient::new(&self.url, TOKEN)
    }

    fn dm_url(&self) -> String {
        format!("{}/dm", self.url)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn enroll(admin: &AdminClient, config: &SimConfig) {
    let e = config.enrollment();
    let request = AdminRequest::Enroll(EnrollRequest {
        id: e.id,
        auth: Some(e.auth),
        client_name: Some(e.client_name),
        client_secret: Some(e.client_secret),
        server_secret: Some(e.server_secret),
        notify_addr: None,
    });
    assert!(matches!(
        admin.send(&request),
        Ok(AdminResponse::Enrolled(_))
    ));
}

fn queue(admin: &AdminClient, device: &str, operation: Operation) -> virmo_server::model::Job {
    let request = AdminRequest::Queue {
        device: device.to_owned(),
        job: JobRequest {
            operation,
            idempotency_key: None,
            policy: None,
        },
    };
    match admin.send(&request) {
        Ok(AdminResponse::Queued { job, .. }) => *job,
        other => panic!("{other:?}"),
    }
}

fn provision(vm: &str) -> Operation {
    Operation::Provision {
        vm: vm.to_owned(),
        pkg_url: "https://images.example/w.tar".into(),
        pkg_hash: format!("sha256:{}", "ef".repeat(32)),
        resources: Default::default(),
    }
}

#[test]
fn two_server_processes_on_one_database_deliver_each_job_once() {
    let pg = Postgres::start();
    let url = pg.database("fleet");
    let logs = TempDir::new("virmo-two-servers");
    let a = ServerProcess::start(&url, "a", &logs.0);
    let b = ServerProcess::start(&url, "b", &logs.0);
    let servers = [&a, &b];

    // Chains of jobs: each device takes its jobs from either server, alternately, in order.
    const DEVICES: usize = 8;
    let mut handles = Vec::new();
    for d in 0..DEVICES {
        let dm_urls = [a.dm_url(), b.dm_url()];
        let admins = [a.admin(), b.admin()];
        handles.push(std::thread::spawn(move || {
            let id = format!("chain-{d}");
            let config = SimConfig::new(&id, &dm_urls[0], "virmo-server");
            enroll(&admins[d % 2], &config);
            let jobs = vec![
                queue(&admins[0], &id, provision("w")),
                queue(&admins[1], &id, Operation::Start { vm: "w".into() }),
                queue(&admins[0], &id, Operation::Suspend { vm: "w".into() }),
                queue(&admins[1], &id, Operation::Resume { vm: "w".into() }),
            ];
            let mut sim = SimDevice::new(config);
            for round in 0..(3 * jobs.len()) {
                sim.config.server_url = dm_urls[(d + round) % 2].clone();
                let report = sim.session();
                assert_eq!(
                    report.reason,
                    Some(omadm::session::EndReason::Completed),
                    "{report:?}"
                );
                sim.finish_operations();
            }
            let execs: Vec<(String, Option<String>)> = sim
                .lock()
                .execs
                .iter()
                .map(|e| (e.operation.clone(), e.correlator.clone()))
                .collect();
            (jobs, execs)
        }));
    }
    for handle in handles {
        let (jobs, execs) = handle.join().expect("a device thread");
        let ops: Vec<&str> = execs.iter().map(|(op, _)| op.as_str()).collect();
        assert_eq!(ops, vec!["Provision", "Start", "Suspend", "Resume"]);
        for (job, (_, correlator)) in jobs.iter().zip(&execs) {
            assert_eq!(correlator.as_deref(), Some(job.correlator.as_str()));
        }
    }

    // Twins: two sessions of one device at once, one on each server; the job goes once.
    const RACES: usize = 12;
    let mut handles = Vec::new();
    for r in 0..RACES {
        let id = format!("race-{r}");
        let mut config = SimConfig::new(&id, &a.dm_url(), "virmo-server");
        config.auth = AuthKind::Basic;
        enroll(&a.admin(), &config);
        let job = queue(&servers[r % 2].admin(), &id, provision("w"));
        let barrier = Arc::new(Barrier::new(2));
        let twins: Vec<_> = [a.dm_url(), b.dm_url()]
            .into_iter()
            .map(|dm_url| {
                let mut config = config.clone();
                config.server_url = dm_url;
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut sim = SimDevice::new(config);
                    barrier.wait();
                    let report = sim.session();
                    let execs: Vec<Option<String>> = sim
                        .lock()
                        .execs
                        .iter()
                        .map(|e| e.correlator.clone())
                        .collect();
                    (report, execs)
                })
            })
            .collect();
        handles.push((job, twins));
    }
    for (job, twins) in handles {
        let mut delivered = 0;
        for twin in twins {
            let (report, execs) = twin.join().expect("a twin");
            assert_eq!(
                report.reason,
                Some(omadm::session::EndReason::Completed),
                "{report:?}"
            );
            delivered += execs
                .iter()
                .filter(|c| c.as_deref() == Some(job.correlator.as_str()))
                .count();
        }
        assert_eq!(
            delivered, 1,
            "job {} was delivered {delivered} times",
            job.id
        );
    }
    let AdminResponse::Jobs(jobs) = a
        .admin()
        .send(&AdminRequest::Jobs {
            filter: Filter {
                limit: Some(1000),
                ..Filter::default()
            },
        })
        .expect("jobs")
    else {
        panic!("unexpected answer");
    };
    assert_eq!(jobs.len(), DEVICES * 4 + RACES);
    for job in &jobs {
        let expected = if job.device_id.starts_with("race") {
            JobState::Accepted
        } else {
            JobState::Done
        };
        assert_eq!(job.state, expected, "{job:?}");
        assert_eq!(job.attempts, 1, "{job:?}");
    }
    drop((a, b));
    drop(pg);
}
