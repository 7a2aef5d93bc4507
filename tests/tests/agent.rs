//! The VirMO agent end to end: a real `virmo-agent` process, driven by a DM server built on
//! `omadm` (its real server session over real HTTP on loopback), managing real guests on KVM.
//!
//! `agent_refuses_bad_input_*` needs no KVM (nothing boots); the others boot guests and run in
//! the nested-KVM runner (`cargo xtask test --skip-unit agent`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use virmo_agent::local::protocol::Request;
use virmo_tests::agent::{
    agent_bin, alive, cgroup_mount, dm_account, guest_bundle, guest_spec, kill_vmms, last_counter,
    vmm_processes, wait_until, write_spec, AgentProcess, AgentSetup, FileServer, DEVICE_ID,
};
use virmo_tests::dm_server::{add_node, atomic, delete, exec, get, replace, Accounts, DmServer};
use virmo_tests::{dir_entries, TempDir, TestEnv};

const OP_TIMEOUT: Duration = Duration::from_secs(180);

fn vm(node: &str) -> String {
    format!("./VirMO/VM/{node}")
}

/// A DM server, a data directory and an agent on it.
struct World {
    server: DmServer,
    agent: AgentProcess,
    dir: TempDir,
    files: FileServer,
}

impl World {
    fn new(tag: &str, vmm: PathBuf, limits: &str) -> Self {
        let dir = TempDir::new(tag);
        let files_dir = dir.path().join("files");
        std::fs::create_dir_all(&files_dir).unwrap();
        let files = FileServer::start(&files_dir, 0);
        let server = DmServer::start(Accounts::default());
        let setup = AgentSetup {
            data_dir: dir.path().join("data"),
            vmm,
            account: dm_account(&server.url(), &server.accounts),
            cgroup_mount: cgroup_mount(),
            // A debug VMM's API comes up in 20-30 s in the emulated runner on a busy host,
            // the default start timeout's length (30 s).
            limits: if limits.contains("start_timeout_secs") {
                limits.to_owned()
            } else {
                format!("start_timeout_secs = 120\n{limits}")
            },
        };
        let agent = AgentProcess::start(&setup);
        // The agent opens a session as it starts.
        wait_until(Duration::from_secs(60), "the agent's first session", || {
            server.sessions() >= 1
        });
        Self {
            server,
            agent,
            dir,
            files,
        }
    }

    fn files_dir(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, commands: Vec<omadm::model::Command>) -> Vec<virmo_tests::dm_server::Reply> {
        self.server.run(DEVICE_ID, self.agent.pkg0, commands)
    }

    /// Execs `Operations/<op>` of `node`; the 202 and the alert's result code.
    fn op(&self, node: &str, op: &str) -> u16 {
        let correlator = format!("{node}-{op}-{}", self.server.sessions());
        let replies = self.run(vec![exec(
            &format!("{}/Operations/{op}", vm(node)),
            &correlator,
        )]);
        assert_eq!(replies[0].status, 202, "Exec {op} on {node}");
        let code = self.server.outcome(&correlator, OP_TIMEOUT);
        let alert = self.server.wait_alert(Duration::ZERO, |a| {
            a.correlator.as_deref() == Some(&correlator)
        });
        assert_eq!(
            alert.alert.alert_type,
            "urn:oma:at:virmo:1.0:OperationComplete"
        );
        assert_eq!(
            alert.alert.source.as_deref(),
            Some(format!("{}/Operations/{op}", vm(node)).as_str())
        );
        code
    }

    fn value(&self, uri: &str) -> String {
        let reply = &self.run(vec![get(uri)])[0];
        assert_eq!(reply.status, 200, "Get {uri}");
        reply.value().to_owned()
    }

    /// Adds VM `node` with the bundle at `url`/`hash`.
    fn add(&self, node: &str, url: &str, hash: &str) {
        let replies = self.run(vec![
            add_node(&vm(node)),
            replace(&format!("{}/Image/PkgURL", vm(node)), "chr", url),
            replace(&format!("{}/Image/PkgHash", vm(node)), "chr", hash),
        ]);
        assert_eq!(
            replies.iter().map(|r| r.status).collect::<Vec<_>>(),
            [200, 200, 200],
            "Add {node}"
        );
    }

    fn vm_id(&self, node: &str) -> String {
        self.value(&format!("{}/ID", vm(node)))
    }

    fn console_log(&self, id: &str) -> PathBuf {
        self.data().join("vms").join(id).join("console.log")
    }

    fn vmm_client(&self, id: &str) -> vmm::api::client::VmmClient {
        vmm::api::client::VmmClient::new(self.data().join("run").join(format!("{id}.sock")))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}\n---", self.agent.transcript());
        }
        self.agent.kill();
        kill_vmms(&self.data());
    }
}

/// A bundle of dummy files (nothing in it boots).
fn dummy_bundle(dir: &Path, name: &str) -> (PathBuf, String) {
    dummy_bundle_sized(dir, name, 64, 4)
}

/// A bundle of dummy files asking for `memory_mib` of memory and `storage_mib` of disk.
fn dummy_bundle_sized(
    dir: &Path,
    name: &str,
    memory_mib: u64,
    storage_mib: u64,
) -> (PathBuf, String) {
    let kernel = dir.join(format!("{name}.kernel"));
    std::fs::write(&kernel, vec![0x5a; 300_000]).unwrap();
    let spec = virmo_agent::bundle::create::BundleSpec {
        name: name.into(),
        version: "0.1".into(),
        kernel,
        initramfs: None,
        disk: None,
        cmdline: "console=ttyS0".into(),
        ready_marker: None,
        vcpus: 1,
        memory_mib,
        storage_mib,
        entropy: false,
        removable_mib: 0,
        network: false,
    };
    let out = dir.join(format!("{name}.tar"));
    let digest = virmo_agent::bundle::create::write_bundle(&spec, &out).unwrap();
    (out, format!("sha256:{}", virmo_agent::bundle::hex(&digest)))
}

#[test]
fn agent_refuses_bad_input_with_the_contract_codes_and_leaves_nothing_behind() {
    let _ = agent_bin();
    // Disks up to 1 PiB are allowed: what stops a big one is the host's free space.
    let w = World::new(
        "agent-bad",
        PathBuf::from("/nonexistent/vmm"),
        "max_storage_mib = 1073741824",
    );
    let (bundle, hash) = dummy_bundle(&w.files_dir(), "dummy");
    let url = w.files.url(bundle.file_name().unwrap().to_str().unwrap());

    // The tree's fixed part.
    assert_eq!(w.value("./VirMO/Version"), "1.0");
    let max_memory: u64 = w
        .value("./VirMO/Capabilities/MaxMemoryMiB")
        .parse()
        .unwrap();
    assert!(max_memory > 0);

    // Unknown VM: 404 at the DM level, for Get, Replace and Exec.
    let replies = w.run(vec![
        get(&format!("{}/State", vm("nope"))),
        replace(&format!("{}/Name", vm("nope")), "chr", "x"),
        exec(&format!("{}/Operations/Start", vm("nope")), "c-nope"),
    ]);
    assert_eq!(
        replies.iter().map(|r| r.status).collect::<Vec<_>>(),
        [404, 404, 404]
    );

    // A VM not provisioned: Start is refused with 1403 (after the Exec's 202).
    let replies = w.run(vec![add_node(&vm("bad"))]);
    assert_eq!(replies[0].status, 200);
    assert_eq!(w.value(&format!("{}/State", vm("bad"))), "10");
    assert_eq!(w.op("bad", "Start"), 1403);
    assert_eq!(w.op("bad", "Suspend"), 1403);

    // Read-only nodes: 405; the unlock code cannot be read back: 405.
    let replies = w.run(vec![
        replace(&format!("{}/State", vm("bad")), "int", "30"),
        replace(&format!("{}/ID", vm("bad")), "chr", "x"),
        replace("./VirMO/Version", "chr", "2.0"),
        get(&format!("{}/Lock/UserUnlockCode", vm("bad"))),
        replace(&format!("{}/Resources/VCPUs", vm("bad")), "int", "0"),
    ]);
    assert_eq!(
        replies.iter().map(|r| r.status).collect::<Vec<_>>(),
        [405, 405, 405, 405, 400]
    );

    // Hash mismatch: 1402, nothing left in downloads, images or the VM's folder.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let replies = w.run(vec![
        replace(&format!("{}/Image/PkgURL", vm("bad")), "chr", &url),
        replace(&format!("{}/Image/PkgHash", vm("bad")), "chr", &wrong),
    ]);
    assert!(replies.iter().all(|r| r.status == 200));
    assert_eq!(w.op("bad", "Provision"), 1402);
    assert_eq!(w.value(&format!("{}/State", vm("bad"))), "50");
    assert!(dir_entries(&w.data().join("downloads")).is_empty());
    assert!(dir_entries(&w.data().join("images")).is_empty());
    assert!(dir_entries(&w.data().join("vms")).is_empty());

    // A corrupt bundle whose hash matches its (corrupt) bytes: 1402 as well.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let n = bytes.len();
    bytes[n - 2048] ^= 0xff; // inside the kernel's content
    let corrupt = w.files_dir().join("corrupt.tar");
    std::fs::write(&corrupt, &bytes).unwrap();
    let corrupt_hash = format!(
        "sha256:{}",
        virmo_agent::bundle::hex(&virmo_agent::bundle::sha256_file(&corrupt).unwrap())
    );
    w.run(vec![
        replace(
            &format!("{}/Image/PkgURL", vm("bad")),
            "chr",
            &w.files.url("corrupt.tar"),
        ),
        replace(
            &format!("{}/Image/PkgHash", vm("bad")),
            "chr",
            &corrupt_hash,
        ),
    ]);
    assert_eq!(w.op("bad", "Provision"), 1402);
    assert!(dir_entries(&w.data().join("downloads")).is_empty());
    assert!(dir_entries(&w.data().join("images")).is_empty());
    assert!(dir_entries(&w.data().join("vms")).is_empty());

    // A download that cannot succeed: 1501.
    w.run(vec![replace(
        &format!("{}/Image/PkgURL", vm("bad")),
        "chr",
        &w.files.url("missing.tar"),
    )]);
    assert_eq!(w.op("bad", "Provision"), 1501);

    // More memory than the device has, or more disk than its file system holds: 1405 from
    // Provision, with nothing left in downloads, images or the VM's folder.
    let max_storage: u64 = w
        .value("./VirMO/Capabilities/MaxStorageMiB")
        .parse()
        .unwrap();
    assert_eq!(max_storage, 1 << 30);
    for (name, memory, storage) in [
        ("big-memory", max_memory + 1, 4),
        ("big-disk", 64, max_storage),
    ] {
        let (bundle, hash) = dummy_bundle_sized(&w.files_dir(), name, memory, storage);
        w.run(vec![
            replace(
                &format!("{}/Image/PkgURL", vm("bad")),
                "chr",
                &w.files.url(bundle.file_name().unwrap().to_str().unwrap()),
            ),
            replace(&format!("{}/Image/PkgHash", vm("bad")), "chr", &hash),
        ]);
        assert_eq!(w.op("bad", "Provision"), 1405, "{name}");
        assert_eq!(w.value(&format!("{}/State", vm("bad"))), "50");
        for folder in ["downloads", "images", "vms"] {
            assert!(
                dir_entries(&w.data().join(folder)).is_empty(),
                "{name}: {folder} left {:?}",
                dir_entries(&w.data().join(folder))
            );
        }
    }

    // The good bundle provisions; not enough memory to start it: 1405.
    w.run(vec![
        replace(&format!("{}/Image/PkgURL", vm("bad")), "chr", &url),
        replace(&format!("{}/Image/PkgHash", vm("bad")), "chr", &hash),
    ]);
    assert_eq!(w.op("bad", "Provision"), 1200);
    assert_eq!(w.value(&format!("{}/State", vm("bad"))), "20");
    assert_eq!(w.value(&format!("{}/Image/PkgVersion", vm("bad"))), "0.1");
    let replies = w.run(vec![replace(
        &format!("{}/Resources/MemoryMiB", vm("bad")),
        "int",
        &max_memory.to_string(),
    )]);
    assert_eq!(replies[0].status, 200);
    assert_eq!(w.op("bad", "Start"), 1405);
    assert_eq!(w.value(&format!("{}/State", vm("bad"))), "20");
    // Nothing of a start is left: no console or VMM log, no API socket, no jail.
    let id_bad = w.vm_id("bad");
    let mut left = dir_entries(&w.data().join("vms").join(&id_bad));
    left.sort();
    assert_eq!(left, ["disk.img", "vsock_1024"], "provisioned files only");
    assert!(dir_entries(&w.data().join("run")).is_empty());
    assert!(dir_entries(&w.data().join("jail")).is_empty());
    // Storage only grows.
    let replies = w.run(vec![
        replace(&format!("{}/Resources/StorageMiB", vm("bad")), "int", "2"),
        replace(&format!("{}/Resources/StorageMiB", vm("bad")), "int", "8"),
    ]);
    assert_eq!(replies[0].status, 403);
    assert_eq!(replies[1].status, 200);

    // A locked VM refuses local actions with 1407.
    assert_eq!(w.op("bad", "PartiallyLock"), 1200);
    assert_eq!(w.value(&format!("{}/Lock/State", vm("bad"))), "20");
    let refused = w.agent.local(Request::Start { vm: "bad".into() });
    assert_eq!((refused.ok, refused.code), (false, Some(1407)));
    let refused = w.agent.local(Request::Console { vm: "bad".into() });
    assert_eq!((refused.ok, refused.code), (false, Some(1407)));
    // ... and the user cannot unlock it without the server's say-so.
    let refused = w.agent.local(Request::Unlock {
        vm: "bad".into(),
        code: "1234".into(),
    });
    assert_eq!((refused.ok, refused.code), (false, Some(1407)));

    // An Atomic that fails is rolled back: the VM added in it is gone again.
    let replies = w.run(vec![atomic(vec![
        add_node(&vm("temp")),
        replace(&format!("{}/Name", vm("temp")), "chr", "Temporary"),
        replace(&format!("{}/State", vm("temp")), "int", "30"),
    ])]);
    assert_eq!(replies[0].status, 507, "{replies:?}");
    assert_eq!(w.run(vec![get(&vm("temp"))])[0].status, 404);

    // DM Delete of the VM: 200, the node and every file gone.
    let replies = w.run(vec![delete(&vm("bad"))]);
    assert_eq!(replies[0].status, 200);
    wait_until(Duration::from_secs(30), "the VM's files removed", || {
        dir_entries(&w.data().join("vms")).is_empty()
            && dir_entries(&w.data().join("images")).is_empty()
    });
    assert_eq!(w.run(vec![get(&vm("bad"))])[0].status, 404);
    let listed = w.agent.local(Request::List);
    assert!(listed.vms.unwrap().is_empty());
}

/// The guest bundle (counter scenario), served by the test's file server.
fn counter_bundle(w: &World, env: &TestEnv) -> (String, String) {
    let (bundle, hash) = guest_bundle(env, &w.files_dir(), "counter", "1.0");
    (
        w.files.url(bundle.file_name().unwrap().to_str().unwrap()),
        hash,
    )
}

#[test]
fn agent_drives_two_vms_through_their_whole_life() {
    let env = TestEnv::get();
    let w = World::new("agent-life", env.vmm.clone(), "");
    let (url, hash) = counter_bundle(&w, &env);
    w.add("a", &url, &hash);
    // The second VM is added in one Atomic.
    let replies = w.run(vec![atomic(vec![
        add_node(&vm("b")),
        replace(&format!("{}/Image/PkgURL", vm("b")), "chr", &url),
        replace(&format!("{}/Image/PkgHash", vm("b")), "chr", &hash),
        replace(&format!("{}/Name", vm("b")), "chr", "Work profile"),
    ])]);
    assert_eq!(replies[0].status, 200, "{replies:?}");
    assert_eq!(w.value(&format!("{}/Name", vm("b"))), "Work profile");

    // Provision both (one download serves both: the image is shared).
    assert_eq!(w.op("a", "Provision"), 1200);
    assert_eq!(w.op("b", "Provision"), 1200);
    for node in ["a", "b"] {
        assert_eq!(w.value(&format!("{}/State", vm(node))), "20");
        assert_eq!(w.value(&format!("{}/Image/PkgVersion", vm(node))), "1.0");
    }
    assert_eq!(dir_entries(&w.data().join("images")).len(), 1);
    let (id_a, id_b) = (w.vm_id("a"), w.vm_id("b"));
    assert_ne!(id_a, id_b);
    assert_eq!(
        w.value(&format!("{}/Peripherals", vm("a"))),
        "disk0/usb0/rng0/vsock0"
    );

    // Start both; read State and Resources.
    assert_eq!(w.op("a", "Start"), 1200);
    assert_eq!(w.op("b", "Start"), 1200);
    let replies = w.run(vec![
        get(&format!("{}/State", vm("a"))),
        get(&format!("{}/Resources/VCPUs", vm("a"))),
        get(&format!("{}/Resources/MemoryMiB", vm("a"))),
        get(&format!("{}/Resources/StorageMiB", vm("a"))),
        get(&format!("{}/State", vm("b"))),
        get(&format!("{}/Ext/DevInfo/DevId", vm("b"))),
    ]);
    let values: Vec<&str> = replies.iter().map(|r| r.value()).collect();
    assert_eq!(values, ["30", "1", "128", "16", "30", id_b.as_str()]);
    let info = w.vmm_client(&id_a).info().expect("a's VMM answers");
    assert_eq!((info.vcpus, info.memory_mib), (1, 128));
    wait_until(Duration::from_secs(90), "a's guest counting", || {
        last_counter(&w.console_log(&id_a)).is_some_and(|n| n >= 5)
    });

    // Gate a peripheral: the VMM's live policy changes.
    let replies = w.run(vec![
        replace(
            &format!("{}/Peripherals/usb0/Allowed", vm("a")),
            "bool",
            "false",
        ),
        get(&format!("{}/Peripherals/usb0/Allowed", vm("a"))),
        get(&format!("{}/Peripherals/usb0/Class", vm("a"))),
    ]);
    assert_eq!(replies[0].status, 200);
    assert_eq!(
        (replies[1].value(), replies[2].value()),
        ("false", "removable-storage")
    );
    let devices = w.vmm_client(&id_a).devices().unwrap();
    let usb = devices.iter().find(|d| d.id == "usb0").unwrap();
    assert!(!usb.allowed, "{devices:?}");

    // Suspend a: no VMM process left; resume: the guest's counter continues.
    let pid_a = info.pid;
    assert_eq!(w.op("a", "Suspend"), 1200);
    assert_eq!(w.value(&format!("{}/State", vm("a"))), "40");
    assert!(!alive(pid_a), "the VMM is gone");
    let before = last_counter(&w.console_log(&id_a)).unwrap();
    assert_eq!(w.op("a", "Resume"), 1200);
    assert_eq!(w.value(&format!("{}/State", vm("a"))), "30");
    wait_until(Duration::from_secs(60), "the counter continuing", || {
        last_counter(&w.console_log(&id_a)).is_some_and(|n| n > before + 3)
    });
    let log = std::fs::read_to_string(w.console_log(&id_a)).unwrap();
    let after_resume: Vec<u64> = log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("VIRMO-COUNTER=")?.parse().ok())
        .skip_while(|n| *n <= before)
        .collect();
    assert!(
        after_resume.first().is_some_and(|n| *n == before + 1),
        "the counter continues where it stopped ({before}): {after_resume:?}"
    );
    // The restored VM kept its peripheral policy.
    let devices = w.vmm_client(&id_a).devices().unwrap();
    assert!(!devices.iter().find(|d| d.id == "usb0").unwrap().allowed);

    // Lock a fully: paused, local access refused; the user unlocks with the code.
    let replies = w.run(vec![
        replace(
            &format!("{}/Lock/UserUnlockAllowed", vm("a")),
            "bool",
            "true",
        ),
        replace(&format!("{}/Lock/UserUnlockCode", vm("a")), "chr", "2468"),
    ]);
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    assert_eq!(w.op("a", "FullyLock"), 1200);
    assert_eq!(w.value(&format!("{}/Lock/State", vm("a"))), "30");
    assert_eq!(
        w.vmm_client(&id_a).info().unwrap().state,
        vmm::api::types::RunState::Paused
    );
    let refused = w.agent.local(Request::Console { vm: "a".into() });
    assert_eq!((refused.ok, refused.code), (false, Some(1407)));
    let refused = w.agent.local(Request::Stop { vm: "a".into() });
    assert_eq!((refused.ok, refused.code), (false, Some(1407)));
    let wrong = w.agent.local(Request::Unlock {
        vm: "a".into(),
        code: "1111".into(),
    });
    assert_eq!((wrong.ok, wrong.code), (false, Some(1407)));
    let unlocked = w.agent.local(Request::Unlock {
        vm: "a".into(),
        code: "2468".into(),
    });
    assert!(unlocked.ok, "{unlocked:?}");
    let alert = w.server.wait_alert(OP_TIMEOUT, |a| {
        a.alert_type == "urn:oma:at:virmo:1.0:UserUnlocked"
    });
    assert_eq!(
        alert.alert.source.as_deref(),
        Some(format!("{}/Lock/State", vm("a")).as_str())
    );
    assert_eq!(w.value(&format!("{}/Lock/State", vm("a"))), "10");
    assert_eq!(
        w.vmm_client(&id_a).info().unwrap().state,
        vmm::api::types::RunState::Running
    );
    // Partially locked: runs, but the console is refused; the server unlocks.
    assert_eq!(w.op("b", "PartiallyLock"), 1200);
    let id_b_state = w.vmm_client(&id_b).info().unwrap().state;
    assert_eq!(id_b_state, vmm::api::types::RunState::Running);
    let refused = w.agent.local(Request::Console { vm: "b".into() });
    assert_eq!((refused.ok, refused.code), (false, Some(1407)));
    assert_eq!(w.op("b", "Unlock"), 1200);
    let (attached, mut console) = virmo_agent::local::client::request(
        &w.agent.local_socket,
        &Request::Console { vm: "b".into() },
    )
    .unwrap();
    assert!(attached.ok, "{attached:?}");
    let mut buf = [0u8; 4096];
    let n = std::io::Read::read(&mut console, &mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("VIRMO-COUNTER="));
    drop(console);

    // CPU share, applied live through the cgroup.
    let replies = w.run(vec![
        replace(&format!("{}/Resources/CPUQuota", vm("b")), "int", "50"),
        get(&format!("{}/Resources/CPUQuota", vm("b"))),
    ]);
    assert_eq!(replies[0].status, 200, "{replies:?}");
    assert_eq!(replies[1].value(), "50");
    {
        let mount = cgroup_mount().expect("a cgroup file system (the test mounts cgroup2)");
        let dir = mount.join("virmo-test").join(format!("vm-{id_b}"));
        let pid_b = w.vmm_client(&id_b).info().unwrap().pid;
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        assert!(
            procs.lines().any(|l| l.trim() == pid_b.to_string()),
            "{procs}"
        );
        let quota = std::fs::read_to_string(dir.join("cpu.max"))
            .or_else(|_| std::fs::read_to_string(dir.join("cpu.cfs_quota_us")))
            .unwrap();
        assert!(quota.starts_with("50000"), "{quota}");
    }

    // Stop b (graceful); new vCPUs and memory take effect at its next start.
    let pid_b = w.vmm_client(&id_b).info().unwrap().pid;
    let replies = w.run(vec![
        replace(&format!("{}/Resources/VCPUs", vm("b")), "int", "2"),
        replace(&format!("{}/Resources/MemoryMiB", vm("b")), "int", "192"),
        replace(&format!("{}/DataSharing/Allowed", vm("b")), "bool", "true"),
        replace(&format!("{}/DataSharing/Peers", vm("b")), "chr", &id_a),
    ]);
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    assert_eq!(
        w.vmm_client(&id_b).info().unwrap().vcpus,
        1,
        "not before the next start"
    );
    assert_eq!(w.op("b", "Stop"), 1200);
    assert_eq!(w.value(&format!("{}/State", vm("b"))), "20");
    assert!(!alive(pid_b));
    assert_eq!(w.op("b", "Start"), 1200);
    let info = w.vmm_client(&id_b).info().unwrap();
    assert_eq!((info.vcpus, info.memory_mib), (2, 192));
    assert_eq!(w.value(&format!("{}/DataSharing/Peers", vm("b"))), id_a);
    assert_eq!(w.op("b", "Stop"), 1200);

    // Delete a (Exec) and b (DM Delete).
    assert_eq!(w.op("a", "Delete"), 1200);
    let replies = w.run(vec![delete(&vm("b"))]);
    assert_eq!(replies[0].status, 200);
    wait_until(Duration::from_secs(60), "every file removed", || {
        dir_entries(&w.data().join("vms")).is_empty()
            && dir_entries(&w.data().join("images")).is_empty()
            && dir_entries(&w.data().join("run")).is_empty()
    });
    let replies = w.run(vec![get(&vm("a")), get(&vm("b")), get("./VirMO/VM")]);
    assert_eq!((replies[0].status, replies[1].status), (404, 404));
    assert_eq!(replies[2].value(), "");

    // Every OperationComplete carried its Exec's correlator and a success (but the refusals
    // checked above).
    for received in w.server.alerts() {
        if received.alert.alert_type == "urn:oma:at:virmo:1.0:OperationComplete" {
            assert!(received.alert.correlator.is_some());
        }
    }
    assert!(
        !w.server
            .alerts()
            .iter()
            .any(|r| r.alert.alert_type == "urn:oma:at:virmo:1.0:StateChanged"),
        "no VM changed state on its own"
    );
}

/// Execs `op` and kills the agent as soon as the Exec is accepted (the operation is running).
fn exec_then_kill(w: &mut World, node: &str, op: &str, correlator: &str) {
    let replies = w.run(vec![exec(
        &format!("{}/Operations/{op}", vm(node)),
        correlator,
    )]);
    assert_eq!(replies[0].status, 202);
    w.agent.kill();
}

/// Starts the agent again on the same data directory.
fn restart(w: &mut World) {
    let setup = w.agent.setup.clone();
    w.agent = AgentProcess::start(&setup);
}

#[test]
fn agent_killed_mid_operation_leaves_every_vm_in_a_true_state() {
    let env = TestEnv::get();
    let mut w = World::new("agent-restart", env.vmm.clone(), "");
    let (url, hash) = counter_bundle(&w, &env);
    w.add("r", &url, &hash);

    // Killed while downloading: the new agent resumes the download (a Range request) and
    // reports the original Exec's outcome.
    w.files.set_delay(Duration::from_millis(30));
    let replies = w.run(vec![exec(
        &format!("{}/Operations/Provision", vm("r")),
        "prov",
    )]);
    assert_eq!(replies[0].status, 202);
    let downloads = w.data().join("downloads");
    wait_until(Duration::from_secs(60), "a partial download", || {
        std::fs::read_dir(&downloads)
            .map(|d| {
                d.flatten()
                    .any(|e| e.metadata().is_ok_and(|m| m.len() > 256 * 1024))
            })
            .unwrap_or(false)
    });
    w.agent.kill();
    w.files.set_delay(Duration::ZERO);
    let ranged_before = w.files.ranged.load(std::sync::atomic::Ordering::SeqCst);
    restart(&mut w);
    assert_eq!(w.server.outcome("prov", OP_TIMEOUT), 1200);
    assert!(
        w.files.ranged.load(std::sync::atomic::Ordering::SeqCst) > ranged_before,
        "the download was resumed, not restarted"
    );
    assert_eq!(w.value(&format!("{}/State", vm("r"))), "20");
    assert!(dir_entries(&downloads).is_empty());
    let id = w.vm_id("r");

    // Killed while the VM runs: the VMM outlives the agent and is re-adopted.
    assert_eq!(w.op("r", "Start"), 1200);
    let pid = w.vmm_client(&id).info().unwrap().pid;
    wait_until(Duration::from_secs(90), "the guest counting", || {
        last_counter(&w.console_log(&id)).is_some()
    });
    w.agent.kill();
    std::thread::sleep(Duration::from_secs(1));
    assert!(alive(pid), "the VMM outlived the agent");
    restart(&mut w);
    assert_eq!(w.value(&format!("{}/State", vm("r"))), "30");
    assert_eq!(w.vmm_client(&id).info().unwrap().pid, pid, "the same VMM");
    let seen = last_counter(&w.console_log(&id)).unwrap();
    wait_until(Duration::from_secs(30), "the counter going on", || {
        last_counter(&w.console_log(&id)).is_some_and(|n| n > seen)
    });
    // The re-adopted VMM is watched: Stop works on it.
    assert_eq!(w.op("r", "Stop"), 1200);
    assert!(!alive(pid));
    // Killed in the middle of a start: one VMM, adopted or started by the new agent.
    exec_then_kill(&mut w, "r", "Start", "start");
    restart(&mut w);
    assert_eq!(w.server.outcome("start", OP_TIMEOUT), 1200);
    assert_eq!(w.value(&format!("{}/State", vm("r"))), "30");
    assert_eq!(vmm_processes(&w.data()).len(), 1, "no orphan VMM");
    wait_until(Duration::from_secs(90), "the guest counting again", || {
        last_counter(&w.console_log(&id)).is_some()
    });

    // Killed in the middle of a suspend: the new agent finishes it and reports it.
    exec_then_kill(&mut w, "r", "Suspend", "susp");
    restart(&mut w);
    assert_eq!(w.server.outcome("susp", OP_TIMEOUT), 1200);
    assert_eq!(w.value(&format!("{}/State", vm("r"))), "40");
    assert!(w.vmm_client(&id).info().is_err(), "no VMM while suspended");
    let before = last_counter(&w.console_log(&id)).unwrap();

    // Killed in the middle of a resume.
    exec_then_kill(&mut w, "r", "Resume", "res");
    restart(&mut w);
    assert_eq!(w.server.outcome("res", OP_TIMEOUT), 1200);
    assert_eq!(w.value(&format!("{}/State", vm("r"))), "30");
    wait_until(Duration::from_secs(60), "the counter after resume", || {
        last_counter(&w.console_log(&id)).is_some_and(|n| n > before)
    });

    // Killed in the middle of a delete.
    exec_then_kill(&mut w, "r", "Delete", "del");
    restart(&mut w);
    assert_eq!(w.server.outcome("del", OP_TIMEOUT), 1200);
    assert_eq!(w.run(vec![get(&vm("r"))])[0].status, 404);
    assert!(dir_entries(&w.data().join("vms")).is_empty());
    assert!(dir_entries(&w.data().join("images")).is_empty());
    assert!(vmm_processes(&w.data()).is_empty(), "no orphan VMM");
    // Each correlator was reported exactly once.
    for correlator in ["prov", "start", "susp", "res", "del"] {
        let n = w
            .server
            .alerts()
            .iter()
            .filter(|r| r.alert.correlator.as_deref() == Some(correlator))
            .count();
        assert_eq!(n, 1, "{correlator}");
    }
}

#[test]
fn agent_reports_guests_that_stop_on_their_own() {
    let env = TestEnv::get();
    let w = World::new("agent-events", env.vmm.clone(), "");
    for (node, scenario, state) in [("off", "poweroff", "20"), ("crash", "panic", "50")] {
        let (bundle, hash) = guest_bundle(&env, &w.files_dir(), scenario, "1");
        let url = w.files.url(bundle.file_name().unwrap().to_str().unwrap());
        w.add(node, &url, &hash);
        assert_eq!(w.op(node, "Provision"), 1200);
        assert_eq!(w.op(node, "Start"), 1200);
        let source = format!("{}/State", vm(node));
        let alert = w.server.wait_alert(OP_TIMEOUT, |a| {
            a.alert_type == "urn:oma:at:virmo:1.0:StateChanged"
                && a.source.as_deref() == Some(source.as_str())
        });
        assert_eq!(alert.data(), state, "{node}");
        assert_eq!(w.value(&source), state);
    }
    // A VM that stopped can start again.
    assert_eq!(w.op("off", "Start"), 1200);
}

/// A firmware bundle: `kernel` and the test initramfs, version `version`.
fn firmware_bundle(w: &World, env: &TestEnv, kernel: &Path, version: &str) -> String {
    let spec = virmo_agent::bundle::create::BundleSpec {
        name: "test-kernel".into(),
        kernel: kernel.to_path_buf(),
        cmdline: String::new(),
        ..guest_spec(env, "counter", version)
    };
    let name = format!("firmware-{version}.tar");
    write_spec(&spec, &w.files_dir(), &name);
    w.files.url(&name)
}

#[test]
fn agent_applies_vm_firmware_and_rolls_back_one_that_does_not_boot() {
    let env = TestEnv::get();
    let w = World::new("agent-firmware", env.vmm.clone(), "boot_check_secs = 60");
    let (url, hash) = counter_bundle(&w, &env);
    w.add("f", &url, &hash);
    assert_eq!(w.op("f", "Provision"), 1200);
    assert_eq!(w.op("f", "Start"), 1200);
    let id = w.vm_id("f");
    let fumo = "org.openmobilealliance.dm.firmwareupdate.downloadandupdate";
    let fw = |leaf: &str| format!("{}/Firmware/{leaf}", vm("f"));

    // A new kernel that boots: applied.
    let good = firmware_bundle(&w, &env, &env.bzimage(), "2.0");
    let replies = w.run(vec![
        replace(&fw("DownloadAndUpdate/PkgURL"), "chr", &good),
        exec(&fw("DownloadAndUpdate"), "fw-good"),
    ]);
    assert_eq!((replies[0].status, replies[1].status), (200, 202));
    let alert = w
        .server
        .wait_alert(OP_TIMEOUT, |a| a.correlator.as_deref() == Some("fw-good"));
    assert_eq!(
        (alert.alert.alert_type.as_str(), alert.data().as_str()),
        (fumo, "200")
    );
    assert_eq!(w.value(&fw("State")), "100");
    assert_eq!(w.value(&format!("{}/Ext/DevDetail/FwV", vm("f"))), "2.0");
    assert_eq!(w.value(&format!("{}/State", vm("f"))), "30");
    wait_until(
        Duration::from_secs(90),
        "the guest counting on the new kernel",
        || last_counter(&w.console_log(&id)).is_some(),
    );

    // A kernel that does not boot: rolled back, the VM runs its previous kernel again.
    let garbage = w.files_dir().join("garbage-kernel");
    std::fs::write(&garbage, vec![0xcc; 4096]).unwrap();
    let bad = firmware_bundle(&w, &env, &garbage, "3.0");
    let replies = w.run(vec![
        replace(&fw("DownloadAndUpdate/PkgURL"), "chr", &bad),
        exec(&fw("DownloadAndUpdate"), "fw-bad"),
    ]);
    assert_eq!(replies[1].status, 202);
    let alert = w
        .server
        .wait_alert(OP_TIMEOUT, |a| a.correlator.as_deref() == Some("fw-bad"));
    assert_eq!(
        (alert.alert.alert_type.as_str(), alert.data().as_str()),
        (fumo, "410")
    );
    assert_eq!(w.value(&fw("State")), "70");
    assert_eq!(w.value(&format!("{}/Ext/DevDetail/FwV", vm("f"))), "2.0");
    assert_eq!(w.value(&format!("{}/State", vm("f"))), "30");
    wait_until(
        Duration::from_secs(90),
        "the guest counting after the rollback",
        || last_counter(&w.console_log(&id)).is_some(),
    );

    // Download alone, then Update: the same good kernel, version 2.1, on a stopped VM (booted
    // for the check and stopped again).
    assert_eq!(w.op("f", "Stop"), 1200);
    let again = firmware_bundle(&w, &env, &env.bzimage(), "2.1");
    let replies = w.run(vec![
        replace(&fw("Download/PkgURL"), "chr", &again),
        exec(&fw("Download"), "fw-dl"),
    ]);
    assert_eq!(replies[1].status, 202);
    let alert = w
        .server
        .wait_alert(OP_TIMEOUT, |a| a.correlator.as_deref() == Some("fw-dl"));
    assert_eq!(alert.data(), "200");
    assert_eq!(w.value(&fw("State")), "40");
    assert_eq!(w.value(&fw("PkgVersion")), "2.1");
    let replies = w.run(vec![exec(&fw("Update"), "fw-up")]);
    assert_eq!(replies[0].status, 202);
    let alert = w
        .server
        .wait_alert(OP_TIMEOUT, |a| a.correlator.as_deref() == Some("fw-up"));
    assert_eq!(
        (alert.alert.alert_type.as_str(), alert.data().as_str()),
        ("org.openmobilealliance.dm.firmwareupdate.update", "200")
    );
    assert_eq!(w.value(&format!("{}/Ext/DevDetail/FwV", vm("f"))), "2.1");
    assert_eq!(w.value(&format!("{}/State", vm("f"))), "20");
}

#[test]
fn agent_keeps_authenticating_when_nonces_get_lost() {
    use virmo_agent::store::Store;
    let _ = agent_bin();
    let mut w = World::new("agent-nonces", PathBuf::from("/nonexistent/vmm"), "");
    assert_eq!(w.value("./VirMO/Version"), "1.0");
    // The agent stores the nonces after each server message, before answering it: a crash
    // can at worst lose the NextNonce the server just gave it (never the one it gave the
    // server, which only travels in its answer). Simulate that loss.
    w.agent.kill();
    {
        let store = virmo_agent::store::SqliteStore::open(&w.data().join("agent.db")).unwrap();
        let mut account = store.account().unwrap().unwrap();
        account.client_nonce = b"lost".to_vec();
        store.save_account(&account).unwrap();
    }
    restart(&mut w);
    // The server challenges the device once; the session goes on.
    assert_eq!(w.value("./VirMO/Version"), "1.0");
    assert_eq!(w.value("./VirMO/Capabilities/MaxVMs"), "256");
    // Sessions in which the server has nothing to send end with its package 2: the nonce the
    // device issues in its answer never reaches the server. Two in a row (two restarts), then
    // a session with commands: the device still accepts the server's credentials.
    for _ in 0..2 {
        w.agent.kill();
        let sessions = w.server.sessions();
        restart(&mut w);
        wait_until(Duration::from_secs(30), "the agent's session", || {
            w.server.sessions() > sessions
        });
    }
    assert_eq!(w.value("./VirMO/Version"), "1.0");
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn millis(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Queues an Exec, notifies the agent, and returns the time from the notification to the
/// OperationComplete's arrival (the server's view of "Exec → OperationComplete").
fn timed_op(w: &World, node: &str, op: &str, correlator: &str) -> (Duration, u16) {
    let ids = w.server.queue(
        DEVICE_ID,
        vec![exec(&format!("{}/Operations/{op}", vm(node)), correlator)],
    );
    let sent = std::time::Instant::now();
    w.server.notify(DEVICE_ID, w.agent.pkg0);
    let replies = w.server.wait_replies(&ids, OP_TIMEOUT);
    assert_eq!(replies[0].status, 202);
    let alert = w
        .server
        .wait_alert(OP_TIMEOUT, |a| a.correlator.as_deref() == Some(correlator));
    (alert.at.duration_since(sent), alert.data().parse().unwrap())
}

/// The benchmark of `docs/virmo-mo.md`, "Measured": Exec → OperationComplete medians for
/// Start, Suspend and Resume, and how many VMs one agent manages at once with its memory per
/// VM. `VIRMO_BENCH_ROUNDS` (default 7) and `VIRMO_BENCH_VMS` (default 50).
#[test]
#[ignore = "a benchmark: run it with --ignored in the runner"]
fn agent_bench() {
    let env = TestEnv::get();
    let rounds: usize = std::env::var("VIRMO_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let vms: usize = std::env::var("VIRMO_BENCH_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let w = World::new("agent-bench", env.vmm.clone(), "start_timeout_secs = 120");
    let (url, hash) = counter_bundle(&w, &env);
    w.add("lat", &url, &hash);
    assert_eq!(w.op("lat", "Provision"), 1200);
    let id = w.vm_id("lat");
    let (mut start, mut suspend, mut resume) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (t, code) = timed_op(&w, "lat", "Start", &format!("start-{round}"));
        assert_eq!(code, 1200);
        start.push(t);
        let seen = last_counter(&w.console_log(&id));
        wait_until(Duration::from_secs(120), "the guest counting", || {
            last_counter(&w.console_log(&id)).is_some_and(|n| Some(n) != seen && n >= 3)
        });
        let (t, code) = timed_op(&w, "lat", "Suspend", &format!("suspend-{round}"));
        assert_eq!(code, 1200);
        suspend.push(t);
        let (t, code) = timed_op(&w, "lat", "Resume", &format!("resume-{round}"));
        assert_eq!(code, 1200);
        resume.push(t);
        assert_eq!(w.op("lat", "Stop"), 1200);
        eprintln!(
            "bench round {round}: start {} suspend {} resume {}",
            millis(start[round]),
            millis(suspend[round]),
            millis(resume[round])
        );
    }
    eprintln!(
        "bench: Exec -> OperationComplete medians over {rounds} rounds: Start {}, Suspend {}, Resume {} (min-max: start {}-{}, suspend {}-{}, resume {}-{})",
        millis(median(start.clone())),
        millis(median(suspend.clone())),
        millis(median(resume.clone())),
        millis(*start.iter().min().unwrap()),
        millis(*start.iter().max().unwrap()),
        millis(*suspend.iter().min().unwrap()),
        millis(*suspend.iter().max().unwrap()),
        millis(*resume.iter().min().unwrap()),
        millis(*resume.iter().max().unwrap()),
    );
    assert_eq!(w.op("lat", "Delete"), 1200);

    // Many VMs at once: the idle guest, 128 MiB each (64 MiB is too little for the test
    // kernel: it reboots), one shared image.
    let spec = virmo_agent::bundle::create::BundleSpec {
        storage_mib: 1,
        entropy: false,
        removable_mib: 0,
        network: false,
        ..guest_spec(&env, "idle", "1")
    };
    let (_, idle_hash) = write_spec(&spec, &w.files_dir(), "idle.tar");
    let idle_url = w.files.url("idle.tar");
    let rss_empty = w.agent.rss_kib();
    let nodes: Vec<String> = (0..vms).map(|i| format!("vm{i:03}")).collect();
    let mut adds = Vec::new();
    for node in &nodes {
        adds.push(add_node(&vm(node)));
        adds.push(replace(
            &format!("{}/Image/PkgURL", vm(node)),
            "chr",
            &idle_url,
        ));
        adds.push(replace(
            &format!("{}/Image/PkgHash", vm(node)),
            "chr",
            &idle_hash,
        ));
    }
    assert!(w.run(adds).iter().all(|r| r.status == 200));
    let began = std::time::Instant::now();
    let execs = nodes
        .iter()
        .map(|n| {
            exec(
                &format!("{}/Operations/Provision", vm(n)),
                &format!("p-{n}"),
            )
        })
        .collect();
    assert!(w.run(execs).iter().all(|r| r.status == 202));
    for node in &nodes {
        assert_eq!(
            w.server.outcome(&format!("p-{node}"), OP_TIMEOUT),
            1200,
            "{node}"
        );
    }
    eprintln!(
        "bench: {vms} VMs provisioned in {}",
        millis(began.elapsed())
    );
    let rss_stopped = w.agent.rss_kib();
    let began = std::time::Instant::now();
    let execs = nodes
        .iter()
        .map(|n| exec(&format!("{}/Operations/Start", vm(n)), &format!("s-{n}")))
        .collect();
    assert!(w.run(execs).iter().all(|r| r.status == 202));
    let mut started = 0;
    for node in &nodes {
        let code = w
            .server
            .outcome(&format!("s-{node}"), Duration::from_secs(600));
        if code == 1200 {
            started += 1;
        } else {
            eprintln!("bench: {node} did not start: {code}");
        }
    }
    eprintln!(
        "bench: {started} of {vms} VMs started in {}",
        millis(began.elapsed())
    );
    // Let the guests boot, then look at every VM through the tree.
    std::thread::sleep(Duration::from_secs(20));
    let gets = nodes
        .iter()
        .map(|n| get(&format!("{}/State", vm(n))))
        .collect();
    let session = std::time::Instant::now();
    let running = w.run(gets).iter().filter(|r| r.value() == "30").count();
    let get_all = session.elapsed();
    let rss_running = w.agent.rss_kib();
    let threads = std::fs::read_to_string(format!("/proc/{}/status", w.agent.pid()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:").map(|t| t.trim().to_owned()))
        .unwrap_or_default();
    let mem_available = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:").map(|t| t.trim().to_owned()))
        .unwrap_or_default();
    eprintln!(
        "bench: {running} of {vms} VMs running under one agent; agent RSS {} KiB with no VM, {} KiB with {vms} stopped, {} KiB with {running} running: {:.1} KiB per managed VM; {threads} agent threads; a session reading all {vms} States took {}; host MemAvailable {mem_available}",
        rss_empty,
        rss_stopped,
        rss_running,
        (rss_running.saturating_sub(rss_empty)) as f64 / vms as f64,
        millis(get_all),
    );
    assert!(running >= vms * 9 / 10, "{running} of {vms} running");
}

#[test]
fn agent_keeps_authenticating_through_a_storm_of_alerts() {
    let _ = agent_bin();
    // A stand-in for the VMM that fails after a random delay: alerts keep arriving while
    // sessions run, most sessions carry only alerts and end with the server's package 2.
    let scratch = TempDir::new("agent-storm-vmm");
    let fake_vmm = scratch.path().join("vmm");
    std::fs::write(
        &fake_vmm,
        "#!/bin/sh\nd=$(($$ % 17))\nsleep 0.$((d % 10))$((d % 7))\nsleep $((d % 2))\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &fake_vmm,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let w = World::new("agent-storm", fake_vmm, "");
    let (bundle, hash) = dummy_bundle(&w.files_dir(), "storm");
    let url = w.files.url(bundle.file_name().unwrap().to_str().unwrap());
    let n = 30;
    let mut adds = Vec::new();
    for i in 0..n {
        let node = format!("s{i}");
        adds.push(add_node(&vm(&node)));
        adds.push(replace(&format!("{}/Image/PkgURL", vm(&node)), "chr", &url));
        adds.push(replace(
            &format!("{}/Image/PkgHash", vm(&node)),
            "chr",
            &hash,
        ));
    }
    assert!(w.run(adds).iter().all(|r| r.status == 200));
    for round in 0..6 {
        let op = if round == 0 { "Provision" } else { "Start" };
        let execs = (0..n)
            .map(|i| {
                exec(
                    &format!("{}/Operations/{op}", vm(&format!("s{i}"))),
                    &format!("{op}-{round}-{i}"),
                )
            })
            .collect();
        assert!(w.run(execs).iter().all(|r| r.status == 202));
        for i in 0..n {
            let code = w.server.outcome(&format!("{op}-{round}-{i}"), OP_TIMEOUT);
            assert_eq!(code, if round == 0 { 1200 } else { 1500 });
        }
        let gets = (0..n)
            .map(|i| get(&format!("{}/State", vm(&format!("s{i}")))))
            .collect();
        assert!(w.run(gets).iter().all(|r| r.value() == "20"));
    }
}

#[test]
fn agent_keeps_undelivered_alerts_across_restarts() {
    let _ = agent_bin();
    let mut w = World::new("agent-queue", PathBuf::from("/nonexistent/vmm"), "");
    let (bundle, hash) = dummy_bundle(&w.files_dir(), "queue");
    let url = w.files.url(bundle.file_name().unwrap().to_str().unwrap());
    w.add("q", &url, &hash);
    assert_eq!(w.op("q", "Provision"), 1200);
    let replies = w.run(vec![
        replace(
            &format!("{}/Lock/UserUnlockAllowed", vm("q")),
            "bool",
            "true",
        ),
        replace(&format!("{}/Lock/UserUnlockCode", vm("q")), "chr", "1357"),
    ]);
    assert!(replies.iter().all(|r| r.status == 200));
    assert_eq!(w.op("q", "PartiallyLock"), 1200);
    // The server becomes unreachable (the agent is pointed at a closed port).
    w.agent.kill();
    let mut setup = w.agent.setup.clone();
    let good_account = setup.account.clone();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    setup.account = dm_account(
        &format!("http://{}/dm", closed.local_addr().unwrap()),
        &w.server.accounts,
    );
    drop(closed);
    w.agent = AgentProcess::start(&setup);
    // The user unlocks: the UserUnlocked alert cannot be delivered; it waits in the database.
    let unlocked = w.agent.local(Request::Unlock {
        vm: "q".into(),
        code: "1357".into(),
    });
    assert!(unlocked.ok, "{unlocked:?}");
    wait_until(Duration::from_secs(30), "a failed delivery attempt", || {
        w.agent
            .local(Request::Alerts)
            .alerts
            .unwrap_or_default()
            .iter()
            .any(|a| a.alert_type.ends_with("UserUnlocked") && a.attempts >= 1)
    });
    // Killed with the alert undelivered; started again with the server reachable: delivered.
    w.agent.kill();
    setup.account = good_account;
    w.agent = AgentProcess::start(&setup);
    let alert = w.server.wait_alert(OP_TIMEOUT, |a| {
        a.alert_type == "urn:oma:at:virmo:1.0:UserUnlocked"
    });
    assert_eq!(alert.data(), "10");
    wait_until(Duration::from_secs(30), "the queue emptied", || {
        w.agent
            .local(Request::Alerts)
            .alerts
            .is_some_and(|a| a.is_empty())
    });
    assert_eq!(w.value(&format!("{}/Lock/State", vm("q"))), "10");
}
