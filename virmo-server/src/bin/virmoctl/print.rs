//! How `virmoctl` prints the server's answers as text (`--json` prints them as they come).

use virmo_server::admin::{AdminResponse, JobView, VmView};
use virmo_server::model::{CancelOutcome, Job};

pub fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn print_job_line(job: &Job) {
    let outcome = match (&job.result_code, &job.error) {
        (_, Some(error)) => error.clone(),
        (Some(code), None) => format!("result {code}"),
        _ => String::new(),
    };
    println!(
        "{:>6}  {:<20} {:<24} {:<9} {:>2}/{:<2} {}  {}",
        job.id,
        job.device_id,
        job.operation,
        job.state,
        job.attempts,
        job.policy.max_attempts,
        time(job.updated_at),
        outcome
    );
}

/// One line per VM: what an administrator looks at first (every setting: `tree`, `--json`).
pub fn print_vms(vms: &[VmView]) {
    println!(
        "{:<16} {:<12} {:<10} {:>5} {:>8}  {:<16} ID",
        "VM", "STATE", "LOCK", "VCPUS", "MEM(MiB)", "IMAGE"
    );
    for vm in vms {
        let value = |key: &str| vm.values.get(key).map_or("", String::as_str);
        let lock = match vm.lock_state {
            Some(10) => "unlocked",
            Some(20) => "partial",
            Some(30) => "full",
            _ => "?",
        };
        let image = format!("{} {}", value("Ext/DevInfo/Mod"), value("Image/PkgVersion"));
        println!(
            "{:<16} {:<12} {:<10} {:>5} {:>8}  {:<16} {}",
            vm.name,
            vm.state_name.as_deref().unwrap_or("?"),
            lock,
            value("Resources/VCPUs"),
            value("Resources/MemoryMiB"),
            image.trim(),
            vm.id.as_deref().unwrap_or("")
        );
    }
}

pub fn print(response: &AdminResponse) {
    match response {
        AdminResponse::Enrolled(enrolled) => print!("{}", enrolled.agent_config),
        AdminResponse::Devices(devices) => {
            println!("{:<24} {:<6} {:<21} MODEL", "DEVICE", "AUTH", "LAST SEEN");
            for d in devices {
                println!(
                    "{:<24} {:<6} {:<21} {}",
                    d.id,
                    d.auth.as_str(),
                    d.last_seen_at.map_or("never".to_owned(), time),
                    d.dev_info.as_ref().map_or("", |i| i.model.as_str())
                );
            }
        }
        AdminResponse::Device(view) => {
            let d = &view.device;
            println!("device     {}", d.id);
            println!("auth       {}", d.auth.as_str());
            println!("enrolled   {}", time(d.enrolled_at));
            println!(
                "last seen  {}",
                d.last_seen_at.map_or("never".to_owned(), time)
            );
            if let Some(info) = &d.dev_info {
                println!(
                    "devinfo    {} {} (DM {})",
                    info.man, info.model, info.dm_version
                );
            }
            println!();
            print_vms(&view.vms);
            if !view.open_jobs.is_empty() {
                println!();
                for job in &view.open_jobs {
                    print_job_line(job);
                }
            }
        }
        AdminResponse::Unenrolled { id } => println!("device {id} removed"),
        AdminResponse::Vms(vms) => print_vms(vms),
        AdminResponse::Tree(nodes) => {
            for node in nodes {
                println!(
                    "{}  ({}) {}",
                    node.uri,
                    node.format,
                    node.value.as_deref().unwrap_or("")
                );
            }
        }
        AdminResponse::Queued { job, created } => {
            let note = if *created { "queued" } else { "already queued" };
            println!(
                "job {} {note}: {} on {}",
                job.id, job.operation, job.device_id
            );
        }
        AdminResponse::Jobs(jobs) => {
            for job in jobs {
                print_job_line(job);
            }
        }
        AdminResponse::Job(view) => print_job(view),
        AdminResponse::Cancel(outcome) => match outcome.as_ref() {
            CancelOutcome::Cancelled(job) => println!(
                "job {} cancelled: {} on {} will not be sent",
                job.id, job.operation, job.device_id
            ),
            CancelOutcome::Requested(job) => println!(
                "job {} is already {}: cancel requested; it will not be sent again, and its \
                 outcome will be recorded (an operation the device accepted cannot be withdrawn)",
                job.id, job.state
            ),
        },
        AdminResponse::Alerts(alerts) => {
            for a in alerts {
                println!(
                    "{:>6}  {}  {:<20} {:<42} {:<10} {}{}",
                    a.id,
                    time(a.received_at),
                    a.alert.device_id,
                    a.alert.alert_type,
                    a.alert.data.as_deref().unwrap_or(""),
                    a.alert.source.as_deref().unwrap_or(""),
                    a.job_id.map_or(String::new(), |j| format!("  (job {j})"))
                );
            }
        }
        AdminResponse::Events(events) => {
            for e in events {
                println!(
                    "{:>6}  {}  {:<20} {:<16} {}",
                    e.id,
                    time(e.at),
                    e.device_id.as_deref().unwrap_or("-"),
                    e.kind,
                    e.detail
                );
            }
        }
    }
}

pub fn print_job(view: &JobView) {
    let job = &view.job;
    println!("job        {}", job.id);
    println!("device     {}", job.device_id);
    println!("operation  {}", job.operation);
    println!("state      {}", job.state);
    println!("attempts   {}/{}", job.attempts, job.policy.max_attempts);
    println!("created    {}", time(job.created_at));
    if let Some(code) = job.result_code {
        println!(
            "result     {code} ({})",
            virmo_server::jobs::result_text(code)
        );
    }
    if let Some(error) = &job.error {
        println!("error      {error}");
    }
    if let Some(at) = job.cancel_requested_at {
        println!("cancel     requested {}", time(at));
    }
    for (i, command) in job.commands.iter().enumerate() {
        let answers: Vec<String> = view
            .responses
            .iter()
            .filter(|r| r.command_index == i as i64)
            .map(|r| format!("{} {}", r.kind, r.status))
            .collect();
        println!(
            "  {} {}  {}",
            command.name(),
            command.uri(),
            answers.join(", ")
        );
    }
}
