//! `omadm`: convert and check SyncML DM messages.
//!
//! - `omadm convert --to wbxml|xml IN OUT` re-encodes a message element for element: the same
//!   elements in the same order (`-` is stdin/stdout; the input encoding is sniffed).
//! - `omadm check IN` decodes a message and pretty-prints it as XML, as it is; when it is invalid,
//!   prints the DM status a strict server would answer and why, and exits with status 1.
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
    /// Validate a message: pretty-print it when valid, else print the DM status a strict server
    /// answers and why (exit status 1).
    Check {
        /// Input file, `-` for stdin.
        input: PathBuf,
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
        Command::Check { input } => {
            let bytes = read_input(&input)?;
            match Document::decode(&bytes) {
                Ok((encoding, document)) => {
                    let pretty = document
                        .encode_pretty_xml()
                        .context("the message decodes but cannot be shown as XML")?;
                    io::stdout().write_all(&pretty)?;
                    eprintln!(
                        "omadm: valid {} message, {} command(s)",
                        encoding.media_type(),
                        document.root().child("SyncBody").map_or(0, |body| body
                            .children()
                            .iter()
                            .filter(|c| c.name() != "Final")
                            .count())
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    println!("status {}: {err}", err.status_code());
                    Ok(ExitCode::from(1))
                }
            }
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
