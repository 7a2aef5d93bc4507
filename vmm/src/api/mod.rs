//! The HTTP/1.1 + JSON control API on a Unix socket, versioned under `/v1`, and its typed client.
//!
//! - [`types`]: the JSON wire schema (documented in `docs/api.md` and `docs/openapi.yaml`).
//! - [`http`]: a small, strict HTTP/1.1 parser and writer.
//! - [`routes`]: the route table, method + path + body → [`VmRequest`](crate::control::VmRequest).
//! - [`server`]: the accept loop and connection threads calling the VM's
//!   [`VmControl`](crate::control::VmControl).
//! - [`client`]: [`VmmClient`](client::VmmClient), the typed blocking client.

pub mod client;
/// Fuzzing entry points (for `vmm/fuzz/` and the random-input tests); not an API.
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod routes;
pub mod server;
pub mod types;

#[cfg(test)]
mod end_to_end_tests;
#[cfg(test)]
mod test_support;
