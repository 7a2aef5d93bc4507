//! The storage test suite every backend must pass: SQLite in the unit tests, PostgreSQL in
//! `tests/postgres.rs`. Each check uses devices of its own (IDs with a random prefix), so the
//! suite also runs on a database other tests share.

mod cancel;
mod retention;

use std::sync::Arc;

use super::{DeviceContact, NewResponse, Store, StoreError};
use crate::model::{
    AuthKind, DeviceInfo, DmCommand, Enrollment, Filter, JobPolicy, JobState, JobTransition,
    NewAlert, NewJob, TreeNode,
};

const T0: i64 = 1_800_000_000_000;

fn unique(name: &str) -> String {
    format!("conf-{}-{name}", crate::random_hex(6))
}

fn enrollment(id: &str) -> Enrollment {
    Enrollment {
        id: id.to_owned(),
        auth: AuthKind::Md5,
        client_name: id.to_owned(),
        client_secret: "client-secret".into(),
        server_name: "virmo-server".into(),
        server_secret: "server-secret".into(),
        notify_addr: Some("127.0.0.1:9".into()),
    }
}

fn exec_job(device: &str, vm: &str, op: &str, key: Option<&str>) -> NewJob {
    NewJob {
        device_id: device.to_owned(),
        idempotency_key: key.map(str::to_owned),
        operation: format!("{op} {vm}"),
        commands: vec![DmCommand::Exec {
            uri: format!("./VirMO/VM/{vm}/Operations/{op}"),
            data: None,
        }],
        policy: JobPolicy::default(),
    }
}

async fn enrolled(store: &dyn Store, name: &str) -> String {
    let id = unique(name);
    store.enroll(&enrollment(&id), T0).await.expect("enroll");
    id
}

/// Runs every check, in order.
pub async fn run_all(store: Arc<dyn Store>) {
    let store = store.as_ref();
    devices_are_enrolled_once_and_keep_their_nonces(store).await;
    jobs_are_idempotent_and_go_through_their_states(store).await;
    a_devices_jobs_go_one_at_a_time_in_order(store).await;
    unanswered_jobs_are_retried_then_fail(store).await;
    a_late_answer_from_an_old_session_changes_nothing(store).await;
    the_sweep_applies_leases_deadlines_and_timeouts(store).await;
    the_tree_is_replaced_by_subtree_and_set_by_node(store).await;
    alerts_events_and_responses_are_kept_and_listed(store).await;
    concurrent_claims_give_a_job_to_one_session_only(store).await;
    cancel::run_all(store).await;
    // Last: it prunes what the checks before it stored.
    retention::old_and_surplus_rows_are_pruned(store).await;
}

pub async fn devices_are_enrolled_once_and_keep_their_nonces(store: &dyn Store) {
    let id = unique("dev");
    let device = store.enroll(&enrollment(&id), T0).await.expect("enroll");
    assert_eq!(device.enrollment, enrollment(&id));
    assert!(device.nonce_client.is_empty() && device.last_seen_at.is_none());
    assert!(matches!(
        store.enroll(&enrollment(&id), T0).await,
        Err(StoreError::AlreadyEnrolled(taken)) if taken == id
    ));
    let info = DeviceInfo {
        dev_id: id.clone(),
        man: "virmo".into(),
        model: "sim".into(),
        dm_version: "1.2".into(),
        lang: "en".into(),
    };
    store
        .update_contact(
            &id,
            DeviceContact {
                nonce_client: b"nc",
                nonce_server: b"ns",
                seen_at: Some(T0 + 5),
                dev_info: Some(&info),
            },
        )
        .await
        .expect("contact");
    let device = store.device(&id).await.expect("read").expect("the device");
    assert_eq!(
        (&device.nonce_client[..], &device.nonce_server[..]),
        (&b"nc"[..], &b"ns"[..])
    );
    assert_eq!(device.last_seen_at, Some(T0 + 5));
    assert_eq!(device.dev_info.as_ref(), Some(&info));
    // A contact without authentication keeps the last-seen time.
    store
        .update_contact(
            &id,
            DeviceContact {
                nonce_client: b"nc2",
                nonce_server: b"ns",
                seen_at: None,
                dev_info: None,
            },
        )
        .await
        .expect("contact");
    let device = store.device(&id).await.expect("read").expect("the device");
    assert_eq!(device.last_seen_at, Some(T0 + 5));
    assert_eq!(device.nonce_client, b"nc2");
    assert_eq!(device.dev_info.as_ref(), Some(&info));
    let listed = store.devices().await.expect("list");
    assert!(listed.iter().any(|d| d.id == id));
    store
        .create_job(&exec_job(&id, "w", "Start", None), T0)
        .await
        .expect("job");
    assert!(store.delete_device(&id).await.expect("delete"));
    assert!(store.device(&id).await.expect("read").is_none());
    assert!(!store.delete_device(&id).await.expect("delete again"));
    assert!(matches!(
        store
            .create_job(&exec_job(&id, "w", "Start", None), T0)
            .await,
        Err(StoreError::NoSuchDevice(_))
    ));
}

pub async fn jobs_are_idempotent_and_go_through_their_states(store: &dyn Store) {
    let id = enrolled(store, "states").await;
    let (job, created) = store
        .create_job(&exec_job(&id, "work", "Suspend", Some("k1")), T0)
        .await
        .expect("create");
    assert!(created);
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.expires_at, T0 + JobPolicy::default().deliver_within_ms);
    let (again, created) = store
        .create_job(&exec_job(&id, "work", "Suspend", Some("k1")), T0 + 1)
        .await
        .expect("create again");
    assert!(!created);
    assert_eq!(again.id, job.id);
    let claimed = store
        .claim_job(&id, "s1", T0 + 10)
        .await
        .expect("claim")
        .expect("the job");
    assert_eq!(claimed.id, job.id);
    assert_eq!((claimed.state, claimed.attempts), (JobState::Sent, 1));
    assert_eq!(claimed.session.as_deref(), Some("s1"));
    assert_eq!(claimed.lease_until, Some(T0 + 10 + job.policy.lease_ms));
    let accepted = store
        .transition_job(job.id, Some("s1"), &JobTransition::Accepted, T0 + 20)
        .await
        .expect("accept")
        .expect("applies");
    assert_eq!(accepted.state, JobState::Accepted);
    assert_eq!(
        accepted.complete_by,
        Some(T0 + 20 + job.policy.complete_within_ms)
    );
    // Accepted twice does not apply.
    assert!(store
        .transition_job(job.id, Some("s1"), &JobTransition::Accepted, T0 + 21)
        .await
        .expect("accept again")
        .is_none());
    let found = store
        .job_by_correlator(&id, &job.correlator)
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found.id, job.id);
    assert!(store
        .job_by_correlator("another-device", &job.correlator)
        .await
        .expect("lookup")
        .is_none());
    let done = store
        .transition_job(
            job.id,
            None,
            &JobTransition::Done {
                result_code: Some(1200),
            },
            T0 + 30,
        )
        .await
        .expect("done")
        .expect("applies");
    assert_eq!(done.state, JobState::Done);
    assert_eq!(
        (done.result_code, done.finished_at),
        (Some(1200), Some(T0 + 30))
    );
    // Nothing moves a finished job.
    for transition in [
        JobTransition::Accepted,
        JobTransition::Failed {
            result_code: None,
            error: "late".into(),
        },
        JobTransition::Unanswered {
            reason: "late".into(),
        },
    ] {
        assert!(store
            .transition_job(job.id, None, &transition, T0 + 40)
            .await
            .expect("transition")
            .is_none());
    }
    let listed = store
        .jobs(&Filter {
            device_id: Some(id.clone()),
            state: Some(JobState::Done),
            ..Filter::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0], done);
}

pub async fn a_devices_jobs_go_one_at_a_time_in_order(store: &dyn Store) {
    let id = enrolled(store, "order").await;
    let mut ids = Vec::new();
    for op in ["Provision", "Start", "Suspend"] {
        ids.push(
            store
                .create_job(&exec_job(&id, "work", op, None), T0)
                .await
                .expect("create")
                .0
                .id,
        );
    }
    for (n, expected) in ids.iter().enumerate() {
        let session = format!("s{n}");
        let job = store
            .claim_job(&id, &session, T0 + 1)
            .await
            .expect("claim")
            .expect("a job");
        assert_eq!(job.id, *expected);
        // The next one waits while this one is sent, then accepted.
        assert!(store
            .claim_job(&id, "other", T0 + 2)
            .await
            .expect("claim")
            .is_none());
        store
            .transition_job(job.id, Some(&session), &JobTransition::Accepted, T0 + 3)
            .await
            .expect("accept")
            .expect("applies");
        assert!(store
            .claim_job(&id, "other", T0 + 4)
            .await
            .expect("claim")
            .is_none());
        let outcome = if n == 1 {
            JobTransition::Failed {
                result_code: Some(1403),
                error: "not allowed in this state".into(),
            }
        } else {
            // With and without a result code (a job of Replaces has none).
            JobTransition::Done {
                result_code: (n == 0).then_some(1200),
            }
        };
        store
            .transition_job(job.id, None, &outcome, T0 + 5)
            .await
            .expect("finish")
            .expect("applies");
    }
    assert!(store
        .claim_job(&id, "s9", T0 + 6)
        .await
        .expect("claim")
        .is_none());
}

pub async fn unanswered_jobs_are_retried_then_fail(store: &dyn Store) {
    let id = enrolled(store, "retry").await;
    let mut new = exec_job(&id, "work", "Start", None);
    new.policy.max_attempts = 2;
    let (job, _) = store.create_job(&new, T0).await.expect("create");
    let unanswered = JobTransition::Unanswered {
        reason: "the session ended without its status".into(),
    };
    store
        .claim_job(&id, "s1", T0 + 1)
        .await
        .expect("claim")
        .expect("job");
    let again = store
        .transition_job(job.id, Some("s1"), &unanswered, T0 + 2)
        .await
        .expect("unanswered")
        .expect("applies");
    assert_eq!((again.state, again.attempts), (JobState::Queued, 1));
    assert!(again.error.is_some());
    store
        .claim_job(&id, "s2", T0 + 3)
        .await
        .expect("claim")
        .expect("job");
    let failed = store
        .transition_job(job.id, Some("s2"), &unanswered, T0 + 4)
        .await
        .expect("unanswered")
        .expect("applies");
    assert_eq!((failed.state, failed.attempts), (JobState::Failed, 2));
    assert_eq!(failed.finished_at, Some(T0 + 4));
}

pub async fn a_late_answer_from_an_old_session_changes_nothing(store: &dyn Store) {
    let id = enrolled(store, "stale").await;
    let (job, _) = store
        .create_job(&exec_job(&id, "work", "Stop", None), T0)
        .await
        .expect("create");
    store
        .claim_job(&id, "old", T0 + 1)
        .await
        .expect("claim")
        .expect("job");
    let report = store
        .sweep(T0 + 1 + job.policy.lease_ms + 1)
        .await
        .expect("sweep");
    assert_eq!(report.requeued, 1);
    store
        .claim_job(&id, "new", T0 + job.policy.lease_ms + 10)
        .await
        .expect("claim")
        .expect("job");
    assert!(store
        .transition_job(
            job.id,
            Some("old"),
            &JobTransition::Accepted,
            T0 + job.policy.lease_ms + 11
        )
        .await
        .expect("transition")
        .is_none());
    let current = store.job(job.id).await.expect("read").expect("job");
    assert_eq!((current.state, current.attempts), (JobState::Sent, 2));
    assert_eq!(current.session.as_deref(), Some("new"));
}

pub async fn the_sweep_applies_leases_deadlines_and_timeouts(store: &dyn Store) {
    // Far in the future, so that other checks' jobs on a shared database are not touched
    // differently than they would be anyway.
    let base = T0 + 1_000_000_000;
    let policy = JobPolicy {
        max_attempts: 1,
        deliver_within_ms: 1_000,
        complete_within_ms: 2_000,
        lease_ms: 500,
    };
    let with = |device: &str, op: &str| {
        let mut job = exec_job(device, "w", op, None);
        job.policy = policy;
        job
    };
    let leased = enrolled(store, "lease").await;
    let late = enrolled(store, "late").await;
    let never = enrolled(store, "never").await;
    let (leased_job, _) = store
        .create_job(&with(&leased, "Start"), base)
        .await
        .expect("job");
    let (late_job, _) = store
        .create_job(&with(&late, "Start"), base)
        .await
        .expect("job");
    let (never_job, _) = store
        .create_job(&with(&never, "Start"), base)
        .await
        .expect("job");
    store
        .claim_job(&leased, "s", base + 1)
        .await
        .expect("claim")
        .expect("job");
    store
        .claim_job(&late, "s", base + 1)
        .await
        .expect("claim")
        .expect("job");
    store
        .transition_job(late_job.id, Some("s"), &JobTransition::Accepted, base + 2)
        .await
        .expect("accept")
        .expect("applies");
    let report = store.sweep(base + 400).await.expect("sweep");
    assert_eq!(
        store.job(leased_job.id).await.expect("r").expect("j").state,
        JobState::Sent
    );
    let _ = report;
    store.sweep(base + 2_500).await.expect("sweep");
    let state = |id| async move { store.job(id).await.expect("read").expect("job") };
    let leased_now = state(leased_job.id).await;
    assert_eq!(leased_now.state, JobState::Failed, "{leased_now:?}");
    let late_now = state(late_job.id).await;
    assert_eq!(late_now.state, JobState::Failed);
    assert_eq!(
        late_now.error.as_deref(),
        Some("no OperationComplete alert in time")
    );
    let never_now = state(never_job.id).await;
    assert_eq!(never_now.state, JobState::Expired);
    // An expired job is not claimed, and a claim past a deadline expires it itself.
    assert!(store
        .claim_job(&never, "s", base + 3_000)
        .await
        .expect("claim")
        .is_none());
    let (job, _) = store
        .create_job(&with(&never, "Stop"), base + 3_000)
        .await
        .expect("job");
    assert!(store
        .claim_job(&never, "s", base + 4_500)
        .await
        .expect("claim")
        .is_none());
    assert_eq!(state(job.id).await.state, JobState::Expired);
}

pub async fn the_tree_is_replaced_by_subtree_and_set_by_node(store: &dyn Store) {
    let id = enrolled(store, "tree").await;
    let node = |uri: &str, value: &str| TreeNode {
        uri: uri.to_owned(),
        format: "chr".into(),
        value: Some(value.to_owned()),
    };
    store
        .replace_subtree(
            &id,
            "./VirMO/VM",
            &[
                node("./VirMO/VM/a_b/State", "20"),
                node("./VirMO/VM/aXb/State", "30"),
                node("./VirMO/VM/a_b/Name", "first"),
            ],
            T0,
        )
        .await
        .expect("replace");
    store
        .set_nodes(&id, &[node("./VirMO/Version", "1.0")], T0)
        .await
        .expect("set");
    store
        .replace_subtree(
            &id,
            "./VirMO/VM/a_b",
            &[node("./VirMO/VM/a_b/State", "40")],
            T0 + 1,
        )
        .await
        .expect("replace a_b");
    let tree = store.tree(&id).await.expect("tree");
    assert_eq!(
        tree,
        vec![
            node("./VirMO/VM/aXb/State", "30"),
            node("./VirMO/VM/a_b/State", "40"),
            node("./VirMO/Version", "1.0"),
        ]
    );
}

pub async fn alerts_events_and_responses_are_kept_and_listed(store: &dyn Store) {
    let id = enrolled(store, "log").await;
    let (job, _) = store
        .create_job(&exec_job(&id, "work", "Start", None), T0)
        .await
        .expect("job");
    let alert = NewAlert {
        device_id: id.clone(),
        session: "s1".into(),
        alert_type: "urn:oma:at:virmo:1.0:OperationComplete".into(),
        source: Some("./VirMO/VM/work/Operations/Start".into()),
        correlator: Some(job.correlator.clone()),
        format: "int".into(),
        mark: Some("informational".into()),
        data: Some("1200".into()),
    };
    let first = store
        .record_alert(&alert, Some(job.id), T0)
        .await
        .expect("alert");
    let second = store
        .record_alert(&alert, None, T0 + 1)
        .await
        .expect("alert");
    assert!(second > first);
    let filter = Filter {
        device_id: Some(id.clone()),
        ..Filter::default()
    };
    let alerts = store.alerts(&filter).await.expect("alerts");
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0].id, second, "newest first");
    assert_eq!(alerts[1].job_id, Some(job.id));
    assert_eq!(alerts[1].alert, alert);
    let after = store
        .alerts(&Filter {
            after_id: Some(first),
            ..filter.clone()
        })
        .await
        .expect("alerts after");
    assert_eq!(after.iter().map(|a| a.id).collect::<Vec<_>>(), vec![second]);
    store
        .record_event(
            Some(&id),
            Some(job.id),
            "auth-failed",
            "wrong credentials",
            T0,
        )
        .await
        .expect("event");
    store
        .record_event(None, None, "unknown-device", "someone", T0)
        .await
        .expect("event");
    let events = store.events(&filter).await.expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].kind.as_str(), events[0].job_id),
        ("auth-failed", Some(job.id))
    );
    let response = NewResponse {
        device_id: id.clone(),
        job_id: job.id,
        command_index: 0,
        kind: "Results",
        uri: Some("./VirMO/VM".into()),
        status: 200,
        items: vec![TreeNode {
            uri: "./VirMO/VM/work".into(),
            format: "node".into(),
            value: None,
        }],
        session: "s1".into(),
    };
    store
        .record_response(&response, T0)
        .await
        .expect("response");
    let responses = store.responses(job.id).await.expect("responses");
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].items, response.items);
    assert_eq!(
        (responses[0].kind.as_str(), responses[0].status),
        ("Results", 200)
    );
}

pub async fn concurrent_claims_give_a_job_to_one_session_only(store: &dyn Store) {
    let id = enrolled(store, "race").await;
    let (job, _) = store
        .create_job(&exec_job(&id, "work", "Start", None), T0)
        .await
        .expect("job");
    let claims = (0..8).map(|n| {
        let id = id.clone();
        async move { store.claim_job(&id, &format!("s{n}"), T0 + 1).await }
    });
    let results = futures_join_all(claims).await;
    let winners: Vec<_> = results
        .into_iter()
        .filter_map(|r| r.expect("claim"))
        .collect();
    assert_eq!(winners.len(), 1);
    assert_eq!(winners[0].id, job.id);
}

/// Polls the futures together (no extra dependency for `join_all`).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, future) in outputs.iter_mut().zip(set.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *slot = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}
