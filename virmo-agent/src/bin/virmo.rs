//! `virmo`: the device user's view of the VMs the agent manages.
//!
//! ```text
//! virmo [--socket PATH] list
//! virmo [--socket PATH] console VM      # Ctrl-] detaches
//! virmo [--socket PATH] unlock VM CODE
//! virmo [--socket PATH] alerts
//! virmo [--socket PATH] start VM | stop VM
//! ```

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use virmo_agent::local::client::request;
use virmo_agent::local::protocol::{Request, Response};

/// The device user's view of the VMs managed by virmo-agent.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The agent's local socket [default: /var/lib/virmo/virmo.sock].
    #[arg(long, default_value = "/var/lib/virmo/virmo.sock")]
    socket: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// VMs and their states.
    List,
    /// Attach to a VM's console (refused while it is locked).
    Console { vm: String },
    /// Unlock a VM with the code its administrator gave you.
    Unlock { vm: String, code: String },
    /// Alerts waiting to reach the management server.
    Alerts,
    /// Start a VM.
    Start { vm: String },
    /// Stop a VM.
    Stop { vm: String },
}

fn fail(response: &Response) -> anyhow::Result<()> {
    bail!(
        "refused ({}): {}",
        response.code.unwrap_or_default(),
        response.error.clone().unwrap_or_default()
    )
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let req = match &cli.command {
        Cmd::List => Request::List,
        Cmd::Console { vm } => Request::Console { vm: vm.clone() },
        Cmd::Unlock { vm, code } => Request::Unlock {
            vm: vm.clone(),
            code: code.clone(),
        },
        Cmd::Alerts => Request::Alerts,
        Cmd::Start { vm } => Request::Start { vm: vm.clone() },
        Cmd::Stop { vm } => Request::Stop { vm: vm.clone() },
    };
    let (response, stream) = request(&cli.socket, &req).context("asking the agent")?;
    if !response.ok {
        return fail(&response);
    }
    match cli.command {
        Cmd::List => {
            println!(
                "{:<16} {:<12} {:<18} {:>5} {:>8}  IMAGE",
                "VM", "STATE", "LOCK", "VCPUS", "MEM(MiB)"
            );
            for vm in response.vms.unwrap_or_default() {
                let state = match &vm.busy {
                    Some(op) => format!("{} ({op}…)", vm.state),
                    None => vm.state.clone(),
                };
                println!(
                    "{:<16} {:<12} {:<18} {:>5} {:>8}  {}",
                    vm.vm,
                    state,
                    vm.lock,
                    vm.vcpus,
                    vm.memory_mib,
                    vm.image.unwrap_or_default()
                );
            }
        }
        Cmd::Alerts => {
            for alert in response.alerts.unwrap_or_default() {
                println!(
                    "{} {} {} (attempts: {})",
                    alert.alert_type,
                    alert.source.unwrap_or_default(),
                    alert.data,
                    alert.attempts
                );
            }
        }
        Cmd::Console { .. } => {
            eprintln!("[attached; Ctrl-] detaches]");
            let mut output = stream.try_clone()?;
            let mut input = stream;
            std::thread::spawn(move || {
                let mut buf = [0u8; 256];
                let stdin = std::io::stdin();
                let mut stdin = stdin.lock();
                while let Ok(n) = stdin.read(&mut buf) {
                    if n == 0 || buf[..n].contains(&0x1d) {
                        break;
                    }
                    if input.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = input.shutdown(std::net::Shutdown::Both);
            });
            let mut stdout = std::io::stdout();
            let mut buf = [0u8; 8192];
            while let Ok(n) = output.read(&mut buf) {
                if n == 0 {
                    break;
                }
                stdout.write_all(&buf[..n])?;
                stdout.flush()?;
            }
            eprintln!("\n[detached]");
        }
        _ => println!("{}", response.message.unwrap_or_default()),
    }
    Ok(())
}
