//! Provision: download the bundle (resumable), install it into the image store, create the
//! VM's disk. Steps: `download` → `install` (param `digest`) → `disk` (param `digest`).
//! Each step is safe to run again: the download resumes its partial file, an image already
//! installed is reused, the disk is rebuilt. A failure removes what the job created (partial
//! download, staging folder, new disk) and leaves the VM Failed.

use std::io::Write;
use std::time::Duration;

use super::{JobCtx, Outcome};
use crate::bundle::download::Download;
use crate::bundle::extract::install;
use crate::bundle::{hex, parse_pkg_hash, Manifest, MANIFEST_NAME};
use crate::layout::{remove_all, sync_dir};
use crate::model::{Operation, ResultCode, VmState};
use crate::store::{Change, InstalledImage, Peripheral};

pub const FIRST_STEP: &str = "download";

pub fn run(ctx: &mut JobCtx) -> Outcome {
    let outcome = steps(ctx);
    if !outcome.code.is_success() {
        let _ = std::fs::remove_file(ctx.sup.layout.download(ctx.job.id));
        if let Some(digest) = ctx.param_str("digest") {
            remove_unused_image(ctx, &digest);
        }
        remove_empty_vm_folder(ctx);
        let _ = ctx.update(|r| {
            r.state = VmState::Failed;
            r.last_error.clone_from(&outcome.error);
        });
    }
    outcome
}

/// After a failed provision: the image the job installed, unless a VM uses it or another
/// provision (which may be about to) is in progress.
fn remove_unused_image(ctx: &JobCtx, digest: &str) {
    let lock = ctx.sup.image_lock(digest);
    let _installing = lock.lock().unwrap_or_else(|p| p.into_inner());
    let used = ctx.sup.slots().values().any(|slot| {
        let state = slot.lock();
        let record = &state.record;
        let other_provision = slot.id != ctx.slot.id && state.busy == Some(Operation::Provision);
        other_provision
            || [
                record.image.installed.as_ref().map(|i| &i.digest),
                record.firmware.current.as_ref().map(|i| &i.digest),
                record.firmware.downloaded.as_ref().map(|i| &i.digest),
            ]
            .into_iter()
            .flatten()
            .any(|d| d == digest)
    });
    if !used {
        tracing::info!(image = %digest, "image of a failed provision removed");
        let _ = remove_all(&ctx.sup.layout.image(digest));
    }
}

/// After a failed first provision: the VM's folder and whatever the job put in it (a VM
/// provisioned before keeps its files).
fn remove_empty_vm_folder(ctx: &JobCtx) {
    let dir = ctx.paths().dir;
    if ctx.record().image.installed.is_none() {
        ctx.sup.broker.remove_vm(&ctx.slot.id);
        let _ = remove_all(&dir);
    }
}

fn steps(ctx: &mut JobCtx) -> Outcome {
    loop {
        match ctx.job.step.as_str() {
            "download" | "install" => {
                if let Err(outcome) = fetch_and_install(ctx) {
                    return outcome;
                }
            }
            "disk" => {
                let Some(digest) = ctx.param_str("digest") else {
                    return Outcome::failed(ResultCode::FAILED, "lost the bundle's digest");
                };
                return make_vm(ctx, &digest);
            }
            other => return Outcome::failed(ResultCode::FAILED, format!("unknown step `{other}`")),
        }
    }
}

/// Steps `download` and `install`, under the image's lock: VMs provisioned from one bundle at
/// once download and install it once; an image already installed is not downloaded again.
fn fetch_and_install(ctx: &mut JobCtx) -> Result<(), Outcome> {
    let limits = ctx.sup.config.limits.clone();
    let max_bundle = limits.max_bundle_mib << 20;
    let part = ctx.sup.layout.download(ctx.job.id);
    let record = ctx.record();
    let url = record.image.pkg_url.trim().to_owned();
    if url.is_empty() {
        return Err(Outcome::failed(
            ResultCode::BAD_CONFIG,
            "Image/PkgURL is not set",
        ));
    }
    let Some(expected) = parse_pkg_hash(&record.image.pkg_hash) else {
        return Err(Outcome::failed(
            ResultCode::BAD_CONFIG,
            "Image/PkgHash is not a sha256",
        ));
    };
    let digest = hex(&expected);
    let lock = ctx.sup.image_lock(&digest);
    let _installing = lock.lock().unwrap_or_else(|p| p.into_inner());
    let image_dir = ctx.sup.layout.image(&digest);
    if !image_dir.join(MANIFEST_NAME).exists() {
        if ctx.job.step == "download" {
            let download = Download {
                url: &url,
                part: &part,
                expected: Some(expected),
                max_bytes: max_bundle,
                timeout: Duration::from_secs(limits.download_timeout_secs),
                attempts: limits.download_attempts,
            };
            download.run()?;
            ctx.step("install", serde_json::json!({ "digest": digest }))?;
        }
        let bundle_len = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let storage = ctx.record().storage_mib() << 20;
        check_space(ctx, bundle_len.saturating_add(storage))?;
        install(&part, &ctx.sup.layout.images(), &digest, max_bundle)?;
    }
    let _ = std::fs::remove_file(&part);
    ctx.step("disk", serde_json::json!({ "digest": digest }))?;
    Ok(())
}

fn check_space(ctx: &JobCtx, needed: u64) -> Result<(), Outcome> {
    match crate::sys::available_bytes(ctx.sup.layout.root()) {
        Ok(available) if available < needed => Err(Outcome::failed(
            ResultCode::NO_RESOURCES,
            format!("{needed} bytes of storage needed, {available} available"),
        )),
        _ => Ok(()),
    }
}

/// Creates the VM's disk (and removable disk) from the installed image and records the image.
fn make_vm(ctx: &mut JobCtx, digest: &str) -> Outcome {
    let layout = &ctx.sup.layout;
    let image_dir = layout.image(digest);
    let manifest = match std::fs::read_to_string(image_dir.join(MANIFEST_NAME))
        .map_err(|e| e.to_string())
        .and_then(|t| Manifest::parse(&t))
    {
        Ok(m) => m,
        Err(e) => return Outcome::failed(ResultCode::CORRUPT, e),
    };
    let record = ctx.record();
    let storage_mib = record
        .resources
        .storage_mib
        .unwrap_or(0)
        .max(manifest.resources.storage_mib);
    let memory_mib = record
        .resources
        .memory_mib
        .unwrap_or(manifest.resources.memory_mib);
    let max_memory = ctx.sup.capabilities.max_memory_mib;
    if memory_mib > max_memory {
        return Outcome::failed(
            ResultCode::NO_RESOURCES,
            format!(
                "the VM needs {memory_mib} MiB of memory, the device gives at most {max_memory}"
            ),
        );
    }
    let max_storage = ctx.sup.capabilities.max_storage_mib;
    if storage_mib > max_storage {
        return Outcome::failed(
            ResultCode::NO_RESOURCES,
            format!(
                "the VM needs {storage_mib} MiB of storage, the device gives at most {max_storage}"
            ),
        );
    }
    if let Err(outcome) = check_space(ctx, storage_mib << 20) {
        return outcome;
    }
    let paths = ctx.paths();
    let made = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(&paths.dir)?;
        // An old snapshot belongs to the old disk.
        remove_all(&paths.snapshot)?;
        remove_all(&paths.snapshot_old)?;
        let tmp = paths.dir.join("disk.img.new");
        remove_all(&tmp)?;
        match &manifest.disk {
            Some(name) => {
                std::fs::copy(image_dir.join(name), &tmp)?;
            }
            None => {
                std::fs::File::create(&tmp)?;
            }
        }
        let file = std::fs::OpenOptions::new().write(true).open(&tmp)?;
        if file.metadata()?.len() < storage_mib << 20 {
            file.set_len(storage_mib << 20)?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, &paths.disk)?;
        if manifest.devices.removable_mib > 0 {
            let mut removable = std::fs::File::create(&paths.removable)?;
            removable.flush()?;
            removable.set_len(manifest.devices.removable_mib << 20)?;
            removable.sync_all()?;
        } else {
            remove_all(&paths.removable)?;
        }
        sync_dir(&paths.dir)
    })();
    if let Err(e) = made {
        let _ = remove_all(&paths.dir.join("disk.img.new"));
        return Outcome::failed(ResultCode::FAILED, format!("cannot create the disk: {e}"));
    }
    if let Err(e) = ctx.sup.serve_sharing(&ctx.slot.id) {
        tracing::warn!(error = %crate::error_chain(&e), "the sharing broker cannot serve the VM");
    }
    let old_peripherals = ctx.with_state(|s| s.peripherals.clone());
    let allowed = |id: &str| {
        old_peripherals
            .iter()
            .find(|p| p.id == id)
            .is_none_or(|p| p.allowed)
    };
    let mut peripherals = vec![Peripheral {
        id: "disk0".into(),
        class: "storage".into(),
        allowed: allowed("disk0"),
    }];
    if manifest.devices.removable_mib > 0 {
        peripherals.push(Peripheral {
            id: "usb0".into(),
            class: "removable-storage".into(),
            allowed: allowed("usb0"),
        });
    }
    if manifest.devices.entropy {
        peripherals.push(Peripheral {
            id: "rng0".into(),
            class: "entropy".into(),
            allowed: allowed("rng0"),
        });
    }
    if manifest.devices.network {
        peripherals.push(Peripheral {
            id: "net0".into(),
            class: "network".into(),
            allowed: allowed("net0"),
        });
    }
    let channel = crate::supervisor::host_channel_peripheral();
    peripherals.push(Peripheral {
        allowed: allowed(&channel.id),
        ..channel
    });
    let installed = InstalledImage {
        digest: digest.to_owned(),
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        cmdline: manifest.boot.cmdline.clone(),
        ready_marker: manifest.boot.ready_marker.clone(),
        vcpus: manifest.resources.vcpus,
        memory_mib: manifest.resources.memory_mib,
        storage_mib: manifest.resources.storage_mib,
        entropy: manifest.devices.entropy,
        removable_mib: manifest.devices.removable_mib,
        kernel_version: manifest.boot.kernel_version.clone().unwrap_or_default(),
    };
    let mut state = ctx.slot.lock();
    let mut record = state.record.clone();
    record.image.installed = Some(installed);
    record.state = VmState::Stopped;
    record.last_error = None;
    record.firmware = crate::store::FirmwareRecord {
        download_url: record.firmware.download_url.clone(),
        download_and_update_url: record.firmware.download_and_update_url.clone(),
        ..Default::default()
    };
    if let Err(e) = ctx.sup.store.apply(vec![
        Change::SaveVm(record.clone()),
        Change::SetPeripherals {
            vm_id: record.id.clone(),
            peripherals: peripherals.clone(),
        },
    ]) {
        return e.into();
    }
    state.record = record;
    state.peripherals = peripherals;
    Outcome::ok()
}
