//! Retention: alerts, events and statuses older than the age limit, and those beyond the
//! newest `max_rows`, are pruned, in batches smaller than what there is to delete.

use super::{enrolled, exec_job, T0};
use crate::model::{Filter, NewAlert};
use crate::store::{NewResponse, Retention, Store};

const DAY: i64 = 24 * 3600 * 1000;

async fn store_rows(store: &dyn Store, device: &str, job: i64, at: i64, n: usize) {
    for i in 0..n {
        let detail = format!("row {i} at {at}");
        store
            .record_event(Some(device), Some(job), "retention", &detail, at)
            .await
            .expect("event");
        let alert = NewAlert {
            device_id: device.to_owned(),
            session: "s1".into(),
            alert_type: "urn:oma:at:virmo:1.0:StateChanged".into(),
            source: Some("./VirMO/VM/work/State".into()),
            correlator: None,
            format: "chr".into(),
            mark: None,
            data: Some(detail),
        };
        store.record_alert(&alert, None, at).await.expect("alert");
        let response = NewResponse {
            device_id: device.to_owned(),
            job_id: job,
            command_index: 0,
            kind: "Status",
            uri: None,
            status: 200,
            items: Vec::new(),
            session: "s1".into(),
        };
        store.record_response(&response, at).await.expect("status");
    }
}

pub async fn old_and_surplus_rows_are_pruned(store: &dyn Store) {
    let id = enrolled(store, "retention").await;
    let (job, _) = store
        .create_job(&exec_job(&id, "work", "Start", None), T0)
        .await
        .expect("job");
    let now = T0 + 40 * DAY;
    store_rows(store, &id, job.id, now - 31 * DAY, 5).await;
    store_rows(store, &id, job.id, now - DAY, 5).await;
    let by_age = Retention {
        max_age_ms: Some(30 * DAY),
        max_rows: None,
        batch: 2,
    };
    let report = store.prune(&by_age, now).await.expect("prune");
    // The 5 old rows of each table, and every row the earlier checks stored at T0.
    assert!(
        report.events >= 5 && report.alerts >= 5 && report.responses >= 5,
        "{report:?}"
    );
    let all = Filter {
        limit: Some(1000),
        ..Filter::default()
    };
    let events = store.events(&all).await.expect("events");
    assert_eq!(events.len(), 5, "{events:?}");
    assert!(events.iter().all(|e| e.at == now - DAY));
    let alerts = store.alerts(&all).await.expect("alerts");
    assert_eq!(alerts.len(), 5);
    assert!(alerts.iter().all(|a| a.received_at == now - DAY));
    let responses = store.responses(job.id).await.expect("statuses");
    assert_eq!(responses.len(), 5);
    assert!(responses.iter().all(|r| r.at == now - DAY));

    let by_count = Retention {
        max_age_ms: None,
        max_rows: Some(3),
        batch: 1,
    };
    let report = store.prune(&by_count, now).await.expect("prune");
    assert_eq!(
        (report.events, report.alerts, report.responses),
        (2, 2, 2),
        "{report:?}"
    );
    let events = store.events(&all).await.expect("events");
    let details: Vec<&str> = events.iter().map(|e| e.detail.as_str()).collect();
    let at = now - DAY;
    assert_eq!(
        details,
        [
            format!("row 4 at {at}"),
            format!("row 3 at {at}"),
            format!("row 2 at {at}")
        ],
        "the newest rows are kept"
    );
    assert_eq!(store.alerts(&all).await.expect("alerts").len(), 3);
    assert_eq!(store.responses(job.id).await.expect("statuses").len(), 3);
    // Nothing left to prune: a pass deletes nothing.
    let report = store.prune(&by_count, now).await.expect("prune");
    assert_eq!(report.total(), 0);
}
