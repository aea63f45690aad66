//! CPU caps for the benchmark's child processes: each capped process gets a cgroup of its own
//! whose CPU bandwidth is limited to a fraction of one core (cgroup v2 `cpu.max`, or cgroup v1
//! `cpu.cfs_quota_us` / `cpu.cfs_period_us`, whichever hierarchy has the `cpu` controller).
//! Creating cgroups needs root; where they cannot be used, [`CpuCaps::detect`] says why.
//! Included by `benches/ingest.rs` with `#[path]`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The CFS period every group gets, in microseconds (the kernel's default).
const PERIOD_US: u64 = 100_000;

/// The smallest quota the kernel accepts, in microseconds.
const MIN_QUOTA_US: u64 = 1_000;

/// Prefix of the groups this benchmark creates, under the hierarchy's root.
const PREFIX: &str = "sluice-bench-";

/// Which cgroup interface holds the `cpu` controller.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Version {
    V1,
    V2,
}

/// Where capped groups are made, and how big their cap is.
pub struct CpuCaps {
    version: Version,
    /// The root of the hierarchy with the `cpu` controller (e.g. `/sys/fs/cgroup/cpu`).
    root: PathBuf,
    /// The cap, in cores.
    cores: f64,
    quota_us: u64,
}

impl CpuCaps {
    /// Finds a cgroup hierarchy with the `cpu` controller that this process may create groups
    /// in, for caps of `cores` (a fraction of a core, or more) each; or why there is none.
    pub fn detect(cores: f64) -> Result<Self, String> {
        if !(cores.is_finite() && cores > 0.0) {
            return Err(format!(
                "the cap must be a number of cores > 0, not {cores}"
            ));
        }
        let quota_us = ((cores * PERIOD_US as f64).round() as u64).max(MIN_QUOTA_US);
        let euid = effective_uid()?;
        if euid != 0 {
            return Err(format!(
                "creating cgroups needs root (this benchmark runs as uid {euid})"
            ));
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts")
            .map_err(|e| format!("/proc/self/mounts: {e}"))?;
        let (version, root) = find_cpu_hierarchy(&mounts).ok_or_else(|| {
            "no cgroup hierarchy has the cpu controller (neither a cgroup v2 mount with `cpu` \
             in cgroup.controllers nor a cgroup v1 mount with the `cpu` option)"
                .to_string()
        })?;
        if version == Version::V2 {
            enable_cpu_controller(&root)?;
        }
        remove_stale_groups(&root);
        Ok(Self {
            version,
            root,
            cores,
            quota_us,
        })
    }

    /// The cap, in cores.
    pub fn cores(&self) -> f64 {
        self.cores
    }

    /// What the cap is, in the kernel's words: `cgroup v1, cpu.cfs_quota_us 25000 /
    /// cpu.cfs_period_us 100000`.
    pub fn describe(&self) -> String {
        match self.version {
            Version::V1 => format!(
                "cgroup v1, cpu.cfs_quota_us {} / cpu.cfs_period_us {PERIOD_US}",
                self.quota_us
            ),
            Version::V2 => format!("cgroup v2, cpu.max \"{} {PERIOD_US}\"", self.quota_us),
        }
    }

    /// A new, empty group with the cap, removed when dropped:
    /// `<root>/sluice-bench-<pid>-<n>`.
    pub fn group(&self) -> Result<CpuGroup, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let dir = self.root.join(&name);
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        // From here on, the guard removes the directory whatever fails.
        let group = CpuGroup {
            dir,
            name: format!("/{name}"),
            version: self.version,
        };
        match self.version {
            Version::V1 => {
                write(&group.dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                write(
                    &group.dir.join("cpu.cfs_quota_us"),
                    &self.quota_us.to_string(),
                )?;
            }
            Version::V2 => write(
                &group.dir.join("cpu.max"),
                &format!("{} {PERIOD_US}", self.quota_us),
            )?,
        }
        Ok(group)
    }
}

/// One capped cgroup; `rmdir`ed when dropped (drop the processes in it first).
pub struct CpuGroup {
    dir: PathBuf,
    /// Its path as `/proc/<pid>/cgroup` shows it: `/sluice-bench-<pid>-<n>`.
    name: String,
    version: Version,
}

/// Throttling counters of a group's `cpu.stat` (the same in v1 and v2 but for the unit of the
/// throttled time).
#[derive(Clone, Copy, Debug, Default)]
pub struct Throttling {
    /// CFS periods in which the group had runnable tasks.
    pub periods: u64,
    /// Of those, the periods in which it used up its quota and was throttled.
    pub throttled: u64,
    /// Time its tasks were held back, in all.
    pub throttled_for: Duration,
}

impl Throttling {
    /// The counters from `before` to `self`.
    pub fn since(self, before: Throttling) -> Throttling {
        Throttling {
            periods: self.periods.saturating_sub(before.periods),
            throttled: self.throttled.saturating_sub(before.throttled),
            throttled_for: self.throttled_for.saturating_sub(before.throttled_for),
        }
    }
}

impl CpuGroup {
    /// Moves process `pid` (all its threads; threads it starts later stay in the group) into
    /// the group, and checks in `/proc/<pid>/cgroup` that it is there.
    pub fn add(&self, pid: u32) -> Result<(), String> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())?;
        let file = format!("/proc/{pid}/cgroup");
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
        let inside = text.lines().any(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
            let controllers = controllers.unwrap_or("");
            let ours = match self.version {
                Version::V1 => controllers.split(',').any(|c| c == "cpu"),
                Version::V2 => controllers.is_empty(),
            };
            // Without a cgroup namespace, the path may start with the container's own group.
            ours && path.is_some_and(|p| p.ends_with(self.name.as_str()))
        });
        if inside {
            Ok(())
        } else {
            Err(format!(
                "process {pid} is not in {} after writing its pid to cgroup.procs: {file} says {}",
                self.dir.display(),
                text.trim().replace('\n', " | ")
            ))
        }
    }

    /// The group's throttling counters now, from its `cpu.stat`.
    pub fn throttling(&self) -> Result<Throttling, String> {
        let file = self.dir.join("cpu.stat");
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| format!("{}: no {name}", file.display()))
        };
        let throttled_for = match self.version {
            Version::V1 => Duration::from_nanos(field("throttled_time")?),
            Version::V2 => Duration::from_micros(field("throttled_usec")?),
        };
        Ok(Throttling {
            periods: field("nr_periods")?,
            throttled: field("nr_throttled")?,
            throttled_for,
        })
    }
}

impl Drop for CpuGroup {
    /// Removes the group. Its processes should be gone; for up to 2 s it waits for them to be
    /// reaped, then moves what is left to the root group and tries once more.
    fn drop(&mut self) {
        let start = Instant::now();
        while std::fs::remove_dir(&self.dir).is_err() {
            if start.elapsed() > Duration::from_secs(2) {
                evacuate(&self.dir);
                if let Err(e) = std::fs::remove_dir(&self.dir) {
                    eprintln!("bench: cannot remove cgroup {}: {e}", self.dir.display());
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `text` written to the cgroup file `path`, or what the kernel said.
fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {text:?} to {}: {e}", path.display()))
}

/// This process's effective user id, from `/proc/self/status`.
fn effective_uid() -> Result<u32, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| "/proc/self/status has no effective Uid".to_string())
}

/// The hierarchy that has the `cpu` controller, from the lines of `/proc/self/mounts`: a
/// cgroup2 mount whose `cgroup.controllers` lists `cpu`, else a cgroup (v1) mount with the
/// `cpu` option.
fn find_cpu_hierarchy(mounts: &str) -> Option<(Version, PathBuf)> {
    let entries: Vec<(&str, &str, &str)> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4).then(|| (f[1], f[2], f[3]))
        })
        .collect();
    let v2 = entries.iter().find(|(dir, fstype, _)| {
        *fstype == "cgroup2"
            && std::fs::read_to_string(Path::new(dir).join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
    });
    if let Some((dir, _, _)) = v2 {
        return Some((Version::V2, PathBuf::from(dir)));
    }
    entries
        .iter()
        .find(|(_, fstype, options)| *fstype == "cgroup" && options.split(',').any(|o| o == "cpu"))
        .map(|(dir, _, _)| (Version::V1, PathBuf::from(dir)))
}

/// cgroup v2: makes the `cpu` controller available to the root's children.
fn enable_cpu_controller(root: &Path) -> Result<(), String> {
    let control = root.join("cgroup.subtree_control");
    let enabled =
        std::fs::read_to_string(&control).map_err(|e| format!("{}: {e}", control.display()))?;
    if enabled.split_whitespace().any(|c| c == "cpu") {
        return Ok(());
    }
    write(&control, "+cpu")
}

/// Removes the empty groups earlier runs of this benchmark left behind (a run killed before
/// its guards ran), those whose creator is no longer running.
fn remove_stale_groups(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(creator) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(creator).exists() {
            // Fails, harmlessly, when processes are still in it.
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Moves every process left in the group at `dir` to the root of its hierarchy.
fn evacuate(dir: &Path) {
    let (Some(root), Ok(pids)) = (
        dir.parent(),
        std::fs::read_to_string(dir.join("cgroup.procs")),
    ) else {
        return;
    };
    for pid in pids.split_whitespace() {
        let _ = std::fs::write(root.join("cgroup.procs"), pid);
    }
}

/// A snapshot of CPU time, in clock ticks: the machine's (all CPUs, `/proc/stat`), some
/// processes' (`/proc/<pid>/stat`, all their threads) and optionally a process tree's (a
/// server and its children, such as PostgreSQL's postmaster and backends), to say who used the
/// cores between two snapshots.
pub struct CpuTimes {
    /// Every tick of every CPU, busy or idle.
    total: u64,
    /// Idle and I/O-wait ticks.
    idle: u64,
    /// User + system ticks of each process, in the order asked.
    procs: Vec<u64>,
    /// The tree's ticks: see [`tree_ticks`].
    tree: Option<u64>,
}

/// The cores used between two [`CpuTimes`] snapshots.
pub struct CoresUsed {
    /// The machine, all processes.
    pub machine: f64,
    /// Each process, in the order asked.
    pub procs: Vec<f64>,
    /// The process tree, when asked.
    pub tree: Option<f64>,
}

impl CpuTimes {
    /// The times now, of the machine, of `pids`, and of the tree rooted at `tree`.
    pub fn now(pids: &[u32], tree: Option<u32>) -> Result<Self, String> {
        let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .ok_or("/proc/stat has no cpu line")?
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if ticks.len() < 8 {
            return Err("/proc/stat: short cpu line".into());
        }
        // user nice system idle iowait irq softirq steal (guest time is within user / nice).
        let total = ticks[..8].iter().sum();
        let idle = ticks[3] + ticks[4];
        let procs = pids
            .iter()
            .map(|&pid| Ok(process_stat(pid)?.ticks))
            .collect::<Result<_, String>>()?;
        let tree = tree.map(tree_ticks).transpose()?;
        Ok(Self {
            total,
            idle,
            procs,
            tree,
        })
    }

    /// What each used from `before` to `self`, in cores (`cores`: the machine's CPUs).
    pub fn since(&self, before: &CpuTimes, cores: usize) -> CoresUsed {
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        let share = |now: u64, then: u64| now.saturating_sub(then) as f64 / total * cores as f64;
        let idle = self.idle.saturating_sub(before.idle);
        CoresUsed {
            machine: share(self.total.saturating_sub(idle), before.total),
            procs: self
                .procs
                .iter()
                .zip(&before.procs)
                .map(|(now, then)| share(*now, *then))
                .collect(),
            tree: self
                .tree
                .zip(before.tree)
                .map(|(now, then)| share(now, then)),
        }
    }
}

/// What `/proc/<pid>/stat` says of a process's CPU time.
struct ProcStat {
    /// Its parent's pid.
    ppid: u32,
    /// Its own user + system ticks (fields 14 and 15).
    ticks: u64,
    /// The user + system ticks of its children that exited and were waited for (16 and 17).
    children_ticks: u64,
}

fn process_stat(pid: u32) -> Result<ProcStat, String> {
    let file = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
    // The command name, in parentheses, may hold spaces: count fields after its end (the
    // state, field 3, is the first).
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("{file}: no field {n}"))
    };
    Ok(ProcStat {
        ppid: field(4)? as u32,
        ticks: field(14)? + field(15)?,
        children_ticks: field(16)? + field(17)?,
    })
}

/// The ticks of `root`, of its children that exited, and of its children running now (found
/// by their parent pid in `/proc`): between two snapshots, all the tree used, backends that
/// came and went included.
pub fn tree_ticks(root: u32) -> Result<u64, String> {
    let stat = process_stat(root)?;
    let children: u64 = std::fs::read_dir("/proc")
        .map_err(|e| format!("/proc: {e}"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        // A process may exit between the listing and the reading: it is then left out.
        .filter_map(|pid| process_stat(pid).ok())
        .filter(|child| child.ppid == root)
        .map(|child| child.ticks)
        .sum();
    Ok(stat.ticks + stat.children_ticks + children)
}
