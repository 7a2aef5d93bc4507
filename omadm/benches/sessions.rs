//! Full DM sessions per second: a real client session over a real DM tree against a real server
//! session, over HTTP on loopback in one process (package 1 with MD5 credentials both ways, a
//! package 2 of Get/Replace/Add/Exec/Delete, package 3 of statuses and results, the final
//! message). Also the same session without HTTP (both state machines and the codec only), to
//! show what the transport costs.
//!
//! `cargo bench -p omadm --bench sessions`; the median time per session is criterion's
//! "time" middle value, and its inverse is printed as sessions per second ("thrpt").

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use omadm::auth::{AuthScheme, Credentials, PeerAuth};
use omadm::model::{format, Command, Exec, Item, ItemCommand, Meta, ProtoVersion, SyncHdr};
use omadm::session::auth::DmAuth;
use omadm::session::{
    ClientConfig, ClientSession, DevInfo, Encoding, Initiation, Limits, ServerConfig, ServerEvent,
    ServerSession,
};
use omadm::status::StatusCode;
use omadm::transport::{DmHttpClient, DmHttpServer, HttpServerConfig, SessionHandler};
use omadm::tree::{
    AccessTypes, Acl, AclCommand, DmTree, DmUri, ExecRequest, Format, HandlerNode, Node,
    NodeHandler, Scope, TreeLimits,
};

const SERVER_ID: &str = "virmo-server";
const DEVICE_ID: &str = "virmo:bench";

struct Ops;

impl NodeHandler for Ops {
    fn describe(&self, rel: &[String]) -> Option<HandlerNode> {
        (rel == ["Run"]).then(|| HandlerNode::leaf(Format::Null, AccessTypes::EXEC))
    }

    fn children(&self, _rel: &[String]) -> Result<Vec<String>, StatusCode> {
        Ok(vec!["Run".to_owned()])
    }

    fn get(&self, _rel: &[String]) -> Result<Vec<u8>, StatusCode> {
        Ok(Vec::new())
    }

    fn exec(&mut self, _rel: &[String], _request: ExecRequest<'_>) -> StatusCode {
        StatusCode::ACCEPTED_FOR_PROCESSING
    }
}

fn uri(path: &[&str]) -> DmUri {
    DmUri::from_segments(path.iter().copied())
}

fn device_tree() -> DmTree {
    let mut acl = Acl::inherit();
    for command in AclCommand::ALL {
        acl = acl.grant(command, SERVER_ID);
    }
    let mut tree = DmTree::new(acl, TreeLimits::default()).expect("a tree");
    let leaf = |value: &str| {
        Node::leaf(Scope::Dynamic, Format::Chr, value.as_bytes().to_vec(), 0)
            .with_access(AccessTypes::STORED)
    };
    tree.put_node(&uri(&["DevInfo", "DevId"]), leaf(DEVICE_ID))
        .expect("DevId");
    tree.put_node(&uri(&["Vendor", "Setting"]), leaf("x"))
        .expect("Setting");
    tree.put_node(
        &uri(&["Ops"]),
        Node::interior(Scope::Permanent, 0).with_access(AccessTypes::GET),
    )
    .expect("Ops");
    tree.mount(&uri(&["Ops"]), Box::new(Ops)).expect("mount");
    tree
}

fn auth(local: (&str, &str), remote: (&str, &str)) -> DmAuth {
    DmAuth::new(PeerAuth::new(
        AuthScheme::Md5,
        Credentials::new(local.0, local.1),
        Credentials::new(remote.0, remote.1),
    ))
}

const DEVICE_CRED: (&str, &str) = ("bench", "device-secret");
const SERVER_CRED: (&str, &str) = ("virmo-server", "server-secret");

/// The commands of package 2; the Add/Delete pair leaves the tree as it was.
fn package_2() -> Vec<Command> {
    let item = |uri: &str, fmt: &str, value: &str| {
        Item::target(uri)
            .with_meta(Meta::with_format(fmt))
            .with_data(value)
    };
    vec![
        Command::Get(ItemCommand::new(0, vec![Item::target("./DevInfo/DevId")])),
        Command::Replace(ItemCommand::new(
            0,
            vec![item("./Vendor/Setting", format::CHR, "tuned")],
        )),
        Command::Add(ItemCommand::new(
            0,
            vec![item("./Vendor/Tmp", format::INT, "1")],
        )),
        Command::Exec(Exec::new(0, Item::target("./Ops/Run")).with_correlator("c")),
        Command::Delete(ItemCommand::new(0, vec![Item::target("./Vendor/Tmp")])),
    ]
}

#[derive(Clone, Copy)]
struct BenchServer {
    encoding: Encoding,
}

fn server_session(first: &SyncHdr, encoding: Encoding) -> ServerSession {
    let auth = auth(SERVER_CRED, DEVICE_CRED);
    ServerSession::new(
        ServerConfig {
            server_id: SERVER_ID.to_owned(),
            encoding,
            limits: Limits::default(),
        },
        first,
        Instant::now(),
    )
    .with_verifier(Box::new(auth.clone()))
    .with_credentials(Box::new(auth))
}

fn queue_on_start(session: &mut ServerSession) -> bool {
    let mut completed = false;
    while let Some(event) = session.poll_event() {
        match event {
            ServerEvent::SessionStarted { .. } => {
                for command in package_2() {
                    session.enqueue(command);
                }
            }
            ServerEvent::Ended { reason, .. } => {
                completed = reason == omadm::session::EndReason::Completed;
            }
            _ => {}
        }
    }
    completed
}

impl SessionHandler for BenchServer {
    fn open(&mut self, first: &SyncHdr, _encoding: Encoding) -> Option<ServerSession> {
        Some(server_session(first, self.encoding))
    }

    fn update(&mut self, session: &mut ServerSession) {
        queue_on_start(session);
    }
}

fn client_session(url: &str, session_id: u64, encoding: Encoding) -> ClientSession {
    let auth = auth(DEVICE_CRED, SERVER_CRED);
    ClientSession::new(
        ClientConfig {
            proto: ProtoVersion::Dm12,
            server_uri: url.to_owned(),
            server_id: SERVER_ID.to_owned(),
            dev_info: DevInfo {
                dev_id: DEVICE_ID.to_owned(),
                man: "VirMO".to_owned(),
                model: "bench".to_owned(),
                dm_version: "1.2".to_owned(),
                lang: "en-US".to_owned(),
            },
            encoding,
            limits: Limits::default(),
        },
        Initiation::Client {
            session_id: session_id.to_string(),
        },
        Vec::new(),
        Instant::now(),
    )
    .with_credentials(Box::new(auth.clone()))
    .with_server_verifier(Box::new(auth))
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

fn over_http(c: &mut Criterion) {
    let mut group = c.benchmark_group("sessions");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    for encoding in [Encoding::Xml, Encoding::Wbxml] {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        let server = DmHttpServer::spawn(HttpServerConfig::new(addr), BenchServer { encoding })
            .expect("the server starts");
        let client = DmHttpClient::new(Duration::from_secs(10));
        let mut tree = device_tree();
        let name = format!("http_{encoding:?}").to_lowercase();
        group.bench_function(name, |b| {
            b.iter(|| {
                let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
                let mut session = client_session(server.url(), id, encoding);
                client.run(&mut session, &mut tree).expect("a session");
                assert!(session.is_ended());
            });
        });
        server.shutdown();
    }
    group.finish();
}

/// Four devices at once against a server with four workers: sessions per second under load.
fn concurrent(c: &mut Criterion) {
    const CLIENTS: usize = 4;
    let mut group = c.benchmark_group("sessions");
    group.throughput(Throughput::Elements(CLIENTS as u64));
    group.measurement_time(Duration::from_secs(8));
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let mut config = HttpServerConfig::new(addr);
    config.workers = CLIENTS;
    let server = DmHttpServer::spawn(
        config,
        BenchServer {
            encoding: Encoding::Xml,
        },
    )
    .expect("the server starts");
    let url = server.url().to_owned();
    group.bench_function("http_xml_4_devices", |b| {
        b.iter(|| {
            std::thread::scope(|scope| {
                for _ in 0..CLIENTS {
                    let url = url.as_str();
                    scope.spawn(move || {
                        let client = DmHttpClient::new(Duration::from_secs(10));
                        let mut tree = device_tree();
                        let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
                        let mut session = client_session(url, id, Encoding::Xml);
                        client.run(&mut session, &mut tree).expect("a session");
                        assert!(session.is_ended());
                    });
                }
            });
        });
    });
    group.finish();
    server.shutdown();
}

/// The same session with messages passed as bytes in memory: state machines and codec only.
fn in_memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("sessions");
    group.throughput(Throughput::Elements(1));
    let mut tree = device_tree();
    group.bench_function("in_memory_xml", |b| {
        b.iter(|| {
            let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            let mut client = client_session("http://dm", id, Encoding::Xml);
            let first = client
                .poll_transmit(now)
                .expect("encodes")
                .expect("package 1");
            let hdr = Encoding::Xml.decode(&first.body).expect("decodes").hdr;
            let mut server = server_session(&hdr, Encoding::Xml);
            let mut to_server = first;
            loop {
                server.handle_bytes(&to_server.body, None, None, now);
                let completed = queue_on_start(&mut server);
                let Some(reply) = server.poll_transmit(now).expect("encodes") else {
                    break;
                };
                client.handle_bytes(&reply.body, None, None, &mut tree, now);
                match client.poll_transmit(now).expect("encodes") {
                    Some(next) => to_server = next,
                    None => break,
                }
                assert!(!completed);
            }
            assert!(client.is_ended() && server.is_ended());
        });
    });
    group.finish();
}

criterion_group!(benches, in_memory, over_http, concurrent);
criterion_main!(benches);
