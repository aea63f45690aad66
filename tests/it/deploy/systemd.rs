//! systemd (`systemd-analyze`, `systemd --test`) and the Dockerfile (`hadolint`).

use super::*;

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
