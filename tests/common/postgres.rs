//! PostgreSQL for the tests: a real server, never a stand-in.
//!
//! `.ci/run` starts one and exports its URL as `CODER_MCP_TEST_POSTGRES`; each test then
//! gets a database of its own in it. Without that variable, a test starts a private
//! server: `initdb` and `pg_ctl` from PATH (or `/usr/lib/postgresql/*/bin`), as the
//! `postgres` user when the tests run as root (PostgreSQL refuses root), on a loopback
//! port, in a temporary directory. Tests that stop PostgreSQL mid-call always use a
//! private server. Where PostgreSQL is not installed these tests are skipped with a
//! message, unless `CODER_MCP_REQUIRE_POSTGRES=1` (CI sets it): then that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::Connection;

/// The variable `.ci/run` sets to the URL of its PostgreSQL server.
const SHARED: &str = "CODER_MCP_TEST_POSTGRES";
const REQUIRED: &str = "CODER_MCP_REQUIRE_POSTGRES";

/// A private PostgreSQL server, stopped (immediately, like a crash) when dropped.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PgServer {
    /// Starts a private server, or `None` (after saying why) when PostgreSQL is not
    /// installed and not required.
    pub fn start() -> Option<PgServer> {
        let Some(bin) = find_bin_dir() else {
            skip_or_fail("initdb/pg_ctl not found (install PostgreSQL, e.g. Debian's postgresql)");
            return None;
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        if running_as_root() {
            run(Command::new("chown").args(["postgres:", &dir.path().display().to_string()]));
        }
        let data = dir.path().join("data");
        run(as_postgres(&bin.join("initdb")).arg("-D").arg(&data).args([
            "--auth=trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        ]));
        let server = PgServer {
            port: free_port(),
            dir,
            bin,
        };
        server.resume();
        Some(server)
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the server at once, like a crash or an outage: connections are cut.
    pub fn stop(&self) {
        run(as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"]));
    }

    /// Starts it (again), and waits until it accepts connections (`pg_ctl -w`).
    pub fn resume(&self) {
        let options = format!(
            "-p {} -h 127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.data().display()
        );
        run(as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-o", &options, "-w", "-l"])
            .arg(self.dir.path().join("log"))
            .arg("start"));
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// A new, empty database for one test: in the shared server when there is one, else in
/// a private server (returned, to keep it running).
pub async fn database() -> Option<(String, Option<PgServer>)> {
    match std::env::var(SHARED) {
        Ok(url) if !url.is_empty() => {
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            let mut admin = sqlx::PgConnection::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("{SHARED} ({url}) cannot be reached: {e}"));
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await
                .expect("create a test database");
            let mut parsed = reqwest::Url::parse(&url).expect("a URL");
            parsed.set_path(&name);
            Some((parsed.to_string(), None))
        }
        _ => {
            let server = PgServer::start()?;
            Some((server.url("postgres"), Some(server)))
        }
    }
}

fn skip_or_fail(why: &str) {
    if std::env::var(REQUIRED).is_ok_and(|v| v == "1") {
        panic!("PostgreSQL is required ({REQUIRED}=1) but {why}");
    }
    eprintln!("skipping a PostgreSQL test: {why}");
}

/// The directory of `initdb` and `pg_ctl`.
fn find_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort();
    debian.reverse();
    on_path
        .into_iter()
        .chain(debian)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `program`, run as the `postgres` user when we are root.
fn as_postgres(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
