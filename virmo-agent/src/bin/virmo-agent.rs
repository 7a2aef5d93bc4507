//! `virmo-agent`: the VirMO device agent.
//!
//! ```text
//! virmo-agent [--config FILE] [--data-dir DIR] [--vmm PATH]
//! virmo-agent bundle --kernel K [--initramfs I] [--disk D] --cmdline C --name N --version V
//!             [--vcpus N] [--memory-mib M] [--storage-mib S] [--entropy] [--removable-mib R]
//!             [--network] [--ready-marker TEXT] --output OUT.tar
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use virmo_agent::agent::Agent;
use virmo_agent::bundle::create::{write_bundle, BundleSpec};
use virmo_agent::config::AgentConfig;

/// The VirMO device agent: the host's VMs as the VirMO management tree of a DM server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML configuration file (server account, listen addresses, limits).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data directory (database, VMs, images) [default: the file's, else /var/lib/virmo].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The vmm binary [default: the file's, else beside this binary, else on PATH].
    #[arg(long)]
    vmm: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Builds an image bundle and prints its PkgHash.
    Bundle {
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        initramfs: Option<PathBuf>,
        #[arg(long)]
        disk: Option<PathBuf>,
        #[arg(long)]
        cmdline: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        #[arg(long, default_value_t = 1)]
        vcpus: u8,
        #[arg(long, default_value_t = 256)]
        memory_mib: u64,
        #[arg(long, default_value_t = 64)]
        storage_mib: u64,
        #[arg(long)]
        entropy: bool,
        #[arg(long, default_value_t = 0)]
        removable_mib: u64,
        /// A network device (`net0`) on a tap the VMM creates.
        #[arg(long)]
        network: bool,
        #[arg(long)]
        ready_marker: Option<String>,
        #[arg(long)]
        output: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(Command::Bundle {
        kernel,
        initramfs,
        disk,
        cmdline,
        name,
        version,
        vcpus,
        memory_mib,
        storage_mib,
        entropy,
        removable_mib,
        network,
        ready_marker,
        output,
    }) = cli.command
    {
        let spec = BundleSpec {
            name,
            version,
            kernel,
            initramfs,
            disk,
            cmdline,
            ready_marker,
            vcpus,
            memory_mib,
            storage_mib,
            entropy,
            removable_mib,
            network,
        };
        let digest = write_bundle(&spec, &output).context("writing the bundle")?;
        println!("sha256:{}", virmo_agent::bundle::hex(&digest));
        return Ok(());
    }
    let mut config = match &cli.config {
        Some(path) => AgentConfig::from_file(path)?,
        None => AgentConfig::default(),
    };
    if let Some(vmm) = cli.vmm {
        config.vmm_bin = Some(vmm);
    }
    let data_dir = config.resolve_data_dir(cli.data_dir.as_deref());
    let data_dir = if data_dir.is_absolute() {
        data_dir
    } else {
        std::env::current_dir()?.join(data_dir)
    };
    let agent = Agent::start(config, &data_dir).context("starting the agent")?;
    eprintln!(
        "virmo-agent: ready; local socket {}{}",
        agent.local_socket.display(),
        agent
            .notification_addr
            .map(|a| format!(", Pkg#0 on udp {a}"))
            .unwrap_or_default()
    );
    // Everything runs on the agent's threads; the agent may be killed at any moment (its state
    // is in the database, and its VMs run on in their own processes).
    loop {
        std::thread::park();
    }
}
