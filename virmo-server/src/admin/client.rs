//! The admin API's client (used by `virmoctl` and the tests): an [`AdminRequest`] becomes its
//! HTTP call, the answer its [`AdminResponse`].

use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig};

use serde_json::Value;

use super::{AdminRequest, AdminResponse};
use crate::model::Filter;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the server at {url}")]
    Http {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("the server answered HTTP {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("the server's answer is not what was expected")]
    BadAnswer(#[source] serde_json::Error),
    #[error("the CA certificates are not usable")]
    Ca(#[source] crate::tls::TlsError),
}

impl ClientError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An HTTP call: method, path with query, JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Value>,
}

fn escape(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn query(filter: &Filter) -> String {
    let mut parts = Vec::new();
    if let Some(device) = &filter.device_id {
        parts.push(format!("device={}", escape(device)));
    }
    if let Some(state) = filter.state {
        parts.push(format!("state={state}"));
    }
    if let Some(after) = filter.after_id {
        parts.push(format!("after={after}"));
    }
    if let Some(limit) = filter.limit {
        parts.push(format!("limit={limit}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

impl AdminRequest {
    /// The API call that carries this request.
    pub fn call(&self) -> Call {
        let p = super::http::PREFIX;
        let get = |path: String| Call {
            method: "GET",
            path,
            body: None,
        };
        match self {
            Self::Enroll(enroll) => Call {
                method: "POST",
                path: format!("{p}/devices"),
                body: serde_json::to_value(enroll).ok(),
            },
            Self::Devices => get(format!("{p}/devices")),
            Self::Device { id } => get(format!("{p}/devices/{}", escape(id))),
            Self::Unenroll { id } => Call {
                method: "DELETE",
                path: format!("{p}/devices/{}", escape(id)),
                body: None,
            },
            Self::Vms { device } => get(format!("{p}/devices/{}/vms", escape(device))),
            Self::Tree { device } => get(format!("{p}/devices/{}/tree", escape(device))),
            Self::Queue { device, job } => Call {
                method: "POST",
                path: format!("{p}/devices/{}/jobs", escape(device)),
                body: serde_json::to_value(job).ok(),
            },
            Self::Jobs { filter } => get(format!("{p}/jobs{}", query(filter))),
            Self::Job {
                id,
                changed_since,
                wait_ms,
            } => {
                let mut path = format!("{p}/jobs/{id}");
                if let (Some(since), Some(wait)) = (changed_since, wait_ms) {
                    path.push_str(&format!("?changed_since={since}&wait_ms={wait}"));
                }
                get(path)
            }
            Self::CancelJob { id } => Call {
                method: "POST",
                path: format!("{p}/jobs/{id}/cancel"),
                body: None,
            },
            Self::Alerts { filter } => get(format!("{p}/alerts{}", query(filter))),
            Self::Events { filter } => get(format!("{p}/events{}", query(filter))),
        }
    }

    /// Reads the answer's body as this request's response.
    pub fn response(&self, body: Value) -> Result<AdminResponse, serde_json::Error> {
        use serde_json::from_value as read;
        Ok(match self {
            Self::Enroll(_) => AdminResponse::Enrolled(read(body)?),
            Self::Devices => AdminResponse::Devices(read(body)?),
            Self::Device { .. } => AdminResponse::Device(read(body)?),
            Self::Unenroll { .. } => {
                #[derive(serde::Deserialize)]
                struct Id {
                    id: String,
                }
                AdminResponse::Unenrolled {
                    id: read::<Id>(body)?.id,
                }
            }
            Self::Vms { .. } => AdminResponse::Vms(read(body)?),
            Self::Tree { .. } => AdminResponse::Tree(read(body)?),
            Self::Queue { .. } => {
                #[derive(serde::Deserialize)]
                struct Queued {
                    job: crate::model::Job,
                    created: bool,
                }
                let queued: Queued = read(body)?;
                AdminResponse::Queued {
                    job: Box::new(queued.job),
                    created: queued.created,
                }
            }
            Self::Jobs { .. } => AdminResponse::Jobs(read(body)?),
            Self::Job { .. } => AdminResponse::Job(read(body)?),
            Self::CancelJob { .. } => AdminResponse::Cancel(read(body)?),
            Self::Alerts { .. } => AdminResponse::Alerts(read(body)?),
            Self::Events { .. } => AdminResponse::Events(read(body)?),
        })
    }
}

/// A client of one server's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl AdminClient {
    /// `base`: the server's URL (`http://host:port`, or `https://…` verified against the usual
    /// web roots).
    pub fn new(base: &str, token: &str) -> Self {
        Self::with_roots(base, token, RootCerts::WebPki)
    }

    /// A client of an https server whose certificate chains to one of the PEM certificates
    /// `ca_pem` holds (a private CA, or the server's self-signed certificate).
    pub fn with_ca_pem(base: &str, token: &str, ca_pem: &[u8]) -> Result<Self, ClientError> {
        let certs = crate::tls::ca_certificates(ca_pem)
            .map_err(ClientError::Ca)?
            .into_iter()
            .map(|der| Certificate::from_der(der.as_ref()).to_owned())
            .collect();
        Ok(Self::with_roots(
            base,
            token,
            RootCerts::Specific(Arc::new(certs)),
        ))
    }

    fn with_roots(base: &str, token: &str, roots: RootCerts) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(90)))
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .build();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// Sends a request and reads its response.
    pub fn send(&self, request: &AdminRequest) -> Result<AdminResponse, ClientError> {
        let call = request.call();
        let url = format!("{}{}", self.base, call.path);
        let failed = |source| ClientError::Http {
            url: url.clone(),
            source: Box::new(source),
        };
        let auth = format!("Bearer {}", self.token);
        let response = match (call.method, &call.body) {
            ("POST", body) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(serde_json::to_vec(&body.clone().unwrap_or(Value::Null)).unwrap_or_default()),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            _ => self.agent.get(&url).header("Authorization", &auth).call(),
        };
        let mut response = response.map_err(failed)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(failed)?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(text);
            return Err(ClientError::Refused { status, message });
        }
        let body: Value = serde_json::from_str(&text).map_err(ClientError::BadAnswer)?;
        request.response(body).map_err(ClientError::BadAnswer)
    }
}
