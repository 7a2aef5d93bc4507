//! A DM session over HTTPS (rustls on both sides) with a certificate made at test time.

mod session_support;

use std::time::Duration;

use omadm::session::EndReason;
use omadm::status::StatusCode;
use omadm::transport::{DmHttpClient, TlsIdentity};
use session_support::*;

#[test]
fn a_session_runs_over_https_with_a_self_signed_certificate() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("a certificate");
    let identity = TlsIdentity {
        certificate_pem: certified.cert.pem().into_bytes(),
        private_key_pem: certified.signing_key.serialize_pem().into_bytes(),
    };
    let server = TestServer::new(limits());
    let https = server.spawn(Some(identity));
    assert!(https.url().starts_with("https://127.0.0.1:"));
    let (mut tree, _) = device_tree();
    server.queue(
        DEVICE_ID,
        vec![omadm::model::Command::Get(omadm::model::ItemCommand::new(
            0,
            vec![omadm::model::Item::target("./DevInfo/Man")],
        ))],
    );
    let mut session = client_session(https.url(), "20", DEVICE_PASSWORD, Vec::new(), limits());
    let client = DmHttpClient::with_root_certificate(Duration::from_secs(10), certified.cert.der());
    client
        .run(&mut session, &mut tree)
        .expect("the session runs over TLS");
    assert_eq!(session.end_reason(), Some(&EndReason::Completed));
    assert!(server.events("20").iter().any(|e| matches!(e,
        omadm::session::ServerEvent::Status { request: 1, status, .. } if status.data == StatusCode::OK)));

    let mut untrusting = client_session(https.url(), "21", DEVICE_PASSWORD, Vec::new(), limits());
    let err = DmHttpClient::new(Duration::from_secs(10))
        .run(&mut untrusting, &mut tree)
        .expect_err("an unknown certificate is refused");
    assert!(
        matches!(untrusting.end_reason(), Some(EndReason::Transport(_))),
        "{err}"
    );
}
