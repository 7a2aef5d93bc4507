//! `vsock-tool`: the guest side of the vsock host channel, for tests and users.
//!
//! ```text
//! vsock-tool listen PORT send|recv [FILE]     accept one stream connection on PORT
//! vsock-tool connect CID PORT send|recv [FILE] connect to CID:PORT (the host is CID 2)
//! vsock-tool share VMID PORT send|recv [FILE]  reach port PORT of VM VMID through the host's
//!                                              sharing broker (host port 1024)
//! ```
//!
//! `send FILE` writes the file and closes; `recv [FILE]` reads to end of file (into FILE when
//! given). Either prints `VSOCK-TOOL sent|received BYTES SHA256HEX MICROSECONDS` on success
//! (the time from the connection being set up to the end) and exits 0;
//! failures print `VSOCK-TOOL error: …` and exit 1 (a refused or reset connection included).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// A connected `AF_VSOCK` stream socket.
struct VsockStream(File);

fn sockaddr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    addr
}

fn vsock_socket() -> Result<OwnedFd> {
    // SAFETY: a plain socket call; it returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket(AF_VSOCK)");
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(rc: libc::c_int, what: &str) -> Result<()> {
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context(what.to_string());
    }
    Ok(())
}

fn connect(cid: u32, port: u32) -> Result<VsockStream> {
    use std::os::fd::AsRawFd;
    let sock = vsock_socket()?;
    let addr = sockaddr(cid, port);
    // SAFETY: `addr` is a valid sockaddr_vm that outlives the call; the length is its size.
    let rc = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    check(rc, &format!("connect to {cid}:{port}"))?;
    Ok(VsockStream(File::from(sock)))
}

fn accept_one(port: u32) -> Result<VsockStream> {
    use std::os::fd::AsRawFd;
    let sock = vsock_socket()?;
    let addr = sockaddr(libc::VMADDR_CID_ANY, port);
    // SAFETY: `addr` is a valid sockaddr_vm that outlives the call; the length is its size.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    check(rc, &format!("bind to port {port}"))?;
    // SAFETY: listen on a socket we own.
    check(unsafe { libc::listen(sock.as_raw_fd(), 1) }, "listen")?;
    println!("VSOCK-TOOL listening {port}");
    std::io::stdout().flush()?;
    // SAFETY: accept4 on our listening socket, with no address buffer (null is allowed).
    let fd = unsafe {
        libc::accept4(
            sock.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    check(fd, "accept")?;
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(VsockStream(File::from(unsafe { OwnedFd::from_raw_fd(fd) })))
}

/// Copies `from` to `to` (if any) to end of file; returns the byte count and sha256.
fn pump(from: &mut impl Read, mut to: Option<&mut dyn Write>) -> Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context(format!("read after {total} bytes")),
        };
        hasher.update(&buf[..n]);
        if let Some(out) = to.as_mut() {
            out.write_all(&buf[..n])
                .with_context(|| format!("write after {total} bytes"))?;
        }
        total += n as u64;
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((total, hex))
}

/// Host port of the sharing broker (`virmo_agent::sharing::SHARING_PORT`).
const SHARING_PORT: u32 = 1024;

/// Asks the host's sharing broker for VM `vm` port `port`: `CONNECT <vm> <port>\n`, answered
/// `OK\n`, or `DENIED …` / `REFUSED …` and closed.
fn share(vm: &str, port: u32) -> Result<VsockStream> {
    let mut stream = connect(2, SHARING_PORT)?;
    stream
        .0
        .write_all(format!("CONNECT {vm} {port}\n").as_bytes())
        .context("write to the broker")?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.0.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(e).context("read the broker's answer"),
        }
    }
    let line = String::from_utf8_lossy(&line);
    if line != "OK" {
        bail!("broker: {line}");
    }
    Ok(stream)
}

fn transfer(mut stream: VsockStream, mode: &str, file: Option<&str>) -> Result<()> {
    let started = std::time::Instant::now();
    let us = || started.elapsed().as_micros();
    match mode {
        "send" => {
            let path = file.context("send needs a FILE")?;
            let mut input = File::open(path).with_context(|| format!("opening {path}"))?;
            let (n, sha) = pump(&mut input, Some(&mut stream.0))?;
            // SAFETY: shutdown on a socket we own; the peer then reads end of file.
            let rc = unsafe {
                libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(&stream.0), libc::SHUT_WR)
            };
            check(rc, "shutdown")?;
            // Wait for the peer to close, so the data is delivered before we go.
            let _ = pump(&mut stream.0, None);
            println!("VSOCK-TOOL sent {n} {sha} {}", us());
        }
        "recv" => {
            let mut out = match file {
                Some(path) => Some(File::create(path).with_context(|| format!("creating {path}"))?),
                None => None,
            };
            let (n, sha) = pump(&mut stream.0, out.as_mut().map(|f| f as &mut dyn Write))?;
            println!("VSOCK-TOOL received {n} {sha} {}", us());
        }
        other => bail!("unknown mode {other:?} (send or recv)"),
    }
    Ok(())
}

fn parse<T: std::str::FromStr>(text: Option<&String>, what: &str) -> Result<T> {
    text.with_context(|| format!("{what} missing"))?
        .parse()
        .ok()
        .with_context(|| format!("bad {what}"))
}

fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("listen") => {
            let port = parse(args.get(1), "PORT")?;
            let mode = args.get(2).context("send or recv missing")?;
            transfer(accept_one(port)?, mode, args.get(3).map(String::as_str))
        }
        Some("connect") => {
            let cid = parse(args.get(1), "CID")?;
            let port = parse(args.get(2), "PORT")?;
            let mode = args.get(3).context("send or recv missing")?;
            transfer(connect(cid, port)?, mode, args.get(4).map(String::as_str))
        }
        Some("share") => {
            let vm = args.get(1).context("VMID missing")?;
            let port = parse(args.get(2), "PORT")?;
            let mode = args.get(3).context("send or recv missing")?;
            let started = std::time::Instant::now();
            let stream = share(vm, port)?;
            println!("VSOCK-TOOL shared {} us", started.elapsed().as_micros());
            transfer(stream, mode, args.get(4).map(String::as_str))
        }
        _ => bail!(
            "usage: vsock-tool listen PORT send|recv [FILE] | connect CID PORT send|recv [FILE] \
             | share VMID PORT send|recv [FILE]"
        ),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(err) = run(&args) {
        println!("VSOCK-TOOL error: {err:#}");
        std::process::exit(1);
    }
}
