//! What devices get wrong: unknown devices, wrong credentials, replayed messages, malformed
//! SyncML, messages of no session. Each is refused, logged as an event, and changes no job.

mod support;

use omadm::codec::decode_any;
use omadm::model::Command;
use omadm::session::{Encoding, EndReason, GenericAlert};
use omadm::transport::DmHttpClient;
use support::{provision, session, with_device, TestServer};
use virmo_server::jobs;
use virmo_server::model::{AuthKind, Filter, JobState};
use virmo_server::sim::{SimConfig, SimDevice};

/// The status a reply gives our `SyncHdr`.
fn header_status(body: &[u8]) -> u16 {
    let (_, msg) = decode_any(body).expect("a DM reply");
    msg.body
        .commands
        .iter()
        .find_map(|c| match c {
            Command::Status(s) if s.cmd_ref == 0 => Some(s.data.0),
            _ => None,
        })
        .expect("a status of the header")
}

fn post(url: &str, content_type: &'static str, body: Vec<u8>) -> omadm::transport::HttpReply {
    let transmit = omadm::session::Transmit {
        target_uri: url.to_owned(),
        content_type,
        body,
        hmac: None,
    };
    DmHttpClient::new(std::time::Duration::from_secs(10))
        .post(&transmit)
        .expect("an HTTP answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_device_is_refused_with_403_and_logged() {
    let test = TestServer::start().await;
    let stranger = SimDevice::new(SimConfig::new(
        "stranger",
        &test.server.dm_url(),
        "virmo-server",
    ));
    let (_s, report) = session(stranger).await;
    assert!(
        report
            .transport_error
            .as_deref()
            .unwrap_or("")
            .contains("403"),
        "{report:?}"
    );
    let events = test.events(None).await;
    assert!(events
        .iter()
        .any(|e| e.kind == "unknown-device" && e.detail.contains("stranger")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_challenged_and_get_nothing_done() {
    let test = TestServer::start().await;
    let mut config = SimConfig::new("dev-wrong", &test.server.dm_url(), "virmo-server");
    test.enroll(&config).await;
    let job = test.queue("dev-wrong", provision("w")).await;
    config.client_secret = "guessed".into();
    let impostor = SimDevice::new(config);
    let (impostor, report) = session(impostor).await;
    assert_eq!(report.reason, Some(EndReason::AuthenticationFailed));
    assert!(impostor.lock().execs.is_empty());
    assert!(impostor.lock().vms.is_empty());
    assert_eq!(test.state(job.id).await, JobState::Queued);
    let failures = test
        .events(Some("dev-wrong"))
        .await
        .into_iter()
        .filter(|e| e.kind == "auth-failed")
        .count();
    assert!(failures >= 1);
    // The real device still gets its job.
    let device = SimDevice::new(SimConfig::new(
        "dev-wrong",
        &test.server.dm_url(),
        "virmo-server",
    ));
    let (_device, report) = session(device).await;
    assert_eq!(report.reason, Some(EndReason::Completed));
    assert_eq!(test.state(job.id).await, JobState::Accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_package_is_refused_because_its_nonce_was_used() {
    let test = TestServer::start().await;
    let sim = test.device("dev-replay").await;
    // One session so that nonces are in use, then capture a package 1 and use it for real.
    let (mut sim, _) = session(sim).await;
    let captured = sim.package_one();
    let (sim, report) = session(sim).await;
    let events = test.events(Some("dev-replay")).await;
    assert_eq!(report.reason, Some(EndReason::Completed), "{events:#?}");
    let job = test.queue("dev-replay", provision("w")).await;
    let url = test.server.dm_url();
    let body = captured.body.clone();
    let reply = tokio::task::spawn_blocking(move || post(&url, captured.content_type, body))
        .await
        .expect("posted");
    assert_eq!(reply.status, 200);
    assert_eq!(header_status(&reply.body), 401);
    assert_eq!(test.state(job.id).await, JobState::Queued);
    assert!(test
        .events(Some("dev-replay"))
        .await
        .iter()
        .any(|e| e.kind == "auth-failed"));
    // The device recovers from the nonce the replay made the server issue.
    let (_sim, report) = session(sim).await;
    let events = test.events(Some("dev-replay")).await;
    assert_eq!(
        report.reason,
        Some(EndReason::Completed),
        "{report:?} {events:#?}"
    );
    assert_eq!(test.state(job.id).await, JobState::Accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_refused_and_logged() {
    let test = TestServer::start().await;
    test.device("dev-bad").await;
    let url = test.server.dm_url();
    let replies = tokio::task::spawn_blocking(move || {
        let garbage = post(&url, Encoding::Xml.media_type(), b"<SyncML><oops".to_vec());
        let wbxml_garbage = post(
            &url,
            Encoding::Wbxml.media_type(),
            vec![3, 1, 0x6a, 0, 0xff],
        );
        let foreign = {
            let transmit = omadm::session::Transmit {
                target_uri: url.clone(),
                content_type: "text/plain",
                body: b"hello".to_vec(),
                hmac: None,
            };
            DmHttpClient::new(std::time::Duration::from_secs(10))
                .post(&transmit)
                .expect("an answer")
        };
        let no_session = post(
            &format!("{url}/s/not-a-session"),
            Encoding::Xml.media_type(),
            include_bytes!("../../omadm/tests/golden/pkg1_client_init.xml").to_vec(),
        );
        (
            garbage.status,
            wbxml_garbage.status,
            foreign.status,
            no_session.status,
        )
    })
    .await
    .expect("posted");
    assert_eq!(replies, (400, 400, 415, 400));
    let kinds: Vec<String> = test
        .events(None)
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "malformed").count(),
        2,
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "no-session"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wbxml_and_hmac_sessions_work_and_unsolicited_alerts_are_kept() {
    let test = TestServer::start().await;
    let mut config = SimConfig::new("dev-hmac", &test.server.dm_url(), "virmo-server");
    config.auth = AuthKind::Hmac;
    config.encoding = Encoding::Wbxml;
    test.enroll(&config).await;
    let mut sim = SimDevice::new(config);
    let job = test.queue("dev-hmac", provision("w")).await;
    sim.queue_alert(
        GenericAlert::new(jobs::STATE_CHANGED, "int", "50").with_source("./VirMO/VM/w/State"),
    );
    let (mut sim, report) = session(sim).await;
    assert_eq!(report.reason, Some(EndReason::Completed), "{report:?}");
    assert_eq!(report.delivered, 1);
    assert_eq!(test.state(job.id).await, JobState::Accepted);
    sim.finish_operations();
    let (_sim, _) = session(sim).await;
    assert_eq!(test.state(job.id).await, JobState::Done);
    let alerts = test
        .server
        .store()
        .alerts(&Filter::default())
        .await
        .expect("alerts");
    assert_eq!(alerts.len(), 2);
    let state_changed = alerts
        .iter()
        .find(|a| a.alert.alert_type == jobs::STATE_CHANGED)
        .expect("the StateChanged alert");
    assert_eq!(state_changed.job_id, None);
    assert_eq!(state_changed.alert.data.as_deref(), Some("50"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_sends_a_pkg0_and_the_notified_session_takes_it() {
    let test = TestServer::start().await;
    let listener =
        omadm::transport::notify::NotificationListener::bind("127.0.0.1:0").expect("bind");
    let mut config = SimConfig::new("dev-push", &test.server.dm_url(), "virmo-server");
    let mut enrollment = config.enrollment();
    enrollment.notify_addr = Some(listener.local_addr().expect("addr").to_string());
    config.server_secret = enrollment.server_secret.clone();
    test.request(virmo_server::admin::AdminRequest::Enroll(
        virmo_server::admin::EnrollRequest {
            id: enrollment.id.clone(),
            auth: Some(enrollment.auth),
            client_name: Some(enrollment.client_name.clone()),
            client_secret: Some(enrollment.client_secret.clone()),
            server_secret: Some(enrollment.server_secret.clone()),
            notify_addr: enrollment.notify_addr.clone(),
        },
    ))
    .await
    .expect("enrolled");
    let sim = SimDevice::new(config);
    // One session first, so that the server's nonce is one the device issued.
    let (sim, _) = session(sim).await;
    let job = test.queue("dev-push", provision("w")).await;
    let secret = enrollment.server_secret.clone();
    let (_sim, (notification, report)) = with_device(sim, move |sim| {
        let nonce = sim.auth().lock().nonce_for_verifying().to_vec();
        let notification = listener
            .receive(std::time::Duration::from_secs(10), |server_id| {
                (server_id == "virmo-server").then(|| (secret.clone(), vec![nonce.clone()]))
            })
            .expect("a verified notification");
        let report = sim.notified_session(notification.session_id);
        (notification, report)
    })
    .await;
    assert_eq!(notification.server_id, "virmo-server");
    assert_eq!(report.reason, Some(EndReason::Completed));
    assert_eq!(test.state(job.id).await, JobState::Accepted);
}
