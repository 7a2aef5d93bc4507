//! `cargo xtask demo`: builds the images and the VMM, and boots the demo guest with its console
//! shown — directly on a host with hardware KVM, otherwise inside the nested-KVM runner.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::cargo;
use crate::images;
use crate::runner::{self, RunnerFile, RunnerJob};

pub fn run(scenario: &str, vcpus: u8, memory_mib: u32) -> Result<()> {
    let images = images::build()?;
    let vmm = cargo::build_vmm("release")?;
    let cmdline = format!("console=ttyS0 quiet panic=-1 virmo.scenario={scenario}");
    if runner::host_has_hardware_kvm() {
        let status = std::process::Command::new(&vmm)
            .arg("--kernel")
            .arg(&images.bzimage)
            .arg("--initramfs")
            .arg(&images.initramfs)
            .args(["--cmdline", &cmdline])
            .args(["--vcpus", &vcpus.to_string()])
            .args(["--memory-mib", &memory_mib.to_string()])
            .status()?;
        if !status.success() {
            bail!("the VMM exited with {status}");
        }
        return Ok(());
    }
    eprintln!(
        "xtask: this host's /dev/kvm is not hardware-backed (see README: the nested-KVM runner);\n\
         xtask: booting the demo guest inside the runner (QEMU TCG with emulated AMD-V)"
    );
    let mut files = vec![RunnerFile {
        host: vmm,
        guest: "/virmo/bin/vmm".into(),
        program: true,
    }];
    files.extend(crate::test::image_files(&images));
    let script = format!(
        "/virmo/bin/vmm --kernel /virmo/images/bzImage --initramfs /virmo/images/initramfs.cpio.gz \
         --cmdline '{cmdline}' --vcpus {vcpus} --memory-mib {memory_mib}\n"
    );
    let status = runner::run(
        &images,
        &RunnerJob {
            files,
            script,
            memory_mib: memory_mib + 1024,
            cpus: 2,
            timeout: Duration::from_secs(600),
        },
    )?;
    if status != 0 {
        bail!("the VMM exited with status {status} in the runner");
    }
    Ok(())
}
