//! A small real MO for the tests: a counter with values, Execs and dynamic nodes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::super::*;
use crate::status::StatusCode;

/// The state of the counter MO, shared with the test to observe side effects.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct CounterState {
    pub(super) value: i64,
    pub(super) step: i64,
    /// Named counters added by servers under `Items/<x>`.
    pub(super) items: BTreeMap<String, i64>,
    /// Hash of the last unlock code set (never readable back).
    pub(super) code_len: usize,
    /// Async Execs accepted: (uri, correlator).
    pub(super) pending: Vec<(String, Option<String>)>,
}

/// `./Counter/{Value int Get+Replace, Step int Get+Replace, Increment Exec (sync),
/// Reset Exec (async, 202), Code chr Replace-only, Items/<x> int (Add/Delete)}`.
pub(super) struct CounterMo {
    state: Arc<Mutex<CounterState>>,
    saved: Option<CounterState>,
    atomic_capable: bool,
}

impl CounterMo {
    pub(super) fn new(atomic_capable: bool) -> (Self, Arc<Mutex<CounterState>>) {
        let state = Arc::new(Mutex::new(CounterState {
            step: 1,
            ..Default::default()
        }));
        (
            Self {
                state: state.clone(),
                saved: None,
                atomic_capable,
            },
            state,
        )
    }
}

fn path(rel: &[String]) -> Vec<&str> {
    rel.iter().map(String::as_str).collect()
}

impl NodeHandler for CounterMo {
    fn describe(&self, rel: &[String]) -> Option<HandlerNode> {
        let st = self.state.lock().unwrap();
        let rw = AccessTypes::GET.union(AccessTypes::REPLACE);
        Some(match path(rel).as_slice() {
            ["Value"] | ["Step"] => HandlerNode::leaf(Format::Int, rw),
            ["Increment"] | ["Reset"] => HandlerNode::leaf(Format::Null, AccessTypes::EXEC),
            ["Code"] => HandlerNode::leaf(Format::Chr, AccessTypes::REPLACE),
            // A node with its own ACL, overriding the mount's.
            ["Limit"] => HandlerNode {
                acl: "Get=srv2".parse().ok()?,
                ..HandlerNode::leaf(Format::Int, AccessTypes::GET)
            },
            ["Items"] => {
                HandlerNode::interior(AccessTypes::GET.union(AccessTypes::ADD), Scope::Permanent)
            }
            ["Items", x] if st.items.contains_key(*x) => HandlerNode {
                scope: Scope::Dynamic,
                ..HandlerNode::leaf(Format::Int, rw.union(AccessTypes::DELETE))
            },
            _ => return None,
        })
    }

    fn children(&self, rel: &[String]) -> Result<Vec<String>, StatusCode> {
        match path(rel).as_slice() {
            [] => Ok([
                "Code",
                "Increment",
                "Items",
                "Limit",
                "Reset",
                "Step",
                "Value",
            ]
            .map(String::from)
            .to_vec()),
            ["Items"] => Ok(self.state.lock().unwrap().items.keys().cloned().collect()),
            _ => Err(StatusCode::NOT_FOUND),
        }
    }

    fn get(&self, rel: &[String]) -> Result<Vec<u8>, StatusCode> {
        let st = self.state.lock().unwrap();
        let v = match path(rel).as_slice() {
            ["Value"] => st.value,
            ["Step"] => st.step,
            ["Limit"] => 100,
            ["Items", x] => *st.items.get(*x).ok_or(StatusCode::NOT_FOUND)?,
            _ => return Err(StatusCode::NOT_FOUND),
        };
        Ok(v.to_string().into_bytes())
    }

    fn add(&mut self, rel: &[String], format: Format, value: &[u8]) -> Result<(), StatusCode> {
        let parts = path(rel);
        let ["Items", x] = parts.as_slice() else {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        };
        if format != Format::Int {
            return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        let v = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
        self.state
            .lock()
            .unwrap()
            .items
            .insert((*x).to_owned(), v.unwrap_or(0));
        Ok(())
    }

    fn replace(&mut self, rel: &[String], value: &[u8]) -> Result<(), StatusCode> {
        let mut st = self.state.lock().unwrap();
        let parsed = || {
            std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or(StatusCode::BAD_REQUEST)
        };
        match path(rel).as_slice() {
            ["Value"] => st.value = parsed()?,
            ["Step"] => st.step = parsed()?,
            ["Code"] => st.code_len = value.len(),
            ["Items", x] => {
                let v = parsed()?;
                *st.items.get_mut(*x).ok_or(StatusCode::NOT_FOUND)? = v;
            }
            _ => return Err(StatusCode::COMMAND_NOT_ALLOWED),
        }
        Ok(())
    }

    fn delete(&mut self, rel: &[String]) -> Result<(), StatusCode> {
        let parts = path(rel);
        let ["Items", x] = parts.as_slice() else {
            return Err(StatusCode::COMMAND_NOT_ALLOWED);
        };
        self.state
            .lock()
            .unwrap()
            .items
            .remove(*x)
            .map(|_| ())
            .ok_or(StatusCode::NOT_FOUND)
    }

    fn exec(&mut self, rel: &[String], request: ExecRequest<'_>) -> StatusCode {
        let mut st = self.state.lock().unwrap();
        match path(rel).as_slice() {
            ["Increment"] => {
                st.value += st.step;
                StatusCode::OK
            }
            ["Reset"] => {
                st.pending
                    .push(("Reset".into(), request.correlator.map(String::from)));
                StatusCode::ACCEPTED_FOR_PROCESSING
            }
            _ => StatusCode::COMMAND_NOT_ALLOWED,
        }
    }

    fn atomic_begin(&mut self) -> Result<(), StatusCode> {
        if !self.atomic_capable {
            return Err(StatusCode::COMMAND_FAILED);
        }
        self.saved = Some(self.state.lock().unwrap().clone());
        Ok(())
    }

    fn atomic_commit(&mut self) {
        self.saved = None;
    }

    fn atomic_rollback(&mut self) -> Result<(), StatusCode> {
        let saved = self.saved.take().ok_or(StatusCode::COMMAND_FAILED)?;
        *self.state.lock().unwrap() = saved;
        Ok(())
    }
}
