//! A real PostgreSQL server for tests: `initdb` + `pg_ctl` in a temporary directory on a
//! loopback port (as the `postgres` user when running as root, since initdb refuses root), never
//! the system service. Stopped when dropped. tests/setup.sh installs Debian's `postgresql`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::free_port;

/// A running PostgreSQL cluster with a `facekey` database.
pub struct PgServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    as_postgres: bool,
    /// With TLS: the server's self-signed certificate (the client's root), and TCP connections
    /// without TLS are rejected.
    pub tls_cert: Option<PathBuf>,
}

/// Debian's PostgreSQL binaries (the newest installed major version).
fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect(
            "PostgreSQL is not installed (/usr/lib/postgresql missing): run tests/setup.sh, which \
             installs Debian's postgresql package",
        )
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("no PostgreSQL bin directory with pg_ctl")
}

/// Hand `dir` to the `postgres` user (the tests run as root; PostgreSQL and PgBouncer refuse to).
fn give_to_postgres(dir: &Path) {
    let ok = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown of {} failed", dir.display());
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgServer {
    /// initdb, start and create the `facekey` database.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// As [`PgServer::start`], with TLS required for every TCP connection (a self-signed
    /// certificate for 127.0.0.1, made with `openssl`).
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("facekey-pg")
            .tempdir()
            .unwrap();
        let as_postgres = is_root();
        if as_postgres {
            give_to_postgres(dir.path());
        }
        let mut me = Self {
            port: free_port(),
            bin: bin_dir(),
            as_postgres,
            dir,
            tls_cert: None,
        };
        me.run(
            "initdb",
            &[
                "-D",
                &me.data().display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        if tls {
            me.enable_tls();
        }
        me.pg_ctl_start();
        me.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &me.port.to_string(),
                "-U",
                "postgres",
                "facekey",
            ],
        );
        me
    }

    /// A server certificate for 127.0.0.1 in the data directory, `ssl = on`, and an hba file
    /// that accepts TCP only over TLS.
    fn enable_tls(&mut self) {
        let data = self.data();
        let (cert, key) = (data.join("server.crt"), data.join("server.key"));
        super::self_signed_cert(&cert, &key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        if self.as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&cert)
                .arg(&key)
                .status()
                .unwrap()
                .success();
            assert!(ok);
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 0.0.0.0/0 reject\n",
        )
        .unwrap();
        // The client trusts a copy outside the data directory (readable by the test user).
        let root = self.dir.path().join("root.crt");
        std::fs::copy(&cert, &root).unwrap();
        self.tls_cert = Some(root);
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A PostgreSQL tool, run as the `postgres` user when the tests run as root.
    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .env("PGSSLMODE", self.ssl_mode())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_ctl_start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-o",
                &opts,
                "-l",
                &self.dir.path().join("log").display().to_string(),
                "-w",
                "start",
            ],
        );
    }

    fn ssl_mode(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "require"
        } else {
            "prefer"
        }
    }

    /// The database URL (the `postgres` superuser; `password` is ignored under trust auth but
    /// shows that logs redact it).
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:s3cret-pw@127.0.0.1:{}/facekey",
            self.port
        )
    }

    /// Stop the server (fast shutdown: clients are disconnected).
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    /// Start it again on the same data and port.
    pub fn restart(&self) {
        self.pg_ctl_start();
    }

    /// Run one SQL statement with psql and return its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = self.psql_command(sql).output().unwrap();
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Start psql running `sql` in the background (another client holding a lock, say); the
    /// caller kills it.
    pub fn psql_spawn(&self, sql: &str) -> std::process::Child {
        self.psql_command(sql)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    fn psql_command(&self, sql: &str) -> Command {
        let mut c = self.command("psql");
        c.env("PGSSLMODE", self.ssl_mode()).args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "facekey",
            "-At",
            "-c",
            sql,
        ]);
        c
    }

    /// The server log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

/// Write a template key file readable by the runtime (and return its path).
pub fn key_file(dir: &Path, line: &str) -> PathBuf {
    let path = dir.join("template.keys");
    std::fs::write(&path, format!("{line}\n")).unwrap();
    path
}

/// Template stores on one [`PgServer`] under one generated template key: each
/// [`Replicas::connect`] is another replica's connection to the same data.
pub struct Replicas {
    url: String,
    line: String,
    keys_path: PathBuf,
}

impl Replicas {
    /// A fresh template key (`k1`) written beside `pg`'s data.
    pub fn new(pg: &PgServer) -> Self {
        let line = facekey_runtime::store::cipher::new_key_line("k1").unwrap();
        let keys_path = key_file(pg.dir.path(), &line);
        Self {
            url: pg.url(),
            line,
            keys_path,
        }
    }

    /// Another connection to the store (migrating it on the first).
    pub async fn connect(&self) -> facekey_runtime::store::postgres::PgStore {
        let keys = facekey_runtime::store::cipher::TemplateKeys::parse(&self.line, &self.keys_path)
            .unwrap();
        facekey_runtime::store::postgres::PgStore::connect(&self.url, None, keys, 5, "TEST_URL")
            .await
            .unwrap()
    }
}

impl Replicas {
    /// Another connection to the store through `url` (a pooler in front of the same server).
    pub async fn connect_to(
        &self,
        url: &str,
    ) -> Result<facekey_runtime::store::postgres::PgStore, facekey_runtime::store::StoreError> {
        let keys = facekey_runtime::store::cipher::TemplateKeys::parse(&self.line, &self.keys_path)
            .unwrap();
        facekey_runtime::store::postgres::PgStore::connect(url, None, keys, 5, "TEST_URL").await
    }
}

/// A real PgBouncer (Debian's `pgbouncer`, installed by tests/setup.sh) in front of a
/// [`PgServer`], on a loopback port, in `pool_mode` `session` or `transaction`; run as the
/// `postgres` user when the tests run as root (it refuses root). Stopped when dropped.
pub struct PgBouncer {
    dir: tempfile::TempDir,
    child: std::process::Child,
    pub port: u16,
}

impl PgBouncer {
    /// Start it, and wait until it accepts connections.
    pub fn start(pg: &PgServer, pool_mode: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("facekey-pgbouncer")
            .tempdir()
            .unwrap();
        let port = free_port();
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n\
                 facekey = host=127.0.0.1 port={pg_port} dbname=facekey user=postgres\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = any\n\
                 pool_mode = {pool_mode}\n\
                 max_client_conn = 200\n\
                 default_pool_size = 40\n\
                 logfile = {log}\n\
                 pidfile = {pid}\n\
                 ignore_startup_parameters = extra_float_digits\n",
                pg_port = pg.port,
                log = dir.path().join("pgbouncer.log").display(),
                pid = dir.path().join("pgbouncer.pid").display(),
            ),
        )
        .unwrap();
        let as_postgres = is_root();
        if as_postgres {
            give_to_postgres(dir.path());
        }
        let exe = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("PgBouncer is not installed: run tests/setup.sh (Debian's pgbouncer)");
        let mut command = if as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", exe]);
            c
        } else {
            Command::new(exe)
        };
        let child = command
            .arg(&ini)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let me = Self { dir, child, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "PgBouncer did not start: {}",
                me.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        me
    }

    /// The database URL through it.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:s3cret-pw@127.0.0.1:{}/facekey",
            self.port
        )
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // PgBouncer itself (under runuser when root: a SIGKILL of runuser would orphan it);
        // runuser then exits with it.
        let stopped = std::fs::read_to_string(self.dir.path().join("pgbouncer.pid"))
            .ok()
            .and_then(|pid| {
                Command::new("kill")
                    .args(["-TERM", pid.trim()])
                    .status()
                    .ok()
            })
            .is_some_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
