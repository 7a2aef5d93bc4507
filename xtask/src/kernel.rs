//! Extracting the uncompressed ELF `vmlinux` from a bzImage (for PVH boot), like the kernel's own
//! `scripts/extract-vmlinux`, but reading the payload's place from the setup header.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Where the compressed payload lies in a bzImage (boot protocol 2.08+).
fn payload(bz: &[u8]) -> Result<&[u8]> {
    if bz.len() < 0x250 || &bz[0x202..0x206] != b"HdrS" {
        bail!("not a bzImage: no HdrS setup header");
    }
    let setup_sects = match bz[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let offset = u32::from_le_bytes(bz[0x248..0x24c].try_into()?) as usize;
    let length = u32::from_le_bytes(bz[0x24c..0x250].try_into()?) as usize;
    let start = (setup_sects + 1) * 512 + offset;
    bz.get(start..start + length)
        .context("bzImage payload lies outside the file")
}

/// Decompresses the payload of `bzimage` into `out` (an ELF vmlinux).
pub fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<()> {
    let bz = std::fs::read(bzimage).with_context(|| format!("reading {}", bzimage.display()))?;
    let payload = payload(&bz)?;
    let tool: &[&str] = match payload {
        [0x02, 0x21, 0x4c, 0x18, ..] => &["lz4", "-dc"],
        [0x1f, 0x8b, ..] => &["gzip", "-dc"],
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => &["xz", "-dc"],
        [0x28, 0xb5, 0x2f, 0xfd, ..] => &["zstd", "-dc"],
        [0x5d, 0x00, 0x00, ..] => &["xz", "--format=lzma", "-dc"],
        _ => bail!("unknown compression of the bzImage payload"),
    };
    // The kernel appends the uncompressed size (LE u32) after the compressed stream.
    let expected = u32::from_le_bytes(payload[payload.len() - 4..].try_into()?) as usize;
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {} (apt-get install lz4 xz-utils zstd)", tool[0]))?;
    let mut stdin = child.stdin.take().context("decompressor stdin")?;
    let data = payload.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let output = child.wait_with_output()?;
    // Decompressors complain about the trailing size word; the output length is the real check.
    let _ = writer.join();
    let elf = output.stdout;
    if elf.len() != expected || !elf.starts_with(b"\x7fELF") {
        bail!(
            "decompressing the bzImage payload gave {} bytes, expected an ELF of {expected}",
            elf.len()
        );
    }
    std::fs::write(out, elf).with_context(|| format!("writing {}", out.display()))
}
