//! Own PostgreSQL clusters for tests that need what a shared server cannot give: a streaming
//! standby to pause, server settings (`shared_preload_libraries`), a cluster to stop.
//!
//! ```no_run
//! # async fn example() {
//! use switchyard_tests::pgcluster::PgCluster;
//!
//! let cluster = PgCluster::builder().with_standby().start();
//! cluster.execute("CREATE TABLE t (id int)");
//! let pool = sqlx::PgPool::connect(&cluster.url()).await.unwrap();
//! cluster.execute_on_standby("SELECT pg_wal_replay_pause()");
//! # }
//! ```
//!
//! The binaries are found in `/usr/lib/postgresql/*/bin` (the newest version there), or in
//! `SWITCHYARD_TEST_PG_BIN`. The tests run as root and PostgreSQL refuses to run as root, so
//! every binary runs as the `postgres` user (`runuser -u postgres --`) when the tests are root,
//! in a directory made for and owned by that user. A missing binary or user panics with what to
//! install: a test that needs a cluster never passes without one.
//!
//! The standby streams through a physical replication slot (`switchyard_standby`), so it never
//! loses WAL it has not received, however far behind a test holds it.
//!
//! Dropping the cluster stops both servers (`pg_ctl stop -m immediate`: nothing there is worth
//! a clean shutdown) and removes their directories.

use rand::Rng;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// What to start; see [`PgCluster::builder`].
#[derive(Debug, Clone, Default)]
pub struct PgClusterBuilder {
    standby: bool,
    settings: Vec<(String, String)>,
    password_roles: Vec<String>,
}

impl PgClusterBuilder {
    /// Also start a streaming standby (`pg_basebackup -R`) of the primary, on its own port.
    pub fn with_standby(mut self) -> Self {
        self.standby = true;
        self
    }

    /// A `postgresql.conf` setting for the primary (and the standby, which copies it), written
    /// as given: `.setting("work_mem", "'8MB'")`.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Makes `role` log in over TCP with its password (SCRAM) instead of the cluster's trust,
    /// so a test can try a wrong one.
    pub fn password_for(mut self, role: &str) -> Self {
        self.password_roles.push(role.to_owned());
        self
    }

    /// Starts the primary (and the standby), waiting until each accepts connections.
    pub fn start(self) -> PgCluster {
        let bin = bin_dir();
        let as_postgres = running_as_root();
        if as_postgres && !user_exists("postgres") {
            panic!(
                "PgCluster: the tests run as root and PostgreSQL refuses root, but there is no \
                 `postgres` user to run it as; install the server package (apt-get install \
                 postgresql) or create the user"
            );
        }
        let suffix: u64 = rand::rng().random();
        let root = std::env::temp_dir().join(format!("switchyard-pgcluster-{suffix:x}"));
        std::fs::create_dir_all(&root).expect("PgCluster: creating the cluster directory");
        let mut cluster = PgCluster {
            bin,
            as_postgres,
            root: root.clone(),
            primary: Node {
                dir: root.join("primary"),
                port: free_port(),
                running: false,
            },
            standby: None,
        };
        cluster.chown(&root);
        let primary_dir = cluster.primary.dir.clone();
        cluster.run_ok(
            "initdb",
            &[
                "-D",
                path_str(&primary_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let mut conf = format!(
            "\n# switchyard test cluster\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{dir}'\n\
             shared_preload_libraries = 'pg_stat_statements'\n\
             wal_level = replica\n\
             max_wal_senders = 4\n\
             hot_standby = on\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             autovacuum_naptime = 1s\n\
             wal_receiver_status_interval = 1s\n\
             cluster_name = '127.0.0.1:{port}'\n",
            port = cluster.primary.port,
            dir = path_str(&root),
        );
        for (name, value) in &self.settings {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        append(&primary_dir.join("postgresql.conf"), &conf);
        // Trust on loopback for everyone, replication included (initdb's `--auth=trust` already
        // allows it; stated here so the cluster does not depend on that default). The roles
        // that must give a password come first: the first matching line decides.
        let hba_path = primary_dir.join("pg_hba.conf");
        let defaults = std::fs::read_to_string(&hba_path).expect("PgCluster: reading pg_hba.conf");
        let passwords: String = self
            .password_roles
            .iter()
            .map(|role| format!("host all {role} 127.0.0.1/32 scram-sha-256\n"))
            .collect();
        std::fs::write(&hba_path, format!("{passwords}{defaults}"))
            .expect("PgCluster: writing pg_hba.conf");
        append(
            &hba_path,
            "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n",
        );
        cluster.start_node(false);
        if self.standby {
            let node = Node {
                dir: root.join("standby"),
                port: free_port(),
                running: false,
            };
            cluster.run_ok(
                "pg_basebackup",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &cluster.primary.port.to_string(),
                    "-U",
                    "postgres",
                    "-D",
                    path_str(&node.dir),
                    "-R",
                    // A physical slot keeps the WAL the standby has not received yet: without
                    // one a checkpoint on a busy primary can remove it, and the standby stops
                    // for good ("requested WAL segment … has already been removed").
                    "-C",
                    "-S",
                    "switchyard_standby",
                    "-X",
                    "stream",
                    "--no-sync",
                ],
            );
            // The standby's own port, and its name as the primary will see it
            // (`pg_stat_replication.application_name` is the standby's cluster_name).
            append(
                &node.dir.join("postgresql.conf"),
                &format!("port = {0}\ncluster_name = '127.0.0.1:{0}'\n", node.port),
            );
            cluster.standby = Some(node);
            cluster.start_node(true);
            cluster.wait_for_streaming();
        }
        cluster
    }
}

#[derive(Debug)]
struct Node {
    dir: PathBuf,
    port: u16,
    running: bool,
}

/// A running primary (and optional standby), stopped and removed on drop.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    as_postgres: bool,
    root: PathBuf,
    primary: Node,
    standby: Option<Node>,
}

impl PgCluster {
    pub fn builder() -> PgClusterBuilder {
        PgClusterBuilder::default()
    }

    /// A primary alone, with the default settings.
    pub fn start() -> PgCluster {
        Self::builder().start()
    }

    pub fn port(&self) -> u16 {
        self.primary.port
    }

    /// The standby's port; panics if the cluster was built without one.
    pub fn standby_port(&self) -> u16 {
        self.standby_node().port
    }

    /// The primary's `postgres` database as the `postgres` superuser.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The primary's `database` as the `postgres` superuser.
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}",
            self.primary.port
        )
    }

    /// The standby's `postgres` database (read-only).
    pub fn standby_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.standby_node().port
        )
    }

    /// The name the primary knows the standby by (`pg_stat_replication.application_name`).
    pub fn standby_name(&self) -> String {
        format!("127.0.0.1:{}", self.standby_node().port)
    }

    /// Runs SQL on the primary with `psql` (stops at the first error) and returns its output,
    /// unaligned and without headers: `"1|a\n2|b"`. Panics with psql's error on failure.
    pub fn execute(&self, sql: &str) -> String {
        self.try_execute(sql)
            .unwrap_or_else(|e| panic!("PgCluster: on the primary, {e}"))
    }

    /// As [`PgCluster::execute`], returning psql's error instead of panicking.
    pub fn try_execute(&self, sql: &str) -> Result<String, String> {
        self.psql(self.primary.port, sql)
    }

    /// As [`PgCluster::execute`], on the standby.
    pub fn execute_on_standby(&self, sql: &str) -> String {
        self.try_execute_on_standby(sql)
            .unwrap_or_else(|e| panic!("PgCluster: on the standby, {e}"))
    }

    /// As [`PgCluster::try_execute`], on the standby.
    pub fn try_execute_on_standby(&self, sql: &str) -> Result<String, String> {
        self.psql(self.standby_node().port, sql)
    }

    fn psql(&self, port: u16, sql: &str) -> Result<String, String> {
        let out = self.run(
            "psql",
            &[
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ],
        );
        if !out.status.success() {
            return Err(format!(
                "psql on port {port} failed for {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The primary's server log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.primary.dir.join("server.log")).unwrap_or_default()
    }

    /// The standby's server log so far.
    pub fn standby_log(&self) -> String {
        std::fs::read_to_string(self.standby_node().dir.join("server.log")).unwrap_or_default()
    }

    fn standby_node(&self) -> &Node {
        self.standby
            .as_ref()
            .expect("PgCluster: this cluster has no standby; build it with .with_standby()")
    }

    fn start_node(&mut self, standby: bool) {
        let node = if standby {
            self.standby.as_ref().unwrap()
        } else {
            &self.primary
        };
        let (dir, port) = (node.dir.clone(), node.port);
        let log = dir.join("server.log");
        let out = self.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                path_str(&dir),
                "-l",
                path_str(&log),
            ],
        );
        if !out.status.success() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "PgCluster: pg_ctl start of {} (port {port}) failed: {}\n{}\nserver log:\n{log}",
                dir.display(),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim(),
            );
        }
        if standby {
            self.standby.as_mut().unwrap().running = true;
        } else {
            self.primary.running = true;
        }
    }

    /// Until the primary shows the standby streaming, so tests start from a connected pair.
    fn wait_for_streaming(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let name = self.standby_name();
        loop {
            let state = self.execute(&format!(
                "SELECT state FROM pg_stat_replication WHERE application_name = '{name}'"
            ));
            if state == "streaming" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PgCluster: the standby {name} did not start streaming within 60 s (state \
                 {state:?}); see {}",
                self.standby_node().dir.join("server.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn chown(&self, path: &Path) {
        if !self.as_postgres {
            return;
        }
        let out = Command::new("chown")
            .args(["-R", "postgres:postgres", path_str(path)])
            .output()
            .expect("PgCluster: running chown");
        assert!(
            out.status.success(),
            "PgCluster: chown postgres {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a PostgreSQL binary (as `postgres` when we are root).
    fn run(&self, binary: &str, args: &[&str]) -> Output {
        let path = self.bin.join(binary);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        // Out of the way of the tests' own working directory, which `postgres` may not read.
        command.args(args).current_dir(&self.root);
        command.output().unwrap_or_else(|e| {
            panic!(
                "PgCluster: cannot run {}: {e}; install the PostgreSQL server binaries \
                 (apt-get install postgresql) or point SWITCHYARD_TEST_PG_BIN at their bin \
                 directory",
                path.display()
            )
        })
    }

    fn run_ok(&self, binary: &str, args: &[&str]) {
        let out = self.run(binary, args);
        assert!(
            out.status.success(),
            "PgCluster: {binary} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // The standby first: stopping the primary first makes it retry its connection.
        let nodes = self.standby.iter().chain(std::iter::once(&self.primary));
        for node in nodes.filter(|n| n.running) {
            let _ = self.run(
                "pg_ctl",
                &["stop", "-m", "immediate", "-w", "-D", path_str(&node.dir)],
            );
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The bin directory: `SWITCHYARD_TEST_PG_BIN`, or the newest `/usr/lib/postgresql/*/bin`
/// that has `initdb`.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SWITCHYARD_TEST_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("initdb").exists(),
            "PgCluster: SWITCHYARD_TEST_PG_BIN={} has no initdb; point it at the directory of \
             initdb, pg_ctl and pg_basebackup",
            dir.display()
        );
        return dir;
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PgCluster: no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (initdb, \
             pg_ctl, pg_basebackup); install them (apt-get install postgresql) or set \
             SWITCHYARD_TEST_PG_BIN to their directory"
        ),
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg(name)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A port nothing listens on now (the OS's choice for port 0). Another process could take it
/// before the server binds; `pg_ctl start` then fails and says so.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("PgCluster: finding a free port")
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("PgCluster: opening {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("PgCluster: writing {}: {e}", path.display()));
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("PgCluster: a UTF-8 temp path")
}
