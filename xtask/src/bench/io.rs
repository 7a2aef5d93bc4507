//! `cargo xtask bench io`: virtio-blk and virtio-net throughput seen from inside a real guest,
//! against the same work done on the host where the VMM runs, with the ratio.
//!
//! - Disk: the guest (`io-bench` scenario) writes then reads N MiB of its virtio disk with busybox
//!   `dd bs=1M oflag=direct` / `iflag=direct`, timed with its own `/proc/uptime` (10 ms
//!   resolution). The host figure: the same image file written (then `fdatasync`) and read in
//!   1 MiB blocks by this process, on the same file system.
//! - Network: the guest sends N MiB of zeroes with busybox `nc` over its virtio NIC to a TCP
//!   listener here, on the host end of the tap; timed here from accept to the last byte. The host
//!   figure: the same transfer over loopback (127.0.0.1) from a thread of this process.
//!
//! Medians over the runs; every run is printed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::measure::{self, Console};

pub struct IoBench {
    pub vmm: PathBuf,
    /// QEMU for a reference run of the same guest with QEMU's virtio-mmio devices (microvm).
    pub qemu: Option<PathBuf>,
    pub bzimage: PathBuf,
    pub initramfs: PathBuf,
    /// Where the disk image lives (the host figure is measured on the same file system).
    pub work: PathBuf,
    pub runs: u32,
    pub disk_mib: u64,
    pub net_mib: u64,
}

const TAP: &str = "vbench0";
const HOST_IP: &str = "192.0.2.1";
const GUEST_CIDR: &str = "192.0.2.2/24";
const PORT: u16 = 5001;
const CHUNK: usize = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(600);

/// One VMM's figures from inside the guest, MiB/s per run.
#[derive(Default)]
struct GuestSamples {
    write: Vec<f64>,
    read: Vec<f64>,
    net: Vec<f64>,
}

#[derive(Default)]
struct Samples {
    ours: GuestSamples,
    qemu: Option<GuestSamples>,
    host_write: Vec<f64>,
    host_read: Vec<f64>,
    host_net: Vec<f64>,
}

pub fn run_here(b: &IoBench) -> Result<()> {
    std::fs::create_dir_all(&b.work)?;
    let image = b.work.join("io-bench.img");
    let mut s = Samples::default();
    host_disk(b, &image, &mut s)?;
    host_loopback(b, &mut s)?;
    s.ours = guest(b, "virmo", ours(b, &image))?;
    if let Some(qemu) = &b.qemu {
        s.qemu = Some(guest(b, "qemu", qemu_cmd(b, qemu, &image))?);
    }
    let _ = std::fs::remove_file(&image);
    report(b, &mut s);
    Ok(())
}

fn mib_per_s(mib: u64, seconds: f64) -> f64 {
    mib as f64 / seconds.max(1e-6)
}

/// Writes (then fdatasync) and reads the image in 1 MiB blocks, `runs` times.
fn host_disk(b: &IoBench, image: &Path, s: &mut Samples) -> Result<()> {
    let block = vec![0u8; CHUNK];
    let mut buf = vec![0u8; CHUNK];
    for run in 0..b.runs {
        let start = Instant::now();
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(image)
            .with_context(|| format!("opening {}", image.display()))?;
        for _ in 0..b.disk_mib {
            f.write_all(&block)?;
        }
        f.sync_data()?;
        drop(f);
        let write = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut f = File::open(image)?;
        for _ in 0..b.disk_mib {
            f.read_exact(&mut buf)?;
        }
        let read = start.elapsed().as_secs_f64();
        println!(
            "bench: host disk run {run}: write {:.1} MiB/s, read {:.1} MiB/s",
            mib_per_s(b.disk_mib, write),
            mib_per_s(b.disk_mib, read)
        );
        s.host_write.push(mib_per_s(b.disk_mib, write));
        s.host_read.push(mib_per_s(b.disk_mib, read));
    }
    Ok(())
}

/// Receives one connection's bytes to EOF; returns seconds from accept to the last byte.
fn receive(listener: &TcpListener, expected: u64) -> Result<f64> {
    let (mut stream, _) = listener.accept().context("accepting the sender")?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let start = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).context("receiving")?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    if total != expected {
        bail!("received {total} bytes, expected {expected}");
    }
    Ok(seconds)
}

/// The same transfer as the guest's, over loopback.
fn host_loopback(b: &IoBench, s: &mut Samples) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let addr = listener.local_addr()?;
    let bytes = b.net_mib << 20;
    for run in 0..b.runs {
        let sender = std::thread::spawn(move || -> std::io::Result<()> {
            let mut stream = TcpStream::connect(addr)?;
            let block = vec![0u8; 64 << 10];
            for _ in 0..bytes / block.len() as u64 {
                stream.write_all(&block)?;
            }
            stream.shutdown(std::net::Shutdown::Write)
        });
        let seconds = receive(&listener, bytes)?;
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("loopback sender panicked"))??;
        println!(
            "bench: host loopback run {run}: {:.1} MiB/s",
            mib_per_s(b.net_mib, seconds)
        );
        s.host_net.push(mib_per_s(b.net_mib, seconds));
    }
    Ok(())
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn cmdline(b: &IoBench) -> String {
    format!(
        "console=ttyS0 quiet panic=-1 virmo.scenario=io-bench virmo.runs={} virmo.mib={} \
         virmo.net_mib={} virmo.ip={GUEST_CIDR} virmo.peer={HOST_IP}",
        b.runs, b.disk_mib, b.net_mib
    )
}

/// Our VMM with the image as the `bench` disk and a NIC on the tap.
fn ours(b: &IoBench, image: &Path) -> Command {
    let cmdline = cmdline(b);
    let mut cmd = Command::new(&b.vmm);
    cmd.arg("--kernel")
        .arg(&b.bzimage)
        .arg("--initramfs")
        .arg(&b.initramfs)
        .args(["--cmdline", &cmdline])
        .args(["--vcpus", "1", "--memory-mib", "256"])
        .arg("--disk")
        .arg(format!("id=bench,path={}", image.display()))
        .arg("--net")
        .arg(format!("id=nic0,tap={TAP}"));
    cmd
}

/// QEMU microvm with the same guest, disk (serial `bench`) and tap, through its own
/// virtio-mmio devices (no vhost).
fn qemu_cmd(b: &IoBench, qemu: &Path, image: &Path) -> Command {
    let mut cmd = Command::new(qemu);
    cmd.args(["-M", "microvm,rtc=on", "-enable-kvm", "-cpu", "host"])
        .args(["-m", "256", "-smp", "1"])
        .args(["-nographic", "-nodefaults", "-no-user-config", "-no-reboot"])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(&b.bzimage)
        .arg("-initrd")
        .arg(&b.initramfs)
        .args(["-append", &cmdline(b)])
        .arg("-drive")
        .arg(format!("id=d0,file={},format=raw,if=none", image.display()))
        .args(["-device", "virtio-blk-device,drive=d0,serial=bench"])
        .args([
            "-netdev",
            &format!("tap,id=n0,ifname={TAP},script=no,downscript=no,vhost=off"),
        ])
        .args(["-device", "virtio-net-device,netdev=n0"]);
    cmd
}

/// Boots the guest with `cmd` and collects its figures.
fn guest(b: &IoBench, label: &str, cmd: Command) -> Result<GuestSamples> {
    let mut out = GuestSamples::default();
    let mut console = Console::spawn(cmd)?;

    let deadline = Instant::now() + Duration::from_secs(60);
    while !ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", TAP]) {
        if Instant::now() > deadline {
            bail!("the VMM's tap {TAP} never appeared");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !ip(&["link", "set", TAP, "up"]) {
        bail!("cannot bring {TAP} up");
    }
    let listener = TcpListener::bind((HOST_IP, PORT)).context("listening on the tap")?;
    let bytes = b.net_mib << 20;
    let runs = b.runs;
    let receiver = std::thread::spawn(move || -> Result<Vec<f64>> {
        (0..runs).map(|_| receive(&listener, bytes)).collect()
    });

    for run in 0..b.runs {
        let (_, line) = console.wait_line("VIRMO-IO-DISK=", TIMEOUT)?;
        let fields: Vec<f64> = line
            .split("VIRMO-IO-DISK=")
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(f64::NAN))
            .collect();
        let [t0, t1, t2] = fields[..] else {
            bail!("malformed line {line:?}");
        };
        println!(
            "bench: {label} guest disk run {run}: write {:.1} MiB/s, read {:.1} MiB/s",
            mib_per_s(b.disk_mib, t1 - t0),
            mib_per_s(b.disk_mib, t2 - t1)
        );
        out.write.push(mib_per_s(b.disk_mib, t1 - t0));
        out.read.push(mib_per_s(b.disk_mib, t2 - t1));
    }
    console.wait_line("VIRMO-IO-DONE", TIMEOUT)?;
    console.kill();
    let net = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    for (run, seconds) in net.iter().enumerate() {
        println!(
            "bench: {label} guest net run {run}: {:.1} MiB/s",
            mib_per_s(b.net_mib, *seconds)
        );
        out.net.push(mib_per_s(b.net_mib, *seconds));
    }
    Ok(out)
}

fn report(b: &IoBench, s: &mut Samples) {
    println!();
    println!(
        "virtio I/O from inside the guest vs the host: {} runs, disk {} MiB (1 MiB direct I/O), net {} MiB",
        b.runs, b.disk_mib, b.net_mib
    );
    println!("| measure | virmo guest median MiB/s (min–max) | host median MiB/s (min–max) | virmo / host | QEMU microvm guest median MiB/s (min–max) | virmo / QEMU |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let names = [
        "disk sequential write (host: + fdatasync)",
        "disk sequential read",
        "net guest→host TCP (host: loopback)",
    ];
    let ours = [&mut s.ours.write, &mut s.ours.read, &mut s.ours.net];
    let host = [&mut s.host_write, &mut s.host_read, &mut s.host_net];
    let mut qemu: Vec<Option<&mut Vec<f64>>> = match &mut s.qemu {
        Some(q) => vec![Some(&mut q.write), Some(&mut q.read), Some(&mut q.net)],
        None => vec![None, None, None],
    };
    for (i, ((name, ours), host)) in names.iter().zip(ours).zip(host).enumerate() {
        let (gm, gmin, gmax) = measure::stats(ours);
        let (hm, hmin, hmax) = measure::stats(host);
        let (qemu_cell, ratio) = match qemu[i].take() {
            Some(q) => {
                let (qm, qmin, qmax) = measure::stats(q);
                (
                    format!("{qm:.1} ({qmin:.1}–{qmax:.1})"),
                    format!("{:.2}", gm / qm),
                )
            }
            None => ("–".to_string(), "–".to_string()),
        };
        println!(
            "| {name} | {gm:.1} ({gmin:.1}–{gmax:.1}) | {hm:.1} ({hmin:.1}–{hmax:.1}) | {:.3} | {qemu_cell} | {ratio} |",
            gm / hm
        );
    }
}
