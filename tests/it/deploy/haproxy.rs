//! HAProxy: `haproxy -c`, then the real thing in front of a real Sluice.

use super::compose::{replicated_compose, roles};
use super::*;

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
