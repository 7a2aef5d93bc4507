//! HTTPS: the server with a certificate of a test CA (made here with rcgen), a device whose DM
//! client is the agent's own (`virmo_agent::dm::http`, configured by the `[server]` table
//! `virmoctl enroll` printed plus `ca_file`), a full DM session with a job over TLS; the admin
//! API and `virmoctl` over https with a CA file; a wrong CA refused with a clear error.

mod support;

use std::path::{Path, PathBuf};

use omadm::session::EndReason;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use support::{provision, session, TempDir, TestServer, TOKEN};
use virmo_server::admin::client::AdminClient;
use virmo_server::admin::{AdminRequest, AdminResponse, EnrollRequest};
use virmo_server::model::{AuthKind, JobState};
use virmo_server::sim::{SimConfig, SimDevice};
use virmo_server::tls::ServerTls;

/// A CA and a server certificate it signed for 127.0.0.1; the CA's PEM in `dir/name.pem`.
struct TestPki {
    ca_file: PathBuf,
    server: ServerTls,
}

fn pki(dir: &Path, name: &str) -> TestPki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("virmo test CA {name}"));
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().expect("server key");
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
    server_params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    let ca_file = dir.join(format!("{name}.pem"));
    std::fs::write(&ca_file, ca_cert.pem()).expect("CA file");
    TestPki {
        ca_file,
        server: ServerTls {
            certificate_chain_pem: server_cert.pem().into_bytes(),
            private_key_pem: server_key.serialize_pem().into_bytes(),
        },
    }
}

async fn tls_server(pki: &TestPki) -> TestServer {
    let dir = TempDir::new("virmo-tls-db");
    let url = virmo_server::store::sqlite_url(&dir.0);
    let tls = pki.server.clone();
    let mut test = TestServer::start_on(&url, move |config| config.tls = Some(tls)).await;
    test.keep(dir);
    assert!(test.server.url().starts_with("https://127.0.0.1:"));
    let ca = std::fs::read(&pki.ca_file).expect("CA");
    test.admin = AdminClient::with_ca_pem(test.server.url(), TOKEN, &ca).expect("admin client");
    test
}

/// Enrolls `id` through the API and returns the device whose DM client the agent's
/// configuration gives: the TOML `virmoctl enroll` printed, with `ca_file` set.
async fn enrolled_device(test: &TestServer, id: &str, ca_file: &Path) -> SimDevice {
    let sim_config = SimConfig::new(id, &test.server.dm_url(), "virmo-server");
    let e = sim_config.enrollment();
    let enrolled = match test
        .request(AdminRequest::Enroll(EnrollRequest {
            id: e.id,
            auth: Some(AuthKind::Md5),
            client_name: Some(e.client_name),
            client_secret: Some(e.client_secret),
            server_secret: Some(e.server_secret),
            notify_addr: None,
        }))
        .await
        .expect("enrolled over https")
    {
        AdminResponse::Enrolled(enrolled) => enrolled,
        other => panic!("unexpected answer {other:?}"),
    };
    assert!(
        enrolled.agent_config.contains("# ca_file = "),
        "{}",
        enrolled.agent_config
    );
    let toml = enrolled.agent_config.replacen(
        "[server]\n",
        &format!("[server]\nca_file = {ca_file:?}\n"),
        1,
    );
    let agent = virmo_agent::config::AgentConfig::from_toml(&toml).expect("the agent config");
    let server = agent.server.expect("a [server] table");
    assert_eq!(server.url, test.server.dm_url());
    let client = virmo_agent::dm::http::dm_http_client(&server).expect("the agent's DM client");
    let mut sim = SimDevice::new(sim_config);
    sim.use_client(client);
    sim
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_runs_its_job_over_https_and_a_wrong_ca_is_refused() {
    let dir = TempDir::new("virmo-tls");
    let good = pki(&dir.0, "ca");
    let other = pki(&dir.0, "other-ca");
    let test = tls_server(&good).await;

    // The full job over TLS: provision sent and accepted, OperationComplete, done.
    let sim = enrolled_device(&test, "tls-1", &good.ca_file).await;
    let job = test.queue("tls-1", provision("work")).await;
    let (mut sim, report) = session(sim).await;
    assert_eq!(report.reason, Some(EndReason::Completed), "{report:?}");
    assert_eq!(test.state(job.id).await, JobState::Accepted);
    assert_eq!(sim.finish_operations(), 1);
    let (_sim, report) = session(sim).await;
    assert_eq!((report.delivered, report.undelivered), (1, 0));
    let done = test.job(job.id).await;
    assert_eq!(
        (done.state, done.result_code),
        (JobState::Done, Some(1200)),
        "{done:?}"
    );

    // A device trusting another CA refuses the server: no session, the reason says why.
    let sim = enrolled_device(&test, "tls-2", &other.ca_file).await;
    let job = test.queue("tls-2", provision("work")).await;
    let (_sim, report) = session(sim).await;
    let error = report.transport_error.expect("a transport error");
    assert!(
        error.contains("invalid peer certificate") && error.contains("UnknownIssuer"),
        "{error}"
    );
    assert!(matches!(report.reason, Some(EndReason::Transport(_))));
    assert_eq!(test.state(job.id).await, JobState::Queued, "never sent");

    // The admin API refuses a client trusting another CA before any request is made.
    let wrong_ca = std::fs::read(&other.ca_file).expect("CA");
    let wrong = AdminClient::with_ca_pem(test.server.url(), TOKEN, &wrong_ca).expect("client");
    let err = tokio::task::spawn_blocking(move || wrong.send(&AdminRequest::Devices))
        .await
        .expect("runs")
        .expect_err("refused");
    let chain = virmo_server::sim::error_chain(&err);
    assert!(chain.contains("UnknownIssuer"), "{chain}");

    // virmoctl with --ca-file; and without it (the web roots), a clear refusal.
    let url = test.server.url().to_owned();
    let run = move |ca: Option<&Path>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_virmoctl"));
        command.args(["--server", &url, "--token", TOKEN]);
        if let Some(ca) = ca {
            command.arg("--ca-file").arg(ca);
        }
        command.arg("devices").output().expect("virmoctl runs")
    };
    let good_ca = good.ca_file.clone();
    let (listed, refused) = tokio::task::spawn_blocking(move || (run(Some(&good_ca)), run(None)))
        .await
        .expect("runs");
    assert!(listed.status.success(), "{listed:?}");
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        stdout.contains("tls-1") && stdout.contains("tls-2"),
        "{stdout}"
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    test.server.shutdown().await;
}
