//! A real PostgreSQL server for tests (Debian's package): a fresh cluster
//! in a temporary directory, owned by the `postgres` user (initdb refuses
//! root), listening on 127.0.0.1 on a free port and on a socket in that
//! directory only. Stopped and removed on drop.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("PostgreSQL is not installed ({}: {e}); run scripts/setup.sh --test", root.display()))
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().expect("no PostgreSQL version with initdb under /usr/lib/postgresql")
}

fn as_postgres(bin: &Path, tool: &str, args: &[&str]) -> std::process::Output {
    Command::new("runuser").args(["-u", "postgres", "--"]).arg(bin.join(tool)).args(args).output().unwrap_or_else(|e| panic!("running {tool}: {e}"))
}

impl Postgres {
    /// Starts a server with database `pinacle` owned by user `pinacle`
    /// (trust authentication on loopback: the harness's own server).
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("pinacle-pg-").tempdir_in("/var/tmp").unwrap();
        Command::new("chown").arg("postgres").arg(dir.path()).status().unwrap();
        let data = dir.path().join("data");
        let out = as_postgres(&bin, "initdb", &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "pinacle", "--no-sync"]);
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let opts = format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", dir.path().display());
        let log = dir.path().join("server.log");
        let out = as_postgres(&bin, "pg_ctl", &["-D", data.to_str().unwrap(), "-o", &opts, "-l", log.to_str().unwrap(), "-w", "-t", "60", "start"]);
        assert!(out.status.success(), "pg_ctl start: {}{}", String::from_utf8_lossy(&out.stderr), std::fs::read_to_string(&log).unwrap_or_default());
        let pg = Postgres { dir, bin, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = as_postgres(&pg.bin, "psql", &["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "pinacle", "-d", "postgres", "-c", "CREATE DATABASE pinacle"]);
            if out.status.success() {
                break;
            }
            assert!(Instant::now() < deadline, "PostgreSQL did not accept the database: {}", String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(Duration::from_millis(200));
        }
        pg
    }

    /// `postgres://pinacle@127.0.0.1:PORT/pinacle`.
    pub fn url(&self) -> String {
        format!("postgres://pinacle@127.0.0.1:{}/pinacle", self.port)
    }

    /// Runs `sql` with psql; its output (unaligned, tuples only).
    pub fn query(&self, sql: &str) -> String {
        let out = as_postgres(&self.bin, "psql", &["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "pinacle", "-d", "pinacle", "-At", "-c", sql]);
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = as_postgres(&self.bin, "pg_ctl", &["-D", data.to_str().unwrap_or_default(), "-m", "immediate", "stop"]);
    }
}
