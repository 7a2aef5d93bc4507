//! Serves the local API on a Unix socket, one thread per connection.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::protocol::{AlertSummary, Request, Response, VmSummary};
use crate::model::{Operation, ResultCode, VmState};
use crate::supervisor::{Admission, Origin, Supervisor, UserUnlock};

/// How long a local start or stop is waited for.
const OPERATION_WAIT: Duration = Duration::from_secs(600);

/// Binds `path` (mode 0600, or 0660 with group `gid`) and serves it on a thread.
pub fn serve(sup: Arc<Supervisor>, path: &Path, gid: Option<u32>) -> std::io::Result<()> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    std::thread::Builder::new()
        .name("local-api".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let sup = sup.clone();
                let _ = std::thread::Builder::new()
                    .name("local-conn".into())
                    .spawn(move || {
                        if let Err(e) = connection(&sup, stream) {
                            tracing::debug!(error = %e, "local connection ended");
                        }
                    });
            }
        })?;
    Ok(())
}

fn send(stream: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_string(response).unwrap_or_else(|_| "{}".into());
    line.push('\n');
    stream.write_all(line.as_bytes())
}

fn connection(sup: &Arc<Supervisor>, mut stream: UnixStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(64 * 1024)).read_line(&mut line)?;
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            return send(
                &mut stream,
                &Response::refused(1400, format!("bad request: {e}")),
            );
        }
    };
    tracing::debug!(?request, "local request");
    let response = match request {
        Request::List => list(sup),
        Request::Alerts => alerts(sup),
        Request::Unlock { vm, code } => unlock(sup, &vm, &code),
        Request::Start { vm } => operation(sup, &vm, Operation::Start),
        Request::Stop { vm } => operation(sup, &vm, Operation::Stop),
        Request::Console { vm } => return console(sup, &vm, stream),
    };
    send(&mut stream, &response)
}

fn list(sup: &Supervisor) -> Response {
    let vms = sup
        .views()
        .into_iter()
        .map(|v| VmSummary {
            vm: v.record.node.clone(),
            id: v.record.id.clone(),
            name: v.record.name.clone(),
            state: v.record.state.name().into(),
            state_code: v.record.state.code(),
            lock: v.record.lock.state.name().into(),
            busy: v.busy.map(|op| op.key().to_owned()),
            vcpus: v.record.vcpus(),
            memory_mib: v.record.memory_mib(),
            pid: v.pid,
            image: v
                .record
                .image
                .installed
                .as_ref()
                .map(|i| format!("{} {}", i.name, i.version)),
        })
        .collect();
    Response {
        ok: true,
        vms: Some(vms),
        ..Response::default()
    }
}

fn alerts(sup: &Supervisor) -> Response {
    match sup.pending_alerts() {
        Ok(list) => Response {
            ok: true,
            alerts: Some(
                list.into_iter()
                    .map(|a| AlertSummary {
                        alert_type: a.alert.alert_type,
                        source: a.alert.source,
                        data: a.alert.data,
                        attempts: a.attempts,
                        created_at: a.created_at,
                    })
                    .collect(),
            ),
            ..Response::default()
        },
        Err(e) => Response::refused(1500, crate::error_chain(&e)),
    }
}

fn unlock(sup: &Arc<Supervisor>, vm: &str, code: &str) -> Response {
    match sup.unlock_by_user(vm, code) {
        Ok(UserUnlock::Unlocked) => Response::ok("unlocked"),
        Ok(UserUnlock::NotLocked) => Response::ok("not locked"),
        Ok(UserUnlock::NotAllowed) => Response::refused(
            ResultCode::LOCKED.0,
            "the administrator has not allowed unlocking this VM here",
        ),
        Ok(UserUnlock::WrongCode { attempts_left }) => Response::refused(
            ResultCode::LOCKED.0,
            format!("wrong code ({attempts_left} attempts left before a wait)"),
        ),
        Ok(UserUnlock::Blocked { retry_after_secs }) => Response::refused(
            ResultCode::LOCKED.0,
            format!("too many wrong codes: try again in {retry_after_secs} s"),
        ),
        Err(e) => Response::refused(ResultCode::NOT_FOUND.0, crate::error_chain(&e)),
    }
}

fn operation(sup: &Arc<Supervisor>, vm: &str, op: Operation) -> Response {
    let slot = match sup.find(vm) {
        Some(slot) => slot,
        None => return Response::refused(ResultCode::NOT_FOUND.0, format!("no VM `{vm}`")),
    };
    match sup.request(vm, op, Origin::Local) {
        Ok(Admission::Accepted { .. }) => {}
        Ok(Admission::Refused(code)) => {
            let why = if code == ResultCode::LOCKED {
                "the VM is locked by its administrator"
            } else {
                "not possible in the VM's state"
            };
            return Response::refused(code.0, why);
        }
        Err(e) => return Response::refused(1500, crate::error_chain(&e)),
    }
    let deadline = Instant::now() + OPERATION_WAIT;
    while Instant::now() < deadline {
        let state = slot.lock();
        if state.busy.is_none() {
            let record = &state.record;
            let wanted = if op == Operation::Start {
                VmState::Running
            } else {
                VmState::Stopped
            };
            return if record.state == wanted {
                Response::ok(record.state.name())
            } else {
                Response::refused(
                    ResultCode::FAILED.0,
                    record.last_error.clone().unwrap_or_default(),
                )
            };
        }
        drop(state);
        std::thread::sleep(Duration::from_millis(100));
    }
    Response::refused(ResultCode::TIMED_OUT.0, "still in progress")
}

/// Streams the console until the VM is locked or stops, or the user leaves.
fn console(sup: &Arc<Supervisor>, vm: &str, mut stream: UnixStream) -> std::io::Result<()> {
    let (slot, epoch) = match sup.local_access(vm) {
        Ok(access) => access,
        Err(code) => {
            let why = match code {
                ResultCode::LOCKED => "the VM is locked by its administrator".to_owned(),
                ResultCode::NOT_FOUND => format!("no VM `{vm}`"),
                _ => "the VM is not running".to_owned(),
            };
            return send(&mut stream, &Response::refused(code.0, why));
        }
    };
    let paths = sup.layout.vm(&slot.id);
    let mut log = std::fs::File::open(&paths.console_log)?;
    let len = log.metadata()?.len();
    log.seek(SeekFrom::Start(len.saturating_sub(4096)))?;
    // Non-blocking: the VMM holds the FIFO open for reading, so the open succeeds at once.
    let fifo = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&paths.console_in)?;
    send(&mut stream, &Response::ok("attached"))?;
    // Keystrokes → the console FIFO.
    let mut input = stream.try_clone()?;
    input.set_read_timeout(None)?;
    let mut fifo_writer = fifo;
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if fifo_writer.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut buf = vec![0u8; 8192];
    loop {
        let n = log.read(&mut buf)?;
        if n > 0 {
            if stream.write_all(&buf[..n]).is_err() {
                break;
            }
            continue;
        }
        {
            let state = slot.lock();
            if state.access_epoch != epoch
                || state.record.lock.state.is_locked()
                || state.record.state != VmState::Running
            {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}
