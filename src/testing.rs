//! Test support shared by the unit tests, the integration tests and the benchmark: a scratch
//! PostgreSQL database per test. Not part of Sluice's interface.
//!
//! # Which server
//!
//! `SLUICE_TEST_POSTGRES_URL`, when set, names a server the tests may create databases on.
//! Otherwise the first test of a process that needs PostgreSQL starts a throwaway server for
//! that process, from the installed server binaries (Debian's
//! `/usr/lib/postgresql/<version>/bin`, else `initdb` and `postgres` on `PATH`): `initdb` into
//! a new directory under the temporary directory, then `postgres` on a free loopback port,
//! TCP only, with a self-signed certificate (made with `openssl`) so that `sslmode=require`
//! works as it does against a managed database. The server is held in a process-wide static
//! and shared by every test of the process. PostgreSQL refuses to run as root, so when the
//! tests run as root (CI does) the server runs as the `postgres` user, in a directory owned
//! by that user. Without the binaries, every test that needs PostgreSQL fails with a message
//! naming the Debian package to install; none is skipped.
//!
//! Each [`ScratchPostgres`] creates a database of its own on the server and drops it when
//! dropped, so tests running side by side never see each other's rows.
//!
//! # Teardown
//!
//! Statics are never dropped, so the process cannot stop its server on the way out. Instead
//! the server runs under a small `sh` supervisor whose standard input is a pipe, and the only
//! writer of that pipe is the test process. When the test process ends, however it ends (all
//! passed, a test failed, a timeout killed it), the kernel closes the pipe. The supervisor
//! then reads end-of-file, stops the server (SIGQUIT: an immediate shutdown, because nothing
//! in it is worth a checkpoint) and removes the directory. The supervisor has a process group
//! of its own, so a signal sent to the test's group (a timeout, Ctrl-C) cannot kill it before
//! it has cleaned up.
//!
//! # Why one server per process
//!
//! nextest runs every test in a process of its own, so every PostgreSQL test starts a server.
//! That costs 0.5 to 1.5 s (mostly `initdb`) per test on a 2-core machine. Measured over
//! the PostgreSQL tests (run with `-E 'test(postgres) | test(/^replicas::/)'`, about a
//! minute, the failover tests dominate), it is within the run-to-run noise against an
//! already-running server. It buys a design with no state outside the process. Two
//! alternatives were considered and rejected:
//!
//! - A nextest setup script (`[scripts.setup]`) that starts one server for the whole run and
//!   exports its URL. It serves only `cargo nextest run`: `cargo test` and `cargo bench` would
//!   still need the code here. nextest has no teardown script either, so stopping the server
//!   would need a watcher of the nextest process anyway.
//! - One server shared by all the processes through a lock file in the target directory. It
//!   needs reference counting across processes that can die at any moment, and a reaper with
//!   a grace period for the gaps between test processes. That is more to get wrong, to save
//!   those few seconds.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The PostgreSQL server the tests use, as a URL whose user may create databases:
/// `SLUICE_TEST_POSTGRES_URL` when set, else this process's own throwaway server, started at
/// the first call. `Err` says why there is none (e.g. PostgreSQL is not installed).
pub async fn postgres_admin_url() -> Result<String, String> {
    if let Ok(url) = std::env::var("SLUICE_TEST_POSTGRES_URL") {
        return Ok(url);
    }
    // Starting the server blocks for about a second: not on the runtime's threads.
    match tokio::task::spawn_blocking(|| own_server().map(|s| s.admin_url.clone())).await {
        Ok(result) => result,
        Err(e) => Err(format!("starting the test PostgreSQL server: {e}")),
    }
}

/// A database of its own for one test, dropped with this value.
#[derive(Debug)]
pub struct ScratchPostgres {
    name: String,
    url: String,
    admin: String,
}

impl ScratchPostgres {
    /// Creates an empty database. Panics with what to do when there is no PostgreSQL.
    pub async fn new() -> Self {
        Self::try_new().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Creates an empty database, or says why it cannot.
    pub async fn try_new() -> Result<Self, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let admin = postgres_admin_url().await?;
        let name = format!(
            "sluice_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let url = database_url(&admin, &name)?;
        let mut conn = PgConnection::connect(&admin)
            .await
            .map_err(|e| format!("the tests cannot connect to PostgreSQL at {admin}: {e}"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("CREATE DATABASE on {admin}: {e}"))?;
        let _ = conn.close().await;
        Ok(Self { name, url, admin })
    }

    /// The database's URL, for `storage.url`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// `admin` with its database replaced by `name` (any `?query` kept).
fn database_url(admin: &str, name: &str) -> Result<String, String> {
    match admin.rfind('/') {
        Some(i) if admin[..i].ends_with(|c: char| c != '/') => {
            let query = admin.find('?').map(|q| &admin[q..]).unwrap_or("");
            Ok(format!("{}/{name}{query}", &admin[..i]))
        }
        _ => Err(format!(
            "SLUICE_TEST_POSTGRES_URL must name a database: {admin}"
        )),
    }
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop may run inside a runtime, which cannot block on itself: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// This process's throwaway PostgreSQL server (see the module docs).
#[derive(Debug)]
struct OwnServer {
    admin_url: String,
    /// Its directory (data directory, log), removed with the server. Read by the test that
    /// checks the removal.
    #[cfg_attr(not(test), allow(dead_code))]
    dir: PathBuf,
    /// The write end of the supervisor's standard input: closed when this process ends,
    /// which tells the supervisor to stop the server and remove its directory.
    _lifeline: ChildStdin,
    /// The supervisor (`SUPERVISOR`), never waited for: it outlives this process.
    _supervisor: Child,
}

/// The supervisor: `sh -c SUPERVISOR sh <postgres binary> <directory> <port>`. It starts the
/// server, waits for end-of-file on its standard input, then stops the server and removes
/// the directory (data directory, certificate, log).
const SUPERVISOR: &str = r#"
"$1" -D "$2/data" -p "$3" -c listen_addresses=127.0.0.1 -c unix_socket_directories= \
  -c ssl=on </dev/null >"$2/log" 2>&1 &
pid=$!
while read -r _; do :; done
kill -QUIT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$2"
"#;

/// Starts this process's server at the first call; later calls get the same server or the
/// same error.
fn own_server() -> Result<&'static OwnServer, String> {
    static SERVER: OnceLock<Result<OwnServer, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            start_server().map_err(|e| {
                format!("the tests could not start a throwaway PostgreSQL server: {e}")
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Finds the binaries, initialises a data directory and starts the server on it. Retries
/// with another port when the free port it picked was taken before the server bound it.
fn start_server() -> Result<OwnServer, String> {
    let bin = bin_dir()?;
    let mut attempt = 0;
    loop {
        let dir = ServerDir::create()?;
        dir.init(&bin)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        match dir.launch(&bin, port) {
            Err(e) if e.contains("Address already in use") && attempt < 3 => attempt += 1,
            result => return result,
        }
    }
}

/// The directory where `initdb` and `postgres` are, or what to install.
fn bin_dir() -> Result<PathBuf, String> {
    find_bin_dir(Path::new("/usr/lib/postgresql"), std::env::var_os("PATH"))
}

/// The newest `<debian>/<major>/bin` (Debian's layout), else the first directory on `path`,
/// that has both `initdb` and `postgres`.
fn find_bin_dir(debian: &Path, path: Option<std::ffi::OsString>) -> Result<PathBuf, String> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir(debian)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| has_both(bin))
        .collect();
    debian.sort();
    let on_path = || std::env::split_paths(&path?).find(|d| has_both(d));
    debian
        .pop()
        .map(|(_, bin)| bin)
        .or_else(on_path)
        .ok_or_else(|| NOT_INSTALLED.to_string())
}

/// What the PostgreSQL tests say when there is no server for them.
const NOT_INSTALLED: &str = "PostgreSQL's server binaries (initdb, postgres) are not \
    installed: install the Debian package `postgresql` (apt-get install postgresql), or set \
    SLUICE_TEST_POSTGRES_URL to a server the tests may create databases on";

/// The server's directory (`data/`, `log`) and the user the server runs as.
struct ServerDir {
    path: PathBuf,
    /// `(uid, gid)` of the `postgres` user when this process is root; `None`: this user.
    user: Option<(u32, u32)>,
    /// Whether the supervisor owns the directory now (and removes it), not this value.
    handed_over: bool,
}

impl ServerDir {
    /// A new directory under the temporary directory, owned by the user the server runs as.
    fn create() -> Result<Self, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "sluice-test-postgres-{}-{nanos}",
            std::process::id()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut dir = Self {
            path,
            user: None,
            handed_over: false,
        };
        // A new directory belongs to this process's effective user: uid 0 is root.
        let uid = dir.path.metadata().map(|m| m.uid());
        if uid.map_err(|e| e.to_string())? == 0 {
            let (uid, gid) = user_ids("postgres").ok_or(
                "the tests run as root, which PostgreSQL refuses to run as, and there is no \
                 `postgres` user to run it as (the Debian package `postgresql` creates it)",
            )?;
            std::os::unix::fs::chown(&dir.path, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.path.display()))?;
            dir.user = Some((uid, gid));
        }
        Ok(dir)
    }

    /// A command that runs as the server's user, in this directory.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.path).env_remove("PGDATA");
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// `initdb` (superuser `postgres`, trusted on loopback) and a self-signed certificate.
    fn init(&self, bin: &Path) -> Result<(), String> {
        let data = self.path.join("data");
        let mut initdb = self.command(bin.join("initdb"));
        initdb.arg("-D").arg(&data);
        initdb.args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"]);
        // Nothing here needs to survive a crash of the machine.
        run(initdb.arg("--no-sync"), "initdb")?;
        let mut openssl = self.command("openssl");
        openssl.args(["req", "-x509", "-nodes", "-newkey", "ec", "-pkeyopt"]);
        openssl.args(["ec_paramgen_curve:prime256v1", "-subj", "/CN=127.0.0.1"]);
        openssl.args(["-days", "3650", "-keyout", "data/server.key"]);
        run(openssl.args(["-out", "data/server.crt"]), "openssl").map_err(|e| {
            format!("{e} (the test server's TLS certificate; Debian package `openssl`)")
        })?;
        // PostgreSQL refuses a private key that others may read.
        let key = data.join("server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", key.display()))
    }

    /// Starts the supervised server on `port` and waits until it accepts connections.
    fn launch(mut self, bin: &Path, port: u16) -> Result<OwnServer, String> {
        let mut supervisor = self
            .command("sh")
            .args(["-c", SUPERVISOR, "sh"])
            .arg(bin.join("postgres"))
            .arg(&self.path)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("sh: {e}"))?;
        self.handed_over = true;
        let lifeline = supervisor.stdin.take().expect("piped stdin");
        if let Err(e) = self.wait_ready(&mut supervisor) {
            // End-of-file: the supervisor stops what started and removes the directory.
            drop(lifeline);
            let _ = supervisor.wait();
            return Err(e);
        }
        Ok(OwnServer {
            admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir: self.path.clone(),
            _lifeline: lifeline,
            _supervisor: supervisor,
        })
    }

    /// Waits for `ready` in `postmaster.pid`; gives the server's log when it fails instead.
    fn wait_ready(&self, supervisor: &mut Child) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pid_file = std::fs::read_to_string(self.path.join("data/postmaster.pid"));
            // Line 8 is the server's status (PostgreSQL 10 and later).
            if pid_file.is_ok_and(|p| p.lines().nth(7).is_some_and(|s| s.trim() == "ready")) {
                return Ok(());
            }
            let log = std::fs::read_to_string(self.path.join("log")).unwrap_or_default();
            let exited = matches!(supervisor.try_wait(), Ok(Some(_)));
            if log.contains("FATAL") || exited || Instant::now() > deadline {
                return Err(format!("postgres did not start:\n{}", log.trim()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServerDir {
    fn drop(&mut self) {
        if !self.handed_over {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs `cmd` to completion; `Err` carries its standard error.
fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!("{what} failed ({}): {}", out.status, stderr.trim()))
}

/// `(uid, gid)` of a local user, from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields[..] {
            [user, _, uid, gid, ..] if user == name => Some((uid.parse().ok()?, gid.parse().ok()?)),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without PostgreSQL's binaries the error says which package to install.
    #[test]
    fn missing_binaries_name_the_package_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let path = Some(empty.path().as_os_str().to_owned());
        let err = find_bin_dir(empty.path(), path).unwrap_err();
        assert!(err.contains("Debian package `postgresql`"), "{err}");
        assert!(err.contains("SLUICE_TEST_POSTGRES_URL"), "{err}");
    }

    /// The newest major version's binaries are picked, and only a directory with both.
    #[test]
    fn the_newest_installed_major_is_used() {
        let root = tempfile::tempdir().unwrap();
        for (major, files) in [
            ("9", &["initdb", "postgres"][..]),
            ("15", &["initdb", "postgres"]),
            ("17", &["initdb"]),
        ] {
            let bin = root.path().join(major).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            for f in files {
                std::fs::write(bin.join(f), "").unwrap();
            }
        }
        assert_eq!(
            find_bin_dir(root.path(), None).unwrap(),
            root.path().join("15/bin")
        );
    }

    /// The server this process starts is stopped, and its directory removed, once the process
    /// has exited: this test runs itself again as a child process that starts a server and
    /// exits, then checks that the server's port and directory are gone.
    #[test]
    fn the_throwaway_server_goes_away_with_its_process() {
        const CHILD: &str = "SLUICE_TESTING_SERVER_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let server = own_server().unwrap();
            println!("url={}\ndir={}", server.admin_url, server.dir.display());
            return;
        }
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "testing::tests::the_throwaway_server_goes_away_with_its_process",
            ])
            .arg("--nocapture")
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let field = |key: &str| {
            let line = stdout.lines().find_map(|l| l.strip_prefix(key));
            line.unwrap_or_else(|| panic!("no {key} in {stdout}"))
                .to_string()
        };
        let (url, dir) = (field("url="), PathBuf::from(field("dir=")));
        let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // Teardown runs after the child has exited: wait for it, within a generous bound.
        let deadline = Instant::now() + Duration::from_secs(30);
        while (dir.exists() || std::net::TcpStream::connect(addr).is_ok())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!dir.exists(), "{} is left behind", dir.display());
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "the server still answers on {addr}"
        );
    }
}
