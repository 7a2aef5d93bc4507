//! A writer for the "newc" cpio format, the one the Linux kernel unpacks as an initramfs.

use std::collections::BTreeSet;

/// Builds a newc archive in memory. Parent directories are created on demand, once each.
#[derive(Default)]
pub struct CpioWriter {
    out: Vec<u8>,
    dirs: BTreeSet<String>,
    next_inode: u32,
}

const MODE_DIR: u32 = 0o040000;
const MODE_FILE: u32 = 0o100000;
const MODE_SYMLINK: u32 = 0o120000;

impl CpioWriter {
    pub fn new() -> Self {
        Self {
            next_inode: 1,
            ..Self::default()
        }
    }

    /// Adds a directory (and its parents) with mode 0755.
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.insert(path.to_string());
        self.entry(path, MODE_DIR | 0o755, &[]);
    }

    /// Adds a regular file with the given permission bits; parents are created.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entry(path, MODE_FILE | (perm & 0o7777), data);
    }

    /// Adds a symbolic link `path` -> `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entry(path, MODE_SYMLINK | 0o777, target.as_bytes());
    }

    /// Writes the trailer and returns the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        let inode = self.next_inode;
        self.next_inode += 1;
        let nlink = if mode & MODE_DIR == MODE_DIR { 2 } else { 1 };
        let header = format!(
            "070701{inode:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}\
             {dmaj:08x}{dmin:08x}{rmaj:08x}{rmin:08x}{namesize:08x}{check:08x}",
            uid = 0,
            gid = 0,
            mtime = 0,
            size = data.len(),
            dmaj = 0,
            dmin = 0,
            rmaj = 0,
            rmin = 0,
            namesize = name.len() + 1,
            check = 0,
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parents_are_created_once_and_entries_are_aligned() {
        let mut w = CpioWriter::new();
        w.file("a/b/c.txt", 0o644, b"hello");
        w.file("a/b/d.txt", 0o644, b"x");
        let out = w.finish();
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("a/b\0").count(), 1);
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        assert!(text.contains("TRAILER!!!"));
    }

    #[test]
    fn cpio_tool_reads_our_archive() {
        let mut w = CpioWriter::new();
        w.file("dir/f", 0o755, b"content");
        w.symlink("dir/l", "f");
        let out = w.finish();
        let listed = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().expect("stdin").write_all(&out)?;
                child.wait_with_output()
            })
            .expect("the cpio tool runs (apt-get install cpio)");
        let names = String::from_utf8_lossy(&listed.stdout);
        assert_eq!(names.lines().collect::<Vec<_>>(), ["dir", "dir/f", "dir/l"]);
    }
}
