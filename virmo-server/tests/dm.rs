//! The DM endpoint driven by simulated devices: real omadm client sessions over real HTTP on
//! loopback, with a real omadm DM tree on the device side that answers Execs with 202 and
//! sends the OperationComplete alert in a later session.

mod support;

use omadm::session::EndReason;
use support::{provision, session, start, with_device, TestServer};
use virmo_server::admin::{AdminRequest, AdminResponse};
use virmo_server::jobs::Operation;
use virmo_server::model::{Filter, JobPolicy, JobState};
use virmo_server::sim::state;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provision_is_sent_accepted_then_done_by_its_operation_complete() {
    let test = TestServer::start().await;
    let sim = test.device("dev-1").await;
    let job = test.queue("dev-1", provision("work")).await;
    assert_eq!(job.state, JobState::Queued);

    let (mut sim, report) = session(sim).await;
    assert_eq!(report.reason, Some(EndReason::Completed));
    let sent = test.job(job.id).await;
    assert_eq!(sent.state, JobState::Accepted, "{sent:?}");
    assert_eq!(sent.attempts, 1);
    {
        let device = sim.lock();
        assert_eq!(device.execs.len(), 1);
        assert_eq!(device.execs[0].uri, "./VirMO/VM/work/Operations/Provision");
        assert_eq!(
            device.execs[0].correlator.as_deref(),
            Some(job.correlator.as_str())
        );
        let vm = &device.vms["work"];
        assert_eq!(
            vm.settings["Image/PkgHash"],
            format!("sha256:{}", "ab".repeat(32))
        );
        assert_eq!(vm.settings["Resources/VCPUs"], "2");
    }
    // Every command's status is recorded.
    let responses = test
        .server
        .store()
        .responses(job.id)
        .await
        .expect("responses");
    let statuses: Vec<i64> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 202]);

    assert_eq!(sim.finish_operations(), 1);
    let (sim, report) = session(sim).await;
    assert_eq!((report.delivered, report.undelivered), (1, 0));
    let done = test.job(job.id).await;
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(done.result_code, Some(1200));
    let alerts = test
        .server
        .store()
        .alerts(&Filter::default())
        .await
        .expect("alerts");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].job_id, Some(job.id));

    // The session that brought the alert read the tree back.
    let vms = match test
        .request(AdminRequest::Vms {
            device: "dev-1".into(),
        })
        .await
        .expect("vms")
    {
        AdminResponse::Vms(vms) => vms,
        other => panic!("{other:?}"),
    };
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].name, "work");
    assert_eq!(vms[0].state, Some(state::STOPPED));
    assert_eq!(
        vms[0].values.get("Resources/VCPUs").map(String::as_str),
        Some("2")
    );

    // Start: the same path again, and the device is now seen running.
    let job = test.queue("dev-1", start("work")).await;
    let (mut sim, _) = session(sim).await;
    assert_eq!(test.state(job.id).await, JobState::Accepted);
    sim.finish_operations();
    let (_sim, _) = session(sim).await;
    assert_eq!(test.state(job.id).await, JobState::Done);
    let tree = test.server.store().tree("dev-1").await.expect("tree");
    let state = tree
        .iter()
        .find(|n| n.uri == "./VirMO/VM/work/State")
        .and_then(|n| n.value.clone());
    assert_eq!(state.as_deref(), Some("30"));
    let device = test
        .server
        .store()
        .device("dev-1")
        .await
        .expect("read")
        .expect("device");
    assert!(device.last_seen_at.is_some());
    assert_eq!(
        device.dev_info.map(|i| i.model),
        Some("simulator".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_devices_jobs_go_in_order_one_at_a_time() {
    let test = TestServer::start().await;
    let sim = test.device("dev-order").await;
    let first = test.queue("dev-order", provision("w")).await;
    let second = test.queue("dev-order", start("w")).await;
    let (sim, _) = session(sim).await;
    assert_eq!(test.state(first.id).await, JobState::Accepted);
    assert_eq!(test.state(second.id).await, JobState::Queued);
    // A session without the first one's outcome does not send the second.
    let (mut sim, _) = session(sim).await;
    assert_eq!(test.state(second.id).await, JobState::Queued);
    sim.finish_operations();
    // The alert finishes the first; the same session sends the second.
    let (mut sim, _) = session(sim).await;
    assert_eq!(test.state(first.id).await, JobState::Done);
    assert_eq!(test.state(second.id).await, JobState::Accepted);
    sim.finish_operations();
    let (_sim, _) = session(sim).await;
    assert_eq!(test.state(second.id).await, JobState::Done);
    let execs: Vec<String> = _sim
        .lock()
        .execs
        .iter()
        .map(|e| e.operation.clone())
        .collect();
    assert_eq!(execs, vec!["Provision", "Start"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_and_error_results_fail_the_job_and_are_kept() {
    let test = TestServer::start().await;
    let sim = test.device("dev-err").await;
    // No such VM: the device answers the Exec 404.
    let missing = test.queue("dev-err", start("nothing")).await;
    let (sim, _) = session(sim).await;
    let failed = test.job(missing.id).await;
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.result_code, Some(404));
    assert!(
        failed.error.as_deref().unwrap_or("").contains("404"),
        "{failed:?}"
    );
    let responses = test
        .server
        .store()
        .responses(missing.id)
        .await
        .expect("responses");
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].status, 404);

    // Accepted, then an OperationComplete with 1403 (not allowed in this state).
    let job = test.queue("dev-err", provision("w")).await;
    let (mut sim, _) = session(sim).await;
    sim.finish_operations();
    let (sim, _) = session(sim).await;
    assert_eq!(test.state(job.id).await, JobState::Done);
    let again = test
        .queue("dev-err", Operation::Resume { vm: "w".into() })
        .await;
    let (mut sim, _) = session(sim).await;
    sim.finish_operations();
    let (_sim, _) = session(sim).await;
    let refused = test.job(again.id).await;
    assert_eq!(refused.state, JobState::Failed);
    assert_eq!(refused.result_code, Some(1403));
    assert_eq!(
        refused.error.as_deref(),
        Some("result 1403: not allowed in this state")
    );
    let kinds: Vec<String> = test
        .events(Some("dev-err"))
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "job-failed").count(),
        2,
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_only_jobs_are_done_at_their_statuses_and_idempotent_requests_queue_one_job() {
    let test = TestServer::start().await;
    let sim = test.device("dev-set").await;
    let job = test.queue("dev-set", provision("w")).await;
    let (mut sim, _) = session(sim).await;
    sim.finish_operations();
    let (sim, _) = session(sim).await;
    assert_eq!(test.state(job.id).await, JobState::Done);
    let op = Operation::Peripheral {
        vm: "w".into(),
        peripheral: "net0".into(),
        allowed: false,
    };
    let first = test
        .queue_with("dev-set", op.clone(), Some("net-off"), None)
        .await;
    let second = test.queue_with("dev-set", op, Some("net-off"), None).await;
    assert_eq!(first.id, second.id);
    let (sim, _) = session(sim).await;
    let done = test.job(first.id).await;
    assert_eq!((done.state, done.result_code), (JobState::Done, None));
    assert_eq!(
        sim.lock().vms["w"].settings["Peripherals/net0/Allowed"],
        "false"
    );
    let jobs = test
        .server
        .store()
        .jobs(&Filter {
            device_id: Some("dev-set".into()),
            ..Filter::default()
        })
        .await
        .expect("jobs");
    assert_eq!(jobs.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_never_answers_gets_its_job_again_then_the_job_fails() {
    let test = TestServer::start().await;
    let sim = test.device("dev-gone").await;
    let policy = JobPolicy {
        max_attempts: 2,
        ..JobPolicy::default()
    };
    let job = test
        .queue_with("dev-gone", provision("w"), None, Some(policy))
        .await;
    // The device takes package 2 (the commands) and is never heard of again in that session.
    let (sim, report) = with_device(sim, |sim| sim.abandon_session(1)).await;
    assert!(matches!(report.reason, Some(EndReason::Transport(_))));
    assert_eq!(test.state(job.id).await, JobState::Sent);
    assert_eq!(test.server.dm().live_sessions(), 1);
    let idle = omadm::session::Limits::default().idle_timeout;
    let later = std::time::Instant::now() + idle * 2;
    test.server.sweep(later).await.expect("sweep");
    assert_eq!(test.server.dm().live_sessions(), 0);
    let again = test.job(job.id).await;
    assert_eq!(
        (again.state, again.attempts),
        (JobState::Queued, 1),
        "{again:?}"
    );
    let (_sim, _) = with_device(sim, |sim| sim.abandon_session(1)).await;
    test.server
        .sweep(std::time::Instant::now() + idle * 2)
        .await
        .expect("sweep");
    let failed = test.job(job.id).await;
    assert_eq!((failed.state, failed.attempts), (JobState::Failed, 2));
    let events = test.events(Some("dev-gone")).await;
    let unanswered = events.iter().filter(|e| e.kind == "job-unanswered").count();
    assert_eq!(unanswered, 2, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_alerts_time_out_and_undelivered_jobs_expire() {
    let test = TestServer::start().await;
    let sim = test.device("dev-late").await;
    test.device("dev-away").await;
    let policy = JobPolicy {
        complete_within_ms: 60_000,
        deliver_within_ms: 120_000,
        ..JobPolicy::default()
    };
    let job = test
        .queue_with("dev-late", provision("w"), None, Some(policy))
        .await;
    let never = test
        .queue_with("dev-away", start("w"), None, Some(policy))
        .await;
    let (mut sim, _) = session(sim).await;
    assert_eq!(test.state(job.id).await, JobState::Accepted);
    test.clock.advance(61_000);
    let report = test
        .server
        .sweep(std::time::Instant::now())
        .await
        .expect("sweep");
    assert_eq!(report.timed_out, 1);
    assert_eq!(test.state(job.id).await, JobState::Failed);
    assert_eq!(test.state(never.id).await, JobState::Queued);
    test.clock.advance(60_000);
    let report = test
        .server
        .sweep(std::time::Instant::now())
        .await
        .expect("sweep");
    assert_eq!(report.expired, 1);
    assert_eq!(test.state(never.id).await, JobState::Expired);
    // The late alert is still recorded, with its job, and logged as late.
    sim.finish_operations();
    let (_sim, report) = session(sim).await;
    assert_eq!(report.delivered, 1);
    let alerts = test
        .server
        .store()
        .alerts(&Filter::default())
        .await
        .expect("alerts");
    assert_eq!(alerts[0].job_id, Some(job.id));
    assert_eq!(test.state(job.id).await, JobState::Failed);
    assert!(test
        .events(Some("dev-late"))
        .await
        .iter()
        .any(|e| e.kind == "late-alert"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_keep_both_nonces_in_step() {
    // A session with nothing to do still gets the device's Status of our header (its 212 and
    // the NextNonce our next credentials must use): otherwise the next session's credentials
    // of the server would be stale, and a final reply would leave the device's challenge
    // unanswered.
    let test = TestServer::start().await;
    let mut sim = test.device("dev-idle").await;
    for _ in 0..3 {
        let (next, report) = session(sim).await;
        assert_eq!(report.reason, Some(EndReason::Completed), "{report:?}");
        sim = next;
    }
    let device = test
        .server
        .store()
        .device("dev-idle")
        .await
        .expect("read")
        .expect("device");
    let (for_verifying, for_sending) = {
        let auth = sim.auth().lock();
        (
            auth.nonce_for_verifying().to_vec(),
            auth.nonce_for_sending().to_vec(),
        )
    };
    assert_eq!(device.nonce_server, for_verifying);
    assert_eq!(device.nonce_client, for_sending);
    assert!(test
        .events(Some("dev-idle"))
        .await
        .iter()
        .all(|e| e.kind != "auth-failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_starts_over_under_the_same_session_id_gets_its_job_again() {
    let test = TestServer::start().await;
    let sim = test.device("dev-restart").await;
    let config = sim.config.clone();
    let job = test.queue("dev-restart", provision("w")).await;
    let (sim, _) = with_device(sim, |sim| sim.abandon_session(1)).await;
    assert_eq!(test.state(job.id).await, JobState::Sent);
    // The device restarts: a new client whose first session has the same ID ("1"), with the
    // nonces it had.
    let restarted = virmo_server::sim::SimDevice::new(config);
    {
        let old = sim.auth().lock().clone();
        *restarted.auth().lock() = old;
    }
    let (restarted, report) = session(restarted).await;
    assert_eq!(report.reason, Some(EndReason::Completed), "{report:?}");
    let again = test.job(job.id).await;
    assert_eq!(
        (again.state, again.attempts),
        (JobState::Accepted, 2),
        "{again:?}"
    );
    assert_eq!(restarted.lock().execs.len(), 1);
    let kinds: Vec<String> = test
        .events(Some("dev-restart"))
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.iter().any(|k| k == "session-restarted"), "{kinds:?}");
}
