//! Device state in snapshots: every device of the VM implements [`Persist`] (beside its own code)
//! and is listed in the VM's [`PersistRegistry`] under a stable ID; suspend saves each into a
//! [`DeviceState`], resume rebuilds the same devices and hands each its state back.
//!
//! A device that holds no state of its own (its behaviour depends only on its configuration)
//! still implements [`Persist`] with an empty state, so no device is ever skipped silently: the
//! registry refuses a snapshot whose device list differs from the VM's.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::snapshot::DeviceState;

/// Why a device's state could not be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot encode the state of a {kind} device")]
    Encode {
        kind: &'static str,
        #[source]
        source: postcard::Error,
    },
    #[error("the saved state of a {kind} device does not decode")]
    Decode {
        kind: &'static str,
        #[source]
        source: postcard::Error,
    },
    #[error("the saved state of a {kind} device has {trailing} bytes after its end")]
    TrailingBytes { kind: &'static str, trailing: usize },
    #[error("the saved state of a {kind} device is invalid: {reason}")]
    Invalid { kind: &'static str, reason: String },
}

/// A device whose state goes into snapshots.
pub trait Persist: Send {
    /// The device type, recorded as [`DeviceState::kind`] and checked on restore.
    fn kind(&self) -> &'static str;
    /// The device's state, encoded (usually with [`encode`]).
    fn save(&self) -> Result<Vec<u8>, PersistError>;
    /// Replaces the device's state with a saved one (usually decoded with [`decode`]).
    fn restore(&mut self, data: &[u8]) -> Result<(), PersistError>;
}

/// Encodes a device state with postcard.
pub fn encode<T: Serialize>(kind: &'static str, state: &T) -> Result<Vec<u8>, PersistError> {
    postcard::to_stdvec(state).map_err(|source| PersistError::Encode { kind, source })
}

/// Decodes a device state encoded by [`encode`]; bytes after the state are refused.
pub fn decode<T: DeserializeOwned>(kind: &'static str, data: &[u8]) -> Result<T, PersistError> {
    let (state, rest) =
        postcard::take_from_bytes(data).map_err(|source| PersistError::Decode { kind, source })?;
    if !rest.is_empty() {
        return Err(PersistError::TrailingBytes {
            kind,
            trailing: rest.len(),
        });
    }
    Ok(state)
}

/// A device shared between its bus (or owner) and the registry.
pub type SharedPersist = Arc<Mutex<dyn Persist>>;

/// Why the registry could not save or restore the devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceStatesError {
    #[error("two devices have the ID {0}")]
    DuplicateId(String),
    #[error("cannot save device {id}")]
    Save {
        id: String,
        #[source]
        source: PersistError,
    },
    #[error("cannot restore device {id}")]
    Restore {
        id: String,
        #[source]
        source: PersistError,
    },
    #[error("the snapshot has no state for device {id} ({kind}) of this VM")]
    Missing { id: String, kind: &'static str },
    #[error("the snapshot has a state for device {id} ({kind}), which this VM does not have")]
    Unknown { id: String, kind: String },
    #[error("the snapshot's device {id} is a {found}, this VM's is a {expected}")]
    KindMismatch {
        id: String,
        expected: &'static str,
        found: String,
    },
}

/// The devices of one VM that take part in snapshots, in the order they were added.
#[derive(Default)]
pub struct PersistRegistry {
    devices: Vec<(String, SharedPersist)>,
}

impl std::fmt::Debug for PersistRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.devices.iter().map(|(id, _)| id))
            .finish()
    }
}

fn lock(device: &SharedPersist) -> MutexGuard<'_, dyn Persist + 'static> {
    device.lock().unwrap_or_else(|p| p.into_inner())
}

impl PersistRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `device` under `id` (unique within the VM, stable across VMM versions).
    pub fn add(
        &mut self,
        id: impl Into<String>,
        device: SharedPersist,
    ) -> Result<(), DeviceStatesError> {
        let id = id.into();
        if self.devices.iter().any(|(known, _)| *known == id) {
            return Err(DeviceStatesError::DuplicateId(id));
        }
        self.devices.push((id, device));
        Ok(())
    }

    /// The IDs, in order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.devices.iter().map(|(id, _)| id.as_str())
    }

    /// Saves every device. The VM must be stopped (vCPUs paused, device workers idle).
    pub fn save_all(&self) -> Result<Vec<DeviceState>, DeviceStatesError> {
        self.devices
            .iter()
            .map(|(id, device)| {
                let device = lock(device);
                let data = device.save().map_err(|source| DeviceStatesError::Save {
                    id: id.clone(),
                    source,
                })?;
                Ok(DeviceState {
                    id: id.clone(),
                    kind: device.kind().to_string(),
                    data,
                })
            })
            .collect()
    }

    /// Restores every device from `states`, which must name exactly this VM's devices (any
    /// order) with the same kinds.
    pub fn restore_all(&self, states: &[DeviceState]) -> Result<(), DeviceStatesError> {
        for state in states {
            if !self.devices.iter().any(|(id, _)| *id == state.id) {
                return Err(DeviceStatesError::Unknown {
                    id: state.id.clone(),
                    kind: state.kind.clone(),
                });
            }
        }
        for (id, device) in &self.devices {
            let mut device = lock(device);
            let kind = device.kind();
            let mut matching = states.iter().filter(|s| s.id == *id);
            let state = matching.next().ok_or_else(|| DeviceStatesError::Missing {
                id: id.clone(),
                kind,
            })?;
            if matching.next().is_some() {
                return Err(DeviceStatesError::DuplicateId(id.clone()));
            }
            if state.kind != kind {
                return Err(DeviceStatesError::KindMismatch {
                    id: id.clone(),
                    expected: kind,
                    found: state.kind.clone(),
                });
            }
            device
                .restore(&state.data)
                .map_err(|source| DeviceStatesError::Restore {
                    id: id.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Default)]
    struct Counter {
        value: u32,
    }

    #[derive(Serialize, Deserialize)]
    struct CounterState {
        value: u32,
    }

    impl Persist for Counter {
        fn kind(&self) -> &'static str {
            "counter"
        }
        fn save(&self) -> Result<Vec<u8>, PersistError> {
            encode(self.kind(), &CounterState { value: self.value })
        }
        fn restore(&mut self, data: &[u8]) -> Result<(), PersistError> {
            let state: CounterState = decode(self.kind(), data)?;
            self.value = state.value;
            Ok(())
        }
    }

    fn registry(values: &[(&str, u32)]) -> (PersistRegistry, Vec<Arc<Mutex<Counter>>>) {
        let mut registry = PersistRegistry::new();
        let mut devices = Vec::new();
        for &(id, value) in values {
            let device = Arc::new(Mutex::new(Counter { value }));
            registry.add(id, device.clone()).unwrap();
            devices.push(device);
        }
        (registry, devices)
    }

    #[test]
    fn states_round_trip_into_fresh_devices() {
        let (saved, _) = registry(&[("a", 7), ("b", 9)]);
        let states = saved.save_all().unwrap();
        assert_eq!(states.len(), 2);
        assert_eq!(states[0].kind, "counter");
        let (fresh, devices) = registry(&[("a", 0), ("b", 0)]);
        let mut reversed = states.clone();
        reversed.reverse();
        fresh.restore_all(&reversed).unwrap();
        assert_eq!(devices[0].lock().unwrap().value, 7);
        assert_eq!(devices[1].lock().unwrap().value, 9);
    }

    #[test]
    fn device_lists_must_match_exactly() {
        let (saved, _) = registry(&[("a", 1), ("b", 2)]);
        let states = saved.save_all().unwrap();
        let (fewer, _) = registry(&[("a", 0)]);
        assert!(matches!(
            fewer.restore_all(&states),
            Err(DeviceStatesError::Unknown { id, .. }) if id == "b"
        ));
        let (more, _) = registry(&[("a", 0), ("b", 0), ("c", 0)]);
        assert!(matches!(
            more.restore_all(&states),
            Err(DeviceStatesError::Missing { id, .. }) if id == "c"
        ));
        let mut wrong_kind = states.clone();
        wrong_kind[1].kind = "uart".into();
        let (same, _) = registry(&[("a", 0), ("b", 0)]);
        assert!(matches!(
            same.restore_all(&wrong_kind),
            Err(DeviceStatesError::KindMismatch { .. })
        ));
    }

    #[test]
    fn damaged_state_is_an_error_not_a_panic() {
        let (saved, _) = registry(&[("a", u32::MAX)]);
        let mut states = saved.save_all().unwrap();
        states[0].data.push(0);
        let (fresh, _) = registry(&[("a", 0)]);
        let err = fresh.restore_all(&states).unwrap_err();
        assert!(matches!(
            err,
            DeviceStatesError::Restore {
                source: PersistError::TrailingBytes { trailing: 1, .. },
                ..
            }
        ));
        states[0].data.truncate(1);
        assert!(matches!(
            fresh.restore_all(&states),
            Err(DeviceStatesError::Restore {
                source: PersistError::Decode { .. },
                ..
            })
        ));
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let (mut registry, _) = registry(&[("a", 0)]);
        let err = registry
            .add("a", Arc::new(Mutex::new(Counter::default())))
            .unwrap_err();
        assert!(matches!(err, DeviceStatesError::DuplicateId(id) if id == "a"));
    }
}
