//! Where the serial console's output goes (stdout, a file, nowhere), the stdin feeder for console
//! input, and the boot-time probe: the first time the guest prints `VIRMO-GUEST-READY`, the VMM
//! reports on stderr how long after its start that happened.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::ConsoleConfig;
use crate::devices::serial::SerialDevice;

/// The line the guest's `/init` prints when it is up.
pub const READY_MARKER: &[u8] = b"VIRMO-GUEST-READY";

/// Watches a byte stream for [`READY_MARKER`].
#[derive(Debug)]
struct MarkerWatcher {
    matched: usize,
    seen: bool,
}

impl MarkerWatcher {
    /// Feeds `bytes`; true the first time the marker completes.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        if self.seen {
            return false;
        }
        for &byte in bytes {
            if byte == READY_MARKER[self.matched] {
                self.matched += 1;
            } else {
                self.matched = usize::from(byte == READY_MARKER[0]);
            }
            if self.matched == READY_MARKER.len() {
                self.seen = true;
                return true;
            }
        }
        false
    }
}

/// The serial console's output sink.
pub struct ConsoleOutput {
    sink: Option<Box<dyn Write + Send>>,
    watcher: MarkerWatcher,
    started: Instant,
    /// When the marker was seen; reported once the guest ends that line, so the report does
    /// not split the marker's line when stdout and stderr share a terminal or pipe.
    ready_after: Option<Duration>,
}

impl ConsoleOutput {
    /// Output to `sink` (none discards). `started` is when the VMM started.
    pub fn new(sink: Option<Box<dyn Write + Send>>, started: Instant) -> Self {
        Self {
            sink,
            watcher: MarkerWatcher {
                matched: 0,
                seen: false,
            },
            started,
            ready_after: None,
        }
    }

    /// Opens the sink `config` names.
    pub fn open(config: &ConsoleConfig, started: Instant) -> io::Result<Self> {
        let sink: Option<Box<dyn Write + Send>> = match config {
            ConsoleConfig::Stdout => Some(Box::new(io::stdout())),
            ConsoleConfig::File(path) => Some(Box::new(
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
            ConsoleConfig::None => None,
        };
        Ok(Self::new(sink, started))
    }

    fn report_ready(&self, after: Duration) {
        eprintln!(
            "vmm: {} after {} ms",
            String::from_utf8_lossy(READY_MARKER),
            after.as_millis()
        );
    }
}

impl Write for ConsoleOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.watcher.feed(buf) {
            self.ready_after = Some(self.started.elapsed());
        }
        if let Some(sink) = &mut self.sink {
            // The guest may print prompts without a newline: never hold output back.
            if let Err(e) = sink.write_all(buf).and_then(|()| sink.flush()) {
                // A closed pipe or full disk must not stall or flood the guest's console: stop
                // writing and say so once.
                tracing::warn!("serial console output stopped: {e}");
                self.sink = None;
            }
        }
        if buf.contains(&b'\n') {
            if let Some(after) = self.ready_after.take() {
                self.report_ready(after);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Some(sink) => sink.flush(),
            None => Ok(()),
        }
    }
}

/// Feeds the VMM's stdin into the serial port's receive FIFO until stdin ends.
pub fn spawn_stdin_reader(serial: Arc<Mutex<SerialDevice>>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("vmm-stdin".into())
        .spawn(move || {
            crate::seccomp::confine_current_thread(crate::seccomp::ThreadClass::ConsoleInput);
            let mut stdin = io::stdin();
            let mut buf = [0u8; 64];
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                };
                let mut pending = &buf[..n];
                while !pending.is_empty() {
                    let taken = serial
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .enqueue_input(pending);
                    pending = &pending[taken..];
                    if taken == 0 {
                        // The guest has not drained the FIFO yet.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_is_found_across_writes_once() {
        let mut w = MarkerWatcher {
            matched: 0,
            seen: false,
        };
        assert!(!w.feed(b"boot... VIRMO-GU"));
        assert!(w.feed(b"EST-READY\n"));
        assert!(!w.feed(b"VIRMO-GUEST-READY"));
    }

    #[test]
    fn marker_restarts_after_a_partial_match() {
        let mut w = MarkerWatcher {
            matched: 0,
            seen: false,
        };
        assert!(w.feed(b"VIRMO-VIRMO-GUEST-READY"));
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_sink_is_dropped_and_the_guest_keeps_writing() {
        let mut out = ConsoleOutput::new(Some(Box::new(Broken)), Instant::now());
        assert_eq!(out.write(b"abc").unwrap(), 3);
        assert!(out.sink.is_none());
        assert_eq!(out.write(b"d").unwrap(), 1);
    }

    #[test]
    fn ready_report_waits_for_the_end_of_the_marker_line() {
        let mut out = ConsoleOutput::new(None, Instant::now());
        out.write_all(b"VIRMO-GUEST-READY").unwrap();
        assert!(
            out.ready_after.is_some(),
            "time taken when the marker completes"
        );
        out.write_all(b"\r").unwrap();
        assert!(out.ready_after.is_some(), "not reported mid-line");
        out.write_all(b"\n").unwrap();
        assert!(out.ready_after.is_none(), "reported at the end of the line");
    }

    #[test]
    fn output_reaches_the_sink_or_is_discarded() {
        let shared = Shared::default();
        let mut out = ConsoleOutput::new(Some(Box::new(shared.clone())), Instant::now());
        out.write_all(b"hello").unwrap();
        assert_eq!(&*shared.0.lock().unwrap(), b"hello");
        let mut none = ConsoleOutput::new(None, Instant::now());
        assert_eq!(none.write(b"x").unwrap(), 1);
    }
}
