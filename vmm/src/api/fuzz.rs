//! Fuzzing entry points: outside bytes through the API's parsers, with the invariants checked.
//!
//! Shared by the cargo-fuzz targets in `vmm/fuzz/` (nightly, libFuzzer) and by the bounded
//! random-input tests below (stable, every `cargo test`). Each function panics only when an
//! invariant is broken, which is what the fuzzer looks for; it never panics on bad input.

use super::http::request::parse_request_head;
use super::http::response::{parse_response_head, ResponseBody};
use super::http::{Response, StatusCode, MAX_BODY_BYTES, MAX_HEAD_BYTES, MAX_RESPONSE_BODY_BYTES};
use super::routes::{dispatch, error_response, Dispatch, Responder};
use super::types::{
    DeviceInfo, DevicePolicy, ErrorBody, RunState, ShutdownOutcome, SnapshotInfo, VmInfo,
};
use crate::control::{ControlError, VmRequest, VmResponse};

/// What the server does with the bytes a client sends: parse the head, cut the body, route and
/// decode it, and write the answer. Checks that:
/// - a parsed head is within the limits and takes no more bytes than given;
/// - every answer the API layer writes itself (routing and body errors) and every answer to a
///   decoded request (for each kind of VM result) is a well-formed HTTP response that the
///   client's parser reads back with the same status and body, a JSON body, and an
///   `ErrorBody` for every error status;
/// - a decoded request has the properties its route promises (absolute snapshot folder,
///   non-empty device ID).
pub fn request_bytes(data: &[u8]) {
    let (head, used) = match parse_request_head(data) {
        Ok(None) => return,
        Ok(Some(parsed)) => parsed,
        Err(e) => {
            let status = e.status();
            assert!(status.code() >= 400, "{e:?} answered with {status}");
            check_wire(&Response::error(status, e.to_string()));
            return;
        }
    };
    assert!(
        used <= data.len() && used <= MAX_HEAD_BYTES,
        "head took {used} bytes"
    );
    assert!(head.body_length <= MAX_BODY_BYTES);
    assert!(!head.method.is_empty() && head.target.starts_with('/'));
    let rest = &data[used..];
    let body = &rest[..head.body_length.min(rest.len())];
    match dispatch(&head.method, head.path(), body) {
        Dispatch::Reply(response) => check_wire(&response),
        Dispatch::Vm { request, responder } => {
            check_request(&request);
            for outcome in vm_outcomes(&request) {
                let response = responder.reply(&outcome);
                match &outcome {
                    Ok(answer) if answers(responder, answer) => {
                        assert!(response.status.is_success(), "{answer:?} → {response:?}");
                    }
                    Ok(_) => assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR),
                    Err(e) => assert_eq!(response, error_response(e)),
                }
                check_wire(&response);
            }
        }
    }
}

/// What the client does with the bytes a VMM sends: parse a response head. Checks that a parsed
/// head takes no more bytes than given and that its body framing is within the limits.
pub fn response_bytes(data: &[u8]) {
    if let Ok(Some((head, used))) = parse_response_head(data) {
        assert!(used <= data.len());
        assert!((100..=999).contains(&head.status), "status {}", head.status);
        if let ResponseBody::Length(n) = head.body {
            assert!(n <= MAX_RESPONSE_BODY_BYTES);
        }
    }
}

/// The response on the wire reads back as itself.
fn check_wire(response: &Response) {
    for connection in [None, Some("close")] {
        let wire = response.encode(connection);
        let (head, used) = match parse_response_head(&wire) {
            Ok(Some(parsed)) => parsed,
            other => panic!("the server wrote a response its client cannot read: {other:?}"),
        };
        assert_eq!(head.status, response.status.code());
        let body = &wire[used..];
        match head.body {
            ResponseBody::None => assert!(body.is_empty() && response.body.is_empty()),
            ResponseBody::Length(n) => {
                assert_eq!((n, body), (response.body.len(), &*response.body))
            }
            ResponseBody::UntilClose => panic!("a response without Content-Length: {response:?}"),
        }
    }
    if !response.body.is_empty() {
        let json: Result<serde_json::Value, _> = serde_json::from_slice(&response.body);
        assert!(json.is_ok(), "body is not JSON: {response:?}");
    }
    if response.status.code() >= 400 {
        let error: Result<ErrorBody, _> = serde_json::from_slice(&response.body);
        assert!(error.is_ok(), "error without an ErrorBody: {response:?}");
    }
}

fn check_request(request: &VmRequest) {
    match request {
        VmRequest::Snapshot { dir, .. } => {
            assert!(dir.is_absolute() && dir.file_name().is_some(), "{dir:?}");
        }
        VmRequest::SetDevicePolicy { id, .. } => assert!(!id.is_empty()),
        VmRequest::GetInfo
        | VmRequest::Pause
        | VmRequest::Resume
        | VmRequest::Shutdown { .. }
        | VmRequest::Stop
        | VmRequest::ListDevices => {}
    }
}

/// Whether `answer` is the kind of answer `responder` writes as a success.
fn answers(responder: Responder, answer: &VmResponse) -> bool {
    matches!(
        (responder, answer),
        (Responder::NoContent, VmResponse::Done)
            | (Responder::Info, VmResponse::Info(_))
            | (Responder::Shutdown, VmResponse::Shutdown(_))
            | (Responder::Snapshot, VmResponse::Snapshot(_))
            | (Responder::Devices, VmResponse::Devices(_))
            | (Responder::DevicePolicy, VmResponse::DevicePolicy(_))
    )
}

/// Every kind of answer a VM could give, with values taken from the request where it has them.
fn vm_outcomes(request: &VmRequest) -> Vec<Result<VmResponse, ControlError>> {
    let text = format!("{request:?}");
    let (dir, id) = match request {
        VmRequest::Snapshot { dir, .. } => (dir.clone(), String::new()),
        VmRequest::SetDevicePolicy { id, .. } => (Default::default(), id.clone()),
        _ => (Default::default(), String::new()),
    };
    vec![
        Ok(VmResponse::Done),
        Ok(VmResponse::Info(VmInfo {
            id: id.clone(),
            state: RunState::Paused,
            vcpus: 1,
            memory_mib: 128,
            uptime_ms: 0,
            pid: 1,
            vmm_version: text.clone(),
        })),
        Ok(VmResponse::Shutdown(ShutdownOutcome::Forced)),
        Ok(VmResponse::Snapshot(SnapshotInfo {
            dir,
            state_bytes: u64::MAX,
            memory_bytes_written: 0,
            memory_size: 1 << 30,
            duration_ms: 1,
        })),
        Ok(VmResponse::Devices(vec![DeviceInfo {
            id: id.clone(),
            class: text.clone(),
            kind: "block".into(),
            allowed: false,
            rejected_requests: 3,
        }])),
        Ok(VmResponse::DevicePolicy(DevicePolicy {
            id,
            allowed: true,
            changed: false,
        })),
        Err(ControlError::InvalidState {
            state: "paused".into(),
            reason: text.clone(),
        }),
        Err(ControlError::BadRequest(text.clone())),
        Err(ControlError::NotFound(text.clone())),
        Err(ControlError::Unsupported(text.clone())),
        Err(ControlError::Internal(text)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Valid requests for every route, and a few near misses, to mutate from.
    const SEEDS: &[&[u8]] = &[
        b"GET /v1/version HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET /v1/vm HTTP/1.0\r\n\r\n",
        b"PUT /v1/vm/pause HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
        b"PUT /v1/vm/resume HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"PUT /v1/vm/shutdown HTTP/1.1\r\nHost: x\r\nContent-Length: 18\r\n\r\n{\"timeout_ms\":500}",
        b"PUT /v1/vm/stop HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
        b"PUT /v1/vm/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: 35\r\n\r\n{\"dir\":\"/snap\",\"keep_running\":true}",
        b"GET /v1/devices HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /v1/devices/usb%20disk/policy HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n{\"allowed\":false}",
        b"PUT http://localhost/v1/devices/net0/policy?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n{\"allowed\":true}",
        b"POST /v1/vm HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    ];

    const RESPONSE_SEEDS: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]",
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 11\r\n\r\n{\"error\":\"\"}",
        b"HTTP/1.0 200 OK\r\n\r\n{}",
    ];

    /// A small deterministic generator (xorshift64): the same inputs on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }

        fn byte(&mut self) -> u8 {
            // Bias towards the bytes HTTP and JSON care about.
            const INTERESTING: &[u8] = b" \r\n:/{}\"%0123456789,.\x00\x7f\xff";
            if self.next() % 2 == 0 {
                INTERESTING[self.below(INTERESTING.len())]
            } else {
                self.next() as u8
            }
        }
    }

    /// `seed` with a few random edits: flips, inserts, deletes, truncation, splices.
    fn mutate(rng: &mut Rng, seeds: &[&[u8]]) -> Vec<u8> {
        let mut data = seeds[rng.below(seeds.len())].to_vec();
        for _ in 0..=rng.below(3) {
            let at = rng.below(data.len() + 1);
            match rng.below(6) {
                0 if at < data.len() => data[at] = rng.byte(),
                1 => data.insert(at, rng.byte()),
                2 if at < data.len() => {
                    data.remove(at);
                }
                3 => data.truncate(at),
                4 => {
                    let other = seeds[rng.below(seeds.len())];
                    let from = rng.below(other.len());
                    data.splice(at..at, other[from..].iter().copied());
                }
                _ => {
                    let run = rng.below(64);
                    data.splice(at..at, std::iter::repeat_n(rng.byte(), run));
                }
            }
        }
        data
    }

    #[test]
    fn every_seed_request_is_served() {
        for seed in SEEDS {
            request_bytes(seed);
        }
        for seed in RESPONSE_SEEDS {
            response_bytes(seed);
        }
    }

    #[test]
    fn mutated_requests_keep_every_invariant() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            request_bytes(&mutate(&mut rng, SEEDS));
        }
    }

    #[test]
    fn random_bytes_keep_every_invariant() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..5_000 {
            let len = rng.below(512);
            let data: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            request_bytes(&data);
            response_bytes(&data);
        }
    }

    #[test]
    fn mutated_responses_keep_every_invariant() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        for _ in 0..10_000 {
            response_bytes(&mutate(&mut rng, RESPONSE_SEEDS));
        }
    }

    /// The mutations get past the parser: a good share reach a route's body decoder, and some
    /// decode to VM requests.
    #[test]
    fn mutations_reach_the_route_decoders() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let (mut routed, mut decoded) = (0, 0);
        for _ in 0..2_000 {
            let data = mutate(&mut rng, SEEDS);
            if let Ok(Some((head, used))) = parse_request_head(&data) {
                let body = &data[used..][..head.body_length.min(data.len() - used)];
                match dispatch(&head.method, head.path(), body) {
                    Dispatch::Vm { .. } => decoded += 1,
                    Dispatch::Reply(r) if r.status == StatusCode::BAD_REQUEST => routed += 1,
                    Dispatch::Reply(_) => {}
                }
            }
        }
        assert!(
            routed + decoded > 100 && decoded > 30,
            "{routed} of 2000 were refused by a decoder, {decoded} decoded"
        );
    }
}
