//! The administrator's operations: one typed [`AdminRequest`] enum, served by [`Admin`], which
//! both front ends go through: the HTTP+JSON API ([`http`], described in
//! `docs/server-api.yaml`) and `virmoctl` (over that API, with [`client`]).

pub mod client;
pub mod http;
mod views;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use views::{vms_of, VmView};

use crate::clock::{Clock, Millis};
use crate::dm::DmService;
use crate::jobs::{Operation, OperationError};
use crate::model::{
    AlertRecord, AuthKind, CancelOutcome, DeviceSummary, Enrollment, Event, Filter, Job, JobPolicy,
    NewJob, Response, TreeNode,
};
use crate::store::{CancelResult, Store, StoreError};

/// A device to enroll; secrets not given are generated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub id: String,
    #[serde(default)]
    pub auth: Option<AuthKind>,
    #[serde(default)]
    pub client_name: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub server_secret: Option<String>,
    /// `host:port` of the device's Pkg#0 listener (UDP).
    #[serde(default)]
    pub notify_addr: Option<String>,
}

/// An operation to queue on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRequest {
    #[serde(flatten)]
    pub operation: Operation,
    /// The same key twice for one device queues one job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Retries and timeouts; the server's defaults where not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<JobPolicy>,
}

/// Every administrator operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum AdminRequest {
    Enroll(EnrollRequest),
    Devices,
    Device {
        id: String,
    },
    /// Removes a device from the registry (its jobs and tree; alerts and events stay).
    Unenroll {
        id: String,
    },
    Vms {
        device: String,
    },
    Tree {
        device: String,
    },
    Queue {
        device: String,
        job: JobRequest,
    },
    Jobs {
        filter: Filter,
    },
    /// A job with its responses; with `changed_since`, waits (up to `wait_ms`) until the job
    /// changed after that time.
    Job {
        id: i64,
        #[serde(default)]
        changed_since: Option<Millis>,
        #[serde(default)]
        wait_ms: Option<u64>,
    },
    /// Cancels a job: a queued one is never sent; a sent or accepted one is marked
    /// cancel-requested and its outcome still recorded (a DM Exec the device accepted cannot be
    /// withdrawn). A finished job: [`AdminError::Conflict`].
    CancelJob {
        id: i64,
    },
    Alerts {
        filter: Filter,
    },
    Events {
        filter: Filter,
    },
}

/// An enrolled device and the agent configuration that matches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    pub device: DeviceSummary,
    pub enrollment: Enrollment,
    /// The `virmo-agent` TOML for this device.
    pub agent_config: String,
}

/// A device with its VMs and unfinished jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    pub device: DeviceSummary,
    pub vms: Vec<VmView>,
    pub open_jobs: Vec<Job>,
}

/// A job with every Status and Results that answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    pub job: Job,
    pub responses: Vec<Response>,
}

/// What a request gives back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", content = "body", rename_all = "snake_case")]
pub enum AdminResponse {
    Enrolled(Box<Enrolled>),
    Devices(Vec<DeviceSummary>),
    Device(Box<DeviceView>),
    Unenrolled {
        id: String,
    },
    Vms(Vec<VmView>),
    Tree(Vec<TreeNode>),
    /// `created` is false when the idempotency key named an existing job.
    Queued {
        job: Box<Job>,
        created: bool,
    },
    Jobs(Vec<Job>),
    Job(Box<JobView>),
    Cancel(Box<CancelOutcome>),
    Alerts(Vec<AlertRecord>),
    Events(Vec<Event>),
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("storage failed")]
    Store(#[source] StoreError),
    #[error("no secret can be generated: the system random source failed")]
    Random(#[source] getrandom::Error),
}

impl From<StoreError> for AdminError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::AlreadyEnrolled(id) => {
                Self::Conflict(format!("device `{id}` is already enrolled"))
            }
            StoreError::NoSuchDevice(id) => Self::NotFound(format!("no device `{id}`")),
            err => Self::Store(err),
        }
    }
}

impl From<OperationError> for AdminError {
    fn from(err: OperationError) -> Self {
        Self::BadRequest(err.to_string())
    }
}

/// A random secret (24 bytes, URL-safe base64); none without the system's random source.
pub fn generate_secret() -> Result<String, getrandom::Error> {
    use base64::Engine as _;
    let mut random = [0u8; 24];
    getrandom::fill(&mut random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random))
}

/// Serves [`AdminRequest`]s.
pub struct Admin {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    dm: Arc<DmService>,
    changes: tokio::sync::watch::Receiver<u64>,
    default_policy: JobPolicy,
}

impl Admin {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        dm: Arc<DmService>,
        changes: tokio::sync::watch::Receiver<u64>,
        default_policy: JobPolicy,
    ) -> Self {
        Self {
            store,
            clock,
            dm,
            changes,
            default_policy,
        }
    }

    pub async fn handle(&self, request: AdminRequest) -> Result<AdminResponse, AdminError> {
        match request {
            AdminRequest::Enroll(enroll) => self.enroll(enroll).await,
            AdminRequest::Devices => Ok(AdminResponse::Devices(self.store.devices().await?)),
            AdminRequest::Device { id } => {
                let device = self.device(&id).await?;
                let tree = self.store.tree(&id).await?;
                let mut open_jobs = self
                    .store
                    .jobs(&Filter {
                        device_id: Some(id.clone()),
                        ..Filter::default()
                    })
                    .await?;
                open_jobs.retain(|job| !job.state.is_terminal());
                Ok(AdminResponse::Device(Box::new(DeviceView {
                    device,
                    vms: vms_of(&tree),
                    open_jobs,
                })))
            }
            AdminRequest::Unenroll { id } => {
                if self.store.delete_device(&id).await? {
                    Ok(AdminResponse::Unenrolled { id })
                } else {
                    Err(AdminError::NotFound(format!("no device `{id}`")))
                }
            }
            AdminRequest::Vms { device } => {
                self.device(&device).await?;
                Ok(AdminResponse::Vms(vms_of(&self.store.tree(&device).await?)))
            }
            AdminRequest::Tree { device } => {
                self.device(&device).await?;
                Ok(AdminResponse::Tree(self.store.tree(&device).await?))
            }
            AdminRequest::Queue { device, job } => self.queue(&device, job).await,
            AdminRequest::Jobs { filter } => {
                Ok(AdminResponse::Jobs(self.store.jobs(&filter).await?))
            }
            AdminRequest::Job {
                id,
                changed_since,
                wait_ms,
            } => self.job(id, changed_since, wait_ms).await,
            AdminRequest::CancelJob { id } => self.cancel(id).await,
            AdminRequest::Alerts { filter } => {
                Ok(AdminResponse::Alerts(self.store.alerts(&filter).await?))
            }
            AdminRequest::Events { filter } => {
                Ok(AdminResponse::Events(self.store.events(&filter).await?))
            }
        }
    }

    async fn device(&self, id: &str) -> Result<DeviceSummary, AdminError> {
        self.store
            .device(id)
            .await?
            .map(|d| d.summary())
            .ok_or_else(|| AdminError::NotFound(format!("no device `{id}`")))
    }

    async fn enroll(&self, request: EnrollRequest) -> Result<AdminResponse, AdminError> {
        let id = request.id.trim().to_owned();
        if id.is_empty() || id.chars().any(char::is_control) {
            return Err(AdminError::BadRequest(
                "the device ID must be non-empty text".into(),
            ));
        }
        if let Some(addr) = &request.notify_addr {
            if addr
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            {
                return Err(AdminError::BadRequest(format!(
                    "the notification address `{addr}` is not host:port"
                )));
            }
        }
        let enrollment = Enrollment {
            auth: request.auth.unwrap_or_default(),
            client_name: request.client_name.unwrap_or_else(|| id.clone()),
            client_secret: match request.client_secret {
                Some(secret) => secret,
                None => generate_secret().map_err(AdminError::Random)?,
            },
            server_name: self.dm.config().server_id.clone(),
            server_secret: match request.server_secret {
                Some(secret) => secret,
                None => generate_secret().map_err(AdminError::Random)?,
            },
            notify_addr: request.notify_addr,
            id,
        };
        let device = self.store.enroll(&enrollment, self.clock.now()).await?;
        let agent_config = agent_config(
            &enrollment,
            &self.dm.config().base_url,
            &self.dm.config().server_id,
        );
        Ok(AdminResponse::Enrolled(Box::new(Enrolled {
            device: device.summary(),
            enrollment,
            agent_config,
        })))
    }

    async fn queue(
        &self,
        device_id: &str,
        request: JobRequest,
    ) -> Result<AdminResponse, AdminError> {
        let device = self
            .store
            .device(device_id)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no device `{device_id}`")))?;
        let commands = request.operation.commands()?;
        let policy = request.policy.unwrap_or(self.default_policy);
        if policy.max_attempts < 1
            || policy.lease_ms < 1
            || policy.deliver_within_ms < 1
            || policy.complete_within_ms < 1
        {
            return Err(AdminError::BadRequest(
                "a job's attempts and timeouts must be positive".into(),
            ));
        }
        let new = NewJob {
            device_id: device_id.to_owned(),
            idempotency_key: request.idempotency_key,
            operation: request.operation.label(),
            commands,
            policy,
        };
        let (job, created) = self.store.create_job(&new, self.clock.now()).await?;
        if created {
            tracing::info!(device = device_id, job = job.id, operation = %job.operation, "job queued");
            self.dm.notify(&device).await;
        }
        Ok(AdminResponse::Queued {
            job: Box::new(job),
            created,
        })
    }

    async fn cancel(&self, id: i64) -> Result<AdminResponse, AdminError> {
        match self.store.cancel_job(id, self.clock.now()).await? {
            CancelResult::Done(outcome) => {
                let (job, what) = match &outcome {
                    CancelOutcome::Cancelled(job) => (job, "job cancelled"),
                    CancelOutcome::Requested(job) => (job, "job cancel requested"),
                };
                tracing::info!(job = id, device = %job.device_id, state = %job.state, "{what}");
                let detail = format!("{what} (it was {})", job.state);
                if let Err(err) = self
                    .store
                    .record_event(
                        Some(&job.device_id),
                        Some(id),
                        "job-cancel",
                        &detail,
                        self.clock.now(),
                    )
                    .await
                {
                    tracing::error!(error = %err, "cannot record an event");
                }
                self.dm.changed();
                Ok(AdminResponse::Cancel(Box::new(outcome)))
            }
            CancelResult::Finished(job) => Err(AdminError::Conflict(format!(
                "job {id} is already {}: there is nothing to cancel",
                job.state
            ))),
            CancelResult::NoSuchJob => Err(AdminError::NotFound(format!("no job {id}"))),
        }
    }

    async fn job(
        &self,
        id: i64,
        changed_since: Option<Millis>,
        wait_ms: Option<u64>,
    ) -> Result<AdminResponse, AdminError> {
        let wait = std::time::Duration::from_millis(wait_ms.unwrap_or(0).min(60_000));
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.changes.clone();
        loop {
            changes.mark_unchanged();
            let job = self
                .store
                .job(id)
                .await?
                .ok_or_else(|| AdminError::NotFound(format!("no job {id}")))?;
            let unchanged = changed_since.is_some_and(|since| job.updated_at <= since);
            if !unchanged || job.state.is_terminal() || tokio::time::Instant::now() >= deadline {
                let responses = self.store.responses(id).await?;
                return Ok(AdminResponse::Job(Box::new(JobView { job, responses })));
            }
            // Woken by a change in this process; another process's changes are seen by the
            // next read, at most a second later.
            let step =
                (deadline - tokio::time::Instant::now()).min(std::time::Duration::from_secs(1));
            let _ = tokio::time::timeout(step, changes.changed()).await;
        }
    }
}

/// The `virmo-agent` configuration (TOML) for an enrolled device.
pub fn agent_config(e: &Enrollment, dm_url: &str, server_id: &str) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut toml = format!(
        "# virmo-agent configuration for device {id}\n\
         [server]\n\
         url = {url}\n\
         server_id = {server_id}\n\
         auth = {auth}\n\
         client_name = {client_name}\n\
         client_secret = {client_secret}\n\
         server_name = {server_name}\n\
         server_secret = {server_secret}\n\
         \n\
         [device]\n\
         dev_id = {id}\n",
        id = quote(&e.id),
        url = quote(dm_url),
        server_id = quote(server_id),
        auth = quote(e.auth.as_str()),
        client_name = quote(&e.client_name),
        client_secret = quote(&e.client_secret),
        server_name = quote(&e.server_name),
        server_secret = quote(&e.server_secret),
    );
    if dm_url.starts_with("https://") {
        toml = toml.replacen(
            "[server]\n",
            "[server]\n# ca_file = \"/etc/virmo/server-ca.pem\"  # when the server's certificate \
             is not from a public CA\n",
            1,
        );
    }
    if let Some((_, port)) = e.notify_addr.as_deref().and_then(|a| a.rsplit_once(':')) {
        toml.push_str(&format!("\n[listen]\nnotification = \"0.0.0.0:{port}\"\n"));
    }
    toml
}
