//! Full DM sessions between a real client session (over a real DM tree) and a real server
//! session, over HTTP on loopback.

mod session_support;

use std::time::Duration;

use omadm::model::{format, Command, Container, Data, Exec, Item, ItemCommand, Meta};
use omadm::session::{ClientEvent, EndReason, GenericAlert, ServerEvent};
use omadm::status::StatusCode;
use omadm::transport::DmHttpClient;
use session_support::*;

fn target(command: fn(ItemCommand) -> Command, uri: &str) -> Command {
    command(ItemCommand::new(0, vec![Item::target(uri)]))
}

fn with_value(command: fn(ItemCommand) -> Command, uri: &str, fmt: &str, value: &str) -> Command {
    let mut item = Item::target(uri).with_meta(Meta::with_format(fmt));
    if !value.is_empty() {
        item = item.with_data(value);
    }
    command(ItemCommand::new(0, vec![item]))
}

/// The final status of request `request` in `events`.
fn status_of(events: &[ServerEvent], request: u64) -> Option<StatusCode> {
    events.iter().find_map(|event| match event {
        ServerEvent::Status {
            request: r,
            member: None,
            status,
        } if *r == request => Some(status.data),
        _ => None,
    })
}

fn results_of(events: &[ServerEvent], request: u64) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|event| match event {
            ServerEvent::Results {
                request: r,
                results,
                ..
            } if *r == request => Some(results),
            _ => None,
        })
        .flat_map(|results| results.items.iter())
        .map(|item| {
            (
                item.source_uri().unwrap_or_default().to_owned(),
                item.data
                    .as_ref()
                    .map(|d| d.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn a_full_session_over_http_gets_replaces_adds_execs_deletes_and_delivers_a_generic_alert() {
    let server = TestServer::new(limits());
    let http = server.spawn(None);
    let (mut tree, exec_log) = device_tree();
    server.queue(
        DEVICE_ID,
        vec![
            target(Command::Get, "./DevInfo"),
            target(Command::Get, "./DevInfo/DevId"),
            with_value(Command::Replace, "./Vendor/Setting", format::CHR, "tuned"),
            Command::Atomic(Container::new(
                0,
                vec![
                    with_value(Command::Add, "./Vendor/Net", format::NODE, ""),
                    with_value(Command::Add, "./Vendor/Net/Mtu", format::INT, "1500"),
                    with_value(Command::Add, "./Vendor/Net/Name", format::CHR, "eth0"),
                ],
            )),
            Command::Exec(Exec::new(0, Item::target("./Ops/Reboot")).with_correlator("op-42")),
            target(Command::Delete, "./Vendor/Old"),
        ],
    );
    let alert = GenericAlert::new("urn:oma:at:virmo:1.0:OperationComplete", "int", "1200")
        .with_correlator("op-41")
        .with_source("./VirMO/VM/work/Operations/Suspend")
        .with_mark("informational");
    let mut session = client_session(
        http.url(),
        "101",
        DEVICE_PASSWORD,
        vec![alert.clone()],
        limits(),
    );
    DmHttpClient::new(Duration::from_secs(10))
        .run(&mut session, &mut tree)
        .expect("the session runs");

    assert_eq!(session.end_reason(), Some(&EndReason::Completed));
    let client_events = client_events(&mut session);
    assert!(client_events.contains(&ClientEvent::Authenticated));
    assert!(client_events.contains(&ClientEvent::AlertStatus {
        alert: alert.clone(),
        status: StatusCode::OK
    }));
    assert!(client_events.contains(&ClientEvent::Ended {
        reason: EndReason::Completed,
        undelivered: Vec::new()
    }));

    let events = server.events("101");
    assert!(events.contains(&ServerEvent::Authenticated));
    assert!(events
        .iter()
        .any(|e| matches!(e, ServerEvent::DeviceInfo(info) if info.dev_id == DEVICE_ID)));
    assert!(events.contains(&ServerEvent::GenericAlert(alert)));
    let children = results_of(&events, 1);
    assert_eq!(children.len(), 1);
    assert_eq!(children[0].0, "./DevInfo");
    for name in ["DevId", "Man", "Mod", "DmV", "Lang"] {
        assert!(
            children[0].1.split('/').any(|child| child == name),
            "{children:?}"
        );
    }
    assert_eq!(
        results_of(&events, 2),
        [("./DevInfo/DevId".to_owned(), DEVICE_ID.to_owned())]
    );
    assert_eq!(status_of(&events, 3), Some(StatusCode::OK));
    assert_eq!(status_of(&events, 4), Some(StatusCode::OK), "Atomic");
    assert_eq!(
        status_of(&events, 5),
        Some(StatusCode::ACCEPTED_FOR_PROCESSING)
    );
    assert_eq!(status_of(&events, 6), Some(StatusCode::OK));
    assert!(events.iter().any(|e| matches!(e,
        ServerEvent::Ended { reason: EndReason::Completed, unanswered } if unanswered.is_empty())));

    assert_eq!(
        leaf(&tree, &["Vendor", "Setting"]).as_deref(),
        Some("tuned")
    );
    assert_eq!(
        leaf(&tree, &["Vendor", "Net", "Mtu"]).as_deref(),
        Some("1500")
    );
    assert_eq!(
        leaf(&tree, &["Vendor", "Net", "Name"]).as_deref(),
        Some("eth0")
    );
    assert_eq!(leaf(&tree, &["Vendor", "Old"]), None);
    assert_eq!(
        *exec_log.lock().expect("log"),
        [("Reboot".to_owned(), Some("op-42".to_owned()))]
    );
}

#[test]
fn the_outcome_of_an_async_exec_reaches_the_server_in_the_next_session() {
    let server = TestServer::new(limits());
    let http = server.spawn(None);
    let (mut tree, exec_log) = device_tree();
    server.queue(
        DEVICE_ID,
        vec![Command::Exec(
            Exec::new(0, Item::target("./Ops/Reboot")).with_correlator("op-7"),
        )],
    );
    let client = DmHttpClient::new(Duration::from_secs(10));
    let mut first = client_session(http.url(), "1", DEVICE_PASSWORD, Vec::new(), limits());
    client.run(&mut first, &mut tree).expect("first session");
    let (_, correlator) = exec_log.lock().expect("log")[0].clone();

    let outcome = GenericAlert::new("urn:oma:at:virmo:1.0:OperationComplete", "int", "1200")
        .with_correlator(correlator.expect("a correlator"));
    let mut second = client_session(
        http.url(),
        "2",
        DEVICE_PASSWORD,
        vec![outcome.clone()],
        limits(),
    );
    client.run(&mut second, &mut tree).expect("second session");
    assert!(server
        .events("2")
        .contains(&ServerEvent::GenericAlert(outcome)));
    assert_eq!(second.end_reason(), Some(&EndReason::Completed));
    assert_eq!(server.lock().sessions_opened, 2);
}

#[test]
fn large_values_travel_as_chunks_within_a_small_max_msg_size_both_ways() {
    let server_limits = omadm::session::Limits {
        max_msg_size: 2048,
        ..limits()
    };
    let server = TestServer::new(server_limits);
    let http = server.spawn(None);
    let (mut tree, _) = device_tree();
    let big: String = (0..3000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    server.queue(
        DEVICE_ID,
        vec![
            with_value(Command::Replace, "./Vendor/Setting", format::CHR, &big),
            target(Command::Get, "./Vendor/Setting"),
        ],
    );
    let client_limits = omadm::session::Limits {
        max_msg_size: 1500,
        ..limits()
    };
    let mut session = client_session(http.url(), "5", DEVICE_PASSWORD, Vec::new(), client_limits);
    DmHttpClient::new(Duration::from_secs(10))
        .run(&mut session, &mut tree)
        .expect("the session runs");
    assert_eq!(session.end_reason(), Some(&EndReason::Completed));
    assert_eq!(leaf(&tree, &["Vendor", "Setting"]), Some(big.clone()));
    let events = server.events("5");
    assert_eq!(status_of(&events, 1), Some(StatusCode::OK));
    assert_eq!(
        results_of(&events, 2),
        [("./Vendor/Setting".to_owned(), big)]
    );
    let _ = Data::text("");
}

#[test]
fn a_session_in_wbxml_with_hmac_authentication_both_ways() {
    let server = TestServer::new(limits()).with_scheme(omadm::auth::AuthScheme::Hmac);
    let http = server.spawn(None);
    let (mut tree, _) = device_tree();
    server.queue(
        DEVICE_ID,
        vec![
            target(Command::Get, "./DevInfo/Man"),
            with_value(
                Command::Replace,
                "./Vendor/Setting",
                format::CHR,
                "binary-xml",
            ),
        ],
    );
    let auth = device_auth_with(
        omadm::auth::AuthScheme::Hmac,
        DEVICE_PASSWORD,
        SERVER_PASSWORD,
    );
    let mut session = client_session_with(
        http.url(),
        "30",
        auth,
        Vec::new(),
        limits(),
        omadm::session::Encoding::Wbxml,
    );
    DmHttpClient::new(Duration::from_secs(10))
        .run(&mut session, &mut tree)
        .expect("the session runs");
    assert_eq!(session.end_reason(), Some(&EndReason::Completed));
    let events = server.events("30");
    assert!(events.contains(&ServerEvent::Authenticated));
    assert_eq!(
        results_of(&events, 1),
        [("./DevInfo/Man".to_owned(), "VirMO".to_owned())]
    );
    assert_eq!(status_of(&events, 2), Some(StatusCode::OK));
    assert_eq!(
        leaf(&tree, &["Vendor", "Setting"]).as_deref(),
        Some("binary-xml")
    );
}

#[test]
fn a_server_with_wrong_credentials_is_challenged_and_gets_nothing_done() {
    let server = TestServer::new(limits());
    let http = server.spawn(None);
    let (mut tree, exec_log) = device_tree();
    server.queue(
        DEVICE_ID,
        vec![
            with_value(Command::Replace, "./Vendor/Setting", format::CHR, "evil"),
            Command::Exec(Exec::new(0, Item::target("./Ops/Reboot"))),
        ],
    );
    let auth = device_auth_with(
        omadm::auth::AuthScheme::Md5,
        DEVICE_PASSWORD,
        "expected-other",
    );
    let mut session = client_session_with(
        http.url(),
        "31",
        auth,
        Vec::new(),
        limits(),
        omadm::session::Encoding::Xml,
    );
    DmHttpClient::new(Duration::from_secs(10))
        .run(&mut session, &mut tree)
        .expect("the exchange itself works");
    assert_eq!(session.end_reason(), Some(&EndReason::AuthenticationFailed));
    assert_eq!(
        leaf(&tree, &["Vendor", "Setting"]).as_deref(),
        Some("initial")
    );
    assert!(exec_log.lock().expect("log").is_empty());
    assert!(server.events("31").iter().any(|e| matches!(e,
        ServerEvent::Ended { reason: EndReason::AuthenticationFailed, unanswered } if unanswered == &[1, 2])));
}
