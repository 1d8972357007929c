//! Test support: a throwaway PostgreSQL cluster started from the machine's
//! `initdb`/`pg_ctl` in a temp dir on a free loopback port (as the `postgres`
//! user when running as root), and temp SQLite database URLs.
//!
//! Postgres is required: when its binaries are missing the helpers panic with
//! the reason, so CI fails loudly instead of silently skipping half the suite.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

/// A running PostgreSQL cluster, stopped and deleted on drop.
pub struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
    as_postgres_user: bool,
    bin: PathBuf,
    durability: Durability,
}

/// What a cluster's commits survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durability {
    /// fsync, synchronous_commit and full_page_writes off: fastest; a
    /// `stop` (crash) loses the last commits. For tests that never stop it.
    None,
    /// synchronous_commit on, fsync and full_page_writes off: a commit is in
    /// the WAL (the kernel's page cache) before it is acknowledged, so it
    /// survives the server processes being killed, not the machine crashing.
    ProcessCrash,
    /// PostgreSQL's defaults (all on), for benchmarks.
    Full,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn find_pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("WEFT_PG_BIN") {
        return PathBuf::from(dir);
    }
    let on_path = Command::new("sh")
        .arg("-c")
        .arg("command -v initdb")
        .output();
    if let Ok(out) = on_path {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !path.is_empty() {
            // Resolve links: psql and pg_ctl sit beside the real initdb.
            let real = std::fs::canonicalize(&path).unwrap_or_else(|_| PathBuf::from(&path));
            return real
                .parent()
                .expect("initdb has a parent dir")
                .to_path_buf();
        }
    }
    for version in ["17", "16", "15", "14"] {
        let dir = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    panic!(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql-15 or set WEFT_PG_BIN"
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

impl PgCluster {
    /// Starts a fresh cluster with fsync off (tests only: benchmarks keep it on).
    /// Its `synchronous_commit` is off too, so a [`PgCluster::stop`] loses the
    /// last commits: tests that stop it use [`PgCluster::start_crash_safe`].
    pub fn start() -> PgCluster {
        Self::start_with(Durability::None)
    }

    /// Starts a fresh cluster whose acknowledged commits survive a
    /// [`PgCluster::stop`] (`synchronous_commit` on; fsync off, so not a
    /// machine crash): for tests that crash and restart the database.
    pub fn start_crash_safe() -> PgCluster {
        Self::start_with(Durability::ProcessCrash)
    }

    /// Starts a fresh cluster with PostgreSQL's durable defaults (fsync on,
    /// `synchronous_commit` on, full page writes), for benchmarks.
    pub fn start_durable() -> PgCluster {
        Self::start_with(Durability::Full)
    }

    fn start_with(durability: Durability) -> PgCluster {
        let bin = find_pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("weft-pg-")
            .tempdir()
            .expect("temp dir");
        let as_postgres_user = is_root();
        if as_postgres_user {
            let status = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown of the cluster dir failed");
        }
        let data = dir.path().join("data");
        let cluster = PgCluster {
            dir,
            port: 0,
            as_postgres_user,
            bin,
            durability,
        };
        let mut initdb = cluster.pg_command("initdb");
        initdb.args(["-D"]).arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        ]);
        if durability != Durability::Full {
            initdb.arg("--no-sync");
        }
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cluster = cluster;
        // A port can be taken between probing and binding: try a few.
        for _ in 0..5 {
            cluster.port = free_port();
            if cluster.pg_ctl_start() {
                return cluster;
            }
        }
        let log = std::fs::read_to_string(cluster.dir.path().join("pg.log")).unwrap_or_default();
        panic!("pg_ctl start failed; log:\n{log}");
    }

    /// `psql` connected to `database` as `postgres`, stopping at the first
    /// error.
    fn psql(&self, database: &str) -> Command {
        let mut command = self.pg_command("psql");
        command.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
        ]);
        command
    }

    fn pg_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres_user {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    fn pg_ctl_start(&self) -> bool {
        let speed = match self.durability {
            Durability::Full => "",
            Durability::ProcessCrash => " -c fsync=off -c full_page_writes=off",
            Durability::None => " -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
        };
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1{speed} -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        self.pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("pg.log"))
            .args(["-w", "-t", "30", "-o", &options, "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Stops the server abruptly, as a crash would (`pg_ctl stop -m
    /// immediate`, waiting until it is down). Start it again with
    /// [`PgCluster::restart`].
    pub fn stop(&self) {
        let _ = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Starts it again on the same port after `stop` (crash recovery runs
    /// first); waits until it accepts connections, panics if it cannot start.
    pub fn restart(&self) {
        assert!(self.pg_ctl_start(), "pg_ctl restart failed");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs one SQL statement with `psql` against the `postgres` database and
    /// returns its unaligned output, e.g. `SHOW fsync` -> `on`.
    pub fn query(&self, sql: &str) -> String {
        let out = self
            .psql("postgres")
            .args(["-At", "-c"])
            .arg(sql)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Creates a new empty database and returns its URL.
    pub fn create_database(&self) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "weft_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let out = self
            .psql("postgres")
            .arg("-c")
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "CREATE DATABASE failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs a SQL script (a `pg_dump` in plain format, `COPY … FROM stdin`
    /// included) with `psql` against the database of `url`, one made by
    /// [`PgCluster::create_database`]; panics on the first error.
    pub fn run_script(&self, url: &str, script: &str) {
        let database = url.rsplit('/').next().expect("a database URL");
        let mut child = self
            .psql(database)
            .args(["-q", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run psql");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("psql's stdin");
            stdin
                .write_all(script.as_bytes())
                .expect("feed the script to psql");
        }
        let out = child.wait_with_output().expect("wait for psql");
        assert!(
            out.status.success(),
            "the SQL script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh SQLite database file in a temp dir that lives as long as the guard.
pub struct SqliteDb {
    _dir: tempfile::TempDir,
    pub url: String,
}

pub fn sqlite_database() -> SqliteDb {
    let dir = tempfile::Builder::new()
        .prefix("weft-sqlite-")
        .tempdir()
        .expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("weft.db").display());
    SqliteDb { _dir: dir, url }
}
