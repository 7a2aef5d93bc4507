//! `cargo xtask`: project chores — guest images, the nested-KVM runner, all tests, the demo,
//! benchmarks. One small binary; see `cargo xtask --help`.

mod backports;
mod bench;
mod cargo;
mod cpio;
mod debian;
mod demo;
mod fuzz;
mod images;
mod kernel;
mod modules;
mod paths;
mod runner;
mod setup;
mod test;
mod threads;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "virmo project chores")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the guest images (kernel, vmlinux, initramfs) from Debian packages into build/images/.
    Images,
    /// Run every test: unit tests on the host, integration tests on real KVM (nested if need be).
    Test {
        /// Only integration tests whose name contains this.
        filter: Option<String>,
        /// Skip the host unit tests.
        #[arg(long)]
        skip_unit: bool,
        /// Integration tests run at once.
        #[arg(long, default_value_t = 1)]
        test_threads: u32,
    },
    /// The product's demo: a server and an agent, a VM provisioned, started, shown, suspended,
    /// resumed and deleted through virmoctl (--vm-only: just boot the demo guest, console shown).
    Demo {
        /// Only boot one guest under our VMM with its console shown.
        #[arg(long)]
        vm_only: bool,
        /// With --vm-only (implied): the guest's scenario (guest-images/scenarios/NAME.sh);
        /// default: report its CPUs and memory.
        #[arg(long)]
        scenario: Option<String>,
        #[arg(long, default_value_t = 2)]
        vcpus: u8,
        #[arg(long, default_value_t = 256)]
        memory_mib: u32,
    },
    /// Benchmarks that boot real guests (in the nested-KVM runner where the host's KVM is software).
    Bench {
        #[command(subcommand)]
        which: BenchKind,
    },
    /// (Internal) the part of a benchmark that runs where KVM is.
    #[command(hide = true)]
    BenchInner {
        #[command(subcommand)]
        which: BenchKind,
        #[arg(long)]
        vmm: PathBuf,
        #[arg(long)]
        qemu: Option<PathBuf>,
        #[arg(long)]
        images: PathBuf,
    },
    /// Run a shell command inside the nested-KVM runner, with the images at /virmo/images and the
    /// given files; prints the console and exits with the command's status.
    Runner {
        /// A program to bring in (with its shared libraries): HOST_PATH:GUEST_PATH.
        #[arg(long = "program")]
        programs: Vec<String>,
        /// A data file to bring in: HOST_PATH:GUEST_PATH.
        #[arg(long = "file")]
        files: Vec<String>,
        /// The vmm binary to bring in as /virmo/bin/vmm (default: a fresh release build).
        #[arg(long)]
        vmm: Option<PathBuf>,
        #[arg(long, default_value_t = 4096)]
        memory_mib: u32,
        #[arg(long, default_value_t = 2)]
        cpus: u32,
        #[arg(long, default_value_t = 1800)]
        timeout_secs: u64,
        /// The shell command to run (in /virmo).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand, Clone)]
enum BenchKind {
    /// VMM start to the guest's readiness marker, and the VMM's own memory, against QEMU microvm.
    Boot {
        #[arg(long, default_value_t = 10)]
        runs: u32,
        #[arg(long, default_value_t = 1)]
        vcpus: u8,
        #[arg(long, default_value_t = 256)]
        memory_mib: u64,
        /// Instead of the timed runs, boot each VMM once and print its console and the guest's
        /// kernel log (initcall_debug) with arrival times.
        #[arg(long)]
        timeline: bool,
    },
    /// Many cold boots of our VMM and of QEMU microvm, alternating, each checked for the guest's
    /// CPU report; prints boots and failures per VMM (an intermittent boot failure of ours, or
    /// of the nested runner's, which QEMU's guests would share).
    BootLoop {
        #[arg(long, default_value_t = 100)]
        boots: u32,
        #[arg(long, default_value_t = 2)]
        vcpus: u8,
        #[arg(long, default_value_t = 1024)]
        memory_mib: u64,
        /// Trace the runner's KVM (exits, nested page faults, injected exceptions) and print the
        /// trace's last lines after a failed boot.
        #[arg(long)]
        trace_kvm: bool,
    },
    /// Suspend and resume (lazy and eager) of 256 MiB and 1 GiB guests with 64 MiB and with all
    /// memory touched, beside the floor (plain write + fsync of the same bytes) and a cold boot.
    Snapshot {
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Where the snapshots are written (in the runner: its RAM-backed /tmp).
        #[arg(long, default_value = "/tmp/virmo-bench-snapshot")]
        work: PathBuf,
    },
    /// From a new VMM process to useful work done by the resumed guest (reading a tmpfs file of
    /// `--work-mib` MiB again), eager and lazy restore, beside the same work on a VM never
    /// suspended; 1 vCPU / 256 MiB and 2 vCPUs / 1 GiB.
    ResumeWork {
        #[arg(long, default_value_t = 3)]
        runs: u32,
        #[arg(long, default_value_t = 64)]
        work_mib: u64,
        /// Where the snapshots are written (in the runner: its RAM-backed /tmp).
        #[arg(long, default_value = "/tmp/virmo-bench-resume-work")]
        work: PathBuf,
    },
    /// Suspend/resume stress: N cycles per vCPU count of a guest whose every CPU copies and
    /// checksums memory, each suspend at a random moment, lazy and eager restore alternating;
    /// prints cycles done and failures (none allowed).
    Stress {
        #[arg(long, default_value_t = 200)]
        cycles: u32,
        /// vCPU counts, one configuration each.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        vcpus: Vec<u32>,
        /// Seed of the random suspend moments (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// virtio-blk sequential read/write and virtio-net guest-to-host TCP throughput from inside
    /// the guest, against the same work on the host (file system, loopback), with the ratios.
    Io {
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// MiB written then read per disk run.
        #[arg(long, default_value_t = 64)]
        disk_mib: u64,
        /// MiB sent per network run.
        #[arg(long, default_value_t = 64)]
        net_mib: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Task::BenchInner {
        which,
        vmm,
        qemu,
        images,
    } = cli.command
    {
        return bench_inner(which, vmm, qemu, &images);
    }
    if !runner::host_has_hardware_kvm() {
        setup::ensure_runner_qemu()?;
    }
    setup::ensure_packages()?;
    match cli.command {
        Task::BenchInner { .. } => unreachable!("handled above"),
        Task::Bench { which } => bench(which),
        Task::Images => {
            let images = images::build()?;
            println!("guest images in {}", images.dir.display());
            Ok(())
        }
        Task::Test {
            filter,
            skip_unit,
            test_threads,
        } => test::run(&test::TestOptions {
            filter,
            skip_unit,
            test_threads,
        }),
        Task::Demo {
            vm_only,
            scenario,
            vcpus,
            memory_mib,
        } => demo::run(&if vm_only || scenario.is_some() {
            demo::Demo::VmOnly {
                scenario: scenario.unwrap_or_else(|| "report".into()),
                vcpus,
                memory_mib,
            }
        } else {
            demo::Demo::Product
        }),
        Task::Runner {
            programs,
            files,
            vmm,
            memory_mib,
            cpus,
            timeout_secs,
            command,
        } => {
            let images = images::build()?;
            let vmm = match vmm {
                Some(path) => path,
                None => cargo::build_vmm("release")?,
            };
            let mut all = vec![runner::RunnerFile {
                host: vmm,
                guest: "/virmo/bin/vmm".into(),
                program: true,
            }];
            all.extend(test::image_files(&images));
            for (spec, program) in programs
                .iter()
                .map(|s| (s, true))
                .chain(files.iter().map(|s| (s, false)))
            {
                let (host, guest) = spec
                    .split_once(':')
                    .with_context(|| format!("{spec}: expected HOST_PATH:GUEST_PATH"))?;
                all.push(runner::RunnerFile {
                    host: host.into(),
                    guest: guest.into(),
                    program,
                });
            }
            let status = runner::run(
                &images,
                &runner::RunnerJob {
                    files: all,
                    script: format!("{}\n", command.join(" ")),
                    memory_mib,
                    cpus,
                    timeout: Duration::from_secs(timeout_secs),
                },
            )?;
            if status != 0 {
                bail!("the command exited with status {status} in the runner");
            }
            Ok(())
        }
    }
}

fn bench_inner(
    which: BenchKind,
    vmm: PathBuf,
    qemu: Option<PathBuf>,
    images: &std::path::Path,
) -> Result<()> {
    match which {
        BenchKind::Boot {
            runs,
            vcpus,
            memory_mib,
            timeline,
        } => bench::boot::run_here(&bench::boot::BootBench {
            vmm,
            qemu,
            bzimage: images.join("bzImage"),
            initramfs: images.join("initramfs.cpio.gz"),
            runs,
            vcpus,
            memory_mib,
            timeline,
        }),
        BenchKind::BootLoop {
            boots,
            vcpus,
            memory_mib,
            trace_kvm,
        } => bench::boot_loop::run_here(&bench::boot_loop::BootLoop {
            boot: bench::boot::BootBench {
                vmm,
                qemu,
                bzimage: images.join("bzImage"),
                initramfs: images.join("initramfs.cpio.gz"),
                runs: 0,
                vcpus,
                memory_mib,
                timeline: false,
            },
            boots,
            trace_kvm,
        }),
        BenchKind::Snapshot { runs, work } => {
            bench::snapshot::run_here(&bench::snapshot::SnapshotBench {
                vmm,
                bzimage: images.join("bzImage"),
                initramfs: images.join("initramfs.cpio.gz"),
                work,
                runs,
            })
        }
        BenchKind::ResumeWork {
            runs,
            work_mib,
            work,
        } => bench::resume_work::run_here(&bench::resume_work::ResumeWorkBench {
            vmm,
            bzimage: images.join("bzImage"),
            initramfs: images.join("initramfs.cpio.gz"),
            work,
            runs,
            work_mib,
        }),
        BenchKind::Stress {
            cycles,
            vcpus,
            seed,
        } => bench::stress::run_here(&bench::stress::StressBench {
            vmm,
            images: images.to_path_buf(),
            cycles,
            vcpus,
            seed,
        }),
        BenchKind::Io {
            runs,
            disk_mib,
            net_mib,
        } => bench::io::run_here(&bench::io::IoBench {
            vmm,
            qemu,
            bzimage: images.join("bzImage"),
            initramfs: images.join("initramfs.cpio.gz"),
            work: std::env::temp_dir().join("virmo-bench-io"),
            runs,
            disk_mib,
            net_mib,
        }),
    }
}

/// Where the benchmark runs: here on hardware KVM, else in the runner with QEMU and its firmware.
fn bench(which: BenchKind) -> Result<()> {
    let images = images::build()?;
    let vmm = cargo::build_vmm("release")?;
    let qemu = PathBuf::from("/usr/bin/qemu-system-x86_64");
    let args = match &which {
        BenchKind::Boot {
            runs,
            vcpus,
            memory_mib,
            timeline,
        } => format!(
            "boot --runs {runs} --vcpus {vcpus} --memory-mib {memory_mib}{}",
            if *timeline { " --timeline" } else { "" }
        ),
        BenchKind::BootLoop {
            boots,
            vcpus,
            memory_mib,
            trace_kvm,
        } => format!(
            "boot-loop --boots {boots} --vcpus {vcpus} --memory-mib {memory_mib}{}",
            if *trace_kvm { " --trace-kvm" } else { "" }
        ),
        BenchKind::Snapshot { runs, work } => {
            format!("snapshot --runs {runs} --work {}", work.display())
        }
        BenchKind::ResumeWork {
            runs,
            work_mib,
            work,
        } => format!(
            "resume-work --runs {runs} --work-mib {work_mib} --work {}",
            work.display()
        ),
        BenchKind::Stress {
            cycles,
            vcpus,
            seed,
        } => format!(
            "stress --cycles {cycles} --vcpus {}{}",
            vcpus
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            seed.map(|s| format!(" --seed {s}")).unwrap_or_default()
        ),
        BenchKind::Io {
            runs,
            disk_mib,
            net_mib,
        } => format!("io --runs {runs} --disk-mib {disk_mib} --net-mib {net_mib}"),
    };
    // The 1 GiB snapshot cases hold a fully touched guest, its snapshot and the floor file in
    // the runner's RAM at once.
    let runner_memory_mib = match &which {
        BenchKind::Boot { .. } | BenchKind::Io { .. } | BenchKind::BootLoop { .. } => 4096,
        BenchKind::Snapshot { .. } | BenchKind::Stress { .. } | BenchKind::ResumeWork { .. } => {
            6144
        }
    };
    // A stress cycle takes a few seconds; the other benches finish well within 30 minutes.
    let timeout = match &which {
        BenchKind::Stress { cycles, vcpus, .. } => {
            Duration::from_secs(600 + 15 * u64::from(*cycles) * vcpus.len() as u64)
        }
        BenchKind::BootLoop { boots, .. } => Duration::from_secs(600 + 60 * u64::from(*boots)),
        _ => Duration::from_secs(1800),
    };
    if runner::host_has_hardware_kvm() {
        return bench_inner(which, vmm, Some(qemu), &images.dir);
    }
    let xtask = std::env::current_exe()?;
    let mut files = vec![
        runner::RunnerFile {
            host: vmm,
            guest: "/virmo/bin/vmm".into(),
            program: true,
        },
        runner::RunnerFile {
            host: xtask,
            guest: "/virmo/bin/xtask".into(),
            program: true,
        },
        runner::RunnerFile {
            host: qemu.clone(),
            guest: qemu.to_string_lossy().into(),
            program: true,
        },
    ];
    // QEMU looks for its firmware in both folders (7.2 had links in the first, 10 does not).
    for firmware in ["bios-microvm.bin", "linuxboot_dma.bin"] {
        let found = ["/usr/share/qemu", "/usr/share/seabios"]
            .iter()
            .map(|dir| PathBuf::from(dir).join(firmware))
            .find(|path| path.exists());
        if let Some(path) = found {
            files.push(runner::RunnerFile {
                guest: path.to_string_lossy().into(),
                host: path,
                program: false,
            });
        }
    }
    files.extend(test::image_files(&images));
    let script = format!(
        "/virmo/bin/xtask bench-inner --vmm /virmo/bin/vmm --qemu {} --images /virmo/images {args}\n",
        qemu.display()
    );
    let status = runner::run(
        &images,
        &runner::RunnerJob {
            files,
            script,
            memory_mib: runner_memory_mib,
            cpus: 2,
            timeout,
        },
    )?;
    if status != 0 {
        bail!("the benchmark failed in the runner (status {status})");
    }
    Ok(())
}
