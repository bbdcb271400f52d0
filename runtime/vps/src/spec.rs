//! The OCI config of a partition: a system container. What systemd as PID 1 needs (its
//! manual "Container Interface"): `container=` and `container_uuid=` in its environment, a
//! pty as `/dev/console`, `/run`, `/run/lock` and `/tmp` as tmpfs, `/sys` read-only, its own
//! cgroup subtree delegated and writable (io.hull.cgroup.delegate), `$NOTIFY_SOCKET` for
//! readiness. Isolation: a user namespace of its own (the partition's id range), every
//! other namespace, the default seccomp profile for its capability set, and the
//! capabilities LXC leaves an unprivileged system container.

use std::path::Path;

use caps::{CapSet, Capability};
use oci_spec::runtime::LinuxResources;
use serde_json::{json, Value};

use crate::config::{parse_bps_rule, PartitionConfig, Resources};
use crate::paths::NOTIFY_IN_PARTITION;
use crate::Error;

/// Capabilities a partition never gets: they act on the host kernel as a whole (modules,
/// raw I/O, the clock, the LSM, BPF and perf of every process), whatever the namespace.
const NEVER: [Capability; 8] = [
    Capability::CAP_SYS_MODULE,
    Capability::CAP_SYS_RAWIO,
    Capability::CAP_SYS_TIME,
    Capability::CAP_MAC_ADMIN,
    Capability::CAP_MAC_OVERRIDE,
    Capability::CAP_BPF,
    Capability::CAP_PERFMON,
    Capability::CAP_SYS_PACCT,
];

/// The partition's capabilities: every one the host lets hull hold, less [`NEVER`].
pub fn capabilities() -> Vec<String> {
    let own = caps::read(None, CapSet::Bounding).unwrap_or_else(|_| caps::all());
    let mut names: Vec<String> = own
        .into_iter()
        .filter(|c| !NEVER.contains(c))
        .map(|c| c.to_string())
        .collect();
    names.sort();
    names
}

/// The NOTIFY_SOCKET path inside the partition.
pub fn notify_socket() -> String {
    format!("{NOTIFY_IN_PARTITION}/notify.sock")
}

/// The config.json of partition `cfg` whose root filesystem is mounted at `root` and whose
/// monitor's notify socket directory is `notify_dir`; with `lxcfs` (its mount point), the
/// partition's `/proc` files show its own limits.
pub fn build(
    cfg: &PartitionConfig,
    root: &Path,
    notify_dir: &Path,
    lxcfs: Option<&Path>,
) -> Result<hull_specs::Spec, Error> {
    let caps = capabilities();
    // By their config.json names (`CAP_SYS_BOOT`): oci-spec's FromStr wants them bare.
    let cap_values: Vec<oci_spec::runtime::Capability> = caps
        .iter()
        .filter_map(|c| serde_json::from_value(json!(c)).ok())
        .collect();
    let seccomp = hull_specs::seccomp_default::default_seccomp(&cap_values);
    let resources = resources(&cfg.resources)?;
    let tmpfs = |dest: &str, opts: &[&str]| json!({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": opts});
    let mut config = json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["/sbin/init"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "container=hull",
                format!("container_uuid={}", cfg.uuid),
                format!("NOTIFY_SOCKET={}", notify_socket()),
                "TERM=linux",
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "noNewPrivileges": false,
        },
        "root": {"path": root, "readonly": false},
        "hostname": cfg.hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            tmpfs("/dev", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            tmpfs("/dev/shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "rw"]},
            tmpfs("/run", &["nosuid", "nodev", "mode=755"]),
            tmpfs("/run/lock", &["nosuid", "nodev", "noexec", "mode=1777", "size=5m"]),
            tmpfs("/tmp", &["nosuid", "nodev", "mode=1777"]),
            {"destination": NOTIFY_IN_PARTITION, "type": "bind", "source": notify_dir,
             "options": ["rbind", "nosuid", "nodev", "noexec"]},
        ],
        "annotations": {
            hull_specs::annotations::CGROUP_DELEGATE: "true",
        },
        "linux": {
            "uidMappings": [{"containerID": 0, "hostID": cfg.id_base, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": cfg.id_base, "size": 65536}],
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "cgroup"}, {"type": "user"},
            ],
            "cgroupsPath": format!("/hull-vps/{}", cfg.name),
            "resources": resources,
            "seccomp": seccomp,
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware", "/sys/devices/virtual/powercap",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    });
    if let (Some(dir), Some(mounts)) = (lxcfs, config["mounts"].as_array_mut()) {
        mounts.extend(crate::lxcfs::mounts(dir));
    }
    serde_json::from_value(config).map_err(|e| Error::Invalid {
        what: format!("partition {:?}: generated config", cfg.name),
        reason: e.to_string(),
    })
}

/// `linux.resources` of the partition's limits. The device rules are the default allow
/// list every container gets.
pub fn resources(r: &Resources) -> Result<LinuxResources, Error> {
    let mut v = serde_json::Map::new();
    let mut cpu = serde_json::Map::new();
    if let Some(s) = r.cpu_shares {
        cpu.insert("shares".into(), json!(s));
    }
    if let Some(c) = r.cpus {
        cpu.insert("quota".into(), json!((c * 100_000.0).round() as i64));
        cpu.insert("period".into(), json!(100_000));
    }
    if let Some(set) = &r.cpuset {
        cpu.insert("cpus".into(), json!(set));
    }
    if !cpu.is_empty() {
        v.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(m) = r.memory {
        let mut mem = json!({"limit": m.0});
        if let Some(s) = r.swap {
            // OCI's swap is memory plus swap.
            mem["swap"] = json!(m.0.saturating_add(s.0));
        }
        v.insert("memory".into(), mem);
    }
    if let Some(p) = r.pids {
        v.insert("pids".into(), json!({"limit": p}));
    }
    let mut blkio = serde_json::Map::new();
    if let Some(w) = r.io_weight {
        blkio.insert("weight".into(), json!(w));
    }
    for (key, rules) in [
        ("throttleReadBpsDevice", &r.io_read_bps),
        ("throttleWriteBpsDevice", &r.io_write_bps),
    ] {
        let mut list = Vec::new();
        for rule in rules {
            let (major, minor, rate) = parse_bps_rule(rule).map_err(|reason| Error::Invalid {
                what: format!("resources.{key}"),
                reason,
            })?;
            list.push(json!({"major": major, "minor": minor, "rate": rate}));
        }
        if !list.is_empty() {
            blkio.insert(key.into(), Value::Array(list));
        }
    }
    if !blkio.is_empty() {
        v.insert("blockIO".into(), Value::Object(blkio));
    }
    v.insert("devices".into(), json!([{"allow": false, "access": "rwm"}]));
    serde_json::from_value(Value::Object(v)).map_err(|e| Error::Invalid {
        what: "resources".into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RestartPolicy, Size};

    fn cfg() -> PartitionConfig {
        PartitionConfig {
            name: "web1".into(),
            hostname: "web1.example".into(),
            template: "debian-12".into(),
            uuid: "0123456789abcdef0123456789abcdef".into(),
            id_base: 2_147_483_648,
            autostart: false,
            restart: RestartPolicy::OnFailure,
            stop_timeout: 30,
            resources: Resources {
                memory: Some(Size(1 << 30)),
                swap: Some(Size(512 << 20)),
                cpus: Some(1.5),
                pids: Some(2048),
                io_write_bps: vec!["8:0 10M".into()],
                disk: Size(2 << 30),
                ..Default::default()
            },
            network: Default::default(),
        }
    }

    #[test]
    fn a_system_container_config_that_hull_accepts() {
        let spec = build(
            &cfg(),
            Path::new("/var/lib/hull/vps/web1/root"),
            Path::new("/run/n"),
            None,
        )
        .expect("build");
        hull_specs::validate_spec(&spec).expect("hull validation");
        let v = serde_json::to_value(&spec).expect("json");
        let env: Vec<&str> = v["process"]["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(env.contains(&"container=hull"), "{env:?}");
        assert!(env.contains(&"container_uuid=0123456789abcdef0123456789abcdef"));
        assert!(env.contains(&"NOTIFY_SOCKET=/run/host/notify/notify.sock"));
        assert_eq!(v["process"]["terminal"], json!(true));
        assert_eq!(
            v["linux"]["uidMappings"][0]["hostID"],
            json!(2_147_483_648u32)
        );
        let mounts = v["mounts"].as_array().expect("mounts");
        let find = |d: &str| mounts.iter().find(|m| m["destination"] == d).cloned();
        for d in ["/run", "/run/lock", "/tmp"] {
            assert_eq!(find(d).expect(d)["type"], "tmpfs");
        }
        let sys = find("/sys").expect("/sys");
        assert!(sys["options"]
            .as_array()
            .expect("opts")
            .contains(&json!("ro")));
        let cg = find("/sys/fs/cgroup").expect("cgroup");
        assert!(cg["options"]
            .as_array()
            .expect("opts")
            .contains(&json!("rw")));
        assert_eq!(v["annotations"]["io.hull.cgroup.delegate"], "true");
        let r = &v["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], json!(1u64 << 30));
        assert_eq!(r["memory"]["swap"], json!((1u64 << 30) + (512 << 20)));
        assert_eq!(r["cpu"]["quota"], json!(150_000));
        assert_eq!(r["pids"]["limit"], json!(2048));
        assert_eq!(
            r["blockIO"]["throttleWriteBpsDevice"][0]["rate"],
            json!(10u64 << 20)
        );
        let caps = v["process"]["capabilities"]["bounding"]
            .as_array()
            .expect("caps");
        assert!(caps.contains(&json!("CAP_SYS_ADMIN")), "{caps:?}");
        for never in ["CAP_SYS_MODULE", "CAP_SYS_TIME", "CAP_SYS_RAWIO", "CAP_BPF"] {
            assert!(!caps.contains(&json!(never)), "{never}");
        }
        // The profile follows the capabilities: systemd mounts (PrivateTmp=) and reboots.
        let allowed: Vec<&str> = v["linux"]["seccomp"]["syscalls"]
            .as_array()
            .expect("syscalls")
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|r| r["names"].as_array().into_iter().flatten())
            .filter_map(Value::as_str)
            .collect();
        for call in ["mount", "reboot", "unshare", "setns"] {
            assert!(allowed.contains(&call), "{call} refused");
        }
    }
}
