//! The OCI runtime spec (`config.json`) of one environment.
//!
//! It describes the same environment the `process` backend builds by hand: a read-only root
//! holding the host's `/usr` and a short list of `/etc` files, the code at `/var/task`, the
//! runtime at `/var/runtime`, layers at `/opt`, a sized `/tmp`; new PID, IPC, UTS and mount
//! namespaces plus the environment's prepared network namespace; the memory, CPU and
//! process limits; no capabilities, `no_new_privs`, uid 61051. PID 1 is Ember's reaper
//! (`ember sandbox-reaper`), which installs the same seccomp filter as the `process`
//! backend and starts the runtime.

use std::path::{Path, PathBuf};

use ember_sandbox_process::init::ETC;
use oci_spec::OciSpecError;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilities, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

/// Where the reaper (the helper program, see [`crate::helpers`]) is mounted inside.
pub const REAPER_PATH: &str = "/.ember/init";

/// Everything that varies between environments.
#[derive(Debug, Clone)]
pub struct BundleInput<'a> {
    /// The shared, empty read-only root (see [`prepare_rootfs`]).
    pub rootfs: &'a Path,
    /// The helper program, mounted at [`REAPER_PATH`].
    pub reaper: &'a Path,
    /// A path to the environment's network namespace, as the OCI runtime can open it.
    pub netns: PathBuf,
    /// The cgroup path (see `CgroupLayout::oci_path`).
    pub cgroups_path: String,
    pub code_dir: &'a Path,
    pub runtime_dir: &'a Path,
    pub layers: &'a [PathBuf],
    pub memory_bytes: u64,
    pub cpu_quota_us: u64,
    pub cpu_period_us: u64,
    pub pids: u32,
    pub tmp_mb: u32,
    pub uid: u32,
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
}

fn bind(source: &Path, destination: &str) -> Result<Mount, OciSpecError> {
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(strings(&["rbind", "ro", "nosuid", "nodev"]))
        .build()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// `/opt`: nothing, one layer, or several merged by overlayfs (leftmost lower is the top).
fn layers(layers: &[PathBuf]) -> Result<Option<Mount>, OciSpecError> {
    match layers {
        [] => Ok(None),
        [one] => bind(one, "/opt").map(Some),
        many => {
            let lower: Vec<String> = many.iter().rev().map(|p| p.display().to_string()).collect();
            MountBuilder::default()
                .destination("/opt")
                .typ("overlay")
                .source("overlay")
                .options(vec![
                    format!("lowerdir={}", lower.join(":")),
                    "ro".into(),
                    "nosuid".into(),
                    "nodev".into(),
                ])
                .build()
                .map(Some)
        }
    }
}

/// The `config.json` of one environment.
pub fn bundle_spec(input: &BundleInput<'_>) -> Result<Spec, OciSpecError> {
    let mut args = vec![
        REAPER_PATH.to_owned(),
        ember_sandbox_process::init::SANDBOX_REAPER.to_owned(),
    ];
    args.extend(input.argv.iter().cloned());
    let env = input
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>();
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(input.uid)
                .gid(input.uid)
                .build()?,
        )
        .args(args)
        .env(env)
        .cwd("/var/task")
        .capabilities(empty_capabilities())
        .no_new_privileges(true)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitCore)
                .hard(0u64)
                .soft(0u64)
                .build()?,
        ])
        .build()?;

    let mut mounts = vec![
        MountBuilder::default()
            .destination("/proc")
            .typ("proc")
            .source("proc")
            .options(strings(&["nosuid", "nodev", "noexec"]))
            .build()?,
        MountBuilder::default()
            .destination("/dev")
            .typ("tmpfs")
            .source("tmpfs")
            .options(strings(&["nosuid", "strictatime", "mode=755", "size=64k"]))
            .build()?,
        bind(Path::new("/usr"), "/usr")?,
    ];
    // A host without the usr merge has real /bin, /lib, … directories.
    for dir in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(dir);
        if std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
            mounts.push(bind(&host, &format!("/{dir}"))?);
        }
    }
    for name in ETC {
        let host = Path::new("/etc").join(name);
        if host.exists() {
            mounts.push(bind(&host, &format!("/etc/{name}"))?);
        }
    }
    mounts.push(bind(input.code_dir, "/var/task")?);
    mounts.push(bind(input.runtime_dir, "/var/runtime")?);
    mounts.extend(layers(input.layers)?);
    mounts.push(
        MountBuilder::default()
            .destination("/tmp")
            .typ("tmpfs")
            .source("tmpfs")
            .options(vec![
                "nosuid".into(),
                "nodev".into(),
                format!("size={}m", input.tmp_mb),
                "mode=1777".into(),
            ])
            .build()?,
    );
    mounts.push(
        MountBuilder::default()
            .destination(REAPER_PATH)
            .typ("bind")
            .source(input.reaper)
            .options(strings(&["bind", "ro", "nosuid", "nodev"]))
            .build()?,
    );

    let namespace = |typ| LinuxNamespaceBuilder::default().typ(typ).build();
    let linux = LinuxBuilder::default()
        .namespaces(vec![
            namespace(LinuxNamespaceType::Pid)?,
            namespace(LinuxNamespaceType::Ipc)?,
            namespace(LinuxNamespaceType::Uts)?,
            namespace(LinuxNamespaceType::Mount)?,
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(input.netns.clone())
                .build()?,
        ])
        .cgroups_path(PathBuf::from(&input.cgroups_path))
        .resources(
            LinuxResourcesBuilder::default()
                .devices(vec![
                    LinuxDeviceCgroupBuilder::default()
                        .allow(false)
                        .access("rwm")
                        .build()?,
                ])
                .memory(
                    LinuxMemoryBuilder::default()
                        .limit(input.memory_bytes as i64)
                        .swap(input.memory_bytes as i64)
                        .build()?,
                )
                .cpu(
                    LinuxCpuBuilder::default()
                        .quota(input.cpu_quota_us as i64)
                        .period(input.cpu_period_us)
                        .build()?,
                )
                .pids(
                    LinuxPidsBuilder::default()
                        .limit(i64::from(input.pids))
                        .build()?,
                )
                .build()?,
        )
        .masked_paths(strings(&[
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
        ]))
        .readonly_paths(strings(&[
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ]))
        .build()?;

    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(input.rootfs)
                .readonly(true)
                .build()?,
        )
        .hostname("ember")
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
}

/// Lays out the shared root every environment starts from: empty mount points for each
/// mount of [`bundle_spec`], the host's usr-merge symlinks, and the few `/etc` files that
/// name the sandbox user. It is mounted read-only, so environments cannot change it.
pub fn prepare_rootfs(rootfs: &Path, uid: u32) -> std::io::Result<()> {
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};

    if rootfs.exists() {
        fs::remove_dir_all(rootfs)?;
    }
    fs::create_dir_all(rootfs)?;
    for dir in [
        "usr",
        "etc",
        "var/task",
        "var/runtime",
        "opt",
        "tmp",
        "proc",
        "dev",
        "root",
        ".ember",
    ] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    // runc gives a tmpfs the mode of the directory it covers.
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::File::create(rootfs.join(REAPER_PATH.trim_start_matches('/')))?;
    for dir in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(dir);
        match fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                symlink(fs::read_link(&host)?, rootfs.join(dir))?
            }
            // A host without the usr merge: an empty directory, the host's bound over it.
            Ok(meta) if meta.is_dir() => fs::create_dir(rootfs.join(dir))?,
            _ => {}
        }
    }
    for name in ETC {
        let host = Path::new("/etc").join(name);
        let inside = rootfs.join("etc").join(name);
        match fs::metadata(&host) {
            Ok(m) if m.is_dir() => fs::create_dir(&inside)?,
            Ok(_) => drop(fs::File::create(&inside)?),
            Err(_) => {}
        }
    }
    let etc = rootfs.join("etc");
    fs::write(
        etc.join("passwd"),
        format!(
            "root:x:0:0:root:/root:/usr/sbin/nologin\nsbx_user:x:{uid}:{uid}::/tmp:/usr/sbin/nologin\n"
        ),
    )?;
    fs::write(etc.join("group"), format!("root:x:0:\nsbx_user:x:{uid}:\n"))?;
    fs::write(etc.join("hostname"), "ember\n")?;
    Ok(())
}

fn empty_capabilities() -> LinuxCapabilities {
    let none = oci_spec::runtime::Capabilities::new;
    oci_spec::runtime::LinuxCapabilitiesBuilder::default()
        .bounding(none())
        .effective(none())
        .inheritable(none())
        .permitted(none())
        .ambient(none())
        .build()
        .expect("every field is set")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_describes_the_process_sandbox() {
        let argv = vec!["/usr/bin/python3".to_owned(), "bootstrap.py".to_owned()];
        let env = vec![("A".to_owned(), "1".to_owned())];
        let layers = vec![PathBuf::from("/l1"), PathBuf::from("/l2")];
        let spec = bundle_spec(&BundleInput {
            rootfs: Path::new("/data/rootfs"),
            reaper: Path::new("/usr/local/bin/ember"),
            netns: PathBuf::from("/proc/42/fd/7"),
            cgroups_path: "ember-abc-runc/env1".into(),
            code_dir: Path::new("/data/code/x"),
            runtime_dir: Path::new("/data/runtime"),
            layers: &layers,
            memory_bytes: 128 << 20,
            cpu_quota_us: 7_235,
            cpu_period_us: 100_000,
            pids: 1024,
            tmp_mb: 512,
            uid: 61051,
            argv: &argv,
            env: &env,
        })
        .unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["root"]["readonly"], true);
        assert_eq!(
            json["process"]["args"],
            serde_json::json!([
                REAPER_PATH,
                "sandbox-reaper",
                "/usr/bin/python3",
                "bootstrap.py"
            ])
        );
        assert_eq!(json["process"]["user"]["uid"], 61051);
        assert_eq!(json["process"]["noNewPrivileges"], true);
        for set in [
            "bounding",
            "effective",
            "permitted",
            "inheritable",
            "ambient",
        ] {
            assert_eq!(
                json["process"]["capabilities"][set],
                serde_json::json!([]),
                "{set}"
            );
        }
        let linux = &json["linux"];
        assert_eq!(linux["cgroupsPath"], "ember-abc-runc/env1");
        assert_eq!(linux["resources"]["memory"]["limit"], 128 << 20);
        assert_eq!(linux["resources"]["memory"]["swap"], 128 << 20);
        assert_eq!(linux["resources"]["pids"]["limit"], 1024);
        let net = linux["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["type"] == "network")
            .unwrap();
        assert_eq!(net["path"], "/proc/42/fd/7");
        let mounts = json["mounts"].as_array().unwrap();
        let mount = |dst: &str| mounts.iter().find(|m| m["destination"] == dst).unwrap();
        assert!(
            mount("/tmp")["options"]
                .as_array()
                .unwrap()
                .contains(&"size=512m".into())
        );
        assert!(
            mount("/var/task")["options"]
                .as_array()
                .unwrap()
                .contains(&"ro".into())
        );
        // Several layers merge by overlayfs, the last one on top.
        let opt = mount("/opt");
        assert_eq!(opt["type"], "overlay");
        assert!(
            opt["options"]
                .as_array()
                .unwrap()
                .contains(&"lowerdir=/l2:/l1".into())
        );
    }
}
