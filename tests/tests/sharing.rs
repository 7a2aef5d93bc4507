//! Data sharing between VMs through the sharing broker (`virmo_agent::sharing`), with three
//! real guests at once, each with its own vsock device: allowed → A sends 1 MiB to B with
//! matching sha256; prohibited → refused at once; revoked mid-transfer → cut; a VM the policy
//! does not know cannot reach another by guessing its CID or asking the broker. Prints the
//! medians of connection set-up through the broker and of VM-to-VM throughput.
//!
//! The tests live in `mod sharing` so that `cargo xtask test sharing` selects them.

mod sharing {
    use std::io::Write;
    use std::time::{Duration, Instant};

    use virmo_agent::sharing::{Broker, Decision, Peers, SharingPolicy, Verdict, VmSharing};
    use virmo_tests::vsock::shell_guest;
    use virmo_tests::{Guest, TempDir, TestEnv};

    const STEP: Duration = Duration::from_secs(60);
    const MIB: u64 = 1 << 20;

    fn sharing(allowed: bool, peers: &str) -> VmSharing {
        VmSharing {
            allowed,
            peers: Peers::parse(peers),
        }
    }

    /// The rest of the next `VSOCK-TOOL ` line that is not a `listening` or `shared` line.
    fn outcome(guest: &mut Guest) -> String {
        loop {
            let line = guest.wait_for("VSOCK-TOOL ", STEP);
            if !line.starts_with("listening") && !line.starts_with("shared") {
                return line;
            }
        }
    }

    fn fields(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    }

    fn has(decisions: &[Decision], from: &str, to: &str, port: u32, verdict: Verdict) -> bool {
        decisions
            .iter()
            .any(|d| d.from == from && d.to == to && d.port == port && d.verdict == verdict)
    }

    #[test]
    fn sharing_over_vsock_broker_routes_only_what_the_policy_allows_and_cuts_revoked_streams() {
        let env = TestEnv::get();
        let dir = TempDir::new("sharing");
        let (mut a, uds_a) = shell_guest(&env, &dir, 3);
        let (mut b, uds_b) = shell_guest(&env, &dir, 4);
        let (mut c, uds_c) = shell_guest(&env, &dir, 5);
        let mut policy = SharingPolicy::default();
        policy.set("vm-a", sharing(true, "vm-b"));
        policy.set("vm-b", sharing(true, "vm-a"));
        let broker = Broker::new(policy);
        broker.add_vm("vm-a", &uds_a).unwrap();
        broker.add_vm("vm-b", &uds_b).unwrap();
        broker.add_vm("vm-c", &uds_c).unwrap();

        // Allowed: A sends 1 MiB to B, five times; set-up and throughput medians.
        a.send("dd if=/dev/urandom of=/tmp/out bs=4096 count=256 2>/dev/null\n");
        let mut setups = Vec::new();
        let mut rates = Vec::new();
        for round in 0..5u32 {
            let port = 7000 + round;
            b.send(&format!("vsock-tool listen {port} recv &\n"));
            b.wait_for(&format!("VSOCK-TOOL listening {port}"), STEP);
            a.send(&format!("vsock-tool share vm-b {port} send /tmp/out\n"));
            let setup: f64 = a
                .wait_for("VSOCK-TOOL shared ", STEP)
                .split_whitespace()
                .next()
                .and_then(|us| us.parse().ok())
                .expect("set-up time");
            let sent = fields(&outcome(&mut a));
            let got = fields(&outcome(&mut b));
            assert_eq!(sent[0], "sent", "{sent:?}\n{}", a.transcript());
            assert_eq!(got[0], "received", "{got:?}\n{}", b.transcript());
            assert_eq!(sent[1], MIB.to_string());
            assert_eq!(got[1..3], sent[1..3], "byte count and sha256 match");
            let us: f64 = got[3].parse().expect("transfer time");
            setups.push(setup / 1000.0);
            rates.push(MIB as f64 / (1 << 20) as f64 / (us / 1e6));
            assert!(has(
                &broker.decisions(),
                "vm-a",
                "vm-b",
                port,
                Verdict::Allowed
            ));
        }
        let _ = writeln!(
            std::io::stderr(),
            "BENCH sharing: connection set-up through the broker median {:.1} ms {setups:?}; \
             VM-to-VM 1 MiB median {:.2} MiB/s {rates:?}",
            median(setups.clone()),
            median(rates.clone())
        );

        // Prohibited: C is in no policy; the broker refuses at once.
        b.send("vsock-tool listen 7100 recv &\n");
        b.wait_for("VSOCK-TOOL listening 7100", STEP);
        let asked = Instant::now();
        c.send("echo x > /tmp/x; vsock-tool share vm-b 7100 send /tmp/x\n");
        let line = outcome(&mut c);
        assert_eq!(line, "error: broker: DENIED", "{}", c.transcript());
        assert!(asked.elapsed() < Duration::from_secs(10));
        assert!(has(
            &broker.decisions(),
            "vm-c",
            "vm-b",
            7100,
            Verdict::Prohibited
        ));
        // Guessing B's CID does not help: the VMM resets anything not addressed to the host.
        c.send("vsock-tool connect 4 7100 send /tmp/x\n");
        let line = outcome(&mut c);
        assert!(line.starts_with("error: connect to 4:7100"), "{line}");
        // Nor asking for itself or an unknown VM.
        c.send("vsock-tool share vm-z 7100 send /tmp/x\n");
        assert_eq!(outcome(&mut c), "error: broker: DENIED");

        // Revoked while open: A streams endlessly to B (still listening on 7100); the policy
        // changes; the route is cut, both ends see it.
        a.send("vsock-tool share vm-b 7100 send /dev/zero\n");
        a.wait_for("VSOCK-TOOL shared ", STEP);
        let before = broker.bytes_routed();
        let deadline = Instant::now() + STEP;
        while broker.bytes_routed() < before + 256 * 1024 {
            assert!(Instant::now() < deadline, "no data flows A -> B");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(broker.open_routes(), 1);
        broker.set_policy("vm-b", sharing(true, "vm-x"));
        assert!(has(
            &broker.decisions(),
            "vm-a",
            "vm-b",
            7100,
            Verdict::Revoked
        ));
        let got = fields(&outcome(&mut b));
        assert_eq!(got[0], "received", "B reads end of file: {got:?}");
        assert!(got[1].parse::<u64>().unwrap() >= 256 * 1024);
        let sent = outcome(&mut a);
        assert!(
            sent.starts_with("error: write after"),
            "A's writes fail: {sent}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while broker.open_routes() != 0 {
            assert!(Instant::now() < deadline, "the route stays open");
            std::thread::sleep(Duration::from_millis(50));
        }
        // And now prohibited at once.
        a.send("vsock-tool share vm-b 7100 send /tmp/out\n");
        assert_eq!(outcome(&mut a), "error: broker: DENIED");
        assert!(has(
            &broker.decisions(),
            "vm-a",
            "vm-b",
            7100,
            Verdict::Prohibited
        ));
        // Every decision names both VMs.
        assert!(broker
            .decisions()
            .iter()
            .all(|d| !d.from.is_empty() && !d.to.is_empty()));
        for g in [&mut a, &mut b, &mut c] {
            g.kill();
        }
    }
}
