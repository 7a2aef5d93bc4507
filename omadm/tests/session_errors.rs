//! What goes wrong in a session over HTTP gets the right status, and the session goes on or ends
//! cleanly: wrong credentials, ACL refusals, unknown commands, oversized messages and objects,
//! malformed messages, idle sessions.

mod session_support;

use std::time::{Duration, Instant};

use omadm::model::{
    format, Alert, AlertCode, Command, Item, ItemCommand, Meta, ProtoVersion, SyncBody, SyncHdr,
    SyncMl,
};
use omadm::session::{ClientEvent, Encoding, EndReason, Limits, ServerEvent};
use omadm::status::StatusCode;
use omadm::transport::DmHttpServer;
use session_support::*;

fn replace(uri: &str, value: &str) -> Command {
    Command::Replace(ItemCommand::new(
        0,
        vec![Item::target(uri)
            .with_meta(Meta::with_format(format::CHR))
            .with_data(value)],
    ))
}

/// POSTs raw bytes; returns the HTTP status and body.
fn post_raw(url: &str, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let transmit = omadm::session::Transmit {
        target_uri: url.to_owned(),
        content_type: Box::leak(content_type.to_owned().into_boxed_str()),
        body: body.to_vec(),
        hmac: None,
    };
    let reply = http_client().post(&transmit).expect("the server answers");
    (reply.status, reply.body)
}

fn header_status(reply: &[u8]) -> StatusCode {
    let msg = Encoding::Xml.decode(reply).expect("a DM reply");
    match &msg.body.commands[0] {
        Command::Status(status) if status.cmd_ref == 0 => status.data,
        other => panic!("expected the SyncHdr status first, got {other:?}"),
    }
}

fn spawn(limits: Limits) -> (TestServer, DmHttpServer) {
    let server = TestServer::new(limits);
    let http = server.spawn(None);
    (server, http)
}

#[test]
fn wrong_credentials_are_challenged_three_times_then_the_session_ends_untouched() {
    let mut served = serve(
        TestServer::new(limits()),
        vec![replace("./Vendor/Setting", "changed")],
    );
    let mut session = client_session(served.http.url(), "9", "guess", Vec::new(), limits());
    served.run(&mut session).expect("the exchange itself works");
    assert_eq!(session.end_reason(), Some(&EndReason::AuthenticationFailed));
    let failures = served
        .server
        .events("9")
        .iter()
        .filter(|e| **e == ServerEvent::AuthenticationFailed(StatusCode::INVALID_CREDENTIALS))
        .count();
    assert_eq!(failures, 3);
    assert!(served.server.events("9").iter().any(|e| matches!(e,
        ServerEvent::Ended { reason: EndReason::AuthenticationFailed, unanswered } if unanswered.is_empty())));
    assert!(!client_events(&mut session).contains(&ClientEvent::Authenticated));
    assert_eq!(served.setting().as_deref(), Some("initial"));
}

#[test]
fn acl_refusals_and_unknown_commands_get_their_status_and_the_session_goes_on() {
    let mut served = serve(
        TestServer::new(limits()),
        vec![
            replace("./Vendor/Locked", "stolen"),
            Command::Alert(Alert::new(0, AlertCode::DISPLAY)),
            Command::Add(ItemCommand::new(
                0,
                vec![Item::target("./Vendor/Odd")
                    .with_meta(Meta::with_format("no-such-format"))
                    .with_data("x")],
            )),
            replace("./Vendor/Setting", "after"),
        ],
    );
    let mut session = served.device_session("10");
    served.run(&mut session).expect("the session runs");
    let events = served.server.events("10");
    assert_eq!(
        final_status(&events, 1),
        Some(StatusCode::PERMISSION_DENIED)
    );
    assert_eq!(
        final_status(&events, 2),
        Some(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)
    );
    assert_eq!(
        final_status(&events, 3),
        Some(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)
    );
    assert_eq!(final_status(&events, 4), Some(StatusCode::OK));
    assert_eq!(session.end_reason(), Some(&EndReason::Completed));
    assert_eq!(served.leaf(&["Vendor", "Locked"]).as_deref(), Some("keep"));
    assert_eq!(served.setting().as_deref(), Some("after"));
}

#[test]
fn an_object_above_the_devices_max_obj_size_is_not_sent_and_the_session_goes_on() {
    let mut served = serve(
        TestServer::new(limits()),
        vec![
            replace("./Vendor/Setting", &"z".repeat(5000)),
            replace("./Vendor/Old", "ok"),
        ],
    );
    let device_limits = Limits {
        max_msg_size: 1500,
        max_obj_size: Some(1000),
        ..limits()
    };
    let mut session = client_session(
        served.http.url(),
        "11",
        DEVICE_PASSWORD,
        Vec::new(),
        device_limits,
    );
    served.run(&mut session).expect("the session runs");
    let events = served.server.events("11");
    assert!(events.contains(&ServerEvent::NotSent {
        request: 1,
        status: StatusCode::REQUEST_ENTITY_TOO_LARGE
    }));
    assert_eq!(
        final_status(&events, 1),
        None,
        "nothing of it reached the device"
    );
    assert_eq!(final_status(&events, 2), Some(StatusCode::OK));
    assert_eq!(served.setting().as_deref(), Some("initial"));
    assert_eq!(served.leaf(&["Vendor", "Old"]).as_deref(), Some("ok"));
    assert_eq!(session.end_reason(), Some(&EndReason::Completed));
}

fn package_1(session_id: &str, padding: usize) -> SyncMl {
    let mut hdr = SyncHdr::new(ProtoVersion::Dm12, session_id, 1, "http://dm", DEVICE_ID);
    hdr.cred =
        omadm::session::auth::CredentialSource::credentials(&mut device_auth(DEVICE_PASSWORD));
    let mut commands = vec![Command::Alert(Alert::new(
        1,
        AlertCode::CLIENT_INITIATED_MGMT,
    ))];
    if padding > 0 {
        commands.push(Command::Alert(
            Alert::new(2, AlertCode::GENERIC_ALERT).with_items(vec![Item::source("./Log")
                .with_meta(Meta::format_and_type("chr", "urn:x"))
                .with_data("p".repeat(padding))]),
        ));
    }
    SyncMl::new(hdr, SyncBody::final_with(commands))
}

#[test]
fn an_oversized_message_is_answered_with_413_and_ends_its_session() {
    let server_limits = Limits {
        max_msg_size: 2000,
        ..limits()
    };
    let (server, http_server) = spawn(server_limits);
    let body = Encoding::Xml
        .encode(&package_1("12", 4000))
        .expect("encodes");
    let (status, reply) = post_raw(http_server.url(), Encoding::Xml.media_type(), &body);
    assert_eq!(status, 200, "a DM answer");
    assert_eq!(header_status(&reply), StatusCode::REQUEST_ENTITY_TOO_LARGE);
    assert!(server.events("12").iter().any(|e| matches!(
        e,
        ServerEvent::Ended {
            reason: EndReason::BadMessage(StatusCode::REQUEST_ENTITY_TOO_LARGE),
            ..
        }
    )));
}

#[test]
fn garbage_and_foreign_media_types_are_refused_at_the_http_level() {
    let (server, http_server) = spawn(limits());
    let url = http_server.url();
    assert_eq!(
        post_raw(url, Encoding::Xml.media_type(), b"<SyncML><SyncHdr>").0,
        400
    );
    assert_eq!(
        post_raw(url, Encoding::Wbxml.media_type(), &[0x02, 0xff, 0xff]).0,
        400
    );
    assert_eq!(post_raw(url, "text/plain", b"hello").0, 415);
    let elsewhere = url.replace("/dm", "/other");
    assert_eq!(
        post_raw(&elsewhere, Encoding::Xml.media_type(), b"x").0,
        404
    );
    assert_eq!(
        post_raw(
            &format!("{url}/s/unknown"),
            Encoding::Xml.media_type(),
            &Encoding::Xml.encode(&package_1("13", 0)).expect("encodes")
        )
        .0,
        400
    );
    assert_eq!(server.lock().sessions_opened, 0);
}

#[test]
fn garbage_in_the_middle_of_a_session_is_refused_and_the_session_goes_on() {
    let mut served = serve(
        TestServer::new(limits()),
        vec![replace("./Vendor/Setting", "v2")],
    );
    let mut session = served.device_session("14");
    let client = http_client();
    let mut garbage_sent = false;
    while let Some(transmit) = session.poll_transmit(Instant::now()).expect("encodes") {
        if transmit.target_uri != served.http.url() && !garbage_sent {
            garbage_sent = true;
            let (status, _) = post_raw(
                &transmit.target_uri,
                Encoding::Xml.media_type(),
                b"\x00garbage",
            );
            assert_eq!(status, 400);
        }
        let reply = client.post(&transmit).expect("the server answers");
        assert_eq!(reply.status, 200);
        session.handle_bytes(
            &reply.body,
            reply.content_type.as_deref(),
            None,
            &mut served.tree,
            Instant::now(),
        );
    }
    assert!(garbage_sent, "the session used its RespURI");
    assert_eq!(session.end_reason(), Some(&EndReason::Completed));
    assert_eq!(served.setting().as_deref(), Some("v2"));
    assert_eq!(
        final_status(&served.server.events("14"), 1),
        Some(StatusCode::OK)
    );
}

#[test]
fn a_message_that_does_not_belong_to_its_session_gets_400_and_ends_it() {
    let mut served = serve(
        TestServer::new(limits()),
        vec![replace("./Vendor/Setting", "v3")],
    );
    let mut session = served.device_session("15");
    let client = http_client();
    let first = session
        .poll_transmit(Instant::now())
        .expect("encodes")
        .expect("package 1");
    let reply = client.post(&first).expect("answered");
    session.handle_bytes(
        &reply.body,
        reply.content_type.as_deref(),
        None,
        &mut served.tree,
        Instant::now(),
    );
    let resp_uri = session.target_uri().to_owned();
    let mut stray = package_1("other-session", 0);
    stray.hdr.msg_id = 2;
    let (status, body) = post_raw(
        &resp_uri,
        Encoding::Xml.media_type(),
        &Encoding::Xml.encode(&stray).expect("encodes"),
    );
    assert_eq!(status, 200);
    assert_eq!(header_status(&body), StatusCode::BAD_REQUEST);
    assert!(served.server.events("15").iter().any(|e| matches!(e,
        ServerEvent::Ended { reason: EndReason::BadMessage(StatusCode::BAD_REQUEST), unanswered } if unanswered == &[1])));
    let next = session
        .poll_transmit(Instant::now())
        .expect("encodes")
        .expect("package 3");
    assert_eq!(
        client.post(&next).expect("answered").status,
        400,
        "the session is gone"
    );
}

#[test]
fn an_idle_server_session_times_out() {
    let server_limits = Limits {
        idle_timeout: Duration::from_millis(300),
        ..limits()
    };
    let (server, http_server) = spawn(server_limits);
    server.queue(DEVICE_ID, vec![replace("./Vendor/Setting", "never")]);
    let body = Encoding::Xml.encode(&package_1("16", 0)).expect("encodes");
    let (status, reply) = post_raw(http_server.url(), Encoding::Xml.media_type(), &body);
    assert_eq!(
        (status, header_status(&reply)),
        (200, StatusCode::AUTHENTICATION_ACCEPTED)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && !server
            .events("16")
            .iter()
            .any(|e| matches!(e, ServerEvent::Ended { .. }))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.events("16").iter().any(|e| matches!(e,
        ServerEvent::Ended { reason: EndReason::TimedOut, unanswered } if unanswered == &[1])));
}
