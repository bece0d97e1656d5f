//! Control groups for environments, on cgroup v1, v2 and the hybrid of both.
//!
//! [`CgroupLayout::detect`] reads `/proc/self/mountinfo` and `/proc/self/cgroup` once. On a
//! v1 (or hybrid) host each controller we use (`memory`, `cpu`, `pids`) has its own
//! hierarchy, and an environment gets a directory in each, under the server's own cgroup. On
//! a pure v2 host an environment gets one directory under `/sys/fs/cgroup/<instance>` with
//! the controllers enabled on the way down (the root cgroup may hold processes, a delegated
//! subtree may not, so the root is the one place that always works for root).
//!
//! Every environment of one server lives below one *instance* directory named after the
//! server's data directory, so a restarted server can remove what a crashed one left behind
//! without touching another server's environments.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const V1_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// Where this host keeps its cgroups.
#[derive(Debug, Clone)]
pub enum CgroupLayout {
    /// One hierarchy per controller: `memory`, `cpu`, `pids` instance directories.
    V1 {
        memory: PathBuf,
        cpu: PathBuf,
        pids: PathBuf,
        /// The freezer hierarchy, when mounted.
        freezer: Option<PathBuf>,
    },
    /// One unified hierarchy: the instance directory.
    V2 { instance: PathBuf },
}

/// One environment's cgroup(s).
#[derive(Debug)]
pub struct Cgroup {
    layout: CgroupLayout,
    dirs: Vec<PathBuf>,
    /// The peak-memory file, kept open: it is read after every invocation, and a `pread`
    /// is one system call where open, read, close and a path walk are four.
    peak: Option<fs::File>,
}

impl CgroupLayout {
    /// Finds the cgroup hierarchies and prepares this server's instance directories.
    pub fn detect(instance: &str) -> io::Result<CgroupLayout> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        let own = fs::read_to_string("/proc/self/cgroup")?;
        let layout = CgroupLayout::plan(&mountinfo, &own, instance).map_err(io::Error::other)?;
        if let CgroupLayout::V2 { instance } = &layout {
            let root = instance.parent().unwrap_or(Path::new("/sys/fs/cgroup"));
            let available = fs::read_to_string(root.join("cgroup.controllers"))?;
            for ctrl in V1_CONTROLLERS {
                if !available.split_whitespace().any(|c| c == ctrl) {
                    return Err(io::Error::other(format!(
                        "the cgroup2 hierarchy at {} does not offer the {ctrl} controller",
                        root.display()
                    )));
                }
            }
            fs::create_dir_all(instance)?;
            fs::write(root.join("cgroup.subtree_control"), "+memory +cpu +pids")?;
            fs::write(
                instance.join("cgroup.subtree_control"),
                "+memory +cpu +pids",
            )?;
        } else {
            for dir in layout.instance_dirs() {
                fs::create_dir_all(dir)?;
            }
        }
        Ok(layout)
    }

    /// Decides where this server's environments go, from the text of
    /// `/proc/self/mountinfo` and `/proc/self/cgroup`. v1 hierarchies for `memory`, `cpu`
    /// and `pids` win when all three are mounted (the hybrid layout); otherwise the cgroup2
    /// mount is used.
    fn plan(mountinfo: &str, own: &str, instance: &str) -> Result<CgroupLayout, String> {
        let mut v1: Vec<(&str, PathBuf)> = Vec::new();
        let mut v2: Option<PathBuf> = None;
        for (mountpoint, fstype, superopts) in mounts(mountinfo) {
            match fstype {
                "cgroup" => {
                    for ctrl in V1_CONTROLLERS.iter().chain(&["freezer"]) {
                        if superopts.split(',').any(|o| o == *ctrl) {
                            v1.push((*ctrl, PathBuf::from(mountpoint)));
                        }
                    }
                }
                "cgroup2" => v2 = Some(PathBuf::from(mountpoint)),
                _ => {}
            }
        }
        let find_v1 = |ctrl: &str| v1.iter().find(|(c, _)| *c == ctrl).map(|(_, p)| p.clone());
        let freezer = find_v1("freezer");
        if let (Some(memory), Some(cpu), Some(pids)) =
            (find_v1("memory"), find_v1("cpu"), find_v1("pids"))
        {
            // Below the server's own cgroup in each hierarchy, so its limits nest.
            let under_own = |ctrl: &str, mount: PathBuf| -> PathBuf {
                let path = own
                    .lines()
                    .filter_map(|l| {
                        let mut parts = l.splitn(3, ':');
                        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
                        ctrls.split(',').any(|c| c == ctrl).then_some(path)
                    })
                    .next()
                    .unwrap_or("/");
                mount.join(path.trim_start_matches('/')).join(instance)
            };
            return Ok(CgroupLayout::V1 {
                memory: under_own("memory", memory),
                cpu: under_own("cpu", cpu),
                pids: under_own("pids", pids),
                freezer: freezer.map(|f| under_own("freezer", f)),
            });
        }
        match v2 {
            Some(root) => Ok(CgroupLayout::V2 {
                instance: root.join(instance),
            }),
            None => Err("no cgroup v1 memory/cpu/pids hierarchies and no cgroup2 mount".into()),
        }
    }

    fn instance_dirs(&self) -> Vec<&Path> {
        match self {
            CgroupLayout::V1 {
                memory,
                cpu,
                pids,
                freezer,
            } => {
                let mut dirs: Vec<&Path> = vec![memory, cpu, pids];
                dirs.extend(freezer.as_deref());
                dirs
            }
            CgroupLayout::V2 { instance } => vec![instance],
        }
    }

    /// The `linux.cgroupsPath` that puts an OCI container into environment `id`'s cgroup.
    /// On v1 a relative path, which runc and runsc resolve below their own cgroup in each
    /// hierarchy (where the instance directories are); on v2 a path from the root.
    pub fn oci_path(&self, id: &str) -> String {
        let instance = self.instance_dirs()[0]
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match self {
            CgroupLayout::V1 { .. } => format!("{instance}/{id}"),
            CgroupLayout::V2 { .. } => format!("/{instance}/{id}"),
        }
    }

    /// Kills and removes every environment cgroup below this instance: what a previous run
    /// of the same server left behind.
    pub fn remove_stale(&self) {
        for dir in self.instance_dirs() {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let group = Cgroup {
                        layout: self.clone(),
                        dirs: vec![entry.path()],
                        peak: None,
                    };
                    // A frozen leftover must run again to die.
                    let _ = fs::write(entry.path().join("freezer.state"), "THAWED");
                    group.kill_all();
                    let _ = fs::remove_dir(entry.path());
                }
            }
        }
    }

    /// Removes the instance directories, after killing and removing any environment cgroup
    /// still in them.
    pub fn remove_instance(&self) {
        self.remove_stale();
        for dir in self.instance_dirs() {
            if let Err(e) = fs::remove_dir(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove the instance cgroup");
            }
        }
    }

    /// Removes this instance's directories from every cgroup hierarchy, including those
    /// Ember does not use itself but an OCI runtime fills (`blkio`, `devices`, …); each
    /// environment's own directories there are gone already (the runtime deletes them).
    pub fn remove_instance_everywhere(&self) {
        self.remove_instance();
        let instance = self.instance_dirs()[0].file_name().map(|n| n.to_owned());
        let (Some(instance), Ok(mountinfo), Ok(own)) = (
            instance,
            fs::read_to_string("/proc/self/mountinfo"),
            fs::read_to_string("/proc/self/cgroup"),
        ) else {
            return;
        };
        for (mountpoint, own_path) in hierarchies(&mountinfo, &own) {
            let dir = mountpoint
                .join(own_path.trim_start_matches('/'))
                .join(&instance);
            if let Ok(entries) = fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    let _ = fs::remove_dir(entry.path());
                }
            }
            let _ = fs::remove_dir(&dir);
        }
    }

    /// Creates the cgroup for environment `id` with its limits.
    pub fn create(&self, id: &str, limits: &Limits) -> io::Result<Cgroup> {
        let dirs: Vec<PathBuf> = self.instance_dirs().iter().map(|d| d.join(id)).collect();
        let mut group = Cgroup {
            layout: self.clone(),
            dirs: Vec::new(),
            peak: None,
        };
        // A failure part way leaves nothing behind: what was made is removed.
        let made = dirs.iter().try_for_each(|dir| {
            fs::create_dir(dir)?;
            group.dirs.push(dir.clone());
            Ok::<_, io::Error>(())
        });
        if let Err(e) = made.and_then(|()| group.apply(limits)) {
            let _ = group.remove();
            return Err(e);
        }
        let peak = match group.layout {
            CgroupLayout::V1 { .. } => "memory.max_usage_in_bytes",
            CgroupLayout::V2 { .. } => "memory.peak",
        };
        group.peak = fs::File::open(group.dir("memory").join(peak)).ok();
        Ok(group)
    }
}

/// `(mountpoint, fstype, superopts)` of each line of a `mountinfo` text:
/// `id parent maj:min root mountpoint opts ... - fstype source superopts`.
fn mounts(mountinfo: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    mountinfo.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mountpoint = left.split(' ').nth(4).unwrap_or_default();
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or_default();
        Some((mountpoint, fstype, right.nth(1).unwrap_or_default()))
    })
}

/// Every cgroup hierarchy mounted here, with this process's own path in it.
fn hierarchies(mountinfo: &str, own: &str) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    for (mountpoint, fstype, superopts) in mounts(mountinfo) {
        let superopts: Vec<&str> = superopts.split(',').collect();
        let path = own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            let matches = match fstype {
                "cgroup2" => ctrls.is_empty(),
                "cgroup" => !ctrls.is_empty() && ctrls.split(',').all(|c| superopts.contains(&c)),
                _ => false,
            };
            matches.then(|| path.to_owned())
        });
        if let Some(path) = path {
            found.push((PathBuf::from(mountpoint), path));
        }
    }
    found
}

/// Resource limits for one environment.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: u64,
    /// CPU time per 100 ms period, in µs; `None` for no quota.
    pub cpu_quota_us: Option<u64>,
    pub pids: u32,
}

/// What the init writes into each of [`Cgroup::join_files`]: "the writing thread".
pub const JOIN_SELF: &str = "0";

/// The CFS period Ember uses; quotas are expressed against it.
pub const CPU_PERIOD_US: u64 = 100_000;

impl Cgroup {
    fn dir(&self, controller: &str) -> &Path {
        match (&self.layout, controller) {
            (CgroupLayout::V1 { .. }, "memory") => &self.dirs[0],
            (CgroupLayout::V1 { .. }, "cpu") => &self.dirs[1],
            (CgroupLayout::V1 { .. }, _) => &self.dirs[2],
            (CgroupLayout::V2 { .. }, _) => &self.dirs[0],
        }
    }

    fn apply(&self, limits: &Limits) -> io::Result<()> {
        match self.layout {
            CgroupLayout::V1 { .. } => {
                let mem = self.dir("memory");
                fs::write(
                    mem.join("memory.limit_in_bytes"),
                    limits.memory_bytes.to_string(),
                )?;
                // No swap: the limit is the limit. Absent when the kernel has swap accounting off.
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    fs::write(memsw, limits.memory_bytes.to_string())?;
                }
                fs::write(self.dir("pids").join("pids.max"), limits.pids.to_string())?;
            }
            CgroupLayout::V2 { .. } => {
                let dir = self.dir("memory");
                fs::write(dir.join("memory.max"), limits.memory_bytes.to_string())?;
                let _ = fs::write(dir.join("memory.swap.max"), "0");
                fs::write(dir.join("pids.max"), limits.pids.to_string())?;
            }
        }
        self.set_cpu_quota(limits.cpu_quota_us)
    }

    /// Freezes (stops every process of) the cgroup, or thaws it. Freezing does not wait for
    /// the processes to stop; thawing takes effect at once.
    pub fn set_frozen(&self, frozen: bool) -> io::Result<()> {
        match self.layout {
            CgroupLayout::V1 {
                freezer: Some(_), ..
            } => {
                let dir = self
                    .dirs
                    .get(3)
                    .ok_or_else(|| io::Error::other("no freezer cgroup"))?;
                fs::write(
                    dir.join("freezer.state"),
                    if frozen { "FROZEN" } else { "THAWED" },
                )
            }
            CgroupLayout::V1 { freezer: None, .. } => {
                Err(io::Error::other("the freezer hierarchy is not mounted"))
            }
            CgroupLayout::V2 { .. } => fs::write(
                self.dirs[0].join("cgroup.freeze"),
                if frozen { "1" } else { "0" },
            ),
        }
    }

    /// Sets the CPU quota per [`CPU_PERIOD_US`]; `None` lifts it.
    pub fn set_cpu_quota(&self, quota_us: Option<u64>) -> io::Result<()> {
        let cpu = self.dir("cpu");
        match self.layout {
            CgroupLayout::V1 { .. } => {
                fs::write(cpu.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string())?;
                let quota = quota_us.map_or("-1".to_owned(), |q| q.to_string());
                fs::write(cpu.join("cpu.cfs_quota_us"), quota)
            }
            CgroupLayout::V2 { .. } => {
                let quota = quota_us.map_or("max".to_owned(), |q| q.to_string());
                fs::write(cpu.join("cpu.max"), format!("{quota} {CPU_PERIOD_US}"))
            }
        }
    }

    /// The files a process writes [`JOIN_SELF`] into to join this cgroup.
    ///
    /// On v1 this is `tasks`: moving only the writing thread itself (`0`) lets the kernel
    /// skip the global threadgroup lock, whose write side waits for an RCU grace period —
    /// 5 to 25 ms per hierarchy on these machines, the largest part of a cold start. The
    /// init is single-threaded when it joins, so moving its thread moves the process.
    pub fn join_files(&self) -> Vec<PathBuf> {
        let file = match self.layout {
            CgroupLayout::V1 { .. } => "tasks",
            CgroupLayout::V2 { .. } => "cgroup.procs",
        };
        self.dirs.iter().map(|d| d.join(file)).collect()
    }

    /// Peak memory use in bytes, if the kernel reports it.
    pub fn max_memory_used(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 32];
        let n = self.peak.as_ref()?.read_at(&mut buf, 0).ok()?;
        std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
    }

    /// Whether the OOM killer has killed a process in this cgroup.
    pub fn oom_killed(&self) -> bool {
        let file = match self.layout {
            CgroupLayout::V1 { .. } => "memory.oom_control",
            CgroupLayout::V2 { .. } => "memory.events",
        };
        fs::read_to_string(self.dir("memory").join(file))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .map(|n| n.trim().parse::<u64>().unwrap_or(0))
                })
            })
            .is_some_and(|n| n > 0)
    }

    /// The pids in this cgroup.
    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.dir("memory").join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// SIGKILLs every process in the cgroup once (thawing it first: a frozen v1 task does
    /// not die until it runs again).
    pub fn kill_all(&self) {
        let _ = self.set_frozen(false);
        if let CgroupLayout::V2 { .. } = self.layout
            && fs::write(self.dirs[0].join("cgroup.kill"), "1").is_ok()
        {
            return;
        }
        for pid in self.pids() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Removes the cgroup directories; fails while processes remain.
    pub fn remove(&self) -> io::Result<()> {
        for dir in &self.dirs {
            match fs::remove_dir(dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This project's machines: v1 controllers plus an empty cgroup2 mount.
    const HYBRID: &str = "\
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec shared:9 - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/pids rw,relatime shared:15 - cgroup cgroup rw,pids
40 30 0:36 / /sys/fs/cgroup/unified rw,relatime shared:19 - cgroup2 cgroup2 rw
";

    /// A systemd host on the unified hierarchy only.
    const PURE_V2: &str = "\
25 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_hosts_use_the_v1_hierarchies_below_the_servers_own_cgroups() {
        let own = "4:memory:/process_api/abc\n8:pids:/\n1:cpu:/\n0::/\n";
        let layout = CgroupLayout::plan(HYBRID, own, "ember-1").unwrap();
        let CgroupLayout::V1 {
            memory,
            cpu,
            pids,
            freezer,
        } = layout
        else {
            panic!("{layout:?}")
        };
        assert_eq!(
            memory,
            PathBuf::from("/sys/fs/cgroup/memory/process_api/abc/ember-1")
        );
        assert_eq!(cpu, PathBuf::from("/sys/fs/cgroup/cpu/ember-1"));
        assert_eq!(pids, PathBuf::from("/sys/fs/cgroup/pids/ember-1"));
        assert_eq!(freezer, None);
        let with_freezer =
            format!("{HYBRID}41 30 0:37 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n");
        let own = "4:memory:/\n8:pids:/\n1:cpu:/\n6:freezer:/f\n";
        let CgroupLayout::V1 { freezer, .. } = CgroupLayout::plan(&with_freezer, own, "e").unwrap()
        else {
            panic!()
        };
        assert_eq!(freezer, Some(PathBuf::from("/sys/fs/cgroup/freezer/f/e")));
    }

    #[test]
    fn combined_v1_controllers_are_found_in_their_shared_hierarchy() {
        let mountinfo = HYBRID.replace("rw,cpu\n", "rw,cpu,cpuacct\n");
        let own = "4:memory:/\n8:pids:/\n1:cpu,cpuacct:/x\n";
        let CgroupLayout::V1 { cpu, .. } = CgroupLayout::plan(&mountinfo, own, "e").unwrap() else {
            panic!()
        };
        assert_eq!(cpu, PathBuf::from("/sys/fs/cgroup/cpu/x/e"));
    }

    #[test]
    fn pure_v2_hosts_use_one_instance_directory_at_the_root() {
        let layout =
            CgroupLayout::plan(PURE_V2, "0::/user.slice/session-1.scope\n", "ember-1").unwrap();
        let CgroupLayout::V2 { instance } = layout else {
            panic!("{layout:?}")
        };
        assert_eq!(instance, PathBuf::from("/sys/fs/cgroup/ember-1"));
    }

    #[test]
    fn a_host_without_cgroups_is_refused_with_a_reason() {
        let err =
            CgroupLayout::plan("25 1 259:2 / / rw - ext4 /dev/sda rw\n", "", "e").unwrap_err();
        assert!(err.contains("no cgroup"), "{err}");
    }
}
