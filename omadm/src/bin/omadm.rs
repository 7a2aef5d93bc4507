//! `omadm`: convert and check SyncML DM messages.
//!
//! - `omadm convert --to wbxml|xml IN OUT` re-encodes a message element for element: the same
//!   elements in the same order (`-` is stdin/stdout; the input encoding is sniffed).
//! - `omadm check IN [--max-depth N --max-tot-len N --max-seg-len N]` decodes a message, checks
//!   the DM rules a session applies (`omadm::rules`: CmdIDs, nested Atomic, item URIs within the
//!   device's `DevDetail/URI` limits) and pretty-prints it as XML, as it is; when it is invalid,
//!   prints the DM status a strict peer would answer and why, and exits with status 1.
//! - `omadm notification decode IN [--password P --nonce N]` decodes a Pkg#0 notification and
//!   verifies its digest.

use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use omadm::codec::{Document, Encoding};
use omadm::notification;
use omadm::rules;
use omadm::tree::UriLimits;

#[derive(Parser)]
#[command(
    name = "omadm",
    version,
    about = "Convert and check OMA DM (SyncML DM) messages"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Re-encode a message as XML or WBXML, element for element (the input encoding is
    /// detected).
    Convert {
        /// Output encoding.
        #[arg(long, value_enum)]
        to: Target,
        /// Input file, `-` for stdin.
        input: PathBuf,
        /// Output file, `-` for stdout.
        output: PathBuf,
    },
    /// Validate a message: pretty-print it when valid, else print the DM status a strict peer
    /// answers and why (exit status 1).
    Check {
        /// Input file, `-` for stdin.
        input: PathBuf,
        #[command(flatten)]
        uri_limits: UriLimitArgs,
    },
    /// Pkg#0 (server-alerted session) notifications.
    Notification {
        #[command(subcommand)]
        command: NotificationCommand,
    },
}

#[derive(Subcommand)]
enum NotificationCommand {
    /// Decode a Pkg#0 notification message; with --password, verify its digest too (exit status 1
    /// when it does not match).
    Decode {
        /// Input file, `-` for stdin.
        input: PathBuf,
        /// The server's password (its DMAcc server credential), to verify the digest.
        #[arg(long)]
        password: Option<String>,
        /// The nonce the device holds for the server, as text (default: the empty nonce).
        #[arg(long, default_value = "")]
        nonce: String,
    },
}

/// The device's URI limits, as in `./DevDetail/URI` (0: no limit); item URIs beyond them get 414.
#[derive(clap::Args)]
struct UriLimitArgs {
    /// MaxDepth: most segments below the root.
    #[arg(long, default_value_t = UriLimits::default().max_depth)]
    max_depth: usize,
    /// MaxTotLen: longest URI, in bytes.
    #[arg(long, default_value_t = UriLimits::default().max_total_len)]
    max_tot_len: usize,
    /// MaxSegLen: longest segment, in bytes.
    #[arg(long, default_value_t = UriLimits::default().max_segment_len)]
    max_seg_len: usize,
}

impl From<UriLimitArgs> for UriLimits {
    fn from(args: UriLimitArgs) -> Self {
        Self {
            max_depth: args.max_depth,
            max_total_len: args.max_tot_len,
            max_segment_len: args.max_seg_len,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Target {
    Xml,
    Wbxml,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("omadm: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Convert { to, input, output } => {
            let bytes = read_input(&input)?;
            let (from, document) = Document::decode(&bytes)
                .with_context(|| format!("{} is not a valid SyncML DM message", input.display()))?;
            let encoding = match to {
                Target::Xml => Encoding::Xml,
                Target::Wbxml => Encoding::Wbxml,
            };
            let out = match encoding {
                Encoding::Xml => document.encode_pretty_xml(),
                Encoding::Wbxml => document.encode(encoding),
            }
            .with_context(|| format!("cannot encode the message as {encoding:?}"))?;
            write_output(&output, &out)?;
            eprintln!(
                "omadm: converted {from:?} ({} bytes) to {encoding:?} ({} bytes)",
                bytes.len(),
                out.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { input, uri_limits } => {
            let bytes = read_input(&input)?;
            let (encoding, document) = match Document::decode(&bytes) {
                Ok(decoded) => decoded,
                Err(err) => {
                    println!("status {}: {err}", err.status_code());
                    return Ok(ExitCode::from(1));
                }
            };
            let msg = document
                .message()
                .context("the document does not read back as a message")?;
            if let Err(violation) = rules::check_message(&msg, &uri_limits.into()) {
                let whom = match violation.cmd_id() {
                    Some(cmd_id) => format!("command {cmd_id}"),
                    None => "the message".to_owned(),
                };
                println!("status {} ({whom}): {violation}", violation.status());
                return Ok(ExitCode::from(1));
            }
            let pretty = document
                .encode_pretty_xml()
                .context("the message decodes but cannot be shown as XML")?;
            io::stdout().write_all(&pretty)?;
            eprintln!(
                "omadm: valid {} message, {} command(s)",
                encoding.media_type(),
                msg.body.commands.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Notification {
            command:
                NotificationCommand::Decode {
                    input,
                    password,
                    nonce,
                },
        } => {
            let bytes = read_input(&input)?;
            let (n, digest) = notification::decode(&bytes).context("not a Pkg#0 notification")?;
            println!("digest:          {}", hex(&digest));
            println!("version:         {}.{}", n.version / 10, n.version % 10);
            println!("ui-mode:         {:?}", n.ui_mode);
            println!("initiator:       {:?}", n.initiator);
            println!("session-id:      {} (0x{:04x})", n.session_id, n.session_id);
            println!("server-id:       {}", n.server_id);
            println!("vendor-specific: {}", hex(&n.vendor_specific));
            match password {
                None => Ok(ExitCode::SUCCESS),
                Some(password) => {
                    let verdict = notification::verify(&bytes, |_| {
                        Some((password, vec![nonce.into_bytes()]))
                    });
                    match verdict {
                        Ok(_) => {
                            println!("digest verified");
                            Ok(ExitCode::SUCCESS)
                        }
                        Err(err) => {
                            println!("digest NOT verified: {err}");
                            Ok(ExitCode::from(1))
                        }
                    }
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_input(path: &PathBuf) -> Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read stdin")?;
        Ok(bytes)
    } else {
        fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

fn write_output(path: &PathBuf, bytes: &[u8]) -> Result<()> {
    if path.as_os_str() == "-" {
        let mut stdout = io::stdout().lock();
        stdout.write_all(bytes).context("cannot write stdout")?;
        stdout.flush().context("cannot write stdout")
    } else {
        fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
    }
}
