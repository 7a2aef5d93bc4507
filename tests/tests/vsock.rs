//! The vsock host channel with real guests (Debian 6.1's vsock drivers and the guest's
//! `vsock-tool`): streams both ways with 1 MiB and matching sha256, and suspend/resume of a VM
//! with a vsock device (open connections are reset, new ones work).
//!
//! The tests live in `mod vsock` so that `cargo xtask test vsock` selects them.

mod vsock {
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::os::unix::net::UnixListener;
    use std::path::Path;
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use virmo_tests::vsock::{connect_to_guest, payload, sha256_hex, shell_guest, tool_result};
    use virmo_tests::{code, exit_status, Guest, TempDir, TestEnv};
    use vmm::api::types::RunState;

    const MIB: usize = 1 << 20;
    /// One guest command (a 1 MiB transfer in the runner included).
    const STEP: Duration = Duration::from_secs(60);

    /// A host listener on `<uds>_<port>` taking one connection to end of file, in a thread.
    fn host_receiver(uds: &Path, port: u32) -> JoinHandle<Vec<u8>> {
        let listener = UnixListener::bind(format!("{}_{port}", uds.display())).unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept the guest's connection");
            let mut data = Vec::new();
            stream
                .read_to_end(&mut data)
                .expect("read the guest's data");
            data
        })
    }

    /// The guest writes 1 MiB of random bytes to `path` and says their sha256.
    fn guest_file(guest: &mut Guest, path: &str) -> String {
        guest.send(&format!(
            "dd if=/dev/urandom of={path} bs=4096 count=256 2>/dev/null; echo VIRMO-SHA\"\"=$(sha256sum {path})\n"
        ));
        let rest = guest.wait_for("VIRMO-SHA=", STEP);
        rest.split_whitespace().next().expect("sha").to_string()
    }

    /// The guest sends 1 MiB to host port `port`; the host gets the same bytes.
    fn guest_sends_a_file(guest: &mut Guest, uds: &Path, port: u32) {
        let sha = guest_file(guest, "/tmp/out");
        let receiver = host_receiver(uds, port);
        let started = Instant::now();
        guest.send(&format!("vsock-tool connect 2 {port} send /tmp/out\n"));
        let rest = guest.wait_for("VSOCK-TOOL ", STEP);
        let rest = rest
            .strip_prefix("sent ")
            .unwrap_or_else(|| panic!("guest: {rest}\n{}", guest.transcript()));
        let got = receiver.join().expect("receiver thread");
        let _ = writeln!(
            std::io::stderr(),
            "guest -> host: 1 MiB in {:?}",
            started.elapsed()
        );
        assert_eq!(tool_result(rest), (MIB, sha.clone()));
        assert_eq!(got.len(), MIB);
        assert_eq!(sha256_hex(&got), sha, "the host got what the guest sent");
    }

    /// The host sends 1 MiB to guest port `port`; the guest gets the same bytes.
    fn host_sends_a_file(guest: &mut Guest, uds: &Path, port: u32) {
        guest.send(&format!("vsock-tool listen {port} recv /tmp/in &\n"));
        guest.wait_for(&format!("VSOCK-TOOL listening {port}"), STEP);
        let data = payload(MIB);
        let started = Instant::now();
        let (mut stream, host_port) = connect_to_guest(uds, port).expect("guest accepts");
        assert!(host_port >= 1 << 30, "host port {host_port}");
        stream.write_all(&data).expect("send to the guest");
        stream.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).expect("the guest closes");
        let line = guest.wait_for("VSOCK-TOOL ", STEP);
        let _ = writeln!(
            std::io::stderr(),
            "host -> guest: 1 MiB in {:?}",
            started.elapsed()
        );
        let line = line
            .strip_prefix("received ")
            .unwrap_or_else(|| panic!("guest: {line}\n{}", guest.transcript()));
        assert_eq!(tool_result(line), (MIB, sha256_hex(&data)));
        assert!(rest.is_empty());
    }

    #[test]
    fn vsock_guest_and_host_exchange_1_mib_both_ways_with_matching_sha256() {
        let env = TestEnv::get();
        let dir = TempDir::new("vsock");
        let (mut guest, uds) = shell_guest(&env, &dir, 3);
        guest_sends_a_file(&mut guest, &uds, 5000);
        host_sends_a_file(&mut guest, &uds, 5001);
        // Nobody listens on guest port 5002: the host reads end of file, no OK.
        let refused = connect_to_guest(&uds, 5002);
        assert!(refused.is_err(), "{refused:?}");
        // Nobody listens on host port 5003: the guest's connect is reset.
        guest.send("vsock-tool connect 2 5003 send /tmp/out\n");
        let rest = guest.wait_for("VSOCK-TOOL ", STEP);
        assert!(rest.starts_with("error: connect to 2:5003"), "{rest}");
        guest.kill();
    }

    #[test]
    fn vsock_vm_suspends_and_resumes_resetting_open_connections() {
        let env = TestEnv::get();
        let dir = TempDir::new("vsock-snap");
        let snapshot = dir.path().join("snap");
        let (mut guest, uds) = shell_guest(&env, &dir, 4);
        // An open connection at suspend time: the guest is receiving from the host.
        guest.send("vsock-tool listen 6000 recv &\n");
        guest.wait_for("VSOCK-TOOL listening 6000", STEP);
        let (mut open, _) = connect_to_guest(&uds, 6000).expect("guest accepts");
        open.write_all(b"before the suspend").unwrap();

        let info = guest
            .api_client()
            .snapshot(&snapshot, false)
            .unwrap_or_else(|e| panic!("suspend: {e}\n{}", guest.transcript()));
        assert_eq!(info.dir, snapshot);
        let status = guest.wait_exit(Duration::from_secs(30));
        assert_eq!(code(status), exit_status::OK, "{}", guest.transcript());
        // The VMM is gone, and the host side of the connection with it.
        open.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = open.read_to_end(&mut rest);
        assert!(rest.is_empty());

        let mut guest = env.restore(&snapshot).with_console_input().spawn();
        let client = guest.api_client();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.info().expect("info").state != RunState::Running {
            assert!(Instant::now() < deadline, "{}", guest.transcript());
            std::thread::sleep(Duration::from_millis(10));
        }
        // The guest's socket of the old connection is reset by the transport-reset event.
        let line = guest.wait_for("VSOCK-TOOL ", STEP);
        assert!(
            line.starts_with("error: read after") && line.contains("reset"),
            "{line}"
        );
        // New connections work both ways on the restored VM (same socket path).
        host_sends_a_file(&mut guest, &uds, 6001);
        guest_sends_a_file(&mut guest, &uds, 6002);
        guest.kill();
    }
}
