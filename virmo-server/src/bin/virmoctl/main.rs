//! `virmoctl`: the VirMO server's admin CLI, with virsh-like verbs. Every verb is one
//! `AdminRequest` sent to the server's admin API.

use std::time::Duration;

mod print;

use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, Parser, Subcommand};
use print::{print, time};
use virmo_server::admin::client::AdminClient;
use virmo_server::admin::{AdminRequest, AdminResponse, EnrollRequest, JobRequest};
use virmo_server::jobs::{Operation, Resources};
use virmo_server::model::{AuthKind, Filter, Job, JobPolicy, JobState};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Administer a VirMO server: devices, their VMs, jobs and alerts"
)]
struct Cli {
    /// The server's URL.
    #[arg(long, env = "VIRMO_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The admin token (or --token-file).
    #[arg(long, env = "VIRMO_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the admin token (e.g. `<data-dir>/admin-token`).
    #[arg(long, env = "VIRMO_ADMIN_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// PEM certificates to trust for an https server (default: the usual web roots).
    #[arg(long, env = "VIRMO_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Print the server's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Verb,
}

/// Options of every verb that queues a job.
#[derive(Debug, Clone, ClapArgs)]
struct JobOpts {
    /// Follow the job until it is done, failed or expired (exit status 1 unless done).
    #[arg(long)]
    watch: bool,
    /// Idempotency key: the same key twice queues one job.
    #[arg(long)]
    key: Option<String>,
    /// Sessions the commands may be sent in.
    #[arg(long)]
    attempts: Option<i64>,
    /// Seconds the job may wait for delivery before it expires.
    #[arg(long)]
    deliver_within: Option<i64>,
    /// Seconds an accepted operation may take.
    #[arg(long)]
    complete_within: Option<i64>,
}

#[derive(Debug, Clone, ClapArgs)]
struct ResourceOpts {
    #[arg(long)]
    vcpus: Option<u32>,
    #[arg(long)]
    memory_mib: Option<u64>,
    #[arg(long)]
    storage_mib: Option<u64>,
    /// Percent of one host CPU (live).
    #[arg(long)]
    cpu_quota: Option<u32>,
}

impl ResourceOpts {
    fn resources(&self) -> Resources {
        Resources {
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            storage_mib: self.storage_mib,
            cpu_quota: self.cpu_quota,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Enrolls a device and prints its virmo-agent configuration.
    Enroll {
        id: String,
        #[arg(long, value_parser = ["md5", "hmac", "basic"], default_value = "md5")]
        auth: String,
        /// host:port (UDP) of the device's Pkg#0 listener.
        #[arg(long)]
        notify: Option<String>,
    },
    /// Removes a device from the registry.
    Unenroll { id: String },
    /// Lists the enrolled devices.
    Devices,
    /// One device: its VMs and unfinished jobs.
    Device { id: String },
    /// The VMs of a device, as last reported.
    Vms { device: String },
    /// The last known tree of a device.
    Tree { device: String },
    /// Reads the device's VirMO tree back.
    Refresh {
        device: String,
        #[command(flatten)]
        job: JobOpts,
    },
    /// Installs a VM from an image bundle.
    Provision {
        device: String,
        vm: String,
        #[arg(long)]
        url: String,
        /// sha256:<hex>
        #[arg(long)]
        hash: String,
        #[command(flatten)]
        resources: ResourceOpts,
        #[command(flatten)]
        job: JobOpts,
    },
    Start {
        device: String,
        vm: String,
        #[command(flatten)]
        job: JobOpts,
    },
    Stop {
        device: String,
        vm: String,
        #[command(flatten)]
        job: JobOpts,
    },
    Suspend {
        device: String,
        vm: String,
        #[command(flatten)]
        job: JobOpts,
    },
    Resume {
        device: String,
        vm: String,
        #[command(flatten)]
        job: JobOpts,
    },
    /// Locks a VM (partially: it runs, no local user reaches it; --full: also paused).
    Lock {
        device: String,
        vm: String,
        #[arg(long)]
        full: bool,
        /// Lets the local user unlock with this code.
        #[arg(long)]
        user_unlock_code: Option<String>,
        #[command(flatten)]
        job: JobOpts,
    },
    Unlock {
        device: String,
        vm: String,
        #[command(flatten)]
        job: JobOpts,
    },
    /// Deletes a VM and its data.
    Delete {
        device: String,
        vm: String,
        #[command(flatten)]
        job: JobOpts,
    },
    /// Lists a VM's peripherals, or allows/denies one.
    Peripherals {
        device: String,
        vm: String,
        peripheral: Option<String>,
        #[arg(long, conflicts_with = "deny")]
        allow: bool,
        #[arg(long)]
        deny: bool,
        #[command(flatten)]
        job: JobOpts,
    },
    /// Allows or denies data sharing with other VMs.
    Sharing {
        device: String,
        vm: String,
        #[arg(value_parser = ["allow", "deny"])]
        mode: String,
        /// Comma-separated VM IDs, or "*".
        #[arg(long)]
        peers: Option<String>,
        #[command(flatten)]
        job: JobOpts,
    },
    /// Changes a VM's resources.
    Resources {
        device: String,
        vm: String,
        #[command(flatten)]
        resources: ResourceOpts,
        #[command(flatten)]
        job: JobOpts,
    },
    /// Updates a VM's firmware (FUMO DownloadAndUpdate).
    Firmware {
        device: String,
        vm: String,
        #[arg(long)]
        url: String,
        #[command(flatten)]
        job: JobOpts,
    },
    /// Lists jobs (`jobs cancel ID`: cancels one).
    #[command(args_conflicts_with_subcommands = true)]
    Jobs {
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(subcommand)]
        action: Option<JobsAction>,
    },
    /// One job with its responses (--watch: follow it).
    Job {
        id: i64,
        #[arg(long)]
        watch: bool,
    },
    /// Lists Generic Alerts (--follow: keep printing new ones).
    Alerts {
        #[arg(long)]
        device: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        follow: bool,
    },
    /// Lists events (sessions, refused devices, failures, timeouts).
    Events {
        #[arg(long)]
        device: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
enum JobsAction {
    /// Cancels a job: a queued one is never sent; one already sent or accepted is marked
    /// cancel-requested (an operation the device accepted cannot be withdrawn) and its outcome
    /// recorded. A finished job cannot be cancelled (exit status 1).
    Cancel { id: i64 },
}

fn token(cli: &Cli) -> Result<String> {
    if let Some(token) = &cli.token {
        return Ok(token.clone());
    }
    if let Some(path) = &cli.token_file {
        return Ok(std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_owned());
    }
    bail!("give --token, --token-file, VIRMO_ADMIN_TOKEN or VIRMO_ADMIN_TOKEN_FILE")
}

/// Follows a job until it is finished; returns its last state.
fn watch(client: &AdminClient, mut job: Job, json: bool) -> Result<JobState> {
    println!("{}  job {} {}", time(job.updated_at), job.id, job.state);
    while !job.state.is_terminal() {
        let request = AdminRequest::Job {
            id: job.id,
            changed_since: Some(job.updated_at),
            wait_ms: Some(30_000),
        };
        let AdminResponse::Job(view) = client.send(&request)? else {
            bail!("unexpected answer");
        };
        if view.job.updated_at != job.updated_at || view.job.state != job.state {
            let line = format!(
                "{}  job {} {}  {}",
                time(view.job.updated_at),
                view.job.id,
                view.job.state,
                view.job.error.as_deref().unwrap_or_default()
            );
            println!("{}", line.trim_end());
        }
        job = view.job;
        if json && job.state.is_terminal() {
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
    }
    Ok(job.state)
}

fn queue(
    cli: &Cli,
    client: &AdminClient,
    device: &str,
    operation: Operation,
    opts: &JobOpts,
) -> Result<()> {
    let defaults = JobPolicy::default();
    let policy = (opts.attempts.is_some()
        || opts.deliver_within.is_some()
        || opts.complete_within.is_some())
    .then(|| JobPolicy {
        max_attempts: opts.attempts.unwrap_or(defaults.max_attempts),
        deliver_within_ms: opts
            .deliver_within
            .map_or(defaults.deliver_within_ms, |s| s * 1000),
        complete_within_ms: opts
            .complete_within
            .map_or(defaults.complete_within_ms, |s| s * 1000),
        lease_ms: defaults.lease_ms,
    });
    let request = AdminRequest::Queue {
        device: device.to_owned(),
        job: JobRequest {
            operation,
            idempotency_key: opts.key.clone(),
            policy,
        },
    };
    let response = client.send(&request)?;
    show(cli, &response)?;
    if opts.watch {
        let AdminResponse::Queued { job, .. } = response else {
            bail!("unexpected answer");
        };
        if watch(client, *job, cli.json)? != JobState::Done {
            std::process::exit(1);
        }
    }
    Ok(())
}

fn show(cli: &Cli, response: &AdminResponse) -> Result<()> {
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&response.clone().into_body())?
        );
    } else {
        print(response);
    }
    Ok(())
}

fn vm_op(op: &str, vm: &str) -> Operation {
    let vm = vm.to_owned();
    match op {
        "start" => Operation::Start { vm },
        "stop" => Operation::Stop { vm },
        "suspend" => Operation::Suspend { vm },
        "resume" => Operation::Resume { vm },
        "unlock" => Operation::Unlock { vm },
        _ => Operation::Delete { vm },
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let client = match &cli.ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the CA file {}", path.display()))?;
            AdminClient::with_ca_pem(&cli.server, &token(&cli)?, &pem)
                .with_context(|| format!("the CA file {}", path.display()))?
        }
        None => AdminClient::new(&cli.server, &token(&cli)?),
    };
    let send = |request: AdminRequest| -> Result<()> { show(&cli, &client.send(&request)?) };
    let list = |device: &Option<String>, limit: i64| Filter {
        device_id: device.clone(),
        limit: Some(limit),
        ..Filter::default()
    };
    match &cli.command {
        Verb::Enroll { id, auth, notify } => send(AdminRequest::Enroll(EnrollRequest {
            id: id.clone(),
            auth: AuthKind::parse(auth),
            notify_addr: notify.clone(),
            ..EnrollRequest::default()
        })),
        Verb::Unenroll { id } => send(AdminRequest::Unenroll { id: id.clone() }),
        Verb::Devices => send(AdminRequest::Devices),
        Verb::Device { id } => send(AdminRequest::Device { id: id.clone() }),
        Verb::Vms { device } => send(AdminRequest::Vms {
            device: device.clone(),
        }),
        Verb::Tree { device } => send(AdminRequest::Tree {
            device: device.clone(),
        }),
        Verb::Refresh { device, job } => queue(&cli, &client, device, Operation::Refresh, job),
        Verb::Provision {
            device,
            vm,
            url,
            hash,
            resources,
            job,
        } => queue(
            &cli,
            &client,
            device,
            Operation::Provision {
                vm: vm.clone(),
                pkg_url: url.clone(),
                pkg_hash: hash.clone(),
                resources: resources.resources(),
            },
            job,
        ),
        Verb::Start { device, vm, job } => queue(&cli, &client, device, vm_op("start", vm), job),
        Verb::Stop { device, vm, job } => queue(&cli, &client, device, vm_op("stop", vm), job),
        Verb::Suspend { device, vm, job } => {
            queue(&cli, &client, device, vm_op("suspend", vm), job)
        }
        Verb::Resume { device, vm, job } => queue(&cli, &client, device, vm_op("resume", vm), job),
        Verb::Unlock { device, vm, job } => queue(&cli, &client, device, vm_op("unlock", vm), job),
        Verb::Delete { device, vm, job } => queue(&cli, &client, device, vm_op("delete", vm), job),
        Verb::Lock {
            device,
            vm,
            full,
            user_unlock_code,
            job,
        } => queue(
            &cli,
            &client,
            device,
            Operation::Lock {
                vm: vm.clone(),
                full: *full,
                user_unlock_code: user_unlock_code.clone(),
            },
            job,
        ),
        Verb::Peripherals {
            device,
            vm,
            peripheral,
            allow,
            deny,
            job,
        } => match peripheral {
            Some(peripheral) => {
                if allow == deny {
                    bail!("say --allow or --deny");
                }
                queue(
                    &cli,
                    &client,
                    device,
                    Operation::Peripheral {
                        vm: vm.clone(),
                        peripheral: peripheral.clone(),
                        allowed: *allow,
                    },
                    job,
                )
            }
            None => {
                let AdminResponse::Vms(vms) = client.send(&AdminRequest::Vms {
                    device: device.clone(),
                })?
                else {
                    bail!("unexpected answer");
                };
                let vm = vms
                    .iter()
                    .find(|v| &v.name == vm)
                    .with_context(|| format!("no VM `{vm}` known on {device}"))?;
                for (path, value) in &vm.values {
                    if let Some(name) = path
                        .strip_prefix("Peripherals/")
                        .and_then(|p| p.strip_suffix("/Allowed"))
                    {
                        println!(
                            "{name:<16} {}",
                            if value == "true" { "allowed" } else { "denied" }
                        );
                    }
                }
                Ok(())
            }
        },
        Verb::Sharing {
            device,
            vm,
            mode,
            peers,
            job,
        } => queue(
            &cli,
            &client,
            device,
            Operation::Sharing {
                vm: vm.clone(),
                allowed: mode == "allow",
                peers: peers.clone(),
            },
            job,
        ),
        Verb::Resources {
            device,
            vm,
            resources,
            job,
        } => queue(
            &cli,
            &client,
            device,
            Operation::Resources {
                vm: vm.clone(),
                resources: resources.resources(),
            },
            job,
        ),
        Verb::Firmware {
            device,
            vm,
            url,
            job,
        } => queue(
            &cli,
            &client,
            device,
            Operation::Firmware {
                vm: vm.clone(),
                pkg_url: url.clone(),
            },
            job,
        ),
        Verb::Jobs {
            action: Some(JobsAction::Cancel { id }),
            ..
        } => send(AdminRequest::CancelJob { id: *id }),
        Verb::Jobs {
            device,
            state,
            limit,
            action: None,
        } => {
            let state = match state {
                Some(s) => Some(JobState::parse(s).with_context(|| format!("no job state `{s}`"))?),
                None => None,
            };
            send(AdminRequest::Jobs {
                filter: Filter {
                    state,
                    ..list(device, *limit)
                },
            })
        }
        Verb::Job { id, watch: follow } => {
            let response = client.send(&AdminRequest::Job {
                id: *id,
                changed_since: None,
                wait_ms: None,
            })?;
            show(&cli, &response)?;
            if *follow {
                let AdminResponse::Job(view) = response else {
                    bail!("unexpected answer");
                };
                if watch(&client, view.job, cli.json)? != JobState::Done {
                    std::process::exit(1);
                }
            }
            Ok(())
        }
        Verb::Alerts {
            device,
            limit,
            follow,
        } => {
            let response = client.send(&AdminRequest::Alerts {
                filter: list(device, *limit),
            })?;
            show(&cli, &response)?;
            if *follow {
                let AdminResponse::Alerts(alerts) = response else {
                    bail!("unexpected answer");
                };
                let mut last = alerts.iter().map(|a| a.id).max().unwrap_or(0);
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    let filter = Filter {
                        after_id: Some(last),
                        ..list(device, 1000)
                    };
                    let response = client.send(&AdminRequest::Alerts { filter })?;
                    if let AdminResponse::Alerts(alerts) = &response {
                        if let Some(max) = alerts.iter().map(|a| a.id).max() {
                            last = max;
                            show(&cli, &response)?;
                        }
                    }
                }
            }
            Ok(())
        }
        Verb::Events { device, limit } => send(AdminRequest::Events {
            filter: list(device, *limit),
        }),
    }
}
