//! The thread that serves the virtio devices: queue eventfds (written by KVM's ioeventfds when
//! the guest notifies a queue) and backend fds (the tap), through an `event_manager` loop.
//! Queue work never runs on a vCPU thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

type Manager = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// Ends the loop when its eventfd is written.
struct ExitSubscriber {
    evt: EventFd,
    exit: Arc<AtomicBool>,
}

impl MutEventSubscriber for ExitSubscriber {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(err) = ops.add(Events::new(&self.evt, EventSet::IN)) {
            tracing::error!(%err, "cannot watch the event loop's exit eventfd");
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.evt.read();
        self.exit.store(true, Ordering::SeqCst);
    }
}

/// A running event loop thread.
pub struct EventLoop {
    exit_evt: EventFd,
    handle: JoinHandle<()>,
}

impl EventLoop {
    /// Starts a thread running `manager` until [`EventLoop::stop`].
    pub fn spawn(mut manager: Manager) -> std::io::Result<Self> {
        let evt = EventFd::new(EFD_NONBLOCK)?;
        let exit_evt = evt.try_clone()?;
        let exit = Arc::new(AtomicBool::new(false));
        manager.add_subscriber(Arc::new(Mutex::new(ExitSubscriber {
            evt,
            exit: exit.clone(),
        })));
        let handle = std::thread::Builder::new()
            .name("virtio-events".into())
            .spawn(move || {
                crate::seccomp::confine_current_thread(crate::seccomp::ThreadClass::VirtioEvents);
                while !exit.load(Ordering::SeqCst) {
                    if let Err(err) = manager.run() {
                        tracing::error!(?err, "device event loop failed; stopping it");
                        break;
                    }
                }
            })?;
        Ok(Self { exit_evt, handle })
    }

    /// Asks the thread to end and waits for it.
    pub fn stop(self) {
        if self.exit_evt.write(1).is_err() {
            tracing::error!("cannot signal the device event loop to stop");
            return;
        }
        let _ = self.handle.join();
    }
}
