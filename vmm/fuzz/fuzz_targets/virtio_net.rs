//! Guest-written requests on a real virtio-net device behind its transport
//! (`vmm::fuzz::virtio::device_requests`).
#![cfg_attr(fuzzing, no_main)]

use vmm::fuzz::virtio::{device_requests, DeviceKind};

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| device_requests(DeviceKind::Net, data));

#[cfg(not(fuzzing))]
fn main() {
    vmm_fuzz::replay("virtio_net", |data| {
        device_requests(DeviceKind::Net, data)
    });
}
