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
    fn this_process_is_alive_and_a_wrong_start_time_is_another_process() {
        let me = std::process::id();
        let start = process_start_time(me).unwrap();
        assert_eq!(state(me, start), ProcState::Alive);
        assert_eq!(state(me, start + 1), ProcState::Gone);
        assert_eq!(state(u32::MAX - 1, 0), ProcState::Gone);
    }
}
