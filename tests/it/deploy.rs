//! The deployment files in deploy/, checked without Docker or a cluster: every YAML file
//! parses, the Kubernetes probes, ports and mounts agree with the container config, the
//! configs pass `sluice check` through the real binary with the variables they name, and the
//! Dockerfile, Compose file and systemd unit start a real subcommand on the config path the
//! others mount.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml_ng::Value;

/// Where the image, the Compose file and the pod read the config.
const CONFIG_PATH: &str = "/etc/sluice/routes.toml";
/// Where they keep the SQLite database.
const DATA_DIR: &str = "/var/lib/sluice";

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
    ] {
        assert!(names.contains(expected), "deploy/{expected} is missing");
    }
    for file in &files {
        let docs = parse_yaml(file);
        assert!(!docs.is_empty(), "{} is empty", file.display());
        if file.parent().unwrap().ends_with("kubernetes") {
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
    let ports: BTreeMap<String, u64> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    let resolve = |port: &Value| -> u64 {
        match port {
            Value::String(name) => *ports
                .get(name)
                .unwrap_or_else(|| panic!("no container port named {name}")),
            other => other.as_u64().unwrap(),
        }
    };
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(resolve(&get["port"]), u64::from(port), "{probe} port");
    }

    let service = k8s("Service");
    let service_ports = service["spec"]["ports"].as_sequence().unwrap();
    assert_eq!(service_ports[0]["port"].as_u64(), Some(80));
    assert_eq!(resolve(&service_ports[0]["targetPort"]), u64::from(port));

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
