//! The HTTP(S) client of the agent's DM sessions. An `https://` server is verified against the
//! certificates of `[server] ca_file` when it is given (a private CA, or the server's own
//! certificate), else against the usual web roots. A CA file that cannot be used stops the
//! session: there is no fallback to other roots.

use std::path::PathBuf;
use std::time::Duration;

use omadm::transport::DmHttpClient;

use crate::config::ServerConfig;

/// Why the DM client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("cannot read the CA file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA file {path} is not valid PEM")]
    Pem {
        path: PathBuf,
        #[source]
        source: ureq::Error,
    },
    #[error("the CA file {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
}

/// The DM client for `server`'s settings (timeout, CA file).
pub fn dm_http_client(server: &ServerConfig) -> Result<DmHttpClient, HttpSetupError> {
    let timeout = Duration::from_secs(server.http_timeout_secs);
    let Some(path) = &server.ca_file else {
        return Ok(DmHttpClient::new(timeout));
    };
    let pem = std::fs::read(path).map_err(|source| HttpSetupError::Read {
        path: path.clone(),
        source,
    })?;
    let mut roots = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => roots.push(cert.der().to_vec()),
            Ok(_) => {}
            Err(source) => {
                return Err(HttpSetupError::Pem {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
    if roots.is_empty() {
        return Err(HttpSetupError::NoCertificate { path: path.clone() });
    }
    Ok(DmHttpClient::with_root_certificates(timeout, &roots))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(ca_file: Option<PathBuf>) -> ServerConfig {
        let toml = "url = 'https://127.0.0.1:1/dm'\nserver_id = 's'\nclient_name = 'c'\n\
                    client_secret = 'a'\nserver_secret = 'b'\n";
        let mut config: ServerConfig = toml::from_str(toml).expect("config");
        config.ca_file = ca_file;
        config
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("virmo-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert!(dm_http_client(&server(None)).is_ok());
        let missing = dir.join("missing.pem");
        let err = dm_http_client(&server(Some(missing.clone()))).expect_err("missing");
        assert!(matches!(err, HttpSetupError::Read { ref path, .. } if *path == missing));
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").expect("write");
        let err = dm_http_client(&server(Some(empty.clone()))).expect_err("empty");
        assert!(matches!(err, HttpSetupError::NoCertificate { ref path } if *path == empty));
        assert!(err.to_string().contains("empty.pem"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
