//! virtio devices seen by a real guest (the stock Debian kernel's virtio_mmio, virtio_blk,
//! virtio_net, virtio_rng drivers, finding the devices through the DSDT), and per-class gating:
//! at boot (`--prohibit CLASS`: the device is not there) and live (the control API's
//! `SetDevicePolicy`: the guest is cut off at once and gets the device back when allowed).
//!
//! The tests live in `mod devices` so that `cargo xtask test devices` selects them.

mod devices {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use virmo_tests::{code, exit_status, Guest, GuestBuilder, TempDir, TestEnv};
    use vmm::api::client::{ClientError, VmmClient};
    use vmm::api::types::{DeviceInfo, DevicePolicy};

    const BOOT: Duration = Duration::from_secs(90);
    /// How long a live policy change may take to show in the guest's loop output.
    const SETTLE: Duration = Duration::from_secs(20);
    const DISK_MIB: u64 = 8;
    const IMAGE_HEAD: &[u8; 16] = b"VIRMO-IMAGE-HEAD";
    const GUEST_MARKER: &[u8] = b"virmo-written-by-guest";
    /// Where disk-rw.sh writes its marker: sector 2048.
    const MARKER_OFFSET: usize = 1 << 20;

    /// A raw disk image of `DISK_MIB` MiB starting with [`IMAGE_HEAD`].
    fn disk_image(dir: &TempDir, name: &str) -> PathBuf {
        let path = dir.path().join(name);
        let mut bytes = vec![0u8; (DISK_MIB << 20) as usize];
        bytes[..IMAGE_HEAD.len()].copy_from_slice(IMAGE_HEAD);
        std::fs::write(&path, bytes).expect("write disk image");
        path
    }

    fn with_cmdline(mut builder: GuestBuilder, extra: &str) -> GuestBuilder {
        builder.cmdline.push(' ');
        builder.cmdline.push_str(extra);
        builder
    }

    fn set_policy(client: &VmmClient, id: &str, allowed: bool) -> DevicePolicy {
        client
            .set_device_policy(id, allowed)
            .unwrap_or_else(|e| panic!("set policy of {id} to {allowed}: {e}"))
    }

    fn device<'a>(list: &'a [DeviceInfo], id: &str) -> &'a DeviceInfo {
        list.iter()
            .find(|d| d.id == id)
            .unwrap_or_else(|| panic!("no device {id} in {list:?}"))
    }

    /// Waits for a line `PREFIX=ok|fail N …` with the given outcome; returns the rest.
    fn wait_outcome(guest: &mut Guest, prefix: &str, outcome: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let rest = guest.try_wait_for(prefix, left).unwrap_or_else(|| {
                panic!(
                    "no {prefix}{outcome} within {timeout:?}; output:\n{}",
                    guest.transcript()
                )
            });
            if let Some(rest) = rest.strip_prefix(outcome) {
                return rest.trim().to_string();
            }
        }
    }

    fn read_at(path: &Path, offset: usize, len: usize) -> Vec<u8> {
        let bytes = std::fs::read(path).expect("read image");
        bytes[offset..offset + len].to_vec()
    }

    #[test]
    fn guest_reads_and_writes_its_disk_and_the_data_is_in_the_image() {
        let env = TestEnv::get();
        let dir = TempDir::new("disk-rw");
        let image = disk_image(&dir, "root.img");
        let mut guest = with_cmdline(env.guest("disk-rw"), "virmo.disk=root")
            .arg("--disk")
            .arg(format!("id=root,path={}", image.display()))
            .spawn();
        let head = guest.wait_for("VIRMO-DISK-HEAD=", BOOT);
        assert_eq!(head.as_bytes(), IMAGE_HEAD, "what the guest read");
        assert_eq!(guest.wait_for("VIRMO-DISK-RO=", BOOT).trim(), "0");
        assert_eq!(guest.wait_for("VIRMO-DISK-WRITE=", BOOT).trim(), "ok");
        assert_eq!(code(guest.wait_exit(BOOT)), exit_status::OK);
        assert_eq!(
            read_at(&image, MARKER_OFFSET, GUEST_MARKER.len()),
            GUEST_MARKER,
            "the guest's write is in the image file"
        );
    }

    #[test]
    fn read_only_disk_refuses_the_guests_writes() {
        let env = TestEnv::get();
        let dir = TempDir::new("disk-ro");
        let image = disk_image(&dir, "ro.img");
        let mut guest = with_cmdline(env.guest("disk-rw"), "virmo.disk=ro0")
            .arg("--disk")
            .arg(format!(
                "id=ro0,path={},class=removable-storage,read-only",
                image.display()
            ))
            .spawn();
        let head = guest.wait_for("VIRMO-DISK-HEAD=", BOOT);
        assert_eq!(head.as_bytes(), IMAGE_HEAD, "a read-only disk reads");
        assert_eq!(guest.wait_for("VIRMO-DISK-RO=", BOOT).trim(), "1");
        assert_eq!(guest.wait_for("VIRMO-DISK-WRITE=", BOOT).trim(), "fail");
        assert_eq!(code(guest.wait_exit(BOOT)), exit_status::OK);
        assert_eq!(
            read_at(&image, MARKER_OFFSET, GUEST_MARKER.len()),
            vec![0u8; GUEST_MARKER.len()],
            "the image is unchanged"
        );
    }

    #[test]
    fn classes_prohibited_at_boot_are_absent_from_the_guest_and_listed_as_not_allowed() {
        let env = TestEnv::get();
        let dir = TempDir::new("prohibit");
        let root = disk_image(&dir, "root.img");
        let usb = disk_image(&dir, "usb.img");
        let mut guest = with_cmdline(env.guest("devices"), "virmo.hold=1")
            .arg("--disk")
            .arg(format!("id=root,path={}", root.display()))
            .arg("--disk")
            .arg(format!(
                "id=usb0,path={},class=removable-storage",
                usb.display()
            ))
            // The tap is never opened: a prohibited device is not created.
            .arg("--net")
            .arg("id=nic0,tap=virmo-absent0")
            .arg("--rng")
            .arg("id=rng0")
            .arg("--prohibit")
            .arg("removable-storage")
            .arg("--prohibit")
            .arg("network")
            .spawn();
        guest.wait_for("VIRMO-GUEST-READY", BOOT);
        let mut seen = Vec::new();
        loop {
            let line = guest
                .try_wait_for("VIRMO-", BOOT)
                .unwrap_or_else(|| panic!("no device list; output:\n{}", guest.transcript()));
            if line.starts_with("DEVICES-END") {
                break;
            }
            seen.push(line);
        }
        let kinds: Vec<&str> = seen
            .iter()
            .filter_map(|l| l.strip_prefix("VIRTIO-DEVICE="))
            .collect();
        assert_eq!(
            kinds,
            ["0x0002", "0x0004"],
            "only the own disk and rng: {seen:?}"
        );
        let disks: Vec<&str> = seen
            .iter()
            .filter_map(|l| l.strip_prefix("DISK="))
            .collect();
        assert_eq!(disks.len(), 1, "{seen:?}");
        assert!(disks[0].contains(" root "), "{seen:?}");

        let client = guest.api_client();
        let list = client.devices().expect("list devices");
        let ids: Vec<&str> = list.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["root", "usb0", "nic0", "rng0"], "config order");
        for (id, allowed) in [
            ("root", true),
            ("usb0", false),
            ("nic0", false),
            ("rng0", true),
        ] {
            assert_eq!(device(&list, id).allowed, allowed, "{id}: {list:?}");
        }
        assert_eq!(device(&list, "usb0").class, "removable-storage");
        assert_eq!(device(&list, "nic0").kind, "net");
        // Prohibiting an absent device again is a no-op; allowing it needs a new boot.
        let again = set_policy(&client, "usb0", false);
        assert!(!again.allowed && !again.changed, "{again:?}");
        match client.set_device_policy("usb0", true) {
            Err(ClientError::Status { status, message }) => {
                assert_eq!(status, 501, "{message}");
                assert!(message.contains("prohibited at boot"), "{message}");
            }
            other => panic!("allowing a device absent since boot: {other:?}"),
        }
        match client.set_device_policy("nope", false) {
            Err(ClientError::Status { status, .. }) => assert_eq!(status, 404),
            other => panic!("unknown device: {other:?}"),
        }
        client.stop().expect("stop");
        assert_eq!(code(guest.wait_exit(BOOT)), exit_status::OK);
    }

    #[test]
    fn prohibiting_removable_storage_live_fails_reads_and_allowing_restores_them() {
        disk_gate("usb0", "removable-storage");
    }

    /// The VM's own disk behaves the same way (whether to cut it is the agent's policy).
    #[test]
    fn prohibiting_the_own_disk_live_fails_reads_and_allowing_restores_them() {
        disk_gate("root", "storage");
    }

    /// A guest reading disk `id` of `class` every 300 ms, cut off and given the disk back.
    fn disk_gate(id: &str, class: &str) {
        let env = TestEnv::get();
        let dir = TempDir::new("disk-gate");
        let image = disk_image(&dir, "disk.img");
        let mut guest = with_cmdline(env.guest("read-loop"), &format!("virmo.disk={id}"))
            .arg("--disk")
            .arg(format!("id={id},path={},class={class}", image.display()))
            .spawn();
        let sectors = (DISK_MIB << 20) / 512;
        let ok = wait_outcome(&mut guest, "VIRMO-READ=", "ok", BOOT);
        assert!(ok.ends_with(&format!(" {sectors}")), "size seen: {ok}");
        let client = guest.api_client();

        let cut = set_policy(&client, id, false);
        assert!(!cut.allowed && cut.changed, "{cut:?}");
        let again = set_policy(&client, id, false);
        assert!(!again.allowed && !again.changed, "idempotent: {again:?}");
        let fail = wait_outcome(&mut guest, "VIRMO-READ=", "fail", SETTLE);
        // The medium is gone: the guest resized the disk to 0 sectors.
        wait_outcome(&mut guest, "VIRMO-READ=", "fail", SETTLE);
        let list = client.devices().expect("list");
        assert!(!device(&list, id).allowed);
        assert!(
            guest
                .transcript()
                .lines()
                .any(|l| l.contains("VIRMO-READ=fail") && l.ends_with(" 0")),
            "the guest never saw the disk shrink to 0 sectors (first failure: {fail}); output:\n{}",
            guest.transcript()
        );

        let back = set_policy(&client, id, true);
        assert!(back.allowed && back.changed, "{back:?}");
        let ok = wait_outcome(&mut guest, "VIRMO-READ=", "ok", SETTLE);
        assert!(
            ok.ends_with(&format!(" {sectors}")),
            "size after allow: {ok}"
        );
        client.stop().expect("stop");
        assert_eq!(code(guest.wait_exit(BOOT)), exit_status::OK);
    }

    #[test]
    fn prohibiting_entropy_live_stalls_the_guests_rng_and_allowing_restores_it() {
        let env = TestEnv::get();
        let mut guest = env.guest("rng-loop").arg("--rng").arg("id=rng0").spawn();
        wait_outcome(&mut guest, "VIRMO-RNG=", "ok", BOOT);
        let client = guest.api_client();
        let cut = set_policy(&client, "rng0", false);
        assert!(!cut.allowed && cut.changed, "{cut:?}");
        wait_outcome(&mut guest, "VIRMO-RNG=", "fail", SETTLE);
        // Still stalled a while later: no byte leaks through.
        guest.drain();
        wait_outcome(&mut guest, "VIRMO-RNG=", "fail", SETTLE);
        let back = set_policy(&client, "rng0", true);
        assert!(back.allowed && back.changed, "{back:?}");
        wait_outcome(&mut guest, "VIRMO-RNG=", "ok", SETTLE);
        client.stop().expect("stop");
        assert_eq!(code(guest.wait_exit(BOOT)), exit_status::OK);
    }

    /// The test's own network namespace, on a thread of its own: the VMM started from that
    /// thread creates its tap there, and the host side of the tap is addressed there.
    fn in_private_netns<F: FnOnce() + Send + 'static>(f: F) {
        let outcome = std::thread::spawn(move || {
            // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only this thread (and the
            // processes it starts) into a new network namespace.
            let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                ret,
                0,
                "unshare(CLONE_NEWNET) (needs root): {}",
                std::io::Error::last_os_error()
            );
            f();
        })
        .join();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    fn ip(args: &[&str]) -> bool {
        Command::new("ip")
            .args(args)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Gives the tap (created by the VMM) the host address and brings it up.
    fn address_tap(tap: &str, cidr: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ip(&["addr", "add", cidr, "dev", tap]) {
            assert!(Instant::now() < deadline, "tap {tap} never appeared");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(ip(&["link", "set", tap, "up"]), "ip link set {tap} up");
    }

    /// The guest's received-packet count at the end of a `VIRMO-PING=` line.
    fn rx_packets(rest: &str) -> u64 {
        rest.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no RX count in {rest:?}"))
    }

    /// Whether the guest (192.0.2.2) answers one of three pings from the host end of the tap.
    fn ping_guest() -> bool {
        Command::new("ping")
            .args(["-c", "3", "-W", "1", "192.0.2.2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    #[test]
    fn guest_pings_the_host_over_the_tap_and_the_network_gate_cuts_and_restores_it() {
        let env = TestEnv::get();
        in_private_netns(move || {
            const TAP: &str = "vtap-gate0";
            let mut guest = with_cmdline(
                env.guest("net-loop"),
                "virmo.ip=192.0.2.2/24 virmo.peer=192.0.2.1",
            )
            .arg("--net")
            .arg(format!("id=nic0,tap={TAP},mac=52:54:00:00:02:02"))
            .spawn();
            address_tap(TAP, "192.0.2.1/24");
            wait_outcome(&mut guest, "VIRMO-PING=", "ok", BOOT);
            let client = guest.api_client();

            let cut = set_policy(&client, "nic0", false);
            assert!(!cut.allowed && cut.changed, "{cut:?}");
            wait_outcome(&mut guest, "VIRMO-PING=", "fail", SETTLE);
            let rx_before = rx_packets(&wait_outcome(&mut guest, "VIRMO-PING=", "fail", SETTLE));
            // Nothing passes either way: the host's pings do not reach the guest...
            assert!(
                !ping_guest(),
                "the host reached the guest while it was prohibited"
            );
            // ...and, a few seconds on, no guest ping has passed and the guest received nothing.
            std::thread::sleep(Duration::from_secs(2));
            let during = guest.drain();
            assert!(
                during.iter().all(|l| !l.contains("VIRMO-PING=ok")),
                "a ping passed while prohibited: {during:?}"
            );
            let rx_after = rx_packets(&wait_outcome(&mut guest, "VIRMO-PING=", "fail", SETTLE));
            assert_eq!(
                rx_before, rx_after,
                "the guest received packets while prohibited"
            );
            let list = client.devices().expect("list");
            let nic = device(&list, "nic0");
            assert!(!nic.allowed);
            assert!(
                nic.rejected_requests > 0,
                "the host's frames were dropped and counted: {nic:?}"
            );

            let back = set_policy(&client, "nic0", true);
            assert!(back.allowed && back.changed, "{back:?}");
            wait_outcome(&mut guest, "VIRMO-PING=", "ok", SETTLE);
            assert!(
                ping_guest(),
                "the host cannot reach the guest once allowed again"
            );
            client.stop().expect("stop");
            assert_eq!(code(guest.wait_exit(BOOT)), exit_status::OK);
        });
    }
}
