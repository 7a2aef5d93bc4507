//! The admin HTTP API and its client: token, enrollment and the agent configuration, errors.

mod support;

use support::{TestServer, TOKEN};
use virmo_server::admin::client::AdminClient;
use virmo_server::admin::{AdminRequest, AdminResponse, EnrollRequest, JobRequest};
use virmo_server::jobs::{Operation, Resources};
use virmo_server::model::{Filter, JobState};

async fn send(client: &AdminClient, request: AdminRequest) -> Result<AdminResponse, u16> {
    let client = client.clone();
    tokio::task::spawn_blocking(move || client.send(&request))
        .await
        .expect("ran")
        .map_err(|err| err.status().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_the_token() {
    let test = TestServer::start().await;
    let wrong = AdminClient::new(test.server.url(), "not-the-token");
    assert_eq!(send(&wrong, AdminRequest::Devices).await, Err(401));
    let right = AdminClient::new(test.server.url(), TOKEN);
    assert_eq!(
        send(&right, AdminRequest::Devices).await,
        Ok(AdminResponse::Devices(Vec::new()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_gives_the_agent_configuration_and_requests_are_checked() {
    let test = TestServer::start().await;
    let enroll = AdminRequest::Enroll(EnrollRequest {
        id: "host-7".into(),
        notify_addr: Some("192.0.2.7:2948".into()),
        ..EnrollRequest::default()
    });
    let enrolled = match send(&test.admin, enroll.clone()).await {
        Ok(AdminResponse::Enrolled(enrolled)) => enrolled,
        other => panic!("{other:?}"),
    };
    let config = &enrolled.agent_config;
    assert!(
        config.contains(&format!("url = \"{}\"", test.server.dm_url())),
        "{config}"
    );
    assert!(config.contains("server_id = \"virmo-server\""));
    assert!(config.contains(&format!(
        "client_secret = \"{}\"",
        enrolled.enrollment.client_secret
    )));
    assert!(config.contains("dev_id = \"host-7\""));
    assert!(config.contains("notification = \"0.0.0.0:2948\""));
    assert!(enrolled.enrollment.client_secret.len() >= 24);
    assert_eq!(send(&test.admin, enroll).await, Err(409));
    // Secrets never leave through the listings.
    let listed = serde_json::to_string(
        &send(&test.admin, AdminRequest::Devices)
            .await
            .expect("devices"),
    )
    .expect("json");
    assert!(!listed.contains(&enrolled.enrollment.client_secret));

    let queue = |device: &str, operation| AdminRequest::Queue {
        device: device.into(),
        job: JobRequest {
            operation,
            idempotency_key: None,
            policy: None,
        },
    };
    let bad_hash = Operation::Provision {
        vm: "w".into(),
        pkg_url: "u".into(),
        pkg_hash: "nope".into(),
        resources: Resources::default(),
    };
    assert_eq!(send(&test.admin, queue("host-7", bad_hash)).await, Err(400));
    assert_eq!(
        send(
            &test.admin,
            queue("nobody", Operation::Start { vm: "w".into() })
        )
        .await,
        Err(404)
    );
    let job = match send(&test.admin, queue("host-7", Operation::Refresh)).await {
        Ok(AdminResponse::Queued { job, created: true }) => job,
        other => panic!("{other:?}"),
    };
    // A wait on a job that does not change ends at its deadline with the job as it is.
    match send(
        &test.admin,
        AdminRequest::Job {
            id: job.id,
            changed_since: Some(job.updated_at),
            wait_ms: Some(50),
        },
    )
    .await
    {
        Ok(AdminResponse::Job(view)) => assert_eq!(view.job.state, JobState::Queued),
        other => panic!("{other:?}"),
    }
    match send(
        &test.admin,
        AdminRequest::Jobs {
            filter: Filter {
                device_id: Some("host-7".into()),
                state: Some(JobState::Queued),
                ..Filter::default()
            },
        },
    )
    .await
    {
        Ok(AdminResponse::Jobs(jobs)) => assert_eq!(jobs.len(), 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        send(
            &test.admin,
            AdminRequest::Unenroll {
                id: "host-7".into()
            }
        )
        .await,
        Ok(AdminResponse::Unenrolled {
            id: "host-7".into()
        })
    );
    assert_eq!(
        send(
            &test.admin,
            AdminRequest::Device {
                id: "host-7".into()
            }
        )
        .await,
        Err(404)
    );
}
