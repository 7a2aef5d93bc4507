//! HTTP(S) download of a bundle into a partial file that survives interruptions: each attempt
//! asks for the bytes after those already there (`Range`), and the finished file is checked
//! against the expected sha256. A file that does not match is removed.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use super::sha256_file;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The URL is not http(s) or malformed (1400).
    #[error("bad URL `{0}`")]
    BadUrl(String),
    /// The server could not be reached or did not serve the file, every attempt (1501).
    #[error("the download failed after {attempts} attempts: {last}")]
    Failed { attempts: u32, last: String },
    /// The file's sha256 is not the expected one (1402); the file was removed.
    #[error("the downloaded file's sha256 is {found}, not the expected {expected}")]
    HashMismatch { expected: String, found: String },
    /// Larger than allowed (1405).
    #[error("the file is larger than the {0} bytes allowed")]
    TooLarge(u64),
    #[error("cannot write the partial download")]
    Io(#[source] std::io::Error),
}

/// One download.
#[derive(Debug, Clone)]
pub struct Download<'a> {
    pub url: &'a str,
    /// The partial file (kept between attempts and agent restarts).
    pub part: &'a Path,
    pub expected: Option<[u8; 32]>,
    pub max_bytes: u64,
    /// Per-read timeout (a stalled server counts as a failed attempt).
    pub timeout: Duration,
    pub attempts: u32,
}

/// What one attempt did.
enum Attempt {
    Complete,
    /// Interrupted after progress: try again (does not count against the attempts).
    Progress,
    Failed(String),
    /// Will not get better by trying again (e.g. 404).
    Fatal(String),
}

impl Download<'_> {
    /// Downloads (resuming the partial file) and checks the hash; the sha256 of the file.
    pub fn run(&self) -> Result<[u8; 32], DownloadError> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(DownloadError::BadUrl(self.url.to_owned()));
        }
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(self.timeout))
                .timeout_recv_response(Some(self.timeout))
                .build(),
        );
        let mut failures = 0;
        let mut last = String::new();
        let mut progress_rounds = 0;
        while failures < self.attempts && progress_rounds < 1000 {
            match self.attempt(&agent)? {
                Attempt::Complete => return self.check(),
                Attempt::Progress => {
                    progress_rounds += 1;
                    tracing::info!(url = self.url, "download interrupted; resuming");
                }
                Attempt::Fatal(why) => {
                    return Err(DownloadError::Failed {
                        attempts: failures + 1,
                        last: why,
                    })
                }
                Attempt::Failed(why) => {
                    failures += 1;
                    tracing::warn!(url = self.url, attempt = failures, error = %why, "download attempt failed");
                    last = why;
                    if failures < self.attempts {
                        std::thread::sleep(Duration::from_millis(250 << failures.min(5)));
                    }
                }
            }
        }
        Err(DownloadError::Failed {
            attempts: failures,
            last,
        })
    }

    fn check(&self) -> Result<[u8; 32], DownloadError> {
        let digest = sha256_file(self.part).map_err(DownloadError::Io)?;
        if let Some(expected) = self.expected {
            if digest != expected {
                let _ = std::fs::remove_file(self.part);
                return Err(DownloadError::HashMismatch {
                    expected: super::hex(&expected),
                    found: super::hex(&digest),
                });
            }
        }
        Ok(digest)
    }

    fn attempt(&self, agent: &ureq::Agent) -> Result<Attempt, DownloadError> {
        let have = std::fs::metadata(self.part).map(|m| m.len()).unwrap_or(0);
        let mut request = agent.get(self.url);
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
        }
        let mut response = match request.call() {
            Ok(response) => response,
            Err(e) => return Ok(Attempt::Failed(e.to_string())),
        };
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (append, start) = match status {
            200 => (false, 0),
            206 => {
                let range = header("content-range").unwrap_or_default();
                if content_range_start(&range) != Some(have) {
                    // Not the part we asked for: start over.
                    let _ = std::fs::remove_file(self.part);
                    return Ok(Attempt::Failed(format!(
                        "unexpected Content-Range `{range}`"
                    )));
                }
                (true, have)
            }
            // Everything is there already.
            416 if have > 0 => return Ok(Attempt::Complete),
            400..=499 if status != 408 && status != 429 => {
                return Ok(Attempt::Fatal(format!("HTTP status {status}")))
            }
            _ => return Ok(Attempt::Failed(format!("HTTP status {status}"))),
        };
        if let Some(total) = header("content-length").and_then(|v| v.parse::<u64>().ok()) {
            if start.saturating_add(total) > self.max_bytes {
                return Err(DownloadError::TooLarge(self.max_bytes));
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(self.part)
            .map_err(DownloadError::Io)?;
        let mut reader = response
            .body_mut()
            .with_config()
            .limit(self.max_bytes.saturating_sub(start).saturating_add(1))
            .reader();
        let mut written = start;
        let mut buf = vec![0u8; 1 << 16];
        let outcome = loop {
            match reader.read(&mut buf) {
                Ok(0) => break Attempt::Complete,
                Ok(n) => {
                    written += n as u64;
                    if written > self.max_bytes {
                        drop(file);
                        let _ = std::fs::remove_file(self.part);
                        return Err(DownloadError::TooLarge(self.max_bytes));
                    }
                    file.write_all(&buf[..n]).map_err(DownloadError::Io)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if written > start => {
                    tracing::debug!(error = %e, written, "download cut");
                    break Attempt::Progress;
                }
                Err(e) => break Attempt::Failed(e.to_string()),
            }
        };
        file.sync_all().map_err(DownloadError::Io)?;
        Ok(outcome)
    }
}

/// The first byte of `bytes START-END/TOTAL`.
fn content_range_start(value: &str) -> Option<u64> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;
    use std::io::BufRead;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Serves `body`; the first `cut` responses stop after half of what they announce.
    fn serve(body: Vec<u8>, cut: usize) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/bundle.tar", listener.local_addr().unwrap());
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut from = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        from = v.trim().trim_end_matches('-').parse().unwrap();
                    }
                }
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let rest = &body[from..];
                let head = if from > 0 {
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                        rest.len(),
                        body.len() - 1,
                        body.len()
                    )
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        rest.len()
                    )
                };
                stream.write_all(head.as_bytes()).unwrap();
                let send = if n < cut {
                    &rest[..rest.len() / 2]
                } else {
                    rest
                };
                let _ = stream.write_all(send);
            }
        });
        (url, served)
    }

    fn digest(bytes: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(bytes).into()
    }

    fn download<'a>(url: &'a str, part: &'a Path, expected: [u8; 32]) -> Download<'a> {
        Download {
            url,
            part,
            expected: Some(expected),
            max_bytes: 1 << 20,
            timeout: Duration::from_secs(5),
            attempts: 3,
        }
    }

    #[test]
    fn an_interrupted_download_resumes_and_checks_out() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (url, served) = serve(body.clone(), 2);
        let dir = TempDir::new();
        let part = dir.path().join("b.part");
        let got = download(&url, &part, digest(&body)).run().unwrap();
        assert_eq!(got, digest(&body));
        assert_eq!(std::fs::read(&part).unwrap(), body);
        assert_eq!(
            served.load(Ordering::SeqCst),
            3,
            "two cut responses, one resumed"
        );
    }

    #[test]
    fn a_partial_file_from_before_a_restart_is_continued() {
        let body: Vec<u8> = (0..50_000u32).map(|i| (i % 13) as u8).collect();
        let (url, _) = serve(body.clone(), 0);
        let dir = TempDir::new();
        let part = dir.path().join("b.part");
        std::fs::write(&part, &body[..20_000]).unwrap();
        download(&url, &part, digest(&body)).run().unwrap();
        assert_eq!(std::fs::read(&part).unwrap(), body);
    }

    #[test]
    fn a_wrong_hash_removes_the_file() {
        let body = b"some bundle".to_vec();
        let (url, _) = serve(body, 0);
        let dir = TempDir::new();
        let part = dir.path().join("b.part");
        let err = download(&url, &part, [7; 32]).run().unwrap_err();
        assert!(matches!(err, DownloadError::HashMismatch { .. }), "{err}");
        assert!(!part.exists());
    }

    #[test]
    fn unreachable_servers_and_bad_urls_fail() {
        let dir = TempDir::new();
        let part = dir.path().join("b.part");
        let mut d = download("http://127.0.0.1:1/x", &part, [0; 32]);
        d.attempts = 2;
        assert!(matches!(
            d.run(),
            Err(DownloadError::Failed { attempts: 2, .. })
        ));
        let d = download("ftp://x/y", &part, [0; 32]);
        assert!(matches!(d.run(), Err(DownloadError::BadUrl(_))));
        assert_eq!(content_range_start("bytes 10-99/100"), Some(10));
        assert_eq!(content_range_start("items 1-2"), None);
    }
}
