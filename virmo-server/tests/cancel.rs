//! Cancelling jobs through the admin API and `virmoctl jobs cancel`, with a simulated device
//! (a real omadm client and DM tree) over real HTTP: a queued job is never sent; an accepted
//! one goes on to its outcome; a finished one is a 409; pruning keeps the server's tables
//! bounded while sessions go on.

mod support;

use omadm::session::{EndReason, GenericAlert};
use support::{provision, session, start, TestServer, TOKEN};
use virmo_server::admin::{AdminRequest, AdminResponse};
use virmo_server::jobs;
use virmo_server::model::{CancelOutcome, JobState};
use virmo_server::store::Retention;

async fn cancel(test: &TestServer, id: i64) -> Result<CancelOutcome, u16> {
    match test.request(AdminRequest::CancelJob { id }).await {
        Ok(AdminResponse::Cancel(outcome)) => Ok(*outcome),
        Ok(other) => panic!("unexpected answer {other:?}"),
        Err(err) => Err(err.status().unwrap_or_else(|| panic!("{err}"))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_is_never_sent_and_an_accepted_one_goes_on_to_its_outcome() {
    let test = TestServer::start().await;
    let sim = test.device("dev-1").await;
    let provisioning = test.queue("dev-1", provision("work")).await;
    let starting = test.queue("dev-1", start("work")).await;
    let stopping = test
        .queue(
            "dev-1",
            virmo_server::jobs::Operation::Stop { vm: "work".into() },
        )
        .await;

    // Queued behind the provision: cancelled at once.
    match cancel(&test, starting.id).await {
        Ok(CancelOutcome::Cancelled(job)) => assert_eq!(job.state, JobState::Cancelled),
        other => panic!("{other:?}"),
    }
    // The provision is sent and accepted.
    let (mut sim, report) = session(sim).await;
    assert_eq!(report.reason, Some(EndReason::Completed));
    assert_eq!(test.state(provisioning.id).await, JobState::Accepted);
    // Accepted: the device runs it anyway; the cancel is recorded, the outcome awaited.
    match cancel(&test, provisioning.id).await {
        Ok(CancelOutcome::Requested(job)) => {
            assert_eq!(job.state, JobState::Accepted);
            assert!(job.cancel_requested_at.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.finish_operations(), 1);
    let (sim, report) = session(sim).await;
    assert_eq!(report.delivered, 1);
    let done = test.job(provisioning.id).await;
    assert_eq!((done.state, done.result_code), (JobState::Done, Some(1200)));
    // The next session takes the Stop: the cancelled Start was never sent.
    let (sim, _) = session(sim).await;
    {
        let device = sim.lock();
        let execs: Vec<&str> = device.execs.iter().map(|e| e.uri.as_str()).collect();
        assert_eq!(
            execs,
            [
                "./VirMO/VM/work/Operations/Provision",
                "./VirMO/VM/work/Operations/Stop"
            ]
        );
    }
    assert_eq!(test.state(stopping.id).await, JobState::Accepted);
    assert_eq!(test.state(starting.id).await, JobState::Cancelled);
    assert!(test
        .server
        .store()
        .responses(starting.id)
        .await
        .expect("responses")
        .is_empty());

    // Finished jobs: 409; no such job: 404.
    assert_eq!(cancel(&test, provisioning.id).await, Err(409));
    assert_eq!(cancel(&test, starting.id).await, Err(409));
    assert_eq!(cancel(&test, 999_999).await, Err(404));
    let kinds: Vec<String> = test
        .events(Some("dev-1"))
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "job-cancel").count(), 2);

    // virmoctl: `jobs cancel ID` on a queued job, then on the finished one (exit status 1).
    let queued = test.queue("dev-1", start("work")).await;
    let url = test.server.url().to_owned();
    let run = move |id: i64| {
        std::process::Command::new(env!("CARGO_BIN_EXE_virmoctl"))
            .args(["--server", &url, "--token", TOKEN, "jobs", "cancel"])
            .arg(id.to_string())
            .output()
            .expect("virmoctl runs")
    };
    let done_id = provisioning.id;
    let (cancelled, refused) = tokio::task::spawn_blocking(move || (run(queued.id), run(done_id)))
        .await
        .expect("runs");
    assert!(cancelled.status.success(), "{cancelled:?}");
    let stdout = String::from_utf8_lossy(&cancelled.stdout);
    assert!(
        stdout.contains(&format!("job {} cancelled", queued.id)),
        "{stdout}"
    );
    assert_eq!(test.state(queued.id).await, JobState::Cancelled);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("409") && stderr.contains("already done"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_bounds_the_tables_while_sessions_go_on() {
    let test = TestServer::start().await;
    let mut sim = test.device("dev-1").await;
    // Each session of an idle device stores nothing; alerts and events do. A device sends
    // unsolicited StateChanged alerts, 4 per session.
    for round in 0..5 {
        for n in 0..4 {
            sim.queue_alert(
                GenericAlert::new(jobs::STATE_CHANGED, "chr", format!("state {round}.{n}"))
                    .with_source("./VirMO/VM/work/State"),
            );
        }
        let (next, report) = session(sim).await;
        sim = next;
        assert_eq!(report.delivered, 4);
        let retention = Retention {
            max_age_ms: None,
            max_rows: Some(6),
            batch: 4,
        };
        // Pruning while the next session runs: neither waits long for the other.
        let server = &test.server;
        let store = server.store().clone();
        let clock_now = virmo_server::clock::Clock::now(&test.clock);
        let (pruned, (next, report)) =
            tokio::join!(store.prune(&retention, clock_now), session(sim));
        sim = next;
        assert_eq!(report.reason, Some(EndReason::Completed));
        let pruned = pruned.expect("prune");
        if round > 0 {
            assert!(pruned.alerts >= 2, "round {round}: {pruned:?}");
        }
        let alerts = store
            .alerts(&virmo_server::model::Filter {
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .expect("alerts");
        assert!(alerts.len() <= 6, "{}", alerts.len());
        assert_eq!(
            alerts[0].alert.data.as_deref(),
            Some(format!("state {round}.3").as_str()),
            "the newest alert is kept"
        );
    }
    let report = test.server.prune().await.expect("the server's own pass");
    assert_eq!(report.total(), 0, "the defaults keep a small history whole");
}
