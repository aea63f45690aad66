//! The deployment files in deploy/, checked without Docker or a cluster: every YAML file
//! parses, the Kubernetes probes, ports and mounts agree with the container config, the
//! configs pass `sluice check` through the real binary with the variables they name, and the
//! Dockerfile, Compose files and systemd unit start a real subcommand on the config path the
//! others mount. The replicated setup (PostgreSQL, several replicas, a load balancer) is
//! checked the same way: every replica reaches the Compose `postgres` service, the load
//! balancer names every replica, and the Kubernetes overlay, rendered by `kubectl kustomize`
//! where kubectl is installed, runs several replicas without a volume.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml_ng::Value;

/// Where the image, the Compose file and the pod read the config.
const CONFIG_PATH: &str = "/etc/sluice/routes.toml";
/// Where they keep the SQLite database.
const DATA_DIR: &str = "/var/lib/sluice";
/// The Kustomize overlay for PostgreSQL, beside the single-replica base `kubernetes/`.
const OVERLAY: &str = "kubernetes-replicated";
/// The database password the tests give Compose (`SLUICE_DB_PASSWORD`).
const DB_PASSWORD: &str = "sluice";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(rel: &str) -> String {
    let path = deploy_dir().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Every document of a YAML file.
fn parse_yaml(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

/// The number of a container port given by number or by the name of one of its ports.
fn container_port(container: &Value, port: &Value) -> u64 {
    match port {
        Value::String(name) => container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port named {name}")),
        other => other.as_u64().unwrap(),
    }
}

/// Readiness on /readyz and liveness on /healthz, both on `port`.
fn assert_probes(container: &Value, port: u16) {
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(
            container_port(container, &get["port"]),
            u64::from(port),
            "{probe} port"
        );
    }
}

/// The one Kubernetes object of this kind under deploy/kubernetes/.
fn k8s(kind: &str) -> Value {
    let mut files = Vec::new();
    yaml_files(&deploy_dir().join("kubernetes"), &mut files);
    let found: Vec<Value> = files
        .iter()
        .flat_map(|f| parse_yaml(f))
        .filter(|doc| doc["kind"].as_str() == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind} in deploy/kubernetes/");
    found.into_iter().next().unwrap()
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
}

/// The port of `server.listen` in a config.
fn listen_port(config_toml: &str) -> u16 {
    let config: toml::Table = config_toml.parse().unwrap();
    let listen = config["server"]["listen"].as_str().unwrap();
    let (host, port) = listen.rsplit_once(':').unwrap();
    assert!(
        host == "0.0.0.0" || host == "[::]",
        "a container must listen on every interface, not `{listen}`"
    );
    port.parse().unwrap()
}

/// Names of `${VAR}` in the config's string values that have no `:-` default.
fn required_vars(config_toml: &str) -> BTreeSet<String> {
    fn walk(value: &toml::Value, out: &mut BTreeSet<String>) {
        match value {
            toml::Value::String(s) => {
                let s = s.replace("$${", "");
                for part in s.split("${").skip(1) {
                    let inner = part.split('}').next().unwrap();
                    if !inner.contains(":-") {
                        out.insert(inner.to_string());
                    }
                }
            }
            toml::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            toml::Value::Table(table) => table.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(&toml::Value::Table(config_toml.parse().unwrap()), &mut out);
    out
}

/// Runs `sluice check` on `config_toml` with only `env` in the environment.
fn check(config_toml: &str, env: &BTreeMap<String, String>) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, config_toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "-c", path.to_str().unwrap()])
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A config passes `check` with the given variables set, and fails when they are not.
fn assert_checks(what: &str, config_toml: &str, env: &BTreeMap<String, String>) {
    let required = required_vars(config_toml);
    assert!(
        required.contains("SENTRY_CLIENT_SECRET"),
        "{what}: the Sentry client secret must come from the environment"
    );
    let missing: Vec<_> = required.iter().filter(|v| !env.contains_key(*v)).collect();
    assert!(
        missing.is_empty(),
        "{what} names {missing:?}, which are not provided"
    );
    let (code, out) = check(config_toml, env);
    assert_eq!(code, 0, "{what}: sluice check failed:\n{out}");
    assert!(out.contains("OK"), "{out}");
    let (code, out) = check(config_toml, &BTreeMap::new());
    assert_eq!(code, 1, "{what} passes check without its variables:\n{out}");
    assert!(out.contains("is not set"), "{out}");
}

/// The container's `-c PATH` argument.
fn config_arg(args: &[String]) -> &str {
    let at = args.iter().position(|a| a == "-c" || a == "--config");
    let at = at.unwrap_or_else(|| panic!("no -c in {args:?}"));
    &args[at + 1]
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("not a list: {value:?}"))
        .iter()
        .map(|v| str_of(v, "list item").to_string())
        .collect()
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let (op, rest) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((op.to_ascii_uppercase(), rest.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

/// The last `op` of the Dockerfile (the runtime stage's), as an exec-form list.
fn dockerfile_exec(op: &str) -> Vec<String> {
    let instructions = dockerfile();
    let (_, rest) = instructions
        .iter()
        .rev()
        .find(|(o, _)| o == op)
        .unwrap_or_else(|| panic!("no {op} in deploy/Dockerfile"));
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("{op} {rest} is not exec form: {e}"))
}

fn env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

#[test]
fn every_yaml_file_under_deploy_parses_and_kustomize_lists_every_manifest() {
    let mut files = Vec::new();
    yaml_files(&deploy_dir(), &mut files);
    let names: BTreeSet<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(deploy_dir())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for expected in [
        "compose.yaml",
        "kubernetes/kustomization.yaml",
        "kubernetes/deployment.yaml",
        "kubernetes/service.yaml",
        "kubernetes/configmap.yaml",
        "kubernetes/secret.yaml",
        "kubernetes/pvc.yaml",
        "kubernetes/pdb.yaml",
        "compose.replicated.yaml",
        "kubernetes-replicated/kustomization.yaml",
    ] {
        assert!(names.contains(expected), "deploy/{expected} is missing");
    }
    for file in &files {
        let docs = parse_yaml(file);
        assert!(!docs.is_empty(), "{} is empty", file.display());
        let dir = file.parent().unwrap();
        if dir.ends_with("kubernetes") || dir.ends_with(OVERLAY) {
            for doc in &docs {
                assert!(
                    doc["apiVersion"].is_string(),
                    "{}: apiVersion",
                    file.display()
                );
                assert!(doc["kind"].is_string(), "{}: kind", file.display());
            }
        }
    }
    let kustomization = k8s("Kustomization");
    let listed: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
    let manifests: BTreeSet<String> = names
        .iter()
        .filter_map(|n| n.strip_prefix("kubernetes/"))
        .filter(|n| *n != "kustomization.yaml")
        .map(str::to_string)
        .collect();
    assert_eq!(listed, manifests, "kustomization.yaml resources");
}

#[test]
fn the_deployment_runs_one_replica_and_probes_the_port_sluice_listens_on() {
    let port = listen_port(&read("routes.container.toml"));
    let deployment = k8s("Deployment");
    let spec = &deployment["spec"];
    assert_eq!(
        spec["replicas"].as_u64(),
        Some(1),
        "SQLite: one replica only"
    );
    assert_eq!(spec["strategy"]["type"].as_str(), Some("Recreate"));

    let containers = spec["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    assert_probes(container, port);

    let service = k8s("Service");
    let service_ports = service["spec"]["ports"].as_sequence().unwrap();
    assert_eq!(service_ports[0]["port"].as_u64(), Some(80));
    assert_eq!(
        container_port(container, &service_ports[0]["targetPort"]),
        u64::from(port)
    );

    // The config comes from the ConfigMap at CONFIG_PATH; the data from the PVC at DATA_DIR.
    let args = strings(&container["args"]);
    assert_eq!(args[0], "serve");
    let volumes = spec["template"]["spec"]["volumes"].as_sequence().unwrap();
    let volume = |name: &str| volumes.iter().find(|v| v["name"].as_str() == Some(name));
    let mut config_mounted = false;
    let mut data_mounted = false;
    for mount in container["volumeMounts"].as_sequence().unwrap() {
        let source = volume(str_of(&mount["name"], "volumeMounts.name")).unwrap();
        let at = Path::new(str_of(&mount["mountPath"], "mountPath"));
        if let Some(name) = source["configMap"]["name"].as_str() {
            let configmap = k8s("ConfigMap");
            assert_eq!(configmap["metadata"]["name"].as_str(), Some(name));
            let key = mount["subPath"].as_str().unwrap_or("routes.toml");
            let file = if mount["subPath"].is_string() {
                at.to_path_buf()
            } else {
                at.join(key)
            };
            assert_eq!(file, Path::new(config_arg(&args)), "config mount");
            assert!(configmap["data"][key].is_string(), "ConfigMap has no {key}");
            config_mounted = true;
        }
        if let Some(claim) = source["persistentVolumeClaim"]["claimName"].as_str() {
            assert_eq!(
                k8s("PersistentVolumeClaim")["metadata"]["name"].as_str(),
                Some(claim)
            );
            assert_eq!(at, Path::new(DATA_DIR));
            data_mounted = true;
        }
    }
    assert!(config_mounted && data_mounted, "config and data volumes");
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
}

#[test]
fn the_configmap_is_the_container_config_and_passes_check_with_the_secret() {
    let configmap = k8s("ConfigMap");
    let routes = str_of(&configmap["data"]["routes.toml"], "ConfigMap routes.toml");
    assert_eq!(
        routes,
        read("routes.container.toml"),
        "deploy/kubernetes/configmap.yaml must carry deploy/routes.container.toml unchanged"
    );
    let secret = k8s("Secret");
    let env: BTreeMap<String, String> = secret["stringData"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (str_of(k, "key").to_string(), str_of(v, "value").to_string()))
        .collect();
    assert_checks("the ConfigMap's routes.toml", routes, &env);

    let deployment = k8s("Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let secret_name = secret["metadata"]["name"].as_str().unwrap();
    let loaded = container["envFrom"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|e| e["secretRef"]["name"].as_str() == Some(secret_name));
    assert!(loaded, "the Deployment must load the Secret with envFrom");
}

#[test]
fn the_container_config_passes_check_with_the_example_env_file() {
    let config = read("routes.container.toml");
    let parsed: toml::Table = config.parse().unwrap();
    let url = parsed["storage"]["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("sqlite://{DATA_DIR}/")),
        "storage.url `{url}` must be a SQLite file on the data volume"
    );
    assert_checks(
        "deploy/routes.container.toml",
        &config,
        &env_file(&read("sluice.env.example")),
    );
}

#[test]
fn the_image_and_compose_serve_the_config_they_mount() {
    let entrypoint = dockerfile_exec("ENTRYPOINT");
    assert_eq!(entrypoint, ["sluice"]);
    let cmd = dockerfile_exec("CMD");
    assert_eq!(config_arg(&cmd), CONFIG_PATH);

    // `serve` is a subcommand the binary has, and it takes -c.
    let help = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([cmd[0].as_str(), "--help"])
        .output()
        .unwrap();
    let help_text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "sluice {} --help failed", cmd[0]);
    assert!(help_text.contains("-c, --config"), "{help_text}");
    assert_eq!(cmd[0], "serve");

    let instructions = dockerfile();
    let port = listen_port(&read("routes.container.toml"));
    let has = |op: &str, pred: &dyn Fn(&str) -> bool| {
        instructions.iter().any(|(o, rest)| o == op && pred(rest))
    };
    assert!(has("EXPOSE", &|r| r == port.to_string()), "EXPOSE {port}");
    assert!(has("HEALTHCHECK", &|r| r
        .contains(&format!("127.0.0.1:{port}/healthz"))));
    assert!(has("RUN", &|r| r
        .contains("cargo build --release --locked --bin sluice")));
    assert!(has("COPY", &|r| r.ends_with(&format!(" {CONFIG_PATH}"))));
    assert!(has("USER", &|r| r.starts_with("10001")));

    let compose = parse_yaml(&deploy_dir().join("compose.yaml")).remove(0);
    let services = compose["services"].as_mapping().unwrap();
    assert_eq!(
        services.len(),
        1,
        "one Sluice container, no database service"
    );
    let sluice = &compose["services"]["sluice"];
    assert_eq!(
        sluice["build"]["dockerfile"].as_str(),
        Some("deploy/Dockerfile")
    );
    if !sluice["command"].is_null() {
        assert_eq!(strings(&sluice["command"]), cmd, "compose command");
    }
    let volumes = strings(&sluice["volumes"]);
    let config_volume = volumes
        .iter()
        .find(|v| v.split(':').nth(1) == Some(CONFIG_PATH))
        .unwrap_or_else(|| panic!("compose mounts nothing at {CONFIG_PATH}: {volumes:?}"));
    assert!(config_volume.ends_with(":ro"), "{config_volume}");
    let source = deploy_dir().join(config_volume.split(':').next().unwrap());
    assert_eq!(
        source.canonicalize().unwrap(),
        deploy_dir()
            .join("routes.container.toml")
            .canonicalize()
            .unwrap(),
        "compose must mount deploy/routes.container.toml"
    );
    let data_volume = volumes
        .iter()
        .find(|v| v.split(':').nth(1) == Some(DATA_DIR))
        .unwrap_or_else(|| panic!("compose mounts no volume at {DATA_DIR}"));
    let named = data_volume.split(':').next().unwrap();
    assert!(
        compose["volumes"].as_mapping().unwrap().contains_key(named),
        "`{named}` is not a named volume"
    );
    let published = strings(&sluice["ports"]);
    assert!(
        published.iter().any(|p| p.ends_with(&format!(":{port}"))),
        "compose publishes no port to {port}: {published:?}"
    );
    let test = strings(&sluice["healthcheck"]["test"]);
    assert!(
        test.iter().any(|t| t.contains(&format!(":{port}/"))),
        "{test:?}"
    );
}

#[test]
fn the_systemd_unit_serves_the_config_it_checks() {
    let unit = read("systemd/sluice.service");
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    let start = value("ExecStart");
    assert_eq!(start.len(), 1, "{start:?}");
    let args: Vec<String> = start[0].split_whitespace().map(str::to_string).collect();
    assert!(
        args[0].starts_with('/') && args[0].ends_with("/sluice"),
        "{args:?}"
    );
    assert_eq!(args[1], "serve");
    let config = config_arg(&args);
    let pre = value("ExecStartPre");
    let checks = pre.iter().any(|p| {
        let a: Vec<String> = p.split_whitespace().map(str::to_string).collect();
        a[0] == args[0] && a[1] == "check" && config_arg(&a) == config
    });
    assert!(checks, "ExecStartPre must `sluice check` {config}: {pre:?}");
    assert_eq!(value("KillSignal"), ["SIGTERM"]);
    assert_eq!(value("Type"), ["simple"]);
    assert_eq!(value("CapabilityBoundingSet"), [""]);
    assert!(value("StateDirectory") == ["sluice"] || !value("ReadWritePaths").is_empty());
}

// ---------------------------------------------------------------------------------------------
// The replicated setup: PostgreSQL, several replicas, a load balancer.
// ---------------------------------------------------------------------------------------------

/// Compose's interpolation of one string: `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
/// `${VAR:?error}`, `${VAR?error}` and `$$`. An unset required variable is an error, as it
/// is for `docker compose`.
fn compose_interpolate(text: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let Some(r) = after.strip_prefix('{') else {
            if after.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                return Err(format!("write ${{VAR}}, not $VAR, in `{text}`"));
            }
            out.push('$');
            rest = after;
            continue;
        };
        let end = r
            .find('}')
            .ok_or_else(|| format!("unclosed ${{ in `{text}`"))?;
        let expr = &r[..end];
        rest = &r[end + 1..];
        let name_len = expr
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(expr.len());
        let (name, op) = expr.split_at(name_len);
        let set = env.get(name).map(String::as_str);
        let non_empty = set.filter(|v| !v.is_empty());
        let value = if op.is_empty() {
            set.unwrap_or_default()
        } else if let Some(default) = op.strip_prefix(":-") {
            non_empty.unwrap_or(default)
        } else if let Some(default) = op.strip_prefix('-') {
            set.unwrap_or(default)
        } else if let Some(error) = op.strip_prefix(":?") {
            non_empty.ok_or_else(|| format!("required variable {name}: {error}"))?
        } else if let Some(error) = op.strip_prefix('?') {
            set.ok_or_else(|| format!("required variable {name}: {error}"))?
        } else {
            return Err(format!("unsupported `${{{expr}}}` in `{text}`"));
        };
        out.push_str(value);
    }
    out.push_str(rest);
    Ok(out)
}

fn interpolate_yaml(value: &mut Value, env: &BTreeMap<String, String>) -> Result<(), String> {
    match value {
        Value::String(s) => *s = compose_interpolate(s, env)?,
        Value::Sequence(items) => {
            for item in items {
                interpolate_yaml(item, env)?;
            }
        }
        Value::Mapping(map) => {
            for (_, v) in map.iter_mut() {
                interpolate_yaml(v, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A Compose file as `docker compose config` would see it: `<<` merges applied and variables
/// interpolated from `env`.
fn compose_file(rel: &str, env: &BTreeMap<String, String>) -> Result<Value, String> {
    let mut doc = parse_yaml(&deploy_dir().join(rel)).remove(0);
    doc.apply_merge().map_err(|e| format!("{rel}: {e}"))?;
    interpolate_yaml(&mut doc, env).map_err(|e| format!("{rel}: {e}"))?;
    Ok(doc)
}

/// What the user puts into deploy/.env for the replicated Compose file.
fn compose_env() -> BTreeMap<String, String> {
    BTreeMap::from([("SLUICE_DB_PASSWORD".to_string(), DB_PASSWORD.to_string())])
}

/// A service's `environment`, in either of Compose's two forms.
fn service_env(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => serde_yaml_ng::to_string(other).unwrap().trim().to_string(),
                };
                (str_of(k, "environment key").to_string(), v)
            })
            .collect(),
        Value::Sequence(_) => strings(&service["environment"])
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `postgres://user:password@host:port/database`, split up.
#[derive(Debug, PartialEq)]
struct PgUrl {
    user: String,
    password: String,
    host: String,
    port: u16,
    database: String,
}

fn pg_url(url: &str) -> PgUrl {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("`{url}` is not a URL"));
    assert!(
        scheme == "postgres" || scheme == "postgresql",
        "`{url}` is not a PostgreSQL URL"
    );
    let (auth, rest) = rest
        .rsplit_once('@')
        .unwrap_or_else(|| panic!("`{url}` has no user"));
    let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
    let (host_port, database) = rest
        .split_once('/')
        .unwrap_or_else(|| panic!("`{url}` names no database"));
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().unwrap()),
        None => (host_port, 5432),
    };
    PgUrl {
        user: user.to_string(),
        password: password.to_string(),
        host: host.to_string(),
        port,
        database: database.split('?').next().unwrap().to_string(),
    }
}

/// The replicated Compose file's services, by role.
struct Replicated {
    compose: Value,
    /// The service running `postgres`.
    postgres: String,
    /// The services running Sluice.
    replicas: Vec<String>,
    /// The load balancer.
    lb: String,
}

fn replicated() -> Replicated {
    let compose = compose_file("compose.replicated.yaml", &compose_env()).unwrap();
    let services = compose["services"].as_mapping().unwrap();
    let mut postgres = Vec::new();
    let mut replicas = Vec::new();
    let mut lb = Vec::new();
    for (name, service) in services {
        let name = str_of(name, "service name").to_string();
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
    Replicated {
        compose,
        postgres: postgres.remove(0),
        replicas,
        lb: lb.remove(0),
    }
}

/// HAProxy's configuration: each section (`frontend sentry`, `backend sluice`, …) with its
/// lines split into words, comments dropped.
fn haproxy_sections(text: &str) -> Vec<(Vec<String>, Vec<Vec<String>>)> {
    const SECTIONS: [&str; 8] = [
        "global",
        "defaults",
        "frontend",
        "backend",
        "listen",
        "resolvers",
        "peers",
        "userlist",
    ];
    let mut out: Vec<(Vec<String>, Vec<Vec<String>>)> = Vec::new();
    for line in text.lines() {
        let words: Vec<String> = line
            .split('#')
            .next()
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        match words.first() {
            None => {}
            Some(first) if SECTIONS.contains(&first.as_str()) => out.push((words, Vec::new())),
            Some(_) => out
                .last_mut()
                .expect("a setting before the first section")
                .1
                .push(words),
        }
    }
    out
}

/// The lines of the one section `kind NAME` (or `kind` alone).
fn haproxy_section<'a>(
    sections: &'a [(Vec<String>, Vec<Vec<String>>)],
    kind: &str,
    name: Option<&str>,
) -> &'a [Vec<String>] {
    let found: Vec<_> = sections
        .iter()
        .filter(|(head, _)| {
            head[0] == kind && (name.is_none() || head.get(1).map(String::as_str) == name)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "haproxy.cfg: expected one `{kind} {name:?}`"
    );
    &found[0].1
}

/// The port part of `host:port`, `:port` or `[::]:port`.
fn port_of(address: &str) -> u16 {
    let (_, port) = address
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("`{address}` has no port"));
    port.parse()
        .unwrap_or_else(|e| panic!("`{address}`: port: {e}"))
}

/// The host path a Compose service mounts at `target`, and whether it is read-only.
fn compose_mount(service: &Value, target: &str) -> Option<(PathBuf, bool)> {
    strings(&service["volumes"]).iter().find_map(|v| {
        let mut parts = v.split(':');
        let source = parts.next()?;
        (parts.next()? == target).then(|| (deploy_dir().join(source), parts.next() == Some("ro")))
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    a.canonicalize().unwrap() == b.canonicalize().unwrap()
}

#[test]
fn the_replicated_compose_runs_postgres_and_several_replicas_that_all_reach_it() {
    let Replicated {
        compose,
        postgres,
        replicas,
        ..
    } = replicated();
    assert!(
        replicas.len() >= 2,
        "several Sluice replicas, not {replicas:?}"
    );
    let port = listen_port(&read("routes.replicated.toml"));

    // PostgreSQL: official image, healthy only when it accepts connections, data on a volume.
    let pg = &compose["services"][postgres.as_str()];
    let image = str_of(&pg["image"], "postgres image");
    assert!(image.starts_with("postgres:16"), "{image}");
    let test = strings(&pg["healthcheck"]["test"]).join(" ");
    assert!(test.contains("pg_isready"), "postgres healthcheck: {test}");
    let pg_env = service_env(pg);
    let data = strings(&pg["volumes"])
        .into_iter()
        .find(|v| v.split(':').nth(1) == Some("/var/lib/postgresql/data"))
        .expect("postgres keeps its data on a volume");
    let named = data.split(':').next().unwrap();
    assert!(
        compose["volumes"].as_mapping().unwrap().contains_key(named),
        "`{named}` is not a named volume"
    );
    // No password is built in: Compose refuses to start without SLUICE_DB_PASSWORD.
    let unset = compose_file("compose.replicated.yaml", &BTreeMap::new());
    assert!(
        unset.is_err_and(|e| e.contains("SLUICE_DB_PASSWORD")),
        "compose.replicated.yaml must require SLUICE_DB_PASSWORD, not default it"
    );

    let cmd = dockerfile_exec("CMD");
    for name in &replicas {
        let replica = &compose["services"][name.as_str()];
        assert_eq!(replica["image"].as_str(), Some("sluice:local"), "{name}");
        if !replica["command"].is_null() {
            assert_eq!(strings(&replica["command"]), cmd, "{name}: command");
        }
        // The database is the `postgres` service, with the user, password and database the
        // postgres image creates.
        let env = service_env(replica);
        let url = env
            .get("SLUICE_DATABASE_URL")
            .unwrap_or_else(|| panic!("{name} has no SLUICE_DATABASE_URL"));
        let url = pg_url(url);
        assert_eq!(url.host, postgres, "{name}: database host");
        assert_eq!(url.port, 5432, "{name}: database port");
        assert_eq!(Some(&url.user), pg_env.get("POSTGRES_USER"), "{name}: user");
        assert_eq!(
            Some(&url.password),
            pg_env.get("POSTGRES_PASSWORD"),
            "{name}: password"
        );
        assert_eq!(url.password, DB_PASSWORD);
        assert_eq!(Some(&url.database), pg_env.get("POSTGRES_DB"), "{name}: db");
        assert_eq!(
            replica["depends_on"][postgres.as_str()]["condition"].as_str(),
            Some("service_healthy"),
            "{name} must wait for a healthy postgres"
        );
        // The replicated config, read-only; no SQLite volume; only the load balancer is
        // published.
        let (source, read_only) = compose_mount(replica, CONFIG_PATH)
            .unwrap_or_else(|| panic!("{name} mounts nothing at {CONFIG_PATH}"));
        assert!(read_only, "{name}: the config must be mounted read-only");
        assert!(
            same_file(&source, &deploy_dir().join("routes.replicated.toml")),
            "{name} must mount deploy/routes.replicated.toml"
        );
        assert!(
            compose_mount(replica, DATA_DIR).is_none(),
            "{name}: no data volume, the state is in PostgreSQL"
        );
        assert!(
            replica["ports"].is_null(),
            "{name} publishes a port; only the load balancer should"
        );
        let test = strings(&replica["healthcheck"]["test"]).join(" ");
        assert!(
            test.contains(&format!(":{port}/readyz")),
            "{name} healthcheck: {test}"
        );
        let env_files = strings(&replica["env_file"]);
        for file in &env_files {
            assert!(
                deploy_dir().join(format!("{file}.example")).is_file(),
                "{name}: env_file {file} has no {file}.example"
            );
        }
    }
}

#[test]
fn the_load_balancer_listens_on_the_published_port_and_spreads_over_every_replica() {
    let Replicated {
        compose,
        replicas,
        lb,
        ..
    } = replicated();
    let config = read("routes.replicated.toml");
    let port = listen_port(&config);
    let lb_service = &compose["services"][lb.as_str()];

    let published = strings(&lb_service["ports"]);
    assert_eq!(published.len(), 1, "one published port: {published:?}");
    let (host, container) = published[0].rsplit_once(':').unwrap();
    assert_eq!(host, "8080", "the default host port");
    let container: u16 = container.parse().unwrap();

    let (cfg_path, read_only) = compose_mount(lb_service, "/usr/local/etc/haproxy/haproxy.cfg")
        .expect("the load balancer mounts haproxy.cfg where the official image reads it");
    assert!(read_only);
    let sections = haproxy_sections(&std::fs::read_to_string(&cfg_path).unwrap());

    // The frontend listens on the published container port and forwards Sluice's paths.
    let frontend = haproxy_section(&sections, "frontend", None);
    let binds: Vec<u16> = frontend
        .iter()
        .filter(|l| l[0] == "bind")
        .map(|l| port_of(&l[1]))
        .collect();
    assert_eq!(binds, [container], "frontend bind vs published port");
    let acl_words: Vec<&str> = frontend
        .iter()
        .filter(|l| l[0] == "acl")
        .flat_map(|l| l.iter().map(String::as_str))
        .collect();
    if frontend
        .iter()
        .any(|l| l[0] == "http-request" && l[1] == "deny")
    {
        for path in ["/sentry/", "/healthz", "/readyz"] {
            assert!(
                acl_words.contains(&path),
                "haproxy.cfg denies requests but lets no `{path}` through"
            );
        }
    }
    // A body limit at the proxy, if any, is Sluice's own (`server.max_body_bytes`).
    let max_body = config.parse::<toml::Table>().unwrap()["server"]["max_body_bytes"]
        .as_integer()
        .unwrap();
    for line in frontend
        .iter()
        .filter(|l| l.join(" ").contains("content-length"))
    {
        let at = line.iter().position(|w| w == "gt").unwrap();
        let limit: i64 = line[at + 1].parse().unwrap();
        assert_eq!(limit, max_body, "413 limit vs server.max_body_bytes");
    }

    // The backend: round-robin over every replica on Sluice's port, checked on /readyz.
    let backend_name = frontend
        .iter()
        .find(|l| l[0] == "default_backend")
        .map(|l| l[1].as_str())
        .expect("default_backend");
    let backend = haproxy_section(&sections, "backend", Some(backend_name));
    let setting = |key: &str| -> Vec<String> {
        backend
            .iter()
            .find(|l| l[0] == key)
            .unwrap_or_else(|| panic!("backend has no `{key}`"))[1..]
            .to_vec()
    };
    assert_eq!(setting("balance"), ["roundrobin"]);
    for sticky in ["cookie", "stick", "stick-table", "hash-type"] {
        assert!(
            !backend.iter().any(|l| l[0] == sticky),
            "no sticky sessions: any replica takes any webhook"
        );
    }
    let servers: Vec<&Vec<String>> = backend.iter().filter(|l| l[0] == "server").collect();
    let mut hosts = BTreeSet::new();
    for server in &servers {
        let (host, server_port) = server[2].rsplit_once(':').unwrap();
        assert_eq!(server_port.parse::<u16>().unwrap(), port, "{server:?}");
        hosts.insert(host.to_string());
    }
    let replica_names: BTreeSet<String> = replicas.iter().cloned().collect();
    assert_eq!(
        hosts, replica_names,
        "haproxy.cfg servers vs Compose replicas"
    );

    let text = backend.iter().map(|l| l.join(" ")).collect::<Vec<_>>();
    assert!(
        text.iter().any(|l| l.starts_with("option httpchk")),
        "active health checks"
    );
    assert!(
        text.iter().any(|l| l.contains("/readyz")
            && (l.starts_with("http-check") || l.starts_with("option httpchk"))),
        "health checks on /readyz: {text:?}"
    );
    let defaults = backend
        .iter()
        .filter(|l| l[0] == "default-server")
        .flatten()
        .collect::<Vec<_>>();
    for server in &servers {
        assert!(
            server
                .iter()
                .chain(defaults.iter().copied())
                .any(|w| w == "check"),
            "{server:?} is not health-checked"
        );
    }
    // A replica that dies mid-request: the request is tried on another one.
    assert!(setting("retry-on").contains(&"conn-failure".to_string()));
    assert!(
        text.iter().any(|l| l.starts_with("option redispatch")),
        "retries go to another replica"
    );
}

#[test]
fn the_replicated_config_is_the_container_config_on_postgres_and_passes_check() {
    let replicated_toml = read("routes.replicated.toml");
    let mut table: toml::Table = replicated_toml.parse().unwrap();
    assert_eq!(
        table["storage"]["url"].as_str(),
        Some("${SLUICE_DATABASE_URL}"),
        "the replicas take the database URL from the environment"
    );
    // Apart from storage.url, the same channels, routes and limits as the single container.
    let mut container: toml::Table = read("routes.container.toml").parse().unwrap();
    for t in [&mut table, &mut container] {
        t["storage"].as_table_mut().unwrap().remove("url");
    }
    assert_eq!(
        table, container,
        "deploy/routes.replicated.toml and deploy/routes.container.toml differ beyond storage.url"
    );

    // With the variables Compose gives a replica.
    let Replicated {
        compose, replicas, ..
    } = replicated();
    let replica = &compose["services"][replicas[0].as_str()];
    let mut env = env_file(&read("sluice.env.example"));
    env.extend(service_env(replica));
    assert_eq!(
        env.get("SLUICE_DATABASE_URL").map(String::as_str),
        Some(format!("postgres://sluice:{DB_PASSWORD}@postgres:5432/sluice").as_str())
    );
    assert_checks("deploy/routes.replicated.toml", &replicated_toml, &env);
}

/// Runs `kubectl kustomize` on a directory under deploy/; None without kubectl.
fn kustomize(rel: &str) -> Option<Vec<Value>> {
    let out = match Command::new("kubectl")
        .args(["kustomize", deploy_dir().join(rel).to_str().unwrap()])
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("kubectl: {e}"),
    };
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/{rel} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        serde_yaml_ng::Deserializer::from_str(&text)
            .map(|doc| Value::deserialize(doc).unwrap())
            .collect(),
    )
}

fn one_of<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_mapping()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn the_kubernetes_overlay_lists_its_files_and_patches_the_base_for_postgres() {
    let dir = deploy_dir().join(OVERLAY);
    let kustomization = parse_yaml(&dir.join("kustomization.yaml")).remove(0);
    assert_eq!(kustomization["kind"].as_str(), Some("Kustomization"));

    // Every entry names something that exists, the base is among them, and every file of the
    // overlay is used.
    let resources = strings(&kustomization["resources"]);
    let patches: Vec<String> = kustomization["patches"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| str_of(&p["path"], "patches[].path").to_string())
        .collect();
    let mut used = BTreeSet::new();
    for entry in resources.iter().chain(&patches) {
        let path = dir.join(entry);
        if path.is_dir() {
            assert!(
                path.join("kustomization.yaml").is_file(),
                "{OVERLAY}/kustomization.yaml: {entry} is a directory without kustomization.yaml"
            );
        } else {
            assert!(
                path.is_file(),
                "{OVERLAY}/kustomization.yaml lists {entry}, which does not exist"
            );
            used.insert(entry.clone());
        }
    }
    assert!(
        resources
            .iter()
            .any(|r| same_file(&dir.join(r), &deploy_dir().join("kubernetes"))),
        "the overlay must build on deploy/kubernetes: {resources:?}"
    );
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if name != "kustomization.yaml" {
            assert!(
                used.contains(&name),
                "{OVERLAY}/{name} is not in kustomization.yaml"
            );
        }
    }

    // The overlay's ConfigMap carries deploy/routes.replicated.toml unchanged.
    let configmap = parse_yaml(&dir.join("configmap.yaml")).remove(0);
    assert_eq!(
        configmap["metadata"]["name"],
        k8s("ConfigMap")["metadata"]["name"],
        "the overlay's ConfigMap must replace the base's"
    );
    assert_eq!(
        str_of(&configmap["data"]["routes.toml"], "routes.toml"),
        read("routes.replicated.toml"),
        "{OVERLAY}/configmap.yaml must carry deploy/routes.replicated.toml unchanged"
    );

    // The rendered overlay, as `kubectl apply -k` would send it.
    let Some(docs) = kustomize(OVERLAY) else {
        eprintln!("kubectl not found: the rendered overlay is not checked");
        return;
    };
    let port = listen_port(&read("routes.replicated.toml"));
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"].as_str() == Some("PersistentVolumeClaim")),
        "no PersistentVolumeClaim: the state is in PostgreSQL"
    );
    let deployment = one_of(&docs, "Deployment");
    let spec = &deployment["spec"];
    let replicas = spec["replicas"].as_u64().unwrap();
    assert!(replicas >= 2, "replicas: {replicas}");
    assert_eq!(spec["strategy"]["type"].as_str(), Some("RollingUpdate"));
    let rolling = &spec["strategy"]["rollingUpdate"];
    assert_eq!(
        rolling["maxUnavailable"].as_u64(),
        Some(0),
        "maxUnavailable"
    );
    assert_eq!(rolling["maxSurge"].as_u64(), Some(1), "maxSurge");

    let pod = &spec["template"]["spec"];
    let volumes = pod["volumes"].as_sequence().unwrap();
    assert!(
        volumes.iter().all(|v| v["persistentVolumeClaim"].is_null()),
        "no PVC volume: {volumes:?}"
    );
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let mut config_mounted = false;
    for mount in container["volumeMounts"].as_sequence().unwrap() {
        let name = str_of(&mount["name"], "volumeMounts.name");
        let volume = volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("volumeMount {name} has no volume"));
        assert_ne!(mount["mountPath"].as_str(), Some(DATA_DIR), "data mount");
        if volume["configMap"]["name"].as_str() == configmap["metadata"]["name"].as_str() {
            let at = Path::new(str_of(&mount["mountPath"], "mountPath"));
            assert_eq!(
                at.join("routes.toml"),
                Path::new(config_arg(&strings(&container["args"])))
            );
            config_mounted = true;
        }
    }
    assert!(config_mounted, "the ConfigMap is mounted at {CONFIG_PATH}");
    let rendered_config = one_of(&docs, "ConfigMap");
    assert_eq!(
        rendered_config["data"]["routes.toml"].as_str(),
        Some(read("routes.replicated.toml").as_str())
    );

    // Probes: ready on /readyz (leader and followers alike), alive on /healthz, on the port
    // Sluice listens on.
    assert_probes(container, port);

    // SLUICE_DATABASE_URL from a Secret the overlay renders; with it and the base Secret, the
    // config passes `sluice check`.
    let from = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some("SLUICE_DATABASE_URL"))
        .expect("the container has SLUICE_DATABASE_URL")["valueFrom"]["secretKeyRef"]
        .clone();
    let secret_of = |name: &str| -> BTreeMap<String, String> {
        let secret = docs
            .iter()
            .find(|d| {
                d["kind"].as_str() == Some("Secret") && d["metadata"]["name"].as_str() == Some(name)
            })
            .unwrap_or_else(|| panic!("no Secret {name} in the overlay"));
        secret["stringData"]
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| (str_of(k, "key").to_string(), str_of(v, "value").to_string()))
            .collect()
    };
    let db_secret = secret_of(str_of(&from["name"], "secretKeyRef.name"));
    let url = db_secret
        .get(str_of(&from["key"], "secretKeyRef.key"))
        .expect("the Secret has the key the Deployment reads");
    pg_url(url);
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_sequence().unwrap() {
        env.extend(secret_of(str_of(
            &source["secretRef"]["name"],
            "secretRef.name",
        )));
    }
    env.insert("SLUICE_DATABASE_URL".to_string(), url.clone());
    assert_checks(
        "the overlay's routes.toml",
        str_of(&rendered_config["data"]["routes.toml"], "routes.toml"),
        &env,
    );

    // The Service and the PodDisruptionBudget select these pods; one may be down at a time.
    let pod_labels = &spec["template"]["metadata"]["labels"];
    let service = one_of(&docs, "Service");
    assert!(labels_match(&service["spec"]["selector"], pod_labels));
    let pdb = one_of(&docs, "PodDisruptionBudget");
    assert!(labels_match(
        &pdb["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1));

    // The base, rendered, still runs one replica on its volume.
    let base = kustomize("kubernetes").unwrap();
    assert_eq!(
        one_of(&base, "Deployment")["spec"]["replicas"].as_u64(),
        Some(1)
    );
    one_of(&base, "PersistentVolumeClaim");
}
