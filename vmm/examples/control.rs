//! Drives a VM through the control surface in-process, for checking the VMM core in the runner:
//!
//! ```text
//! control KERNEL INITRAMFS CMDLINE [shutdown|stop] [TIMEOUT_MS]
//! ```
//!
//! Boots the guest with its console in a file, waits for `VIRMO-GUEST-READY`, pauses (checks that
//! the console stands still), resumes, then shuts the VM down (ACPI power button, forced after the
//! timeout) or stops it. Prints each answer and how the VM ended; exits with the VMM's status.
//! `CONTROL_WAIT_FOR=TEXT` waits for TEXT on the console too before the requests;
//! `CONTROL_VCPUS=N` sets the vCPU count.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vmm::config::{ConsoleConfig, VmConfig};
use vmm::control::{VmControl, VmRequest};
use vmm::vmm::Vmm;

fn console_text(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 4,
        "usage: control KERNEL INITRAMFS CMDLINE [shutdown|stop] [TIMEOUT_MS]"
    );
    let console = std::env::temp_dir().join(format!("control-console-{}", std::process::id()));
    let mut config = VmConfig::new(&args[1]);
    config.initramfs = Some(args[2].clone().into());
    config.cmdline = args[3].clone();
    config.console = ConsoleConfig::File(console.clone());
    config.memory_mib = 256;
    if let Ok(vcpus) = std::env::var("CONTROL_VCPUS") {
        config.vcpus = vcpus.parse()?;
    }
    let wait_for = std::env::var("CONTROL_WAIT_FOR").unwrap_or_else(|_| "VIRMO-GUEST-READY".into());
    let ending = args.get(4).map(String::as_str).unwrap_or("shutdown");
    let timeout_ms: u64 = args.get(5).map(|t| t.parse()).transpose()?.unwrap_or(5000);

    let vmm = Vmm::build(config)?;
    vmm.start()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !console_text(&console).contains("VIRMO-GUEST-READY")
        || !console_text(&console).contains(&wait_for)
    {
        anyhow::ensure!(Instant::now() < deadline, "guest not ready in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("info: {:?}", vmm.handle(VmRequest::GetInfo));
    let t = Instant::now();
    println!(
        "pause: {:?} in {} ms",
        vmm.handle(VmRequest::Pause),
        t.elapsed().as_millis()
    );
    println!("pause again: {:?}", vmm.handle(VmRequest::Pause));
    let before = console_text(&console).len();
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "console grew while paused: {} bytes",
        console_text(&console).len() - before
    );
    println!("info: {:?}", vmm.handle(VmRequest::GetInfo));
    println!("resume: {:?}", vmm.handle(VmRequest::Resume));
    let t = Instant::now();
    let request = match ending {
        "stop" => VmRequest::Stop,
        _ => VmRequest::Shutdown {
            timeout: Duration::from_millis(timeout_ms),
        },
    };
    println!(
        "{ending}: {:?} in {} ms",
        vmm.handle(request),
        t.elapsed().as_millis()
    );
    let reason = vmm.wait();
    vmm.shut_down();
    println!("ended: {reason} (status {})", reason.exit_status());
    let _ = std::fs::remove_file(&console);
    std::process::exit(reason.exit_status());
}
