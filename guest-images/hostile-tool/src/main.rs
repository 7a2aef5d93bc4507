//! `hostile-tool`: a hostile guest for the VMM's device code (docs/security.md, "Hostile
//! guests"). Run as root in a guest whose virtio-mmio devices no driver holds and whose
//! kernel was told `mem=` below the VM's memory, so that `/dev/mem` reaches both the
//! devices' registers and the top of RAM.
//!
//! ```text
//! hostile-tool --ram-end HEX --own-base HEX [--rounds N] [--flood-ms MS] [--seed N]
//! ```
//!
//! Per round, on every device found in `/proc/iomem` (ACPI `LNRO0005`):
//! (a) garbage in every register, of every width; (b) hand-built queues fed looping,
//! overlapping, out-of-bounds, oversized, zero-length, nested-indirect chains and bogus
//! available indexes; (c) a QueueNotify flood. Then one good request per device.
//! Prints `HOSTILE-DEVICES …`, `HOSTILE-ROUND N …` per round, `HOSTILE-CHECK …` per device and
//! `HOSTILE-DONE ok|fail`; errors `HOSTILE-ERROR …`.

mod chains;
mod check;
mod devmem;
mod flood;
mod prng;
mod registers;
mod targets;
mod virtio;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use chains::Attack;
use devmem::PhysMap;
use prng::Prng;
use targets::{Targets, SLOT};
use virtio::Device;

struct Args {
    ram_end: u64,
    own_base: u64,
    rounds: u32,
    flood_ms: u64,
    seed: u64,
}

fn hex(s: &str) -> Result<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).with_context(|| format!("bad number {s}"))
}

fn args() -> Result<Args> {
    let mut a = Args {
        ram_end: 0,
        own_base: 0,
        rounds: 3,
        flood_ms: 3000,
        seed: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--ram-end" => a.ram_end = hex(&value)?,
            "--own-base" => a.own_base = hex(&value)?,
            "--rounds" => a.rounds = value.parse()?,
            "--flood-ms" => a.flood_ms = value.parse()?,
            "--seed" => a.seed = value.parse()?,
            _ => bail!("unknown argument {flag}"),
        }
    }
    if a.own_base == 0 || a.ram_end <= a.own_base {
        bail!("--own-base and --ram-end must name the owned top of RAM");
    }
    Ok(a)
}

fn run() -> Result<bool> {
    let args = args()?;
    let windows = devmem::virtio_windows()?;
    if windows.is_empty() {
        bail!("no LNRO0005 device in /proc/iomem");
    }
    let mut devices = Vec::new();
    for &(base, _) in &windows {
        devices.push(Device::new(PhysMap::new(base & !0xfff, 4096)?));
    }
    let list: Vec<String> = devices
        .iter()
        .zip(&windows)
        .map(|(d, (base, _))| format!("{}@{base:#x}", d.name()))
        .collect();
    println!("HOSTILE-DEVICES {} {}", devices.len(), list.join(" "));
    let own = PhysMap::new(args.own_base, (args.ram_end - args.own_base) as usize)?;
    if own.len() < devices.len() * SLOT {
        bail!("{} bytes owned, {} needed", own.len(), devices.len() * SLOT);
    }
    let targets = Targets {
        ram_end: args.ram_end,
        mmio: windows[0].0,
    };
    let mut rng = Prng::new(args.seed);
    let mut attacks: Vec<Attack<'_>> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| Attack::new(d, &own, targets, i))
        .collect();
    for round in 1..=args.rounds {
        let start = Instant::now();
        let mut registers = 0;
        for d in &devices {
            registers += registers::garbage(d, &own, &targets, &mut rng);
        }
        let a_ms = start.elapsed().as_millis();
        for a in &mut attacks {
            a.round(&mut rng);
        }
        let b_ms = start.elapsed().as_millis() - a_ms;
        let notifies = flood::flood(&mut attacks, Duration::from_millis(args.flood_ms));
        let chains: u64 = attacks.iter().map(|a| a.chains).sum();
        println!(
            "HOSTILE-ROUND {round} registers={registers} chains={chains} notifies={notifies} \
             a_ms={a_ms} b_ms={b_ms} ms={}",
            start.elapsed().as_millis()
        );
    }
    let mut ok = true;
    for a in &mut attacks {
        ok &= check::check(a);
    }
    for d in &devices {
        d.write(virtio::STATUS, 0);
    }
    Ok(ok)
}

fn main() {
    match run() {
        Ok(ok) => println!("HOSTILE-DONE {}", if ok { "ok" } else { "fail" }),
        Err(err) => {
            println!("HOSTILE-ERROR {err:#}");
            std::process::exit(1);
        }
    }
}
