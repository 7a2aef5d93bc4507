//! A tap interface opened through /dev/net/tun: `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`,
//! non-blocking, with the 12-byte virtio 1.x net header on every frame.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, RawFd};

/// Size of `struct virtio_net_hdr_v1` (with `num_buffers`), which VIRTIO_F_VERSION_1 implies.
pub const VNET_HDR_SIZE: usize = 12;

/// Why a tap could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot open /dev/net/tun")]
    OpenTun(#[source] io::Error),
    #[error("tap name {0:?} is empty, too long or contains a NUL")]
    BadName(String),
    #[error("cannot attach to tap interface {name} (TUNSETIFF)")]
    SetIff {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the virtio-net header size on tap {name} (TUNSETVNETHDRSZ)")]
    SetVnetHdrSize {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// An open tap interface.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Attaches to the tap interface `name`, creating it if the process may.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(TapError::BadName(name.to_owned()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;

        // SAFETY: `ifreq` is plain old data (integers, byte arrays, a union of those and a
        // pointer); all-zero bytes are a valid value of every field.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags =
            (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; `ifr` is a valid, initialised
        // `ifreq` that outlives the call, and `file` is an open /dev/net/tun fd.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if ret < 0 {
            return Err(TapError::SetIff {
                name: name.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        let hdr_size: libc::c_int = VNET_HDR_SIZE as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer; `hdr_size` is a valid
        // int that outlives the call.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_size) };
        if ret < 0 {
            return Err(TapError::SetVnetHdrSize {
                name: name.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(Tap {
            file,
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (with its net header). `WouldBlock` when none is queued.
    pub fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    /// Writes one frame (with its net header).
    pub fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.file.write(frame)
    }

    /// Writes one frame (with its net header) gathered from `iovecs`: one `writev`, so the tap
    /// takes it as one frame, segmenting it itself when the header asks for TSO.
    pub fn write_frame_from(&mut self, iovecs: &[libc::iovec]) -> io::Result<usize> {
        let count = libc::c_int::try_from(iovecs.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `iovecs` is a valid array of `count` iovecs; the caller guarantees each names
        // readable memory that stays mapped for the call. The kernel only reads it.
        let n = unsafe { libc::writev(self.file.as_raw_fd(), iovecs.as_ptr(), count) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
