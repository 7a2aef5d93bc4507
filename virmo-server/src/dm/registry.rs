//! The DM sessions running in this server process: each is found by the RespURI token it gave
//! the device, or by (device, SessionID) when the device posts to the base URL again. A session
//! is taken out while one of its messages is handled, and put back after.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::live::Live;

#[derive(Default)]
struct Table {
    by_token: HashMap<String, Live>,
    by_key: HashMap<(String, String), String>,
}

/// The live sessions.
#[derive(Default)]
pub struct Registry {
    table: Mutex<Table>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the session of a RespURI token.
    pub fn take_by_token(&self, token: &str) -> Option<Live> {
        let mut table = self.lock();
        let live = table.by_token.remove(token)?;
        table.by_key.remove(&live.key());
        Some(live)
    }

    /// Takes the session of (device, SessionID).
    pub fn take_by_key(&self, device: &str, session_id: &str) -> Option<Live> {
        let mut table = self.lock();
        let token = table
            .by_key
            .remove(&(device.to_owned(), session_id.to_owned()))?;
        table.by_token.remove(&token)
    }

    /// Puts a session back after one of its messages.
    pub fn put(&self, live: Live) {
        let mut table = self.lock();
        table.by_key.insert(live.key(), live.token.clone());
        table.by_token.insert(live.token.clone(), live);
    }

    /// Takes the sessions idle past their deadline at `now`.
    pub fn take_expired(&self, now: Instant) -> Vec<Live> {
        let mut table = self.lock();
        let expired: Vec<String> = table
            .by_token
            .iter()
            .filter(|(_, live)| live.session.poll_timeout().is_none_or(|at| at <= now))
            .map(|(token, _)| token.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|token| {
                let live = table.by_token.remove(&token)?;
                table.by_key.remove(&live.key());
                Some(live)
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
