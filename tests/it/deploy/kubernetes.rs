//! Kubernetes, as `kubectl kustomize` renders it and `kubernetes-validate --strict` checks it.

use super::*;

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
