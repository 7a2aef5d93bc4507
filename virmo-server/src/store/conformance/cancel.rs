//! Cancelling jobs: a queued job is cancelled and never claimed; a sent or accepted one is
//! marked and goes on to its outcome, never queued again; a finished one is refused; a cancel
//! racing a claim gives the job to exactly one of them.

use super::{enrolled, exec_job, futures_join_all, T0};
use crate::model::{CancelOutcome, JobState, JobTransition};
use crate::store::{CancelResult, Store};

pub async fn run_all(store: &dyn Store) {
    a_queued_job_is_cancelled_and_never_sent(store).await;
    a_sent_job_is_marked_and_never_queued_again(store).await;
    an_accepted_job_goes_on_to_its_outcome(store).await;
    a_cancel_racing_a_claim_gives_the_job_to_one_of_them(store).await;
}

fn cancelled(result: CancelResult) -> crate::model::Job {
    match result {
        CancelResult::Done(CancelOutcome::Cancelled(job)) => job,
        other => panic!("expected a cancelled job, got {other:?}"),
    }
}

fn requested(result: CancelResult) -> crate::model::Job {
    match result {
        CancelResult::Done(CancelOutcome::Requested(job)) => job,
        other => panic!("expected a cancel-requested job, got {other:?}"),
    }
}

pub async fn a_queued_job_is_cancelled_and_never_sent(store: &dyn Store) {
    let id = enrolled(store, "cancel-queued").await;
    let (first, _) = store
        .create_job(&exec_job(&id, "work", "Provision", None), T0)
        .await
        .expect("job");
    let (second, _) = store
        .create_job(&exec_job(&id, "work", "Start", None), T0)
        .await
        .expect("job");
    let job = cancelled(store.cancel_job(first.id, T0 + 1).await.expect("cancel"));
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(
        (job.cancel_requested_at, job.finished_at, job.attempts),
        (Some(T0 + 1), Some(T0 + 1), 0)
    );
    // The cancelled job no longer holds the device's queue: the next one is claimed.
    let claimed = store
        .claim_job(&id, "s1", T0 + 2)
        .await
        .expect("claim")
        .expect("the next job");
    assert_eq!(claimed.id, second.id);
    assert!(matches!(
        store.cancel_job(first.id, T0 + 3).await.expect("cancel again"),
        CancelResult::Finished(job) if job.state == JobState::Cancelled
    ));
    assert_eq!(
        store.cancel_job(i64::MAX, T0).await.expect("cancel"),
        CancelResult::NoSuchJob
    );
    let after = store.job(first.id).await.expect("read").expect("kept");
    assert_eq!((after.state, after.attempts), (JobState::Cancelled, 0));
}

pub async fn a_sent_job_is_marked_and_never_queued_again(store: &dyn Store) {
    let id = enrolled(store, "cancel-sent").await;
    let (job, _) = store
        .create_job(&exec_job(&id, "work", "Start", None), T0)
        .await
        .expect("job");
    store.claim_job(&id, "s1", T0 + 1).await.expect("claim");
    let marked = requested(store.cancel_job(job.id, T0 + 2).await.expect("cancel"));
    assert_eq!(
        (marked.state, marked.cancel_requested_at),
        (JobState::Sent, Some(T0 + 2))
    );
    // Asking again keeps the first request's time.
    let again = requested(store.cancel_job(job.id, T0 + 3).await.expect("cancel"));
    assert_eq!(again.cancel_requested_at, Some(T0 + 2));
    // The session ends unanswered with attempts left: cancelled, not queued again.
    let after = store
        .transition_job(
            job.id,
            Some("s1"),
            &JobTransition::Unanswered {
                reason: "no answer".into(),
            },
            T0 + 4,
        )
        .await
        .expect("unanswered")
        .expect("applies");
    assert_eq!(after.state, JobState::Cancelled);
    assert_eq!(after.finished_at, Some(T0 + 4));
    assert!(store
        .claim_job(&id, "s2", T0 + 5)
        .await
        .expect("claim")
        .is_none());

    // A lease running out after a cancel: cancelled by the sweep, not queued again.
    let (leased, _) = store
        .create_job(&exec_job(&id, "work", "Stop", None), T0)
        .await
        .expect("job");
    store.claim_job(&id, "s3", T0 + 6).await.expect("claim");
    requested(store.cancel_job(leased.id, T0 + 7).await.expect("cancel"));
    let report = store
        .sweep(T0 + 6 + leased.policy.lease_ms + 1)
        .await
        .expect("sweep");
    assert!(report.cancelled >= 1, "{report:?}");
    let after = store.job(leased.id).await.expect("read").expect("kept");
    assert_eq!(after.state, JobState::Cancelled);
}

pub async fn an_accepted_job_goes_on_to_its_outcome(store: &dyn Store) {
    let id = enrolled(store, "cancel-accepted").await;
    let (job, _) = store
        .create_job(&exec_job(&id, "work", "Provision", None), T0)
        .await
        .expect("job");
    store.claim_job(&id, "s1", T0 + 1).await.expect("claim");
    store
        .transition_job(job.id, Some("s1"), &JobTransition::Accepted, T0 + 2)
        .await
        .expect("accept")
        .expect("applies");
    let marked = requested(store.cancel_job(job.id, T0 + 3).await.expect("cancel"));
    assert_eq!(marked.state, JobState::Accepted);
    // The device's OperationComplete still finishes it, and is what the job says.
    let done = store
        .transition_job(
            job.id,
            None,
            &JobTransition::Done {
                result_code: Some(1200),
            },
            T0 + 4,
        )
        .await
        .expect("done")
        .expect("applies");
    assert_eq!(
        (done.state, done.result_code, done.cancel_requested_at),
        (JobState::Done, Some(1200), Some(T0 + 3))
    );
    assert!(matches!(
        store.cancel_job(job.id, T0 + 5).await.expect("cancel"),
        CancelResult::Finished(job) if job.state == JobState::Done
    ));
}

pub async fn a_cancel_racing_a_claim_gives_the_job_to_one_of_them(store: &dyn Store) {
    for round in 0..6 {
        let id = enrolled(store, &format!("cancel-race-{round}")).await;
        let (job, _) = store
            .create_job(&exec_job(&id, "work", "Start", None), T0)
            .await
            .expect("job");
        let claim = async { Either::Claim(store.claim_job(&id, "s1", T0 + 1).await) };
        let cancel = async { Either::Cancel(store.cancel_job(job.id, T0 + 1).await) };
        let (mut claimed, mut outcome) = (None, None);
        let both: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Either> + Send + '_>>> =
            if round % 2 == 0 {
                vec![Box::pin(claim), Box::pin(cancel)]
            } else {
                vec![Box::pin(cancel), Box::pin(claim)]
            };
        for result in futures_join_all(both.into_iter()).await {
            match result {
                Either::Claim(c) => claimed = c.expect("claim"),
                Either::Cancel(c) => outcome = Some(c.expect("cancel")),
            }
        }
        match (claimed, outcome) {
            (Some(sent), Some(CancelResult::Done(CancelOutcome::Requested(marked)))) => {
                assert_eq!((sent.id, marked.id), (job.id, job.id));
            }
            (None, Some(CancelResult::Done(CancelOutcome::Cancelled(cancelled)))) => {
                assert_eq!(cancelled.id, job.id);
                let after = store.job(job.id).await.expect("read").expect("kept");
                assert_eq!((after.state, after.attempts), (JobState::Cancelled, 0));
            }
            other => panic!("a claim and a cancel disagree: {other:?}"),
        }
    }
}

enum Either {
    Claim(Result<Option<crate::model::Job>, crate::store::StoreError>),
    Cancel(Result<CancelResult, crate::store::StoreError>),
}
