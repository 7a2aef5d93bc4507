//! The agent's host side, end to end in the nested-KVM runner (`cargo xtask test --skip-unit
//! agent_host`): a real `virmo-agent` driven by the test DM server (as in `agent.rs`), its VMMs
//! jailed (the runner runs the tests as root).
//!
//! - Data sharing: two VMs the agent provisioned and started share over their vsock host
//!   channels through the agent's broker only while their `DataSharing` nodes allow it; the
//!   policy is reloaded by a restarted agent; a prohibition cuts an open stream and refuses the
//!   next one.
//! - A VM with a network device runs jailed on a tap the agent made for its uid, through a
//!   suspend and resume; the tap is gone once the VM is deleted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use virmo_tests::agent::{
    cgroup_mount, dm_account, guest_spec, kill_vmms, vmm_processes, wait_until, write_spec,
    AgentProcess, AgentSetup, FileServer, DEVICE_ID,
};
use virmo_tests::dm_server::{add_node, exec, get, replace, Accounts, DmServer, Reply};
use virmo_tests::{TempDir, TestEnv};

const OP_TIMEOUT: Duration = Duration::from_secs(180);
const STEP: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;

fn vm(node: &str) -> String {
    format!("./VirMO/VM/{node}")
}

/// A DM server, an HTTP server for bundles and an agent on a data directory.
struct Host {
    server: DmServer,
    agent: AgentProcess,
    files: FileServer,
    dir: TempDir,
}

impl Host {
    fn new(tag: &str, vmm: &Path) -> Self {
        let dir = TempDir::new(tag);
        std::fs::create_dir_all(dir.path().join("files")).unwrap();
        let files = FileServer::start(&dir.path().join("files"), 0);
        let server = DmServer::start(Accounts::default());
        let agent = AgentProcess::start(&AgentSetup {
            data_dir: dir.path().join("data"),
            vmm: vmm.to_owned(),
            account: dm_account(&server.url(), &server.accounts),
            cgroup_mount: cgroup_mount(),
            // A VMM's API comes up in 10-20 s in the emulated runner on a busy host.
            limits: "start_timeout_secs = 120".into(),
        });
        wait_until(Duration::from_secs(60), "the agent's first session", || {
            server.sessions() >= 1
        });
        Self {
            server,
            agent,
            files,
            dir,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, commands: Vec<omadm::model::Command>) -> Vec<Reply> {
        self.server.run(DEVICE_ID, self.agent.pkg0, commands)
    }

    /// Adds `nodes` with the bundle `spec`, provisions and starts them (the Execs of each
    /// step in one session, so the VMs go through it at once).
    fn add_and_start(&self, env: &TestEnv, spec_name: &str, network: bool, nodes: &[&str]) {
        let mut spec = guest_spec(env, "", "1.0");
        spec.name = "shell".into();
        spec.network = network;
        let (bundle, hash) = write_spec(&spec, &self.dir.path().join("files"), spec_name);
        let url = self
            .files
            .url(bundle.file_name().unwrap().to_str().unwrap());
        for node in nodes {
            let replies = self.run(vec![
                add_node(&vm(node)),
                replace(&format!("{}/Image/PkgURL", vm(node)), "chr", &url),
                replace(&format!("{}/Image/PkgHash", vm(node)), "chr", &hash),
            ]);
            assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
        }
        // One download and install serves all; the starts go one after the other (a VMM
        // coming up is CPU-bound, and the emulated runner has two CPUs for everything).
        let provisions: Vec<(&str, &str)> = nodes.iter().map(|n| (*n, "Provision")).collect();
        assert!(self.ops(&provisions).iter().all(|&c| c == 1200));
        for node in nodes {
            assert_eq!(self.ops(&[(node, "Start")]), [1200], "Start {node}");
        }
    }

    /// Execs `Operations/<op>` of each `(node, op)` in one session; their result codes.
    fn ops(&self, ops: &[(&str, &str)]) -> Vec<u16> {
        let n = self.server.sessions();
        let correlators: Vec<String> = ops
            .iter()
            .map(|(node, op)| format!("{node}-{op}-{n}"))
            .collect();
        let commands = ops
            .iter()
            .zip(&correlators)
            .map(|((node, op), c)| exec(&format!("{}/Operations/{op}", vm(node)), c))
            .collect();
        let replies = self.run(commands);
        assert!(replies.iter().all(|r| r.status == 202), "{replies:?}");
        correlators
            .iter()
            .map(|c| self.server.outcome(c, OP_TIMEOUT))
            .collect()
    }

    fn value(&self, uri: &str) -> String {
        let reply = &self.run(vec![get(uri)])[0];
        assert_eq!(reply.status, 200, "Get {uri}");
        reply.value().to_owned()
    }

    fn vm_id(&self, node: &str) -> String {
        self.value(&format!("{}/ID", vm(node)))
    }

    /// Sets VM `node`'s `DataSharing` nodes; both Replaces must be accepted.
    fn share(&self, node: &str, allowed: bool, peers: &str) {
        let replies = self.run(vec![
            replace(
                &format!("{}/DataSharing/Allowed", vm(node)),
                "bool",
                &allowed.to_string(),
            ),
            replace(&format!("{}/DataSharing/Peers", vm(node)), "chr", peers),
        ]);
        assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    }

    fn console(&self, id: &str) -> Console {
        Console::new(&self.data().join("vms").join(id))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}\n---", self.agent.transcript());
        }
        self.agent.kill();
        kill_vmms(&self.data());
    }
}

/// A VM's serial console through the agent's files: what the test types goes into its
/// `console.in` FIFO, what the guest prints is read from `console.log`.
struct Console {
    input: PathBuf,
    log: PathBuf,
    /// How far `console.log` has been read.
    read: usize,
}

impl Console {
    fn new(vm_dir: &Path) -> Self {
        Self {
            input: vm_dir.join("console.in"),
            log: vm_dir.join("console.log"),
            read: 0,
        }
    }

    fn send(&self, line: &str) {
        // The VMM holds the FIFO open for reading: opening it for writing does not wait.
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.input)
            .expect("the console input FIFO");
        fifo.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// The rest of the next whole line holding `marker`, after what was read before.
    fn wait_for(&mut self, marker: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let bytes = std::fs::read(&self.log).unwrap_or_default();
            let unread = &bytes[self.read.min(bytes.len())..];
            // Whole lines only: the guest may be in the middle of one.
            let whole = unread
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            for line in unread[..whole].split_inclusive(|&b| b == b'\n') {
                self.read += line.len();
                let line = String::from_utf8_lossy(line);
                if let Some(at) = line.find(marker) {
                    return line[at + marker.len()..].trim().to_owned();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {marker:?} on the console within {timeout:?}:\n{}",
                String::from_utf8_lossy(&bytes)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The next `VSOCK-TOOL` outcome (`sent …`, `received …` or `error: …`).
    fn outcome(&mut self) -> String {
        loop {
            let line = self.wait_for("VSOCK-TOOL ", STEP);
            if !line.starts_with("listening") && !line.starts_with("shared") {
                return line;
            }
        }
    }
}

fn fields(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// How many sharing decisions `verdict` naming both VMs the agent logged.
fn decisions(agent: &AgentProcess, from: &str, to: &str, verdict: &str) -> usize {
    agent
        .transcript()
        .lines()
        .filter(|l| {
            l.contains("sharing decision")
                && l.contains(from)
                && l.contains(to)
                && l.contains(verdict)
        })
        .count()
}

#[test]
fn agent_host_vms_share_data_only_while_their_datasharing_allows_it() {
    let env = TestEnv::get();
    let mut h = Host::new("agent-share", &env.vmm);
    let started = Instant::now();
    h.add_and_start(&env, "shell.tar", false, &["a", "b"]);
    let (id_a, id_b) = (h.vm_id("a"), h.vm_id("b"));
    let (mut a, mut b) = (h.console(&id_a), h.console(&id_b));
    a.wait_for("VIRMO-GUEST-READY", STEP);
    b.wait_for("VIRMO-GUEST-READY", STEP);
    let booted = started.elapsed();
    assert_eq!(
        h.value(&format!("{}/Peripherals/vsock0/Class", vm("a"))),
        "host-channel"
    );

    // Default: prohibited.
    std::thread::sleep(Duration::from_millis(500)); // the shells start
    b.send("vsock-tool listen 7000 recv &");
    b.wait_for("VSOCK-TOOL listening 7000", STEP);
    a.send("dd if=/dev/urandom of=/tmp/out bs=4096 count=256 2>/dev/null");
    a.send(&format!("vsock-tool share {id_b} 7000 send /tmp/out"));
    assert_eq!(a.outcome(), "error: broker: DENIED");
    assert_eq!(decisions(&h.agent, &id_a, &id_b, "Prohibited"), 1);

    // The server allows A and B to share; the agent is restarted (its VMMs run on): the
    // policy comes back from its store, and A's 1 MiB reaches B intact.
    h.share("a", true, &id_b);
    h.share("b", true, &id_a);
    h.agent.kill();
    let setup = h.agent.setup.clone();
    h.agent = AgentProcess::start(&setup);
    assert_eq!(vmm_processes(&h.data()).len(), 2, "the VMs ran on");
    let asked = Instant::now();
    a.send(&format!("vsock-tool share {id_b} 7000 send /tmp/out"));
    let shared = a.wait_for("VSOCK-TOOL shared ", STEP);
    let set_up_us: f64 = shared
        .split_whitespace()
        .next()
        .and_then(|us| us.parse().ok())
        .unwrap_or_else(|| panic!("the set-up time in {shared:?}"));
    let sent = fields(&a.outcome());
    let got = fields(&b.outcome());
    let transfer = asked.elapsed();
    assert_eq!(sent[0], "sent", "{sent:?}");
    assert_eq!(got[0], "received", "{got:?}");
    assert_eq!(sent[1], MIB.to_string());
    assert_eq!(got[1..3], sent[1..3], "byte count and sha256 match");
    assert_eq!(decisions(&h.agent, &id_a, &id_b, "Allowed"), 1);
    let us: f64 = got[3].parse().expect("B's transfer time");
    let _ = writeln!(
        std::io::stderr(),
        "BENCH agent sharing: connection set-up through the agent's broker {set_up_us:.0} us (A's \
         `{shared}`); 1 MiB A -> B {:.1} ms in B ({:.2} MiB/s), {:.0} ms from typing to B's \
         checksum; two VMs provisioned, started and booted in {:.1} s",
        us / 1000.0,
        1e6 / us,
        transfer.as_secs_f64() * 1000.0,
        booted.as_secs_f64(),
    );

    // A streams to B without end; B's Allowed is replaced by false: the open stream is cut
    // (B reads end of file, A's writes fail) and the next connection is refused at once.
    b.send("vsock-tool listen 7001 recv &");
    b.wait_for("VSOCK-TOOL listening 7001", STEP);
    a.send(&format!("vsock-tool share {id_b} 7001 send /dev/zero"));
    a.wait_for("VSOCK-TOOL shared ", STEP);
    h.share("b", false, &id_a);
    let got = fields(&b.outcome());
    assert_eq!(got[0], "received", "B reads end of file: {got:?}");
    let sent = a.outcome();
    assert!(
        sent.starts_with("error: write after"),
        "A's writes fail: {sent}"
    );
    assert_eq!(decisions(&h.agent, &id_a, &id_b, "Revoked"), 1);
    b.send("vsock-tool listen 7002 recv &");
    b.wait_for("VSOCK-TOOL listening 7002", STEP);
    let asked = Instant::now();
    a.send(&format!("vsock-tool share {id_b} 7002 send /tmp/out"));
    assert_eq!(a.outcome(), "error: broker: DENIED");
    assert!(asked.elapsed() < Duration::from_secs(10));
    assert_eq!(
        decisions(&h.agent, &id_a, &id_b, "Prohibited"),
        1,
        "the new agent's first refusal"
    );
}

/// A `/proc/<pid>/status` field's first number.
fn status_field(pid: u32, name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The jailed VMM under keeper `keeper` (its child) and its uid.
fn jailed_vmm(keeper: u32) -> (u32, u32) {
    let vmm = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .find(|&pid| status_field(pid, "PPid:") == Some(keeper))
        .expect("the keeper has the jailed VMM as its child");
    (vmm, status_field(vmm, "Uid:").expect("its uid"))
}

/// Whether process `pid` holds a /dev/net/tun descriptor attached to `tap`.
fn attached(pid: u32, tap: &str) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|d| {
            d.flatten().any(|e| {
                std::fs::read_to_string(e.path())
                    .is_ok_and(|info| info.lines().any(|l| l == format!("iff:\t{tap}")))
            })
        })
        .unwrap_or(false)
}

#[test]
fn agent_host_network_vm_runs_jailed_on_a_tap_made_for_its_uid() {
    let env = TestEnv::get();
    let h = Host::new("agent-net", &env.vmm);
    h.add_and_start(&env, "net.tar", true, &["n"]);
    let id = h.vm_id("n");
    let tap = format!("virmo{}", &id.replace('-', "")[..8]);
    let sys = PathBuf::from("/sys/class/net").join(&tap);
    let check_jailed = || {
        let keeper = vmm_processes(&h.data())[0];
        let (vmm, uid) = jailed_vmm(keeper);
        assert_ne!(uid, 0, "the VMM runs as the VM's uid");
        let owner = std::fs::read_to_string(sys.join("owner")).expect("the tap exists");
        assert_eq!(
            owner.trim(),
            uid.to_string(),
            "the tap belongs to the VM's uid"
        );
        assert!(attached(vmm, &tap), "the jailed VMM is attached to {tap}");
    };
    check_jailed();
    // Suspend: no VMM, no tap; resume (a restore, jailed): both back.
    assert_eq!(h.ops(&[("n", "Suspend")]), [1200]);
    assert!(vmm_processes(&h.data()).is_empty());
    assert!(!sys.exists(), "no tap while suspended");
    assert_eq!(h.ops(&[("n", "Resume")]), [1200]);
    check_jailed();
    // Delete: the tap goes with the VM.
    assert_eq!(h.ops(&[("n", "Delete")]), [1200]);
    wait_until(Duration::from_secs(30), "the VM gone", || {
        vmm_processes(&h.data()).is_empty()
    });
    assert!(!sys.exists(), "the tap is removed");
}
