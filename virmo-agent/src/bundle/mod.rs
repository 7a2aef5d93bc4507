//! Image bundles: what Provision downloads and installs (`docs/virmo-mo.md`, "Image bundles").
//!
//! A bundle is a POSIX tar archive holding `virmo-bundle.toml` ([`Manifest`]) and the files it
//! names: a kernel, optionally an initramfs and a disk image. The manifest gives each file's
//! sha256 and the VM's defaults (command line, vCPUs, memory, disk size, peripherals).
//!
//! - [`download`]: HTTP download, resumed after an interruption (also across agent restarts:
//!   the partial file is kept), checked against the `sha256:` hash the server gave.
//! - [`extract`]: checks and unpacks a bundle into the image store, all or nothing.
//! - [`create`]: builds a bundle (tests, and the `virmo-agent bundle` command).

pub mod create;
pub mod download;
pub mod extract;
mod manifest;

pub use manifest::{Manifest, MANIFEST_NAME};

/// A sha256 as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses `sha256:<64 hex>` (the `PkgHash` form) or bare hex.
pub fn parse_pkg_hash(text: &str) -> Option<[u8; 32]> {
    let hex_text = text.trim();
    let hex_text = hex_text.strip_prefix("sha256:").unwrap_or(hex_text);
    if hex_text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex_text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// sha256 of a file.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkg_hashes_parse() {
        let hex_text = "ab".repeat(32);
        assert_eq!(
            parse_pkg_hash(&format!("sha256:{hex_text}")),
            Some([0xab; 32])
        );
        assert_eq!(parse_pkg_hash(&hex_text), Some([0xab; 32]));
        assert_eq!(parse_pkg_hash("sha256:abc"), None);
        assert_eq!(parse_pkg_hash(&format!("sha256:{}", "zz".repeat(32))), None);
        assert_eq!(hex(&[0x0f, 0xa0]), "0fa0");
    }
}
