//! A hostile guest against the VMM's device code (docs/security.md, "Hostile guests"): the
//! guest program `hostile-tool` (guest-images/hostile-tool) writes garbage to every register of
//! every virtio-mmio device, feeds hand-built queues looping, overlapping, out-of-bounds,
//! oversized, zero-length and nested-indirect chains and bogus available indexes, and floods
//! QueueNotify, for several rounds. Meanwhile its VMM must stay up, its API must answer within
//! [`API_BOUND`], its log must stay bounded, a second, normal VM must keep counting at its normal
//! rate, and afterwards every device must still serve a well-formed request.
//!
//! The tests live in `mod hostile` so that `cargo xtask test hostile` selects them.

mod hostile {
    use std::io::Write;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use virmo_tests::{code, exit_status, Guest, TempDir, TestEnv};
    use vmm::api::client::VmmClient;

    const BOOT: Duration = Duration::from_secs(90);
    /// The hostile program's whole run (3 rounds of ~10-20 s in the runner).
    const ATTACK: Duration = Duration::from_secs(240);
    /// What an API request may take while the guest attacks its devices.
    const API_BOUND: Duration = Duration::from_secs(1);
    /// How often the test asks the API.
    const API_PERIOD: Duration = Duration::from_millis(50);
    const ROUNDS: u32 = 3;
    const FLOOD_MS: u32 = 3000;
    /// The hostile VM has 256 MiB; its kernel keeps the first 192 (`mem=`), the program the rest.
    const MEMORY_MIB: u64 = 256;
    const KERNEL_MIB: u64 = 192;
    const IMAGE_HEAD: &[u8; 16] = b"VIRMO-IMAGE-HEAD";

    /// Latencies of one kind of API request.
    #[derive(Default)]
    struct Latencies {
        samples: Vec<Duration>,
        errors: Vec<String>,
    }

    impl Latencies {
        fn percentile(&self, p: f64) -> Duration {
            let mut v = self.samples.clone();
            v.sort();
            v[((v.len() - 1) as f64 * p).round() as usize]
        }

        fn max(&self) -> Duration {
            self.samples.iter().copied().max().unwrap_or_default()
        }

        fn summary(&self) -> String {
            format!(
                "n={} p50={:.1} ms p99={:.1} ms max={:.1} ms errors={}",
                self.samples.len(),
                self.percentile(0.5).as_secs_f64() * 1e3,
                self.percentile(0.99).as_secs_f64() * 1e3,
                self.max().as_secs_f64() * 1e3,
                self.errors.len()
            )
        }
    }

    /// Asks `GET /v1/vm` and `GET /v1/devices` every [`API_PERIOD`] until `stop`; and the
    /// normal VM's `GET /v1/vm` each time, as the control (same runner, no hostile guest).
    fn poll_api(
        client: VmmClient,
        control: VmmClient,
        stop: Arc<AtomicBool>,
    ) -> JoinHandle<[Latencies; 3]> {
        std::thread::spawn(move || {
            let (mut info, mut devices) = (Latencies::default(), Latencies::default());
            let mut normal = Latencies::default();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match control.info() {
                    Ok(_) => normal.samples.push(t.elapsed()),
                    Err(e) => normal.errors.push(e.to_string()),
                }
                let t = Instant::now();
                match client.info() {
                    Ok(_) => info.samples.push(t.elapsed()),
                    Err(e) => info.errors.push(e.to_string()),
                }
                // Listing the devices took each device's lock, which the event loop holds
                // while it works on the hostile queues (now it reads lock-free observers).
                let t = Instant::now();
                match client.devices() {
                    Ok(_) => devices.samples.push(t.elapsed()),
                    Err(e) => devices.errors.push(e.to_string()),
                }
                std::thread::sleep(API_PERIOD);
            }
            [info, devices, normal]
        })
    }

    /// Records `(when, value)` of the normal VM's counter lines until `stop`; gives the guest
    /// back.
    fn watch_counter(
        mut guest: Guest,
        stop: Arc<AtomicBool>,
    ) -> JoinHandle<(Guest, Vec<(Instant, u64)>)> {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some(v) = guest.try_wait_for("VIRMO-COUNTER=", Duration::from_millis(200)) {
                    seen.push((Instant::now(), v.trim().parse().expect("counter value")));
                }
            }
            (guest, seen)
        })
    }

    /// Counter lines per second and the longest gap between two of them.
    fn rate(seen: &[(Instant, u64)]) -> (f64, Duration) {
        let span = seen.last().unwrap().0 - seen.first().unwrap().0;
        let gap = seen
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .max()
            .unwrap_or_default();
        ((seen.len() - 1) as f64 / span.as_secs_f64(), gap)
    }

    /// Starts `spawn` with the calling thread (and so the VMM process it forks, and every
    /// thread of it) on runner CPU `cpu` only; the thread's own affinity is put back after.
    /// The two VMMs get one runner CPU each, as the agent's cgroup CPU quotas would keep them
    /// apart: without that, nothing but the host scheduler stands between a hostile VM's busy
    /// threads (its vCPU and the device event loop it keeps working) and the other VM.
    fn on_cpu<T>(cpu: usize, spawn: impl FnOnce() -> T) -> T {
        let set = |cpus: &[usize]| {
            // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
            let mut mask: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            for &c in cpus {
                // SAFETY: `c` is below CPU_SETSIZE (a test machine has far fewer CPUs).
                unsafe { libc::CPU_SET(c, &mut mask) };
            }
            // SAFETY: `mask` is a valid cpu_set_t of the size given; pid 0 is this thread.
            let rc = unsafe {
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mask)
            };
            assert_eq!(
                rc,
                0,
                "sched_setaffinity: {}",
                std::io::Error::last_os_error()
            );
        };
        let all: Vec<usize> = (0..std::thread::available_parallelism().unwrap().get()).collect();
        set(&[cpu % all.len()]);
        let spawned = spawn();
        set(&all);
        spawned
    }

    fn disk_image(dir: &TempDir) -> PathBuf {
        let path = dir.path().join("hostile.img");
        let mut bytes = vec![0u8; 8 << 20];
        bytes[..IMAGE_HEAD.len()].copy_from_slice(IMAGE_HEAD);
        std::fs::write(&path, bytes).expect("write disk image");
        path
    }

    #[test]
    fn hostile_guest_cannot_crash_or_stall_its_vmm_nor_slow_a_second_vm() {
        let env = TestEnv::get();
        let dir = TempDir::new("hostile");

        // The normal VM, and its counter's rate before any attack.
        let mut normal = on_cpu(0, || env.guest("counter").spawn());
        normal.wait_for("VIRMO-COUNTER=", BOOT);
        let stop_normal = Arc::new(AtomicBool::new(false));
        let baseline = watch_counter(normal, stop_normal.clone());
        std::thread::sleep(Duration::from_secs(5));
        stop_normal.store(true, Ordering::Relaxed);
        let (normal, before) = baseline.join().unwrap();
        let (rate_before, gap_before) = rate(&before);

        // The hostile VM: a disk, an entropy device and a vsock device, none driven by its
        // kernel.
        let image = disk_image(&dir);
        let mut cmdline = env.guest("hostile").cmdline;
        cmdline.push_str(&format!(
            " virmo.skip_modules=virtio_mmio mem={KERNEL_MIB}M virmo.ram_end={:x} \
             virmo.own_base={:x} virmo.rounds={ROUNDS} virmo.flood_ms={FLOOD_MS}",
            MEMORY_MIB << 20,
            KERNEL_MIB << 20
        ));
        let hostile = env
            .guest("hostile")
            .cmdline(cmdline)
            .memory_mib(MEMORY_MIB)
            .arg("--disk")
            .arg(format!("id=root,path={}", image.display()))
            .arg("--rng")
            .arg("id=rng0")
            .arg("--vsock")
            .arg(format!(
                "cid=3,uds={}",
                dir.path().join("hostile.vsock").display()
            ));
        let mut hostile = on_cpu(1, || hostile.spawn());
        // (The API is asked once the guest runs: a debug VMM loading a guest in the runner,
        // while the other VM runs, can take longer than `api_client`'s 10 s to start serving.)
        let devices = hostile.wait_for("HOSTILE-DEVICES ", BOOT);
        let client = hostile.api_client();
        assert!(devices.starts_with("3 "), "{devices}");

        let stop = Arc::new(AtomicBool::new(false));
        let api = poll_api(client.clone(), normal.api_client(), stop.clone());
        let counter = watch_counter(normal, stop.clone());
        let started = Instant::now();
        let mut rounds = Vec::new();
        for round in 1..=ROUNDS {
            let line = hostile.wait_for(&format!("HOSTILE-ROUND {round} "), ATTACK);
            rounds.push(line);
        }
        let mut checks = Vec::new();
        for _ in 0..3 {
            checks.push(hostile.wait_for("HOSTILE-CHECK ", ATTACK));
        }
        let done = hostile.wait_for("HOSTILE-DONE ", ATTACK);
        let attack = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let [info, device_list, control] = api.join().unwrap();
        let (mut normal, during) = counter.join().unwrap();
        let (rate_during, gap_during) = rate(&during);

        // The hostile guest's VMM came through: alive, answering, its devices serving.
        assert!(hostile.is_running(), "{}", hostile.transcript());
        let vm = client.info().expect("GET /v1/vm after the attack");
        assert_eq!(vm.state, vmm::api::types::RunState::Running);
        assert_eq!(
            done.trim(),
            "ok",
            "checks: {checks:?}\n{}",
            hostile.transcript()
        );
        for check in &checks {
            assert!(check.contains(" ok"), "{check}");
        }
        let block = checks.iter().find(|c| c.starts_with("block")).unwrap();
        assert!(
            block.contains(&format!(
                "head={}",
                std::str::from_utf8(IMAGE_HEAD).unwrap()
            )),
            "a read of sector 0 after the attack: {block}"
        );
        // The guest itself goes on (its counter after the tool).
        hostile.wait_for("VIRMO-COUNTER=", BOOT);
        let lines = hostile.transcript_lines();
        let stderr: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("[vmm stderr]"))
            .collect();
        assert!(
            !stderr.iter().any(|l| l.contains("panicked")),
            "{}",
            hostile.transcript()
        );

        let _ = writeln!(
            std::io::stderr(),
            "HOSTILE figures: attack {:.1} s, rounds {rounds:?}\n  GET /v1/vm {}\n  \
             GET /v1/devices {}\n  control: the normal VM's GET /v1/vm {}\n  normal VM counter {:.2}/s before (longest gap {:?}), \
             {:.2}/s during (longest gap {:?})\n  hostile VMM stderr {} lines",
            attack.as_secs_f64(),
            info.summary(),
            device_list.summary(),
            control.summary(),
            rate_before,
            gap_before,
            rate_during,
            gap_during,
            stderr.len()
        );
        // Its API answered throughout, within the bound.
        assert!(info.errors.is_empty(), "{:?}", info.errors);
        assert!(device_list.errors.is_empty(), "{:?}", device_list.errors);
        assert!(info.samples.len() > 20, "{}", info.summary());
        // The bound is on what the hostile guest adds: when the host starves the whole runner
        // (other runners on the same 2 cores), the control VMM's API stalls as long.
        let bound = API_BOUND + control.max();
        for (what, l) in [("GET /v1/vm", &info), ("GET /v1/devices", &device_list)] {
            assert!(
                l.max() < bound,
                "{what} {}; control {}",
                l.summary(),
                control.summary()
            );
        }
        // Its log stayed bounded: at most a burst of guest-error lines a second (plus the
        // lines saying how many were dropped, and start-up).
        let bound = (attack.as_secs() + 1) * 2 * (vmm::devices::virtio::guest_log::BURST + 1) + 20;
        assert!(
            (stderr.len() as u64) < bound,
            "{} stderr lines in {attack:?}",
            stderr.len()
        );

        // The normal VM kept counting at its normal rate, with no stall.
        assert!(
            rate_during > rate_before * 0.5,
            "normal VM counted {rate_during:.2}/s during the attack, {rate_before:.2}/s before"
        );
        // Again beside the control: the runner's own worst stall (its API's) is not the
        // hostile guest's doing.
        let stall = Duration::from_secs(2).max(gap_before * 3) + control.max();
        assert!(
            gap_during < stall,
            "stall of {gap_during:?} (before the attack: {gap_before:?}; control {})",
            control.summary()
        );
        assert!(normal.is_running());

        // Both stop cleanly.
        client.stop().expect("stop the hostile VM");
        assert_eq!(code(hostile.wait_exit(BOOT)), exit_status::OK);
        normal.kill();
    }
}
