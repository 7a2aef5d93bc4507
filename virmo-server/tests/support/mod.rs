//! Shared set-up of the server tests: a real server on loopback (SQLite in a temporary
//! directory, or a database URL), simulated devices with real omadm clients, the admin client.

#![allow(
    dead_code,
    reason = "each test binary uses its own part of the support"
)]

pub use virmo_server::sim::TempDir;

use std::sync::Arc;

use virmo_server::admin::client::{AdminClient, ClientError};
use virmo_server::admin::{AdminRequest, AdminResponse, JobRequest};
use virmo_server::clock::{Clock, ManualClock, SystemClock};
use virmo_server::jobs::Operation;
use virmo_server::model::{Filter, Job, JobPolicy, JobState};
use virmo_server::server::{Server, ServerConfig};
use virmo_server::sim::{SessionReport, SimConfig, SimDevice};

pub const TOKEN: &str = "test-admin-token";

pub struct TestServer {
    pub server: Server,
    pub clock: ManualClock,
    pub admin: AdminClient,
    _dir: Option<TempDir>,
}

impl TestServer {
    /// A server on SQLite in a fresh directory, swept only when the test says so.
    pub async fn start() -> Self {
        let dir = TempDir::new("virmo-server-test");
        let url = virmo_server::store::sqlite_url(&dir.0);
        let mut test = Self::start_on(&url, |_| {}).await;
        test._dir = Some(dir);
        test
    }

    /// A server on `database_url`, with `adjust` applied to its configuration.
    pub async fn start_on(database_url: &str, adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let clock = ManualClock::starting_at(SystemClock.now());
        let mut config =
            ServerConfig::new("127.0.0.1:0".parse().expect("addr"), database_url, TOKEN);
        config.sweep_every = None;
        config.prune_every = None;
        adjust(&mut config);
        let server = Server::start_with_clock(config, Arc::new(clock.clone()))
            .await
            .expect("the server starts");
        let admin = AdminClient::new(server.url(), TOKEN);
        Self {
            server,
            clock,
            admin,
            _dir: None,
        }
    }

    /// Keeps `dir` (the database's) as long as the server.
    pub fn keep(&mut self, dir: TempDir) {
        self._dir = Some(dir);
    }

    /// Sends an admin request through the HTTP API.
    pub async fn request(&self, request: AdminRequest) -> Result<AdminResponse, ClientError> {
        let admin = self.admin.clone();
        tokio::task::spawn_blocking(move || admin.send(&request))
            .await
            .expect("the admin client runs")
    }

    /// A simulated device, enrolled.
    pub async fn device(&self, id: &str) -> SimDevice {
        let config = SimConfig::new(id, &self.server.dm_url(), "virmo-server");
        self.enroll(&config).await;
        SimDevice::new(config)
    }

    pub async fn enroll(&self, config: &SimConfig) {
        let e = config.enrollment();
        let request = AdminRequest::Enroll(virmo_server::admin::EnrollRequest {
            id: e.id,
            auth: Some(e.auth),
            client_name: Some(e.client_name),
            client_secret: Some(e.client_secret),
            server_secret: Some(e.server_secret),
            notify_addr: e.notify_addr,
        });
        match self.request(request).await.expect("enrolled") {
            AdminResponse::Enrolled(_) => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }

    /// Queues an operation on a device; returns the job.
    pub async fn queue(&self, device: &str, operation: Operation) -> Job {
        self.queue_with(device, operation, None, None).await
    }

    pub async fn queue_with(
        &self,
        device: &str,
        operation: Operation,
        key: Option<&str>,
        policy: Option<JobPolicy>,
    ) -> Job {
        let request = AdminRequest::Queue {
            device: device.to_owned(),
            job: JobRequest {
                operation,
                idempotency_key: key.map(str::to_owned),
                policy,
            },
        };
        match self.request(request).await.expect("queued") {
            AdminResponse::Queued { job, .. } => *job,
            other => panic!("unexpected answer {other:?}"),
        }
    }

    pub async fn job(&self, id: i64) -> Job {
        self.server
            .store()
            .job(id)
            .await
            .expect("read")
            .expect("the job")
    }

    pub async fn state(&self, id: i64) -> JobState {
        self.job(id).await.state
    }

    pub async fn events(&self, device: Option<&str>) -> Vec<virmo_server::model::Event> {
        self.server
            .store()
            .events(&Filter {
                device_id: device.map(str::to_owned),
                limit: Some(1000),
                ..Filter::default()
            })
            .await
            .expect("events")
    }
}

/// Runs one session of `sim` (on a blocking thread: the omadm client is synchronous).
pub async fn session(mut sim: SimDevice) -> (SimDevice, SessionReport) {
    tokio::task::spawn_blocking(move || {
        let report = sim.session();
        (sim, report)
    })
    .await
    .expect("the device runs")
}

/// Runs `f` on the device on a blocking thread.
pub async fn with_device<T: Send + 'static>(
    mut sim: SimDevice,
    f: impl FnOnce(&mut SimDevice) -> T + Send + 'static,
) -> (SimDevice, T) {
    tokio::task::spawn_blocking(move || {
        let out = f(&mut sim);
        (sim, out)
    })
    .await
    .expect("the device runs")
}

pub fn start(vm: &str) -> Operation {
    Operation::Start { vm: vm.to_owned() }
}

pub fn provision(vm: &str) -> Operation {
    Operation::Provision {
        vm: vm.to_owned(),
        pkg_url: "https://images.example/work.tar".into(),
        pkg_hash: format!("sha256:{}", "ab".repeat(32)),
        resources: virmo_server::jobs::Resources {
            vcpus: Some(2),
            memory_mib: Some(512),
            ..Default::default()
        },
    }
}
