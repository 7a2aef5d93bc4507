//! `virmo-server`: the VirMO server for a fleet of devices.
//!
//! An administrator's request (CLI `virmoctl` or the HTTP+JSON admin API, both through one
//! [`admin::AdminRequest`]) becomes a per-device [`model::Job`] in the [`store`]; the device is
//! notified (Pkg#0) and, at its next DM session, the [`dm`] endpoint sends the job's commands,
//! records every Status, Results and Generic Alert, and follows the job to its end: the
//! OperationComplete alert carrying the job's Correlator.
//!
//! | module | owns |
//! | --- | --- |
//! | [`model`] | devices, jobs and their states, alerts, events: plain data |
//! | [`store`] | the [`store::Store`] trait; SQLite and PostgreSQL through one sqlx path; migrations |
//! | [`jobs`] | VirMO operations turned into DM commands, and the job state machine's rules |
//! | [`dm`] | the DM endpoint: sessions, authentication, delivery of jobs, statuses, alerts |
//! | [`admin`] | the typed admin requests, their HTTP API and its client |
//! | [`server`] | the running server: configuration, listeners, the sweeper, the pruner |
//! | [`tls`] | HTTPS: the server's certificate and key, a TLS listener for axum |
//! | [`sim`] | a simulated device (a real `omadm` client and DM tree), for tests and the bench |
#![forbid(unsafe_code)]

pub mod admin;
pub mod clock;
pub mod dm;
pub mod jobs;
pub mod model;
pub mod server;
pub mod sim;
pub mod store;
pub mod tls;

/// `bytes` random bytes in hexadecimal: session tokens, correlators, instance names, test IDs.
/// Should the system's random source fail, the bytes of the clock stand in (IDs stay unique;
/// the tokens are then only unique, not unguessable).
pub fn random_hex(bytes: usize) -> String {
    let mut random = vec![0u8; bytes];
    if getrandom::fill(&mut random).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            .to_le_bytes();
        for (byte, clock) in random.iter_mut().zip(nanos.iter().cycle()) {
            *byte = *clock;
        }
    }
    random.iter().map(|b| format!("{b:02x}")).collect()
}
