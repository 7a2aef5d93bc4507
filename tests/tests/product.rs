//! The product end to end, as an administrator and an employee use it: `virmoctl` →
//! `virmo-server` (embedded SQLite) → `virmo-agent` → `vmm` → a real guest, and back through
//! the agent's alerts to the server's job states. The device user acts with the `virmo` CLI.
//!
//! Every step checks what the server recorded: the job's state (an Exec is `accepted`, then
//! `done` by its OperationComplete), the statuses of its commands, the alert with its result
//! code, and the VM as the server last read it. The VM has a removable disk, an entropy source
//! and a network device (a tap the VMM creates, left unconnected). Runs in the nested-KVM runner here:
//! `cargo xtask test --skip-unit product`.

use std::path::PathBuf;
use std::time::Duration;

use virmo_agent::bundle::create::BundleSpec;
use virmo_server::admin::{JobView, VmView};
use virmo_server::model::DmCommand;
use virmo_tests::agent::{
    cgroup_mount, guest_spec, kill_vmms, last_counter, vmm_processes, wait_until, write_spec,
    AgentProcess, AgentSetup, FileServer,
};
use virmo_tests::product::{free_udp_port, virmo, with_test_timing, ServerProcess, Virmoctl};
use virmo_tests::{dir_entries, TempDir, TestEnv};

const DEVICE: &str = "host-e2e";
const OPERATION_COMPLETE: &str = "urn:oma:at:virmo:1.0:OperationComplete";
const USER_UNLOCKED: &str = "urn:oma:at:virmo:1.0:UserUnlocked";

/// A server, an enrolled device's agent, and a file server for image bundles.
struct Product {
    ctl: Virmoctl,
    agent: AgentProcess,
    server: ServerProcess,
    files: FileServer,
    dir: TempDir,
}

impl Product {
    fn new(env: &TestEnv) -> Self {
        let dir = TempDir::new("product");
        let server = ServerProcess::start(&dir.path().join("server"));
        let ctl = server.virmoctl();
        // Enrol the device; its agent runs on the configuration virmoctl prints.
        let port = free_udp_port();
        let config = ctl.ok(&["enroll", DEVICE, "--notify", &format!("127.0.0.1:{port}")]);
        assert!(
            config.contains(&format!("dev_id = \"{DEVICE}\"")),
            "{config}"
        );
        assert!(config.contains(&format!("{}/dm", server.url)), "{config}");
        let agent = AgentProcess::start(&AgentSetup {
            data_dir: dir.path().join("device"),
            vmm: env.vmm.clone(),
            account: with_test_timing(&config),
            cgroup_mount: cgroup_mount(),
            limits: String::new(),
        });
        assert_eq!(agent.pkg0.port(), port, "the agent listens where enrolled");
        let files_dir = dir.path().join("files");
        std::fs::create_dir_all(&files_dir).unwrap();
        let files = FileServer::start(&files_dir, 0);
        let product = Self {
            ctl,
            agent,
            server,
            files,
            dir,
        };
        // The agent's first session: the server has seen the device and its DevInfo.
        wait_until(
            Duration::from_secs(60),
            "the device's first session",
            || {
                let devices: Vec<virmo_server::model::DeviceSummary> =
                    product.ctl.json(&["devices"]);
                devices
                    .iter()
                    .any(|d| d.id == DEVICE && d.last_seen_at.is_some() && d.dev_info.is_some())
            },
        );
        product
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("device")
    }

    fn console_log(&self, id: &str) -> PathBuf {
        self.data().join("vms").join(id).join("console.log")
    }

    fn vm(&self, name: &str) -> VmView {
        self.ctl
            .vms(DEVICE)
            .into_iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("the server knows no VM {name}"))
    }

    /// Waits until the server's view of `vm` has `state` and `lock`.
    fn wait_state(&self, vm: &str, state: i64, lock: i64) {
        self.ctl.wait_vm(
            DEVICE,
            vm,
            &format!("{vm} in state {state}, lock {lock}, on the server"),
            |v| v.is_some_and(|v| v.state == Some(state) && v.lock_state == Some(lock)),
        );
    }

    /// `virmoctl ARGS --watch` for a job that Execs `operation` on `vm`: done, by way of
    /// accepted; every Replace answered 200, the Exec 202; finished by the OperationComplete
    /// alert with 1200 and the job's Correlator, recorded with the job.
    fn exec(&self, args: &[&str], vm: &str, operation: &str) -> JobView {
        let view = self.ctl.job(args);
        let job = &view.job;
        let exec_uri = format!("./VirMO/VM/{vm}/Operations/{operation}");
        let accepted = job.accepted_at.expect("the job went through accepted");
        assert!(job.sent_at.is_some_and(|sent| sent <= accepted), "{job:?}");
        assert!(
            job.finished_at.is_some_and(|end| accepted <= end),
            "{job:?}"
        );
        assert_eq!(job.result_code, Some(1200), "{job:?}");
        for (index, command) in job.commands.iter().enumerate() {
            let expected = match command {
                DmCommand::Exec { uri, .. } => {
                    assert_eq!(uri, &exec_uri);
                    202
                }
                _ => 200,
            };
            let statuses: Vec<i64> = view
                .responses
                .iter()
                .filter(|r| r.command_index == index as i64 && r.kind == "Status")
                .map(|r| r.status)
                .collect();
            assert_eq!(statuses, [expected], "{} {}", command.name(), command.uri());
        }
        let alerts = self.ctl.alerts(DEVICE);
        let alert = alerts
            .iter()
            .find(|a| a.job_id == Some(job.id))
            .unwrap_or_else(|| panic!("no alert recorded for job {}: {alerts:?}", job.id));
        assert_eq!(alert.alert.alert_type, OPERATION_COMPLETE);
        assert_eq!(alert.alert.source.as_deref(), Some(exec_uri.as_str()));
        assert_eq!(
            alert.alert.correlator.as_deref(),
            Some(job.correlator.as_str())
        );
        assert_eq!(alert.alert.data.as_deref(), Some("1200"));
        view
    }

    /// `virmoctl ARGS --watch` for a job of Replaces only: done in the session that carried it,
    /// every command answered 200, no alert.
    fn replace(&self, args: &[&str]) -> JobView {
        let view = self.ctl.job(args);
        assert!(view.job.accepted_at.is_none(), "{view:?}");
        assert!(view.responses.iter().all(|r| r.status == 200), "{view:?}");
        assert_eq!(view.responses.len(), view.job.commands.len(), "{view:?}");
        assert!(!self
            .ctl
            .alerts(DEVICE)
            .iter()
            .any(|a| a.job_id == Some(view.job.id)));
        view
    }
}

impl Drop for Product {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- agent log ---\n{}\n--- server log ---\n{}\n--- virmoctl events ---\n{}",
                self.agent.transcript(),
                self.server.transcript(),
                String::from_utf8_lossy(&self.ctl.run(&["events", "--device", DEVICE]).stdout)
            );
        }
        self.agent.kill();
        kill_vmms(&self.data());
    }
}

/// The counter's values in a console log after `after`.
fn counters_after(log: &std::path::Path, after: u64) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("VIRMO-COUNTER=")?.parse().ok())
        .skip_while(|n| *n <= after)
        .collect()
}

#[test]
fn product_work_vm_from_enrolment_to_deletion() {
    let env = TestEnv::get();
    let p = Product::new(&env);
    // The counter guest with a removable disk, an entropy source and a network device.
    let spec = BundleSpec {
        network: true,
        ..guest_spec(&env, "counter", "1.0")
    };
    let (_, hash) = write_spec(&spec, &p.dir.path().join("files"), "work.tar");
    let url = p.files.url("work.tar");

    // (a) Provision the work VM from the bundle the company serves, then start it.
    let view = p.exec(
        &[
            "provision",
            DEVICE,
            "work",
            "--url",
            &url,
            "--hash",
            &hash,
            "--memory-mib",
            "128",
        ],
        "work",
        "Provision",
    );
    let names: Vec<&str> = view.job.commands.iter().map(|c| c.name()).collect();
    assert_eq!(names.first(), Some(&"Add"));
    assert_eq!(names.last(), Some(&"Exec"));
    p.wait_state("work", 20, 10);
    let work = p.vm("work");
    let id = work.id.clone().expect("the VM's ID");
    assert_eq!(work.state_name.as_deref(), Some("stopped"));
    assert_eq!(
        work.values.get("Image/PkgVersion").map(String::as_str),
        Some("1.0")
    );
    assert_eq!(
        work.values.get("Resources/MemoryMiB").map(String::as_str),
        Some("128")
    );
    p.exec(&["start", DEVICE, "work"], "work", "Start");
    p.wait_state("work", 30, 10);
    let table = p.ctl.ok(&["vms", DEVICE]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("work") && l.contains("running")),
        "{table}"
    );
    wait_until(Duration::from_secs(90), "the guest counting", || {
        last_counter(&p.console_log(&id)).is_some_and(|n| n >= 5)
    });
    let vmm = vmm::api::client::VmmClient::new(p.data().join("run").join(format!("{id}.sock")));

    // Its network device is a tap on the device, named after the VM.
    let tap = PathBuf::from("/sys/class/net").join(format!("virmo{}", &id.replace('-', "")[..8]));
    assert!(tap.exists(), "no tap {}", tap.display());

    // (b) Gate the peripherals: the removable disk and the network, live.
    let listed = p.ctl.ok(&["peripherals", DEVICE, "work"]);
    for name in ["disk0", "usb0", "rng0", "net0"] {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(name) && l.contains("allowed")),
            "{listed}"
        );
    }
    let allowed = |id: &str| {
        let devices = vmm.devices().expect("the VMM's devices");
        let device = devices.iter().find(|d| d.id == id);
        device
            .unwrap_or_else(|| panic!("no {id}: {devices:?}"))
            .allowed
    };
    assert!(allowed("usb0") && allowed("net0"));
    p.replace(&["peripherals", DEVICE, "work", "usb0", "--deny"]);
    p.replace(&["peripherals", DEVICE, "work", "net0", "--deny"]);
    assert!(!allowed("usb0") && !allowed("net0") && allowed("disk0") && allowed("rng0"));
    p.ctl.ok(&["refresh", DEVICE, "--watch"]);
    let listed = p.ctl.ok(&["peripherals", DEVICE, "work"]);
    for name in ["usb0", "net0"] {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(name) && l.contains("denied")),
            "{listed}"
        );
    }
    p.replace(&["peripherals", DEVICE, "work", "net0", "--allow"]);
    assert!(allowed("net0"));

    // (c) Suspend for diagnostics: no VMM left; resume: the guest's counter goes on.
    let pid = vmm.info().expect("the VMM answers").pid;
    p.exec(&["suspend", DEVICE, "work"], "work", "Suspend");
    p.wait_state("work", 40, 10);
    assert!(
        vmm_processes(&p.data()).is_empty(),
        "no VMM while suspended"
    );
    assert!(!virmo_tests::agent::alive(pid));
    assert!(p.data().join("vms").join(&id).join("snapshot").is_dir());
    let before = last_counter(&p.console_log(&id)).expect("a counter before the suspend");
    p.exec(&["resume", DEVICE, "work"], "work", "Resume");
    p.wait_state("work", 30, 10);
    wait_until(Duration::from_secs(60), "the counter going on", || {
        counters_after(&p.console_log(&id), before).len() > 3
    });
    let after = counters_after(&p.console_log(&id), before);
    assert_eq!(after[0], before + 1, "the counter continues: {after:?}");
    assert!(
        !allowed("usb0") && allowed("net0"),
        "the policy survives the suspend"
    );

    // (d) Lock the VM with a code the employee may use; the employee unlocks with `virmo`.
    let socket = p.agent.local_socket.clone();
    p.exec(
        &[
            "lock",
            DEVICE,
            "work",
            "--full",
            "--user-unlock-code",
            "2468",
        ],
        "work",
        "FullyLock",
    );
    p.wait_state("work", 30, 30);
    assert_eq!(vmm.info().unwrap().state, vmm::api::types::RunState::Paused);
    let refused = virmo(&socket, &["console", "work"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("1407"),
        "{refused:?}"
    );
    let wrong = virmo(&socket, &["unlock", "work", "1111"]);
    assert!(!wrong.status.success(), "{wrong:?}");
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("1407"),
        "{wrong:?}"
    );
    let unlocked = virmo(&socket, &["unlock", "work", "2468"]);
    assert!(unlocked.status.success(), "{unlocked:?}");
    wait_until(
        Duration::from_secs(60),
        "UserUnlocked on the server",
        || {
            p.ctl
                .alerts(DEVICE)
                .iter()
                .any(|a| a.alert.alert_type == USER_UNLOCKED)
        },
    );
    let alert = p
        .ctl
        .alerts(DEVICE)
        .into_iter()
        .find(|a| a.alert.alert_type == USER_UNLOCKED)
        .unwrap();
    assert_eq!(
        alert.alert.source.as_deref(),
        Some("./VirMO/VM/work/Lock/State")
    );
    assert_eq!(
        (alert.alert.data.as_deref(), alert.job_id),
        (Some("10"), None)
    );
    p.wait_state("work", 30, 10);
    assert_eq!(
        vmm.info().unwrap().state,
        vmm::api::types::RunState::Running
    );
    let listed = virmo(&socket, &["list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("work"),
        "{listed:?}"
    );

    // (e) The employee leaves: delete; nothing of the VM stays on the device.
    p.exec(&["delete", DEVICE, "work"], "work", "Delete");
    p.ctl
        .wait_vm(DEVICE, "work", "work gone from the server's view", |v| {
            v.is_none()
        });
    let table = p.ctl.ok(&["vms", DEVICE]);
    assert!(!table.lines().any(|l| l.starts_with("work")), "{table}");
    let tree = p.ctl.ok(&["tree", DEVICE]);
    assert!(!tree.contains("./VirMO/VM/work"), "{tree}");
    assert!(vmm_processes(&p.data()).is_empty());
    assert!(!tap.exists(), "the tap is gone");
    for folder in ["vms", "images", "run", "downloads"] {
        assert!(
            dir_entries(&p.data().join(folder)).is_empty(),
            "{folder}: {:?}",
            dir_entries(&p.data().join(folder))
        );
    }
    let listed = virmo(&socket, &["list"]);
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains("work"),
        "{listed:?}"
    );

    // Nothing went wrong on the way: no failed job, no refused session, no stray alert.
    let jobs = p.ctl.ok(&["jobs", "--device", DEVICE]);
    assert!(
        !jobs.contains("failed") && !jobs.contains("expired"),
        "{jobs}"
    );
    let bad: Vec<_> = p
        .ctl
        .events(DEVICE)
        .into_iter()
        .filter(|e| {
            matches!(
                e.kind.as_str(),
                "auth-failed" | "malformed" | "job-failed" | "unmatched-alert" | "late-alert"
            )
        })
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    assert!(!p
        .ctl
        .alerts(DEVICE)
        .iter()
        .any(|a| a.alert.alert_type.ends_with("StateChanged")));
}
