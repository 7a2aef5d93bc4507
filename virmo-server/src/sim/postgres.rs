//! A throw-away PostgreSQL cluster for the tests and the bench: Debian's `postgresql` package (installed with
//! apt-get when missing, as root), `initdb` and `pg_ctl` from /usr/lib/postgresql/*/bin, run as
//! the `postgres` user when we are root, listening only on a Unix socket in a temporary
//! directory (no port to collide with). Stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::TempDir;

pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    as_postgres: bool,
    socket_dir: PathBuf,
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The newest /usr/lib/postgresql/<version>/bin holding initdb.
fn find_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// The PostgreSQL binaries, installed first when missing.
fn bin_dir() -> PathBuf {
    if let Some(bin) = find_bin() {
        return bin;
    }
    assert!(
        is_root(),
        "PostgreSQL is not installed: run `apt-get install postgresql` as root (the tests install it themselves when run as root)"
    );
    eprintln!("installing Debian's postgresql package for the PostgreSQL tests");
    run(Command::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive"));
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "postgresql",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive"));
    find_bin().expect("initdb after installing postgresql")
}

impl Postgres {
    /// Creates and starts a cluster.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = TempDir::new("virmo-pg");
        let as_postgres = is_root();
        let socket_dir = dir.0.join("socket");
        std::fs::create_dir_all(&socket_dir).expect("socket dir");
        if as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir.0));
        }
        let pg = Self {
            dir,
            bin,
            as_postgres,
            socket_dir,
        };
        let data = pg.dir.0.join("data");
        pg.tool("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .output()
            .map(|o| {
                assert!(
                    o.status.success(),
                    "initdb failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            })
            .expect("initdb runs");
        let options = format!(
            "-k {} -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            pg.socket_dir.display()
        );
        let status = pg
            .tool("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .args(["-l"])
            .arg(pg.dir.0.join("postgres.log"))
            .args(["-o", &options, "start"])
            .output()
            .expect("pg_ctl runs");
        if !status.status.success() {
            let log = std::fs::read_to_string(pg.dir.0.join("postgres.log")).unwrap_or_default();
            panic!("PostgreSQL did not start: {log}");
        }
        pg
    }

    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Creates a database and returns its URL.
    pub fn database(&self, name: &str) -> String {
        run(self
            .tool("psql")
            .args(["-h"])
            .arg(&self.socket_dir)
            .args(["-U", "postgres", "-d", "postgres", "-q", "-c"])
            .arg(format!("CREATE DATABASE \"{name}\"")));
        format!(
            "postgres://postgres@localhost/{name}?host={}",
            self.socket_dir.display()
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .args(["-D"])
            .arg(self.dir.0.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}
