//! A client of the local API (the `virmo` CLI, tests).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::protocol::{Request, Response};

/// Why a local request failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot reach the agent at {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the exchange with the agent failed")]
    Io(#[from] std::io::Error),
    #[error("the agent's answer is malformed: {0}")]
    Malformed(String),
}

/// Sends one request; the answer, and the connection (which carries the console after a
/// successful `console` request).
pub fn request(socket: &Path, request: &Request) -> Result<(Response, UnixStream), LocalError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| LocalError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    let mut line =
        serde_json::to_string(request).map_err(|e| LocalError::Malformed(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    // Byte by byte: console output may follow the answer line on the same connection.
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        if byte[0] == b'\n' {
            break;
        }
        answer.push(byte[0]);
        if answer.len() > 1 << 20 {
            return Err(LocalError::Malformed("answer too long".into()));
        }
    }
    let response =
        serde_json::from_slice(&answer).map_err(|e| LocalError::Malformed(e.to_string()))?;
    Ok((response, stream))
}
