//! The transport on the event loop: queue eventfds (written by KVM ioeventfds or by a
//! QueueNotify write) and the device's backend fds.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::transport::VirtioMmioTransport;
use crate::devices::virtio::stats::bump;

/// Event data of backend fds start here; below are queue indexes.
const BACKEND_TOKEN_BASE: u32 = 0x1000;

impl MutEventSubscriber for VirtioMmioTransport {
    fn init(&mut self, ops: &mut EventOps) {
        for (index, evt) in self.queue_evts.iter().enumerate() {
            if let Err(err) = ops.add(Events::with_data(evt, index as u32, EventSet::IN)) {
                tracing::error!(id = %self.id, index, %err, "cannot watch queue eventfd");
                bump(&self.stats.backend_errors);
            }
        }
        for (token, backend) in self.device.backend_fds().into_iter().enumerate() {
            let data = BACKEND_TOKEN_BASE + token as u32;
            if let Err(err) = ops.add(Events::with_data_raw(backend.fd, data, backend.events)) {
                tracing::error!(id = %self.id, token, %err, "cannot watch backend fd");
                bump(&self.stats.backend_errors);
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let data = events.data();
        if events
            .event_set()
            .intersects(EventSet::ERROR | EventSet::HANG_UP)
        {
            tracing::error!(id = %self.id, data, "device fd failed; no longer watched");
            bump(&self.stats.backend_errors);
            let _ = ops.remove(events);
            return;
        }
        if data < BACKEND_TOKEN_BASE {
            let index = data as usize;
            match self.queue_evts.get(index) {
                Some(evt) => {
                    // Drain the counter; it is non-blocking, so a spurious wakeup is harmless.
                    let _ = evt.read();
                    self.run_queue(index);
                }
                None => bump(&self.stats.backend_errors),
            }
        } else {
            self.run_backend((data - BACKEND_TOKEN_BASE) as usize);
        }
    }
}
