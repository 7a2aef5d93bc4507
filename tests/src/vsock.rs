//! Host side of the vsock host channel for tests: guests with a vsock device, the `CONNECT`
//! handshake on the VMM's socket, and the byte count and sha256 of a stream.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::{Guest, TempDir, TestEnv};

/// How long a guest may take to boot in the runner.
pub const BOOT: Duration = Duration::from_secs(90);

/// A shell guest with a vsock device of CID `cid` listening at `<dir>/vm<cid>.vsock`; the
/// test types on its console. Returns the guest and the socket path.
pub fn shell_guest(env: &TestEnv, dir: &TempDir, cid: u32) -> (Guest, PathBuf) {
    let uds = dir.path().join(format!("vm{cid}.vsock"));
    let mut guest = env
        .guest("")
        .cmdline("console=ttyS0 quiet panic=-1")
        .with_console_input()
        .arg(format!("--vsock=cid={cid},uds={}", uds.display()))
        .spawn();
    guest.wait_for("VIRMO-GUEST-READY", BOOT);
    // Let the shell start before typing.
    std::thread::sleep(Duration::from_millis(500));
    (guest, uds)
}

/// Connects to guest port `port` through the VMM's socket `uds`: `CONNECT port`, then the
/// `OK <host port>` line. `Err` with what came instead (end of file: the guest refused).
pub fn connect_to_guest(uds: &Path, port: u32) -> Result<(UnixStream, u32), String> {
    let mut stream = UnixStream::connect(uds).map_err(|e| format!("connect {uds:?}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(|e| format!("write CONNECT: {e}"))?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return Err(format!("end of file after {line:?}")),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(format!("reading OK line: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&line).to_string();
    let port = line
        .strip_prefix("OK ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("not an OK line: {line:?}"))?;
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok((stream, port))
}

/// Lower-case hex sha256.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `len` bytes that differ from run to run and do not compress (xorshift from the clock).
pub fn payload(len: usize) -> Vec<u8> {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Parses the rest of a `VSOCK-TOOL sent|received ` line: (bytes, sha256).
pub fn tool_result(rest: &str) -> (usize, String) {
    let mut parts = rest.split_whitespace();
    let bytes = parts
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {rest:?}"));
    let sha = parts
        .next()
        .unwrap_or_else(|| panic!("no sha256 in {rest:?}"))
        .to_string();
    (bytes, sha)
}
