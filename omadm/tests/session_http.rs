//! Full DM sessions between a real client session (over a real DM tree) and a real server
//! session, over HTTP on loopback.

mod session_support;

use omadm::model::{format, Command, Container, Data, Exec, Item, ItemCommand, Meta};
use omadm::session::{ClientEvent, EndReason, GenericAlert, ServerEvent};
use omadm::status::StatusCode;
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
    let mut served = serve(
        TestServer::new(limits()),
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
        served.http.url(),
        "101",
        DEVICE_PASSWORD,
        vec![alert.clone()],
        limits(),
    );
    served.run(&mut session).expect("the session runs");

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

    let events = served.server.events("101");
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
    assert_eq!(final_status(&events, 3), Some(StatusCode::OK));
    assert_eq!(final_status(&events, 4), Some(StatusCode::OK), "Atomic");
    assert_eq!(
        final_status(&events, 5),
        Some(StatusCode::ACCEPTED_FOR_PROCESSING)
    );
    assert_eq!(final_status(&events, 6), Some(StatusCode::OK));
    assert!(events.iter().any(|e| matches!(e,
        ServerEvent::Ended { reason: EndReason::Completed, unanswered } if unanswered.is_empty())));

    assert_eq!(served.setting().as_deref(), Some("tuned"));
    assert_eq!(
        served.leaf(&["Vendor", "Net", "Mtu"]).as_deref(),
        Some("1500")
    );
    assert_eq!(
        served.leaf(&["Vendor", "Net", "Name"]).as_deref(),
        Some("eth0")
    );
    assert_eq!(served.leaf(&["Vendor", "Old"]), None);
    assert_eq!(
        *served.exec_log.lock().expect("log"),
        [("Reboot".to_owned(), Some("op-42".to_owned()))]
    );
}

#[test]
fn the_outcome_of_an_async_exec_reaches_the_server_in_the_next_session() {
    let mut served = serve(
        TestServer::new(limits()),
        vec![Command::Exec(
            Exec::new(0, Item::target("./Ops/Reboot")).with_correlator("op-7"),
        )],
    );
    let mut first = served.device_session("1");
    served.run(&mut first).expect("first session");
    let (_, correlator) = served.exec_log.lock().expect("log")[0].clone();

    let outcome = GenericAlert::new("urn:oma:at:virmo:1.0:OperationComplete", "int", "1200")
        .with_correlator(correlator.expect("a correlator"));
    let mut second = client_session(
        served.http.url(),
        "2",
        DEVICE_PASSWORD,
        vec![outcome.clone()],
        limits(),
    );
    served.run(&mut second).expect("second session");
    assert!(served
        .server
        .events("2")
        .contains(&ServerEvent::GenericAlert(outcome)));
    assert_eq!(second.end_reason(), Some(&EndReason::Completed));
    assert_eq!(served.server.lock().sessions_opened, 2);
}

#[test]
fn large_values_travel_as_chunks_within_a_small_max_msg_size_both_ways() {
    let server_limits = omadm::session::Limits {
        max_msg_size: 2048,
        ..limits()
    };
    let big: String = (0..3000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut served = serve(
        TestServer::new(server_limits),
        vec![
            with_value(Command::Replace, "./Vendor/Setting", format::CHR, &big),
            target(Command::Get, "./Vendor/Setting"),
        ],
    );
    let client_limits = omadm::session::Limits {
        max_msg_size: 1500,
        ..limits()
    };
    let mut session = client_session(
        served.http.url(),
        "5",
        DEVICE_PASSWORD,
        Vec::new(),
        client_limits,
    );
    served.run(&mut session).expect("the session runs");
    assert_eq!(session.end_reason(), Some(&EndReason::Completed));
    assert_eq!(served.setting(), Some(big.clone()));
    let events = served.server.events("5");
    assert_eq!(final_status(&events, 1), Some(StatusCode::OK));
    assert_eq!(
        results_of(&events, 2),
        [("./Vendor/Setting".to_owned(), big)]
    );
    let _ = Data::text("");
}

#[test]
fn a_session_in_wbxml_with_hmac_authentication_both_ways() {
    let mut served = serve(
        TestServer::new(limits()).with_scheme(omadm::auth::AuthScheme::Hmac),
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
    let mut session = served.session_with("30", auth, omadm::session::Encoding::Wbxml);
    served.run(&mut session).expect("the session runs");
    assert_eq!(session.end_reason(), Some(&EndReason::Completed));
    let events = served.server.events("30");
    assert!(events.contains(&ServerEvent::Authenticated));
    assert_eq!(
        results_of(&events, 1),
        [("./DevInfo/Man".to_owned(), "VirMO".to_owned())]
    );
    assert_eq!(final_status(&events, 2), Some(StatusCode::OK));
    assert_eq!(served.setting().as_deref(), Some("binary-xml"));
}

#[test]
fn a_server_with_wrong_credentials_is_challenged_and_gets_nothing_done() {
    let mut served = serve(
        TestServer::new(limits()),
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
    let mut session = served.session_with("31", auth, omadm::session::Encoding::Xml);
    served.run(&mut session).expect("the exchange itself works");
    assert_eq!(session.end_reason(), Some(&EndReason::AuthenticationFailed));
    assert_eq!(served.setting().as_deref(), Some("initial"));
    assert!(served.exec_log.lock().expect("log").is_empty());
    assert!(served.server.events("31").iter().any(|e| matches!(e,
        ServerEvent::Ended { reason: EndReason::AuthenticationFailed, unanswered } if unanswered == &[1, 2])));
}
