//! `/proc/<pid>/stat`: whether a process still runs, and its start time (which tells a reused
//! pid from the process the agent started).

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    /// No such process, or another one with the same pid.
    Gone,
    /// Exited, not reaped by its parent yet.
    Zombie,
    Alive,
}

/// Parses the state letter and the start time (field 22) of a stat line.
fn parse(stat: &str) -> Option<(char, u64)> {
    // The command name (field 2) is in parentheses and may contain anything: fields after it
    // start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4..=21 are 18 fields; field 22 is the 20th after the state (field 3).
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// The start time of process `pid`, if it exists.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse(&stat).map(|(_, start)| start)
}

/// Whether process `pid` is in this process's PID namespace. A jailed VMM (`vmm --jail`) is
/// two processes with the same command line: the keeper, in ours, which the agent tracks, and
/// the jailed VMM, PID 1 of a namespace of its own.
pub fn in_our_pid_namespace(pid: u32) -> bool {
    let ours = std::fs::read_link("/proc/self/ns/pid");
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/pid"));
    matches!((ours, theirs), (Ok(a), Ok(b)) if a == b)
}

/// A running process whose command line has `--api-socket <socket>`: a VMM of this VM the
/// agent may not have recorded (it was killed between starting it and storing its pid). Of a
/// jailed VMM, its keeper.
pub fn find_by_api_socket(socket: &std::path::Path) -> Option<(u32, u64)> {
    let wanted = socket.as_os_str().as_encoded_bytes();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if !in_our_pid_namespace(pid) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        let found = std::iter::from_fn(|| args.next())
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w[0] == b"--api-socket" && w[1] == wanted);
        if !found {
            continue;
        }
        if let Some(start) = process_start_time(pid) {
            if state(pid, start) == ProcState::Alive {
                return Some((pid, start));
            }
        }
    }
    None
}

/// The state of the process `pid` that started at `start_time`.
pub fn state(pid: u32, start_time: u64) -> ProcState {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return ProcState::Gone;
    };
    match parse(&stat) {
        Some((_, start)) if start != start_time => ProcState::Gone,
        Some(('Z' | 'X', _)) => ProcState::Zombie,
        Some(_) => ProcState::Alive,
        None => ProcState::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_even_odd_command_names() {
        let line =
            "4242 (vmm (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 9 0 123456 1000 50";
        assert_eq!(parse(line), Some(('S', 123456)));
        assert_eq!(parse("garbage"), None);
    }

    #[test]
    fn a_process_is_found_by_its_api_socket_argument() {
        let socket = std::env::temp_dir().join(format!("virmo-find-{}.sock", std::process::id()));
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("sleep 30")
            .arg("--api-socket")
            .arg(&socket)
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let found = find_by_api_socket(&socket).map(|(pid, _)| pid);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found, Some(child.id()));
        assert_eq!(
            find_by_api_socket(std::path::Path::new("/nonexistent.sock")),
            None
        );
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_another_process() {
        let me = std::process::id();
        let start = process_start_time(me).unwrap();
        assert_eq!(state(me, start), ProcState::Alive);
        assert_eq!(state(me, start + 1), ProcState::Gone);
        assert_eq!(state(u32::MAX - 1, 0), ProcState::Gone);
    }
}
