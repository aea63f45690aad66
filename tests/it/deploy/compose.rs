//! Docker Compose: `docker-compose config` renders both Compose files.

use super::*;

/// A Compose file of deploy/ as `docker-compose config` renders it (merges applied, variables
/// interpolated, `env_file` read into `environment`), in a copy of deploy/ where
/// `sluice.env` is `sluice.env.example`, as deploy/README.md has the user create it.
pub(super) struct Compose {
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
    pub(super) fn service(&self, name: &str) -> &Value {
        let service = &self.doc["services"][name];
        assert!(service.is_mapping(), "no service {name}");
        service
    }

    pub(super) fn services(&self) -> Vec<String> {
        let services = self.doc["services"].as_mapping().unwrap();
        services.keys().filter_map(scalar).collect()
    }

    /// A service's environment as the container gets it.
    pub(super) fn env(&self, name: &str) -> BTreeMap<String, String> {
        let env = self.service(name)["environment"].as_mapping();
        env.into_iter()
            .flatten()
            .map(|(k, v)| (scalar(k).unwrap(), scalar(v).unwrap_or_default()))
            .collect()
    }

    /// What a service mounts at `target` (a host path, or a named volume), and whether it is
    /// read-only.
    pub(super) fn mount(&self, name: &str, target: &str) -> Option<(String, bool)> {
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
    pub(super) fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// The container ports a service publishes, as (host, container).
    pub(super) fn published(&self, name: &str) -> Vec<(u64, u64)> {
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
    pub(super) fn assert_sluice(&self, name: &str, config: &str, port: u16) {
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
pub(super) fn roles(compose: &Compose) -> (String, Vec<String>, String) {
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

pub(super) fn replicated_compose() -> Compose {
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
