//! Start, Resume (a VMM from the image, or `vmm --restore` of the snapshot) and Stop.
//!
//! Start and Resume: `spawn` (start the VMM; its pid is stored with the next step) → `ready`
//! (wait for its API, place it in its cgroup, apply the peripheral policy and the lock).
//! Replaying `spawn` first looks for a VMM already answering on the VM's socket. Stop:
//! `shutdown` (ACPI power button with the deadline, then forced).

use std::time::Duration;

use vmm::api::client::VmmClient;

use super::{JobCtx, Outcome};
use crate::model::{LockState, ResultCode, VmState};
use crate::store::{Peripheral, ProcessRecord, VmRecord};
use crate::supervisor::{meminfo_field, Supervisor};
use crate::vmm_proc::{process_start_time, tap, Launch, VmmDevice, VmmJail, VmmProcess};

pub const FIRST_STEP: &str = "spawn";
pub const STOP_STEP: &str = "shutdown";

/// How long a stopping VMM has to exit after answering.
const EXIT_GRACE: Duration = Duration::from_secs(10);

pub fn start(ctx: &mut JobCtx) -> Outcome {
    bring_up(ctx, false)
}

pub fn resume(ctx: &mut JobCtx) -> Outcome {
    bring_up(ctx, true)
}

/// Whether the host has room for `memory_mib` more (its available memory, less the reserve).
pub fn check_memory(sup: &Supervisor, memory_mib: u64) -> Result<(), Outcome> {
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| meminfo_field(&t, "MemAvailable:"))
        .map_or(u64::MAX, |kib| kib / 1024);
    let needed = memory_mib + sup.config.limits.host_reserve_mib;
    if available < needed {
        return Err(Outcome::failed(
            ResultCode::NO_RESOURCES,
            format!("{needed} MiB needed, {available} MiB available"),
        ));
    }
    Ok(())
}

/// A VMM already running this VM (a replay after a crash right after spawning): one whose API
/// says so, or one started with this VM's API socket that has not bound it yet.
pub fn find_running(ctx: &JobCtx) -> Option<VmmProcess> {
    let paths = ctx.paths();
    if let Some((pid, start_time)) = crate::vmm_proc::find_by_api_socket(&paths.socket) {
        return VmmProcess::adopt(ProcessRecord { pid, start_time }, &paths);
    }
    let info = VmmClient::new(&paths.socket)
        .with_timeouts(Duration::from_millis(300), Duration::from_secs(2))
        .info()
        .ok()?;
    if info.id != ctx.slot.id {
        return None;
    }
    let start_time = process_start_time(info.pid)?;
    VmmProcess::adopt(
        ProcessRecord {
            pid: info.pid,
            start_time,
        },
        &paths,
    )
}

/// The VMM command line of a cold boot of `record`.
pub fn boot_launch(
    ctx: &JobCtx,
    record: &VmRecord,
    peripherals: &[Peripheral],
) -> Result<Launch, Outcome> {
    let image = record.image.installed.as_ref().ok_or_else(|| {
        Outcome::failed(ResultCode::NOT_ALLOWED_IN_STATE, "no image is installed")
    })?;
    let layout = &ctx.sup.layout;
    let boot_dir = match &record.firmware.current {
        Some(firmware) => layout.image(&firmware.digest),
        None => layout.image(&image.digest),
    };
    let manifest_text = std::fs::read_to_string(boot_dir.join(crate::bundle::MANIFEST_NAME))
        .map_err(|e| Outcome::failed(ResultCode::FAILED, format!("the image is missing: {e}")))?;
    let manifest = crate::bundle::Manifest::parse(&manifest_text)
        .map_err(|e| Outcome::failed(ResultCode::CORRUPT, e))?;
    let paths = ctx.paths();
    let devices = peripherals
        .iter()
        .filter_map(|p| match p.class.as_str() {
            "storage" => Some(VmmDevice::Disk {
                id: p.id.clone(),
                path: paths.disk.clone(),
                class: "storage",
            }),
            "removable-storage" => Some(VmmDevice::Disk {
                id: p.id.clone(),
                path: paths.removable.clone(),
                class: "removable-storage",
            }),
            "entropy" => Some(VmmDevice::Rng { id: p.id.clone() }),
            "network" => Some(VmmDevice::Net {
                id: p.id.clone(),
                tap: tap_name(&record.id),
                mac: mac_address(&record.id),
            }),
            crate::supervisor::HOST_CHANNEL => record.cid.map(|cid| VmmDevice::Vsock {
                id: p.id.clone(),
                cid,
                uds: paths.vsock.clone(),
            }),
            _ => None,
        })
        .collect();
    Ok(Launch::Boot {
        kernel: boot_dir.join(&manifest.boot.kernel),
        initramfs: manifest.boot.initramfs.as_ref().map(|i| boot_dir.join(i)),
        cmdline: image.cmdline.clone(),
        vcpus: record.vcpus(),
        memory_mib: record.memory_mib(),
        devices,
    })
}

/// The host's end of a VM's network device: `virmo` and the first 8 hex digits of its UUID
/// (a Linux interface name holds 15 bytes). The agent makes it for a jailed VMM (else the VMM
/// does); what it connects to (a bridge, NAT) is the host's business.
pub fn tap_name(vm_id: &str) -> String {
    let hex: String = vm_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect();
    format!("virmo{hex}")
}

/// A locally administered MAC for a VM's network device, stable for the VM's life: 52:54:00
/// and three bytes of its UUID.
pub fn mac_address(vm_id: &str) -> String {
    let hex: Vec<char> = vm_id.chars().filter(char::is_ascii_hexdigit).collect();
    let byte = |i: usize| {
        hex.get(2 * i..2 * i + 2)
            .map_or("00".into(), String::from_iter)
    };
    format!("52:54:00:{}:{}:{}", byte(0), byte(1), byte(2))
}

/// What the host side needs before the VMM runs `launch`: the sharing broker listening for
/// the VM's host channel, and, when the agent jails its VMMs, the VM's jail (its uid, its
/// folder handed to it, its boot files readable; docs/security.md) and, for a VM with a
/// network device, its tap made persistent and owned by that uid, which the jailed VMM then
/// attaches to without any capability.
fn host_side(ctx: &JobCtx, launch: &Launch, memory_mib: u64) -> Result<Option<VmmJail>, Outcome> {
    if let Err(e) = ctx.sup.serve_sharing(&ctx.slot.id) {
        tracing::warn!(error = %crate::error_chain(&e), "the sharing broker cannot serve the VM");
    }
    let Some(jailer) = &ctx.sup.jailer else {
        return Ok(None);
    };
    let readable: Vec<&std::path::Path> = match launch {
        Launch::Boot {
            kernel, initramfs, ..
        } => std::iter::once(kernel.as_path())
            .chain(initramfs.as_deref())
            .collect(),
        Launch::Restore { .. } => Vec::new(),
    };
    let mut jail = jailer
        .prepare(&ctx.slot.id, &ctx.paths(), &readable, memory_mib)
        .map_err(|e| Outcome::failed(ResultCode::FAILED, crate::error_chain(&e)))?;
    if ctx.with_state(|s| s.peripherals.iter().any(|p| p.class == "network")) {
        let tap = tap_name(&ctx.slot.id);
        tap::create_persistent(&tap, jail.uid, jail.uid)
            .map_err(|e| Outcome::failed(ResultCode::FAILED, crate::error_chain(&e)))?;
        if matches!(launch, Launch::Restore { .. }) {
            // A restore's devices are read after the jail is made: ask for the host's network
            // namespace (and /dev/net/tun) here.
            jail.arg.push_str(",net=host");
        }
    }
    Ok(Some(jail))
}

/// Grows the VM's disk to its StorageMiB.
fn grow_disk(ctx: &JobCtx, record: &VmRecord) -> std::io::Result<()> {
    let disk = ctx.paths().disk;
    let want = record.storage_mib() << 20;
    let file = std::fs::OpenOptions::new().write(true).open(&disk)?;
    if file.metadata()?.len() < want {
        file.set_len(want)?;
        file.sync_all()?;
    }
    Ok(())
}

fn bring_up(ctx: &mut JobCtx, restore: bool) -> Outcome {
    let mut process: Option<VmmProcess> = None;
    loop {
        match ctx.job.step.as_str() {
            "spawn" => {
                let record = ctx.record();
                let paths = ctx.paths();
                if let Some(found) = find_running(ctx) {
                    tracing::info!(pid = found.pid, "a VMM already runs this VM: adopted");
                    let rec = found.record();
                    process = Some(found);
                    if let Err(e) = ctx.update_and_step(
                        |r| r.process = Some(rec),
                        "ready",
                        serde_json::json!({}),
                    ) {
                        return e.into();
                    }
                    continue;
                }
                if let Err(outcome) = check_memory(&ctx.sup, record.memory_mib()) {
                    return outcome;
                }
                let launch = if restore {
                    if !paths.snapshot.join("manifest").exists() {
                        let _ = ctx.update(|r| r.state = VmState::Stopped);
                        return Outcome::failed(
                            ResultCode::FAILED,
                            "the VM has no snapshot to resume",
                        );
                    }
                    Launch::Restore {
                        snapshot: paths.snapshot.clone(),
                    }
                } else {
                    if let Err(e) = grow_disk(ctx, &record) {
                        return Outcome::failed(ResultCode::FAILED, format!("the disk: {e}"));
                    }
                    let peripherals = ctx.with_state(|s| s.peripherals.clone());
                    match boot_launch(ctx, &record, &peripherals) {
                        Ok(launch) => launch,
                        Err(outcome) => return outcome,
                    }
                };
                let jail = match host_side(ctx, &launch, record.memory_mib()) {
                    Ok(jail) => jail,
                    Err(outcome) => return outcome,
                };
                let spawned = match VmmProcess::spawn(
                    &ctx.sup.vmm_bin,
                    &ctx.slot.id,
                    &paths,
                    &launch,
                    jail.as_ref(),
                ) {
                    Ok(p) => p,
                    Err(e) => {
                        ctx.sup.release_host_resources(&ctx.slot.id);
                        return Outcome::failed(ResultCode::FAILED, crate::error_chain(&e));
                    }
                };
                let rec = spawned.record();
                process = Some(spawned);
                if let Err(e) =
                    ctx.update_and_step(|r| r.process = Some(rec), "ready", serde_json::json!({}))
                {
                    return e.into();
                }
            }
            "ready" => {
                let record = ctx.record();
                let mut p = match process
                    .take()
                    .or_else(|| ctx.with_state(|s| s.process.take()))
                    .or_else(|| {
                        record
                            .process
                            .and_then(|r| VmmProcess::adopt(r, &ctx.paths()))
                    }) {
                    Some(p) => p,
                    None => return failed_to_come_up(ctx, restore, None, "the VMM ended"),
                };
                let timeout = Duration::from_secs(ctx.sup.config.limits.start_timeout_secs);
                if let Err(e) = p.wait_ready(timeout) {
                    let why = crate::error_chain(&e);
                    return failed_to_come_up(ctx, restore, Some(p), &why);
                }
                configure_running(ctx, &p, &record);
                let result = ctx.update(|r| {
                    r.state = VmState::Running;
                    r.process = Some(p.record());
                    r.last_error = None;
                });
                ctx.with_state(|s| s.process = Some(p));
                return match result {
                    Ok(_) => Outcome::ok(),
                    Err(e) => e.into(),
                };
            }
            other => return Outcome::failed(ResultCode::FAILED, format!("unknown step `{other}`")),
        }
    }
}

/// After a VMM is up: its cgroup and CPU quota, the peripherals' policy, the lock.
pub fn configure_running(ctx: &JobCtx, p: &VmmProcess, record: &VmRecord) {
    if let Err(e) = ctx
        .sup
        .cgroups
        .place(&record.id, p.pid, record.resources.cpu_quota)
    {
        if record.resources.cpu_quota != 0 {
            tracing::warn!(error = %crate::error_chain(&e), "cannot apply the CPU quota");
        } else {
            tracing::debug!(error = %crate::error_chain(&e), "no cgroup for the VM");
        }
    }
    let client = p.client();
    let peripherals = ctx.with_state(|s| s.peripherals.clone());
    for peripheral in &peripherals {
        let gated = record.lock.state != LockState::Unlocked
            && crate::supervisor::LOCAL_CLASSES.contains(&peripheral.class.as_str());
        if !peripheral.allowed || gated {
            if let Err(e) = client.set_device_policy(&peripheral.id, false) {
                tracing::warn!(device = %peripheral.id, error = %crate::error_chain(&e), "cannot apply the peripheral policy");
            }
        }
    }
    if record.lock.state == LockState::Full {
        let _ = client.pause();
    }
}

fn failed_to_come_up(
    ctx: &JobCtx,
    restore: bool,
    process: Option<VmmProcess>,
    why: &str,
) -> Outcome {
    if let Some(mut p) = process {
        let _ = p.kill(EXIT_GRACE);
    }
    ctx.sup.release_host_resources(&ctx.slot.id);
    let _ = ctx.update(|r| {
        r.process = None;
        r.state = if restore {
            VmState::Suspended
        } else {
            VmState::Stopped
        };
    });
    Outcome::failed(ResultCode::FAILED, format!("the VM did not start: {why}"))
}

/// Ends a VMM: the ACPI power button with the stop deadline, then a forced stop, then SIGKILL.
pub fn shut_down(ctx: &JobCtx, p: &mut VmmProcess) {
    let deadline = ctx.sup.config.stop_deadline();
    let client = p.client();
    match client.shutdown(deadline) {
        Ok(outcome) => tracing::info!(?outcome, "guest shut down"),
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "graceful shutdown failed; stopping");
            let _ = client.stop();
        }
    }
    if p.wait_exit(EXIT_GRACE).is_none() {
        tracing::warn!("the VMM did not exit: killed");
        let _ = p.kill(EXIT_GRACE);
    }
}

/// Cold-boots the VM as its record says (its disk grown, its kernel), waits for its API and
/// configures it; the process is recorded and the VM Running. The caller owns the process.
pub fn boot_now(ctx: &JobCtx) -> Result<VmmProcess, Outcome> {
    let record = ctx.record();
    check_memory(&ctx.sup, record.memory_mib())?;
    grow_disk(ctx, &record)
        .map_err(|e| Outcome::failed(ResultCode::FAILED, format!("the disk: {e}")))?;
    let peripherals = ctx.with_state(|s| s.peripherals.clone());
    let launch = boot_launch(ctx, &record, &peripherals)?;
    let jail = host_side(ctx, &launch, record.memory_mib())?;
    let mut p = VmmProcess::spawn(
        &ctx.sup.vmm_bin,
        &ctx.slot.id,
        &ctx.paths(),
        &launch,
        jail.as_ref(),
    )
    .map_err(|e| {
        ctx.sup.release_host_resources(&ctx.slot.id);
        Outcome::failed(ResultCode::FAILED, crate::error_chain(&e))
    })?;
    let rec = p.record();
    ctx.update(|r| r.process = Some(rec))?;
    let timeout = Duration::from_secs(ctx.sup.config.limits.start_timeout_secs);
    if let Err(e) = p.wait_ready(timeout) {
        let _ = p.kill(EXIT_GRACE);
        ctx.sup.release_host_resources(&ctx.slot.id);
        let _ = ctx.update(|r| r.process = None);
        return Err(Outcome::failed(
            ResultCode::FAILED,
            format!("the VM did not start: {}", crate::error_chain(&e)),
        ));
    }
    configure_running(ctx, &p, &record);
    ctx.update(|r| {
        r.state = VmState::Running;
        r.process = Some(rec);
    })?;
    Ok(p)
}

pub fn stop(ctx: &mut JobCtx) -> Outcome {
    let record = ctx.record();
    let process = ctx.with_state(|s| s.process.take()).or_else(|| {
        record
            .process
            .and_then(|r| VmmProcess::adopt(r, &ctx.paths()))
    });
    if let Some(mut p) = process {
        shut_down(ctx, &mut p);
    }
    ctx.sup.release_host_resources(&ctx.slot.id);
    ctx.with_state(|s| s.access_epoch += 1);
    match ctx.update(|r| {
        r.state = VmState::Stopped;
        r.process = None;
    }) {
        Ok(_) => Outcome::ok(),
        Err(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::{mac_address, tap_name};

    #[test]
    fn a_vm_s_tap_and_mac_come_from_its_uuid() {
        let id = "e56bd7c8-b906-4186-aaec-2663ba173217";
        assert_eq!(tap_name(id), "virmoe56bd7c8");
        assert!(tap_name(id).len() <= 15, "an interface name holds 15 bytes");
        assert_eq!(mac_address(id), "52:54:00:e5:6b:d7");
    }
}
