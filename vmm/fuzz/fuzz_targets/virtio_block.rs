//! Guest-written requests on a real virtio-block device behind its transport
//! (`vmm::fuzz::virtio::device_requests`).
#![cfg_attr(fuzzing, no_main)]

use vmm::fuzz::virtio::{device_requests, DeviceKind};

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| device_requests(DeviceKind::Block, data));

#[cfg(not(fuzzing))]
fn main() {
    vmm_fuzz::replay("virtio_block", |data| {
        device_requests(DeviceKind::Block, data)
    });
}
