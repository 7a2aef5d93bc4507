//! Guest-written requests on a real virtio-rng device behind its transport
//! (`vmm::fuzz::virtio::device_requests`).
#![cfg_attr(fuzzing, no_main)]

use vmm::fuzz::virtio::{device_requests, DeviceKind};

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| device_requests(DeviceKind::Rng, data));

#[cfg(not(fuzzing))]
fn main() {
    vmm_fuzz::replay("virtio_rng", |data| {
        device_requests(DeviceKind::Rng, data)
    });
}
