//! After the attacks: a well-formed request on each device must still be served.

use std::time::{Duration, Instant};

use crate::chains::Attack;
use crate::targets::BUFFERS;
use crate::virtio::*;

/// Waits for the used index of queue `qi` to reach `want` (5 s at most).
fn wait_used(a: &Attack<'_>, qi: usize, want: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if a.queues[qi].used_idx(a.own) == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// One good request; prints `HOSTILE-CHECK <device> ok|fail …`.
pub fn check(a: &mut Attack<'_>) -> bool {
    let ready = a.bring_up();
    let m = a.own;
    let b = a.slot + BUFFERS;
    let phys = |off: usize| m.phys + off as u64;
    m.fill(b, 0x2000, 0);
    let name = a.dev.name();
    if ready == 0 || a.dev.read(MAGIC_VALUE) != MAGIC {
        println!("HOSTILE-CHECK {name} fail: no queue accepted after the attacks");
        return false;
    }
    match a.dev.device_id {
        DEVICE_RNG => {
            let q = a.queues[0].clone();
            q.write_desc(m, 0, phys(b), 64, DESC_WRITE, 0);
            a.queues[0].publish(m, 0);
            a.dev.notify(0);
            let served = wait_used(a, 0, 1);
            let (id, len) = a.queues[0].used_entry(m, 0);
            let nonzero = (0..64).any(|i| m.read8(b + i) != 0);
            let ok = served && id == 0 && len == 64 && nonzero;
            println!(
                "HOSTILE-CHECK rng {} id={id} len={len}",
                if ok { "ok" } else { "fail" }
            );
            ok
        }
        DEVICE_BLOCK => {
            // IN, sector 0, 512 bytes, status.
            m.write32(b, 0);
            m.write32(b + 4, 0);
            m.write64(b + 8, 0);
            m.write8(b + 0x1000, 0xff);
            let q = a.queues[0].clone();
            q.write_desc(m, 0, phys(b), 16, DESC_NEXT, 1);
            q.write_desc(m, 1, phys(b + 0x200), 512, DESC_NEXT | DESC_WRITE, 2);
            q.write_desc(m, 2, phys(b + 0x1000), 1, DESC_WRITE, 0);
            a.queues[0].publish(m, 0);
            a.dev.notify(0);
            let served = wait_used(a, 0, 1);
            let (id, len) = a.queues[0].used_entry(m, 0);
            let used = a.queues[0].used_idx(m);
            let status = m.read8(b + 0x1000);
            let head: String = (0..16)
                .map(|i| m.read8(b + 0x200 + i))
                .map(|c| if c.is_ascii_graphic() { c as char } else { '.' })
                .collect();
            let ok = served && status == 0;
            println!(
                "HOSTILE-CHECK block {} status={status} head={head} used={used} id={id} len={len}",
                if ok { "ok" } else { "fail" }
            );
            ok
        }
        _ => {
            // No request of its own: the device came back up with all its queues.
            let ok = ready == a.queues.len();
            println!(
                "HOSTILE-CHECK {name} {} queues={ready}/{}",
                if ok { "ok" } else { "fail" },
                a.queues.len()
            );
            ok
        }
    }
}
