//! The binaries: `virmo-server --data-dir D --listen 127.0.0.1:0` runs with nothing else set up,
//! and `virmoctl` drives it; a simulated device configured from the printed agent configuration
//! gets the job `virmoctl … --watch` follows.

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use support::TempDir;
use virmo_server::sim::{SimConfig, SimDevice};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn virmoctl(url: &str, token_file: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_virmoctl"))
        .args(["--server", url, "--token-file"])
        .arg(token_file)
        .args(args)
        .output()
        .expect("virmoctl runs")
}

fn text(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "virmoctl failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The value of `key = "…"` in the agent configuration.
fn toml_value(config: &str, key: &str) -> String {
    config
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key} = ")))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no {key} in {config}"))
}

#[test]
fn the_server_binary_and_virmoctl_manage_a_device() {
    let dir = TempDir::new("virmo-server-cli");
    let mut child = Command::new(env!("CARGO_BIN_EXE_virmo-server"))
        .arg("--data-dir")
        .arg(&dir.0)
        .args(["--listen", "127.0.0.1:0"])
        .env("VIRMO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("virmo-server starts");
    let stdout = child.stdout.take().expect("stdout");
    let server = Running(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the ready line");
    let url = line
        .trim()
        .strip_prefix("virmo-server listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let token = dir.0.join("admin-token");
    assert!(
        token.exists(),
        "the admin token is generated into the data directory"
    );

    let config = text(&virmoctl(&url, &token, &["enroll", "host-9"]));
    assert_eq!(toml_value(&config, "url"), format!("{url}/dm"));
    assert_eq!(toml_value(&config, "dev_id"), "host-9");
    let devices = text(&virmoctl(&url, &token, &["devices"]));
    assert!(devices.contains("host-9"), "{devices}");

    let mut sim_config = SimConfig::new(
        "host-9",
        &toml_value(&config, "url"),
        &toml_value(&config, "server_id"),
    );
    sim_config.client_secret = toml_value(&config, "client_secret");
    sim_config.server_secret = toml_value(&config, "server_secret");
    sim_config.server_name = toml_value(&config, "server_name");
    let mut sim = SimDevice::new(sim_config);

    // `provision --watch` follows the job while the device takes it and finishes it.
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_virmoctl"))
        .args(["--server", &url, "--token-file"])
        .arg(&token)
        .args([
            "provision",
            "host-9",
            "work",
            "--url",
            "https://images.example/work.tar",
            "--hash",
            &format!("sha256:{}", "cd".repeat(32)),
            "--vcpus",
            "2",
            "--watch",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("virmoctl runs");
    let mut watched = BufReader::new(watcher.stdout.take().expect("stdout"));
    let mut first = String::new();
    watched.read_line(&mut first).expect("the queued line");
    assert!(first.contains("queued"), "{first}");
    let report = sim.session();
    assert_eq!(
        report.reason,
        Some(omadm::session::EndReason::Completed),
        "{report:?}"
    );
    assert_eq!(sim.finish_operations(), 1);
    sim.session();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut watched, &mut rest).expect("the watch output");
    assert!(rest.contains(" accepted"), "{rest}");
    assert!(rest.trim_end().ends_with("done"), "{rest}");
    assert!(watcher.wait().expect("virmoctl ends").success());

    let vms = text(&virmoctl(&url, &token, &["vms", "host-9"]));
    assert!(vms.contains("work") && vms.contains("stopped"), "{vms}");
    let jobs = text(&virmoctl(&url, &token, &["jobs", "--device", "host-9"]));
    assert!(
        jobs.contains("provision work") && jobs.contains("done"),
        "{jobs}"
    );
    let alerts = text(&virmoctl(&url, &token, &["alerts"]));
    assert!(
        alerts.contains("urn:oma:at:virmo:1.0:OperationComplete"),
        "{alerts}"
    );
    let json = text(&virmoctl(&url, &token, &["--json", "device", "host-9"]));
    let value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(value["device"]["id"], "host-9");
    let refused = virmoctl(&url, &token, &["start", "nobody", "work"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("404"));
    drop(server);
}
