//! Memory mapped for one job and unmapped when dropped, so nothing is left on the heap: a file
//! mapped read-only (the bzImage the VMM decompresses, straight from the page cache) and an
//! anonymous scratch buffer (glibc would keep a freed multi-MiB buffer of a short-lived thread in
//! that thread's arena, counted as VMM overhead for the VM's whole life).

use std::fs::File;
use std::os::fd::AsRawFd;

/// A read-only private mapping of a whole file.
pub struct MappedFile {
    addr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value; sharing or sending the pointer to
// other threads only allows reads of memory that stays mapped until drop.
unsafe impl Send for MappedFile {}
// SAFETY: as above; `&MappedFile` only gives `&[u8]`.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Maps all of `file`. An empty file gives an empty mapping.
    pub fn map(file: &File) -> std::io::Result<Self> {
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::FileTooLarge))?;
        if len == 0 {
            return Ok(Self {
                addr: std::ptr::null_mut(),
                len: 0,
            });
        }
        // SAFETY: a new private read-only mapping of `len` bytes of an open file at an address
        // the kernel chooses; it aliases no Rust object.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { addr, len })
    }

    pub fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `addr` is a live read-only mapping of `len` bytes until drop. The file could
        // be truncated by another process meanwhile (SIGBUS on access), as with any mapped
        // file; the VMM's own boot files are not.
        unsafe { std::slice::from_raw_parts(self.addr.cast::<u8>(), self.len) }
    }
}

/// A zeroed, private, anonymous read-write buffer.
pub struct ScratchBuffer {
    addr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the buffer is owned by this value; `&mut` access is needed to write it.
unsafe impl Send for ScratchBuffer {}

impl ScratchBuffer {
    /// A buffer of `len` bytes (at least 1).
    pub fn new(len: usize) -> std::io::Result<Self> {
        let len = len.max(1);
        // SAFETY: a new private anonymous mapping at an address the kernel chooses; it aliases
        // no Rust object.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { addr, len })
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `addr` is a live read-write mapping of `len` bytes until drop, reachable
        // only through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.addr.cast::<u8>(), self.len) }
    }
}

impl Drop for ScratchBuffer {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no slice outlives `self`.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmaps exactly the mapping made in `map`; no slice from `bytes` outlives
            // `self`.
            unsafe { libc::munmap(self.addr, self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn maps_the_whole_file_and_empty_files() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"bzImage bytes").unwrap();
        assert_eq!(MappedFile::map(&file).unwrap().bytes(), b"bzImage bytes");
        let empty = tempfile::tempfile().unwrap();
        assert_eq!(MappedFile::map(&empty).unwrap().bytes(), b"");
    }

    #[test]
    fn scratch_buffer_is_zeroed_and_writable() {
        let mut buf = ScratchBuffer::new(3 << 20).unwrap();
        assert!(buf.bytes_mut().iter().all(|&b| b == 0));
        buf.bytes_mut()[(3 << 20) - 1] = 7;
        assert_eq!(buf.bytes_mut()[(3 << 20) - 1], 7);
        assert_eq!(ScratchBuffer::new(0).unwrap().bytes_mut().len(), 1);
    }
}
