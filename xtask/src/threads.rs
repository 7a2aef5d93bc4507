//! What the threads of a process are doing, from `/proc`: for reports on a hung runner (QEMU's
//! threads) or a stuck VMM under a benchmark.

/// Each thread of process `pid`: name, state, CPU time, kernel wait channel and kernel stack
/// (the stack needs root). Tells a thread running (and burning CPU) from one blocked, and where.
pub fn report(pid: u32) -> String {
    let tasks = format!("/proc/{pid}/task");
    let mut tids: Vec<String> = std::fs::read_dir(&tasks)
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    tids.sort();
    let mut out = String::new();
    for tid in tids {
        let read = |file: &str| {
            std::fs::read_to_string(format!("{tasks}/{tid}/{file}"))
                .unwrap_or_else(|e| format!("({e})"))
        };
        let stat = read("stat");
        // Fields after the command: state, ..., utime (14th) and stime (15th) in clock ticks.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |i: usize| fields.get(i).copied().unwrap_or("?");
        out.push_str(&format!(
            "thread {tid} {} state {} utime {} stime {} wchan {}\n{}",
            read("comm").trim(),
            field(0),
            field(11),
            field(12),
            read("wchan").trim(),
            read("stack")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own threads are listed with their state and CPU time.
    #[test]
    fn the_host_threads_report_lists_each_thread_with_its_state() {
        let report = report(std::process::id());
        let first = report.lines().next().unwrap_or_default();
        assert!(first.starts_with("thread "), "{report}");
        assert!(
            first.contains(" state ") && first.contains(" utime "),
            "{report}"
        );
    }
}
