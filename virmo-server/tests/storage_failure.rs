//! The store failing under the DM endpoint: the device gets HTTP 503 and keeps its alert, the
//! server keeps running, and the next session delivers the alert and finishes the job.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use omadm::session::EndReason;
use support::{provision, TempDir, TOKEN};
use virmo_server::clock::{Clock, SystemClock};
use virmo_server::model::*;
use virmo_server::server::{Server, ServerConfig};
use virmo_server::sim::{SimConfig, SimDevice};
use virmo_server::store::{
    Backend, CancelResult, DeviceContact, NewResponse, PruneReport, Retention, Store, StoreError,
};

/// A store whose alerts cannot be written while `broken` is set.
struct Flaky {
    inner: Arc<dyn Store>,
    broken: AtomicBool,
}

#[async_trait]
impl Store for Flaky {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }
    async fn enroll(&self, e: &Enrollment, now: i64) -> Result<Device, StoreError> {
        self.inner.enroll(e, now).await
    }
    async fn device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        self.inner.device(id).await
    }
    async fn devices(&self) -> Result<Vec<DeviceSummary>, StoreError> {
        self.inner.devices().await
    }
    async fn delete_device(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.delete_device(id).await
    }
    async fn update_contact(&self, id: &str, c: DeviceContact<'_>) -> Result<(), StoreError> {
        self.inner.update_contact(id, c).await
    }
    async fn replace_subtree(
        &self,
        d: &str,
        root: &str,
        nodes: &[TreeNode],
        now: i64,
    ) -> Result<(), StoreError> {
        self.inner.replace_subtree(d, root, nodes, now).await
    }
    async fn set_nodes(&self, d: &str, nodes: &[TreeNode], now: i64) -> Result<(), StoreError> {
        self.inner.set_nodes(d, nodes, now).await
    }
    async fn tree(&self, d: &str) -> Result<Vec<TreeNode>, StoreError> {
        self.inner.tree(d).await
    }
    async fn create_job(&self, job: &NewJob, now: i64) -> Result<(Job, bool), StoreError> {
        self.inner.create_job(job, now).await
    }
    async fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
        self.inner.job(id).await
    }
    async fn jobs(&self, f: &Filter) -> Result<Vec<Job>, StoreError> {
        self.inner.jobs(f).await
    }
    async fn job_by_correlator(&self, d: &str, c: &str) -> Result<Option<Job>, StoreError> {
        self.inner.job_by_correlator(d, c).await
    }
    async fn claim_job(&self, d: &str, s: &str, now: i64) -> Result<Option<Job>, StoreError> {
        self.inner.claim_job(d, s, now).await
    }
    async fn transition_job(
        &self,
        id: i64,
        s: Option<&str>,
        t: &JobTransition,
        now: i64,
    ) -> Result<Option<Job>, StoreError> {
        self.inner.transition_job(id, s, t, now).await
    }
    async fn sweep(&self, now: i64) -> Result<SweepReport, StoreError> {
        self.inner.sweep(now).await
    }
    async fn cancel_job(&self, id: i64, now: i64) -> Result<CancelResult, StoreError> {
        self.inner.cancel_job(id, now).await
    }
    async fn prune(&self, retention: &Retention, now: i64) -> Result<PruneReport, StoreError> {
        self.inner.prune(retention, now).await
    }
    async fn record_response(&self, r: &NewResponse, now: i64) -> Result<(), StoreError> {
        self.inner.record_response(r, now).await
    }
    async fn responses(&self, id: i64) -> Result<Vec<Response>, StoreError> {
        self.inner.responses(id).await
    }
    async fn record_alert(
        &self,
        a: &NewAlert,
        job: Option<i64>,
        now: i64,
    ) -> Result<i64, StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(StoreError::Corrupt("injected failure".into()));
        }
        self.inner.record_alert(a, job, now).await
    }
    async fn alerts(&self, f: &Filter) -> Result<Vec<AlertRecord>, StoreError> {
        self.inner.alerts(f).await
    }
    async fn record_event(
        &self,
        d: Option<&str>,
        j: Option<i64>,
        kind: &str,
        detail: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.inner.record_event(d, j, kind, detail, now).await
    }
    async fn events(&self, f: &Filter) -> Result<Vec<Event>, StoreError> {
        self.inner.events(f).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_the_store_cannot_take_stays_on_the_device_until_it_can() {
    let dir = TempDir::new("virmo-flaky");
    let url = virmo_server::store::sqlite_url(&dir.0);
    let flaky = Arc::new(Flaky {
        inner: virmo_server::store::open(&url, 1).await.expect("open"),
        broken: AtomicBool::new(false),
    });
    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), &url, TOKEN);
    config.sweep_every = None;
    let server = Server::start_with_store(config, flaky.clone(), Arc::new(SystemClock))
        .await
        .expect("the server starts");
    let sim_config = SimConfig::new("dev-flaky", &server.dm_url(), "virmo-server");
    flaky
        .enroll(&sim_config.enrollment(), SystemClock.now())
        .await
        .expect("enroll");
    let (job, _) = flaky
        .create_job(
            &NewJob {
                device_id: "dev-flaky".into(),
                idempotency_key: None,
                operation: "provision w".into(),
                commands: provision("w").commands().expect("commands"),
                policy: JobPolicy::default(),
            },
            SystemClock.now(),
        )
        .await
        .expect("job");
    let sim = SimDevice::new(sim_config);
    let run = |mut sim: SimDevice| async move {
        tokio::task::spawn_blocking(move || {
            let report = sim.session();
            (sim, report)
        })
        .await
        .expect("the device runs")
    };
    let (mut sim, report) = run(sim).await;
    assert_eq!(report.reason, Some(EndReason::Completed));
    sim.finish_operations();

    flaky.broken.store(true, Ordering::SeqCst);
    let (sim, report) = run(sim).await;
    assert!(
        report
            .transport_error
            .as_deref()
            .unwrap_or("")
            .contains("503"),
        "{report:?}"
    );
    assert_eq!(sim.pending_alerts().len(), 1, "the device keeps its alert");
    let state = flaky.job(job.id).await.expect("read").expect("job").state;
    assert_eq!(state, JobState::Accepted);
    assert!(flaky
        .events(&Filter::default())
        .await
        .expect("events")
        .iter()
        .any(|e| e.kind == "storage-error"));

    flaky.broken.store(false, Ordering::SeqCst);
    let (sim, report) = run(sim).await;
    assert_eq!(report.reason, Some(EndReason::Completed), "{report:?}");
    assert_eq!((report.delivered, sim.pending_alerts().len()), (1, 0));
    let done = flaky.job(job.id).await.expect("read").expect("job");
    assert_eq!((done.state, done.result_code), (JobState::Done, Some(1200)));
    server.shutdown().await;
}
