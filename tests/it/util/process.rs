//! Child processes on a free loopback port, killed when dropped: the real `sluice` binary (the
//! tests' [`Process::start`]), or any program the benchmark compares it with
//! ([`Process::spawn`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::{SECRET, Scratch, eventually, post_signed, real_pause};

/// The `sluice` binary Cargo built along with this test or benchmark.
pub fn sluice_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
}

/// A loopback port that is free right now (the process given it binds it a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `bin serve -c DIR/routes.toml`, with `config_text` written there once its
/// `listen = "127.0.0.1:0"` names a free port instead; returns the command and the address the
/// process will listen on.
pub fn sluice_command(bin: &Path, config_text: &str, dir: &Path) -> (Command, SocketAddr) {
    const ANY_PORT: &str = "listen = \"127.0.0.1:0\"";
    assert!(
        config_text.contains(ANY_PORT),
        "the config must say {ANY_PORT}"
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let path = dir.join("routes.toml");
    let text = config_text.replace(ANY_PORT, &format!("listen = \"{addr}\""));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut command = Command::new(bin);
    command.args(["serve", "-c"]).arg(&path);
    (command, addr)
}

/// A child process listening on a loopback address; killed (SIGKILL) when dropped.
pub struct Process {
    child: Child,
    /// What errors call it (`sluice`, `ceiling`, …).
    name: String,
    /// The file its stdout and stderr go to, if any: errors quote its last lines.
    log: Option<PathBuf>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Process {
    /// Starts the real `sluice serve -c config` listening on a free loopback port (see
    /// [`sluice_command`]; routes.toml goes in `scratch`), logging warnings and errors to the
    /// test's stderr, and waits until `/readyz` answers 200.
    pub async fn start(config_text: &str, scratch: &Scratch) -> Self {
        Self::start_with(config_text, scratch, |_| {}).await
    }

    /// [`start`](Self::start), with the command changed by `customize` first (limits, a
    /// signal disposition; not where its output goes).
    pub async fn start_with(
        config_text: &str,
        scratch: &Scratch,
        customize: impl FnOnce(&mut Command),
    ) -> Self {
        let (mut command, addr) = sluice_command(&sluice_bin(), config_text, scratch.dir.path());
        command.env("SLUICE_LOG", "warn");
        customize(&mut command);
        let mut process =
            Self::spawn("sluice", command, addr, None).unwrap_or_else(|e| panic!("{e}"));
        process
            .wait_ready("/readyz", Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        process
    }

    /// Starts `command`, a program that will listen on `addr`, with no stdin; its stdout and
    /// stderr go to the file `log` (created), or else nowhere and to this process's stderr.
    /// Does not wait for it: see [`wait_ready`](Self::wait_ready). `name` is what errors call
    /// it.
    pub fn spawn(
        name: &str,
        mut command: Command,
        addr: SocketAddr,
        log: Option<&Path>,
    ) -> Result<Self, String> {
        let (stdout, stderr) = match log {
            Some(log) => {
                let out =
                    std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
                let err = out.try_clone().map_err(|e| e.to_string())?;
                (Stdio::from(out), Stdio::from(err))
            }
            None => (Stdio::null(), Stdio::inherit()),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
        Ok(Self {
            child,
            name: name.to_string(),
            log: log.map(Path::to_path_buf),
            addr,
        })
    }

    /// Waits until `GET path` answers 2xx, looking every 20 ms; an error once the process has
    /// exited or `timeout` of real time has passed (whatever Tokio's clock does).
    pub async fn wait_ready(&mut self, path: &str, timeout: Duration) -> Result<(), String> {
        sluice::slack::transport::install_crypto_provider();
        let client = reqwest::Client::new();
        let url = self.url(path);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            self.check_running()?;
            let answer = client.get(&url).send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "{} not ready at {url} within {timeout:?}{}",
                    self.name,
                    self.log_tail()
                ));
            }
            real_pause(Duration::from_millis(20)).await;
        }
    }

    /// An error saying how the process ended (and the end of its log), once it has.
    pub fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}){}",
                self.name,
                self.log_tail()
            )),
            _ => Ok(()),
        }
    }

    /// `: ` and the last 5 lines of the log, joined by ` | `; empty without a log.
    fn log_tail(&self) -> String {
        let Some(log) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(": {}", lines[lines.len().saturating_sub(5)..].join(" | "))
    }

    /// Sends `signal` (`HUP`, `TERM`, …) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (up to `timeout`) for the process to exit; returns its exit code.
    pub async fn wait_exit(mut self, timeout: Duration) -> Option<i32> {
        eventually(timeout, "sluice exits", || {
            std::future::ready(self.child.try_wait().unwrap().map(|s| s.code()))
        })
        .await
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What `/readyz` says this replica is (`leader` or `follower`); `None` when it does not
    /// answer 200.
    pub async fn role(&self) -> Option<String> {
        let reply = reqwest::get(self.url("/readyz")).await.ok()?;
        if reply.status() != StatusCode::OK {
            return None;
        }
        let body: Value = reply.json().await.ok()?;
        body["role"].as_str().map(str::to_string)
    }

    /// The process id (for `/proc/<pid>/status`, prlimit, …).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// POSTs a delivery signed with [`SECRET`].
    pub async fn deliver(&self, resource: &str, body: &[u8]) -> (StatusCode, Value) {
        post_signed(&self.url("/sentry/webhook"), resource, body, SECRET).await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
