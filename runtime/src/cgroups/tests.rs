//! Unit tests (pure functions, fake cgroup trees in temp dirs) and root-only tests that create
//! real, uniquely named cgroups (skipped with a printed reason when not possible).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxHugepageLimitBuilder,
    LinuxMemoryBuilder, LinuxNetworkBuilder, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder,
};

use super::devices::{self, Rule};
use super::layout::{Layout, Mode, UNIFIED_KEY};
use super::plan::{self, DevicePlan, Env, Purpose};
use super::*;

// ---------------------------------------------------------------- resolve

#[test]
fn resolve_default_is_hull_id() {
    assert_eq!(
        path::resolve_with(None, "abc", false, false).unwrap(),
        "/hull/abc"
    );
    assert_eq!(
        path::resolve_with(Some(""), "abc", false, false).unwrap(),
        "/hull/abc"
    );
}

#[test]
fn resolve_absolute_and_relative() {
    let r = |p| path::resolve_with(Some(p), "id", false, false).unwrap();
    assert_eq!(r("/a/b"), "/a/b");
    assert_eq!(r("a/b"), "/a/b");
    assert_eq!(r("/a//b/"), "/a/b");
    assert_eq!(r("./a/./b"), "/a/b");
    assert_eq!(r("/k8s.io/0123abcd"), "/k8s.io/0123abcd");
}

#[test]
fn resolve_rejects_dotdot_nul_root_and_bad_ids() {
    for bad in ["/a/../b", "..", "a/..", "a\0b", "/", "//", "."] {
        let err = path::resolve_with(Some(bad), "id", false, false).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidPath { .. }),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().contains("invalid cgroup path"), "{err}");
    }
    assert!(path::resolve_with(None, "a/b", false, false).is_err());
    assert!(path::resolve_with(None, "", false, false).is_err());
    assert!(path::resolve_with(None, "..", false, false).is_err());
}

#[test]
fn resolve_systemd_without_systemd_is_a_clear_error() {
    let err = path::resolve_with(Some("system.slice:hull:abc"), "abc", true, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "systemd cgroup driver requested but systemd is not running (no /run/systemd/system)"
    );
    let err = path::resolve_with(Some("system.slice:hull:abc"), "abc", true, true).unwrap_err();
    assert!(matches!(err, CgroupError::SystemdUnsupported { .. }));
    // And the real probe on this host, when systemd is absent.
    if !Path::new("/run/systemd/system").exists() {
        assert!(matches!(
            ContainerCgroup::resolve(None, "x", true),
            Err(CgroupError::SystemdNotRunning)
        ));
    }
}

// ---------------------------------------------------------------- layout

const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
99 31 0:38 / /mnt/again rw,relatime - cgroup cgroup rw,memory
";

#[test]
fn layout_parses_hybrid() {
    let l = Layout::parse(HYBRID);
    assert_eq!(l.mode().unwrap(), Mode::Hybrid);
    assert_eq!(l.v1.len(), 9, "{l:?}");
    assert_eq!(
        l.unified.as_deref(),
        Some(Path::new("/sys/fs/cgroup/unified"))
    );
    let dirs = l.dirs("/hull/abc");
    assert_eq!(
        dir_for(&dirs, "memory").unwrap().1,
        Path::new("/sys/fs/cgroup/memory/hull/abc"),
        "first mount of a hierarchy wins"
    );
    assert_eq!(dirs["memory"], Path::new("/sys/fs/cgroup/memory/hull/abc"));
    assert_eq!(
        dirs["name=systemd"],
        Path::new("/sys/fs/cgroup/systemd/hull/abc")
    );
    assert_eq!(
        dirs[UNIFIED_KEY],
        Path::new("/sys/fs/cgroup/unified/hull/abc")
    );
    assert!(!l.v1_controllers().contains("name=systemd"));
    assert!(l.v1_controllers().contains("cpuacct"));
}

#[test]
fn a_covered_cgroup_mount_is_not_a_hierarchy() {
    // A tmpfs over /sys/fs/cgroup/unified (how one measures crun on a hybrid host) hides
    // the cgroup2 mount: the host is then cgroup v1 only.
    let covered = format!("{HYBRID}120 31 0:90 / /sys/fs/cgroup/unified rw - tmpfs tmpfs rw\n");
    let l = Layout::parse(&covered);
    assert_eq!(l.unified, None, "{l:?}");
    assert_eq!(l.mode().unwrap(), Mode::V1);
    // A tmpfs over the whole tree hides every hierarchy under it.
    let all = format!("{HYBRID}121 22 0:91 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n");
    let l = Layout::parse(&all);
    assert_eq!(l.unified, None);
    let points: Vec<&Path> = l.v1.iter().map(|h| h.mountpoint.as_path()).collect();
    assert_eq!(
        points,
        [Path::new("/mnt/again")],
        "only the mount outside stays"
    );
    // A mount below a hierarchy's mount point does not hide it.
    let below = format!("{HYBRID}122 41 0:92 / /sys/fs/cgroup/unified/x rw - tmpfs tmpfs rw\n");
    assert!(Layout::parse(&below).unified.is_some());
}

#[test]
fn layout_parses_v1_comounts_and_v2() {
    let v1 = Layout::parse(
        "29 26 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n\
         30 26 0:27 / /sys/fs/cgroup/net_cls,net_prio rw - cgroup cgroup rw,net_cls,net_prio,clone_children\n",
    );
    assert_eq!(v1.mode().unwrap(), Mode::V1);
    assert_eq!(v1.v1[0].key(), "cpu,cpuacct");
    assert_eq!(v1.v1[1].key(), "net_cls,net_prio");
    let dirs = v1.dirs("/a");
    assert_eq!(dirs.len(), 2);
    assert_eq!(dir_for(&dirs, "cpuacct").unwrap().0, "cpu,cpuacct");

    let v2 =
        Layout::parse("25 1 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n");
    assert_eq!(v2.mode().unwrap(), Mode::V2);
    assert_eq!(
        v2.dirs("/a/b")[UNIFIED_KEY],
        Path::new("/sys/fs/cgroup/a/b")
    );

    assert!(matches!(
        Layout::parse("").mode(),
        Err(CgroupError::NoCgroupFs)
    ));
}

#[test]
fn hugepage_size_names_follow_the_kernel() {
    assert_eq!(plan::cgroup_size_name(2048), "2MB");
    assert_eq!(plan::cgroup_size_name(1_048_576), "1GB");
    assert_eq!(plan::cgroup_size_name(64), "64KB");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("hugepages-2048kB")).unwrap();
    std::fs::create_dir(tmp.path().join("hugepages-1048576kB")).unwrap();
    std::fs::create_dir(tmp.path().join("junk")).unwrap();
    let sizes = plan::hugepage_sizes(tmp.path());
    assert_eq!(
        sizes,
        BTreeSet::from(["1GB".to_string(), "2MB".to_string()])
    );
}

// ---------------------------------------------------------------- plan

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn hybrid_env() -> Env {
    Env {
        mode: Mode::Hybrid,
        v1: set(&[
            "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
        ]),
        unified: set(&["hugetlb"]),
        hugepage_sizes: set(&["2MB", "1GB"]),
    }
}

fn v2_env() -> Env {
    Env {
        mode: Mode::V2,
        v1: BTreeSet::new(),
        unified: set(&["cpuset", "cpu", "io", "memory", "hugetlb", "pids"]),
        hugepage_sizes: set(&["2MB"]),
    }
}

fn dev(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> oci_spec::runtime::LinuxDeviceCgroup {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .access(access);
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().unwrap()
}

fn with_devices(rules: Vec<oci_spec::runtime::LinuxDeviceCgroup>) -> LinuxResources {
    LinuxResourcesBuilder::default()
        .devices(rules)
        .build()
        .unwrap()
}

#[test]
fn plan_hybrid_puts_hugetlb_in_cgroup2() {
    let res = LinuxResourcesBuilder::default()
        .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
            .page_size("2MB")
            .limit(1i64 << 21)
            .build()
            .unwrap()])
        .build()
        .unwrap();
    let p = plan::check("/t", &res, &hybrid_env(), Purpose::Create).unwrap();
    assert_eq!(p.unified_needed, set(&["hugetlb"]));
    assert!(matches!(p.devices, DevicePlan::V1(_)));

    // Without a hugetlb controller anywhere: an error naming the field and controller.
    let mut env = hybrid_env();
    env.unified.clear();
    let err = plan::check("/t", &res, &env, Purpose::Create)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("linux.resources.hugepageLimits[0].pageSize"),
        "{err}"
    );
    assert!(err.contains("hugetlb controller is not available"), "{err}");
    assert!(err.contains("/t"), "{err}");

    // An unknown page size.
    let res = LinuxResourcesBuilder::default()
        .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
            .page_size("3MB")
            .limit(1i64)
            .build()
            .unwrap()])
        .build()
        .unwrap();
    let err = plan::check("/t", &res, &hybrid_env(), Purpose::Create)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"3MB\" is not supported"), "{err}");
}

#[test]
fn plan_network_without_net_cls_names_the_field() {
    let res = LinuxResourcesBuilder::default()
        .network(
            LinuxNetworkBuilder::default()
                .class_id(0x100001u32)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let err = plan::check("/t", &res, &hybrid_env(), Purpose::Create).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CgroupError::Unsupported { .. }));
    assert!(msg.contains("linux.resources.network.classID"), "{msg}");
    assert!(msg.contains("net_cls"), "{msg}");
    let err = plan::check("/t", &res, &v2_env(), Purpose::Create)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cgroup v2 only"), "{err}");
}

#[test]
fn plan_missing_controller_is_an_error_not_ignored() {
    let mut env = hybrid_env();
    env.v1.remove("pids");
    let res = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(10i64).build().unwrap())
        .build()
        .unwrap();
    let err = plan::check("/t", &res, &env, Purpose::Create)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("linux.resources.pids") && err.contains("pids controller"),
        "{err}"
    );
}

#[test]
fn plan_v2_rejections() {
    let rt = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .realtime_runtime(1000i64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let err = plan::check("/t", &rt, &v2_env(), Purpose::Create)
        .unwrap_err()
        .to_string();
    assert!(err.contains("realtimeRuntime"), "{err}");
    assert!(plan::check("/t", &rt, &hybrid_env(), Purpose::Create).is_ok());

    let sw = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .swappiness(10u64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let err = plan::check("/t", &sw, &v2_env(), Purpose::Create)
        .unwrap_err()
        .to_string();
    assert!(err.contains("swappiness"), "{err}");

    let bad = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .swappiness(101u64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    assert!(matches!(
        plan::check("/t", &bad, &hybrid_env(), Purpose::Create),
        Err(CgroupError::InvalidValue { .. })
    ));
}

#[test]
fn plan_v2_devices_become_an_ebpf_program() {
    // runc/containerd's usual list: deny all, then defaults.
    let defaults = with_devices(vec![
        dev(false, LinuxDeviceType::A, None, None, "rwm"),
        dev(true, LinuxDeviceType::C, Some(1), Some(3), "rwm"),
        dev(true, LinuxDeviceType::C, Some(136), None, "rw"),
        dev(true, LinuxDeviceType::C, None, None, "m"),
    ]);
    let p = plan::check("/t", &defaults, &v2_env(), Purpose::Create).unwrap();
    assert!(matches!(p.devices, DevicePlan::Bpf { required: true, .. }));
    // No rules in the config: the default program all the same (CAP_MKNOD must not open
    // disks), but a host that cannot load it only warns.
    let none = with_devices(vec![]);
    let p = plan::check("/t", &none, &v2_env(), Purpose::Create).unwrap();
    assert!(matches!(
        p.devices,
        DevicePlan::Bpf {
            required: false,
            ..
        }
    ));

    let fuse = with_devices(vec![dev(
        true,
        LinuxDeviceType::C,
        Some(10),
        Some(229),
        "rwm",
    )]);
    match plan::check("/t", &fuse, &v2_env(), Purpose::Create)
        .unwrap()
        .devices
    {
        DevicePlan::Bpf { rules, required } => {
            assert!(required);
            assert_eq!(rules[1].v1_line(), "c 10:229 rwm");
        }
        other => panic!("{other:?}"),
    }

    // On v1 the same rule is fine and lands after "deny all", before the defaults.
    match plan::check("/t", &fuse, &hybrid_env(), Purpose::Create)
        .unwrap()
        .devices
    {
        DevicePlan::V1(rules) => {
            assert_eq!(rules[0].v1_line(), "a *:* rwm");
            assert!(!rules[0].allow);
            assert_eq!(rules[1].v1_line(), "c 10:229 rwm");
            assert_eq!(rules.len(), 2 + devices::default_allowed().len());
        }
        other => panic!("{other:?}"),
    }
    // Update: v2 replaces the program; v1 keeps what create wrote; no rules, no change.
    let p = plan::check("/t", &fuse, &v2_env(), Purpose::Update).unwrap();
    assert!(matches!(p.devices, DevicePlan::Bpf { .. }));
    let p = plan::check("/t", &fuse, &hybrid_env(), Purpose::Update).unwrap();
    assert_eq!(p.devices, DevicePlan::Keep);
    let p = plan::check("/t", &none, &v2_env(), Purpose::Update).unwrap();
    assert_eq!(p.devices, DevicePlan::Keep);
}

#[test]
fn plan_unified_keys() {
    let mut m = std::collections::HashMap::new();
    m.insert("hugetlb.2MB.max".to_string(), "max".to_string());
    let res = LinuxResourcesBuilder::default().unified(m).build().unwrap();
    assert_eq!(
        plan::check("/t", &res, &hybrid_env(), Purpose::Create)
            .unwrap()
            .unified_needed,
        set(&["hugetlb"])
    );
    let mut env = hybrid_env();
    env.mode = Mode::V1;
    env.unified.clear();
    assert!(plan::check("/t", &res, &env, Purpose::Create).is_err());
    let mut m = std::collections::HashMap::new();
    m.insert("../x".to_string(), "1".to_string());
    let res = LinuxResourcesBuilder::default().unified(m).build().unwrap();
    assert!(plan::check("/t", &res, &v2_env(), Purpose::Create).is_err());
}

// ---------------------------------------------------------------- devices

#[test]
fn device_rules_parse_and_format() {
    let r = devices::parse_rule(0, &dev(true, LinuxDeviceType::B, Some(8), None, "mr")).unwrap();
    assert_eq!(r.v1_line(), "b 8:* rm");
    let r = devices::parse_rule(0, &dev(true, LinuxDeviceType::U, Some(4), Some(-1), "")).unwrap();
    assert_eq!(r.v1_line(), "c 4:* rwm");
    let (field, why) =
        devices::parse_rule(3, &dev(true, LinuxDeviceType::C, Some(1), Some(3), "rx")).unwrap_err();
    assert_eq!(field, "linux.resources.devices[3].access");
    assert!(why.contains("'x'"));
    assert!(devices::parse_rule(0, &dev(true, LinuxDeviceType::P, None, None, "r")).is_err());
    let lines: Vec<String> = devices::default_allowed()
        .iter()
        .map(Rule::v1_line)
        .collect();
    for want in [
        "c *:* m",
        "b *:* m",
        "c 1:3 rwm",
        "c 136:* rwm",
        "c 5:2 rwm",
        "c 10:200 rwm",
    ] {
        assert!(lines.iter().any(|l| l == want), "missing {want}");
    }
}

#[test]
fn spec_devices_become_allow_rules() {
    let d = oci_spec::runtime::LinuxDeviceBuilder::default()
        .path("/dev/fuse")
        .typ(LinuxDeviceType::C)
        .major(10)
        .minor(229)
        .build()
        .unwrap();
    let rules = spec_device_rules(&[d]);
    assert_eq!(
        devices::parse_rule(0, &rules[0]).unwrap().v1_line(),
        "c 10:229 rwm"
    );
}

#[test]
fn spec_fifo_gets_no_device_rule() {
    let fifo = oci_spec::runtime::LinuxDeviceBuilder::default()
        .path("/dev/fifo")
        .typ(LinuxDeviceType::P)
        .major(0)
        .minor(0)
        .build()
        .unwrap();
    let null = oci_spec::runtime::LinuxDeviceBuilder::default()
        .path("/dev/e2e-null")
        .typ(LinuxDeviceType::C)
        .major(1)
        .minor(3)
        .build()
        .unwrap();
    let rules = spec_device_rules(&[fifo, null]);
    assert_eq!(rules.len(), 1);
    let res = with_devices(rules);
    assert!(plan::check("/t", &res, &hybrid_env(), Purpose::Create).is_ok());
}

fn res(json: &str) -> LinuxResources {
    serde_json::from_str(json).unwrap()
}

#[test]
fn normalize_drops_what_runc_treats_as_unset() {
    // Docker 20.10's `docker run` and `docker update` resources, and every other zero.
    let n = normalize_resources(&res(
        r#"{"memory":{"limit":0,"reservation":0,"swap":0,"kernel":0,"kernelTCP":0,
            "swappiness":18446744073709551615,"disableOOMKiller":false},
            "cpu":{"shares":0,"quota":0,"period":0,"realtimeRuntime":0,"realtimePeriod":0,
            "cpus":"","mems":""},
            "pids":{"limit":0},
            "blockIO":{"weight":0,"leafWeight":0,"weightDevice":[{"major":8,"minor":0,"weight":0}]},
            "network":{"classID":0}}"#,
    ));
    assert_eq!(n, LinuxResources::default());
    // Real values survive, each zero beside them goes.
    let n = normalize_resources(&res(
        r#"{"memory":{"limit":67108864,"reservation":0,"swap":134217728,"kernel":0,"swappiness":10},
            "cpu":{"shares":0,"quota":-1,"period":100000,"cpus":"0"},
            "pids":{"limit":-1},
            "blockIO":{"weight":0,"weightDevice":[{"major":8,"minor":0,"weight":0,"leafWeight":20},
                                                  {"major":8,"minor":16,"weight":0}],
                       "throttleReadBpsDevice":[{"major":8,"minor":0,"rate":0}]}}"#,
    ));
    let want = res(
        r#"{"memory":{"limit":67108864,"swap":134217728,"swappiness":10},
            "cpu":{"quota":-1,"period":100000,"cpus":"0"},
            "pids":{"limit":-1},
            "blockIO":{"weightDevice":[{"major":8,"minor":0,"leafWeight":20}],
                       "throttleReadBpsDevice":[{"major":8,"minor":0,"rate":0}]}}"#,
    );
    assert_eq!(n, want);
    // `{"cpu":{"shares":0}}` needs no controller at all, not even on a host without cpu.
    let mut env = hybrid_env();
    env.v1.remove("cpu");
    env.v1.remove("blkio");
    let docker = normalize_resources(&res(
        r#"{"memory":{"disableOOMKiller":false},"cpu":{"shares":0},"blockIO":{"weight":0}}"#,
    ));
    assert!(plan::check("/t", &docker, &env, Purpose::Create).is_ok());
}

#[test]
fn plan_checks_kernel_ranges_before_any_write() {
    let cases = [
        (r#"{"cpu":{"shares":1}}"#, "linux.resources.cpu.shares"),
        (r#"{"cpu":{"shares":300000}}"#, "linux.resources.cpu.shares"),
        (r#"{"cpu":{"period":10}}"#, "linux.resources.cpu.period"),
        (
            r#"{"cpu":{"period":2000000}}"#,
            "linux.resources.cpu.period",
        ),
        (r#"{"cpu":{"quota":999}}"#, "linux.resources.cpu.quota"),
        (
            r#"{"blockIO":{"weight":5000}}"#,
            "linux.resources.blockIO.weight",
        ),
        (
            r#"{"blockIO":{"leafWeight":5}}"#,
            "linux.resources.blockIO.leafWeight",
        ),
        (
            r#"{"blockIO":{"weightDevice":[{"major":8,"minor":0,"weight":1001}]}}"#,
            "linux.resources.blockIO.weightDevice[0].weight",
        ),
        (r#"{"memory":{"limit":-2}}"#, "linux.resources.memory.limit"),
        // The same rules as a bundle's linux.resources (hull_specs::validate_resources):
        // update used to accept both.
        (r#"{"cpu":{"quota":-5}}"#, "linux.resources.cpu.quota"),
        (
            r#"{"unified":{"../escape":"1"}}"#,
            "linux.resources.unified[\"../escape\"]",
        ),
    ];
    for (json, field) in cases {
        let err = plan::check("/t", &res(json), &hybrid_env(), Purpose::Update)
            .expect_err(json)
            .to_string();
        assert!(err.contains(field), "{json}: {err}");
    }
    for json in [
        r#"{"cpu":{"shares":2,"quota":-1,"period":1000}}"#,
        r#"{"cpu":{"shares":262144,"quota":1000,"period":1000000}}"#,
        r#"{"blockIO":{"weight":1000}}"#,
        r#"{"memory":{"limit":-1,"swap":-1}}"#,
    ] {
        assert!(
            plan::check("/t", &res(json), &hybrid_env(), Purpose::Update).is_ok(),
            "{json}"
        );
    }
    // cgroup v2: the same 1-1000 weights (converted to io.weight without BFQ), shares
    // are converted to cpu.weight.
    let ok = res(r#"{"cpu":{"shares":1},"blockIO":{"weight":1000}}"#);
    assert!(plan::check("/t", &ok, &v2_env(), Purpose::Update).is_ok());
    let bad = res(r#"{"blockIO":{"weight":10000}}"#);
    assert!(plan::check("/t", &bad, &v2_env(), Purpose::Update).is_err());
}

#[test]
fn io_weight_v2_uses_bfq_or_converts_like_runc() {
    use super::apply::io_weight_v2;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert_eq!(io_weight_v2(dir, 500), None);
    std::fs::write(dir.join("io.weight"), "default 100\n").unwrap();
    assert_eq!(io_weight_v2(dir, 10), Some(("io.weight", 1)));
    assert_eq!(io_weight_v2(dir, 1000), Some(("io.weight", 10000)));
    assert_eq!(io_weight_v2(dir, 500), Some(("io.weight", 4950)));
    assert_eq!(io_weight_v2(dir, 5), None);
    std::fs::write(dir.join("io.bfq.weight"), "default 100\n").unwrap();
    assert_eq!(io_weight_v2(dir, 5), Some(("io.bfq.weight", 5)));
}

#[test]
fn hugetlb_files_per_hierarchy() {
    assert_eq!(
        apply::hugetlb_writes(true, "2MB", -1, |_| true),
        vec![
            ("hugetlb.2MB.max".to_string(), "max".to_string()),
            ("hugetlb.2MB.rsvd.max".to_string(), "max".to_string())
        ]
    );
    assert_eq!(
        apply::hugetlb_writes(true, "1GB", 1 << 30, |_| false),
        vec![("hugetlb.1GB.max".to_string(), (1i64 << 30).to_string())]
    );
    assert_eq!(
        apply::hugetlb_writes(false, "2MB", 4096, |_| true),
        vec![("hugetlb.2MB.limit_in_bytes".to_string(), "4096".to_string())]
    );
}

// ---------------------------------------------------------------- fake trees

fn ctx() -> Ctx<'static> {
    Ctx {
        path: "/t",
        controller: "test",
    }
}

#[test]
fn enable_subtree_on_a_fake_cgroup2_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mid = root.join("hull");
    let leaf = mid.join("c1");
    std::fs::create_dir_all(&leaf).unwrap();
    for d in [root, mid.as_path()] {
        std::fs::write(d.join("cgroup.controllers"), "cpu memory hugetlb\n").unwrap();
        std::fs::write(d.join("cgroup.subtree_control"), "").unwrap();
    }
    enable_subtree(ctx(), root, &leaf, &set(&["hugetlb"]), false).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
        "+hugetlb"
    );
    assert_eq!(
        std::fs::read_to_string(mid.join("cgroup.subtree_control")).unwrap(),
        "+hugetlb"
    );
    assert!(
        !leaf.join("cgroup.subtree_control").exists(),
        "the leaf is not touched"
    );

    // Already enabled: nothing written.
    std::fs::write(root.join("cgroup.subtree_control"), "hugetlb\n").unwrap();
    std::fs::write(mid.join("cgroup.subtree_control"), "hugetlb\n").unwrap();
    enable_subtree(ctx(), root, &leaf, &set(&["hugetlb"]), false).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
        "hugetlb\n"
    );

    // A needed controller the root lacks.
    let err = enable_subtree(ctx(), root, &leaf, &set(&["rdma"]), false).unwrap_err();
    assert!(err.to_string().contains("rdma controller"), "{err}");

    // Nothing needed in hybrid mode: no file is even read.
    enable_subtree(
        ctx(),
        Path::new("/nonexistent"),
        Path::new("/nonexistent/x"),
        &BTreeSet::new(),
        false,
    )
    .unwrap();
}

#[test]
fn cpuset_inherits_down_a_fake_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let leaf = root.join("a").join("b");
    std::fs::create_dir_all(&leaf).unwrap();
    std::fs::write(root.join("cpuset.cpus"), "0-1\n").unwrap();
    std::fs::write(root.join("cpuset.mems"), "0\n").unwrap();
    for d in [root.join("a"), leaf.clone()] {
        std::fs::write(d.join("cpuset.cpus"), "\n").unwrap();
        std::fs::write(d.join("cpuset.mems"), "").unwrap();
    }
    std::fs::write(root.join("a").join("cpuset.cpus"), "1\n").unwrap();
    inherit_cpuset(ctx(), root, &leaf).unwrap();
    assert_eq!(
        std::fs::read_to_string(leaf.join("cpuset.cpus")).unwrap(),
        "1"
    );
    assert_eq!(
        std::fs::read_to_string(leaf.join("cpuset.mems")).unwrap(),
        "0"
    );
}

#[test]
fn deserialized_state_lists_pids_and_destroys() {
    let tmp = tempfile::tempdir().unwrap();
    let pids_dir = tmp.path().join("pids").join("hull").join("c1");
    let mem_dir = tmp.path().join("memory").join("hull").join("c1");
    std::fs::create_dir_all(pids_dir.join("child")).unwrap();
    std::fs::create_dir_all(&mem_dir).unwrap();
    std::fs::write(pids_dir.join("cgroup.procs"), "30\n10\n").unwrap();
    std::fs::write(pids_dir.join("child").join("cgroup.procs"), "20\n10\n").unwrap();
    let json = serde_json::json!({
        "path": "/hull/c1",
        "dirs": { "pids": pids_dir, "memory": mem_dir, "bogus": tmp.path().join("elsewhere") },
    });
    let cg: ContainerCgroup = serde_json::from_value(json).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![10, 20, 30]);

    // Plain directories with files are not empty: clear the fake files first (cgroupfs
    // directories only hold virtual files, which rmdir ignores).
    std::fs::remove_file(pids_dir.join("cgroup.procs")).unwrap();
    std::fs::remove_file(pids_dir.join("child").join("cgroup.procs")).unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    cg.destroy().unwrap();
    assert!(!pids_dir.exists() && !mem_dir.exists());
    assert!(
        elsewhere.exists(),
        "a dir not ending with the cgroup path is left alone"
    );
    cg.destroy().unwrap(); // idempotent

    // The state round-trips, and an old state with only `path` still parses.
    let back: ContainerCgroup = serde_json::from_str(&serde_json::to_string(&cg).unwrap()).unwrap();
    assert_eq!(back, cg);
    let old: ContainerCgroup = serde_json::from_str(r#"{"path":"/hull/x"}"#).unwrap();
    assert!(old.dirs.is_empty());
}

// ---------------------------------------------------------------- root-only, real cgroups

/// Why real-cgroup tests cannot run here, if they cannot.
fn real_cgroups_unavailable() -> Option<String> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    match Layout::current().and_then(|l| l.mode()) {
        Err(e) => Some(format!("no cgroup fs: {e}")),
        Ok(_) => None,
    }
}

macro_rules! require_real_cgroups {
    () => {
        if let Some(why) = real_cgroups_unavailable() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// A uniquely named test cgroup plus a sleeping child; dropping it kills the child and
/// removes the cgroup, even when an assertion failed.
struct Fixture {
    path: String,
    child: Option<std::process::Child>,
}

impl Fixture {
    fn new() -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = format!(
            "/hull-unit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("spawn sleep");
        Fixture {
            path,
            child: Some(child),
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    fn dirs(&self) -> BTreeMap<String, PathBuf> {
        Layout::current().unwrap().dirs(&self.path)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(cg) = ContainerCgroup::load(&self.path) {
            if let Err(e) = cg.destroy() {
                eprintln!("cleanup of {} failed: {e}", self.path);
            }
        }
    }
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

fn test_resources() -> LinuxResources {
    LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(64i64).build().unwrap())
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(50_000i64)
                .period(100_000u64)
                .cpus("0")
                .mems("0")
                .build()
                .unwrap(),
        )
        .devices(vec![
            dev(false, LinuxDeviceType::A, None, None, "rwm"),
            dev(true, LinuxDeviceType::C, Some(10), Some(229), "rwm"),
        ])
        .build()
        .unwrap()
}

#[test]
fn real_create_apply_signal_destroy() {
    require_real_cgroups!();
    let mut fx = Fixture::new();
    let mode = ContainerCgroup::host_mode().unwrap();
    let mut res = test_resources();
    if mode == Mode::V2 {
        // No eBPF device filter: only default-covered rules are accepted on v2.
        res.set_devices(Some(vec![dev(
            false,
            LinuxDeviceType::A,
            None,
            None,
            "rwm",
        )]));
    }
    let cg = ContainerCgroup::create(&fx.path, Some(&res), fx.pid()).expect("create");
    assert_eq!(cg.dirs, fx.dirs());
    for dir in cg.dirs.values() {
        assert!(dir.is_dir(), "{} missing", dir.display());
    }

    if mode == Mode::V2 {
        let d = &cg.dirs[UNIFIED_KEY];
        assert_eq!(read(d, "memory.max"), (64u64 << 20).to_string());
        assert_eq!(read(d, "pids.max"), "64");
        assert_eq!(read(d, "cpu.max"), "50000 100000");
        assert_eq!(read(d, "cpuset.cpus"), "0");
    } else {
        let d = |c| dir_for(&cg.dirs, c).unwrap().1.to_path_buf();
        assert_eq!(
            read(&d("memory"), "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read(&d("pids"), "pids.max"), "64");
        assert_eq!(read(&d("cpu"), "cpu.shares"), "512");
        assert_eq!(read(&d("cpu"), "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(&d("cpu"), "cpu.cfs_period_us"), "100000");
        assert_eq!(read(&d("cpuset"), "cpuset.cpus"), "0");
        assert_eq!(read(&d("cpuset"), "cpuset.mems"), "0");
        let list = read(&d("devices"), "devices.list");
        for want in ["c 10:229 rwm", "c 1:3 rwm", "c 136:* rwm", "c *:* m"] {
            assert!(
                list.lines().any(|l| l == want),
                "{want} not in devices.list:\n{list}"
            );
        }
        assert!(!list.contains("a *:* rwm"), "still allow-all:\n{list}");
    }

    let pids = cg.pids().unwrap();
    assert!(pids.contains(&fx.pid()), "{pids:?} lacks {}", fx.pid());
    let membership = std::fs::read_to_string(format!("/proc/{}/cgroup", fx.pid())).unwrap();
    let joined = membership.lines().filter(|l| l.ends_with(&fx.path)).count();
    assert_eq!(
        joined,
        cg.dirs.len(),
        "not in every hierarchy:\n{membership}"
    );

    // update (hull update) changes a limit live.
    let upd = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(128i64 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    cg.update(&upd).unwrap();
    let (file, dir) = if mode == Mode::V2 {
        ("memory.max", cg.dirs[UNIFIED_KEY].clone())
    } else {
        (
            "memory.limit_in_bytes",
            dir_for(&cg.dirs, "memory").unwrap().1.to_path_buf(),
        )
    };
    assert_eq!(read(&dir, file), (128u64 << 20).to_string());

    let stats = cg.stats().unwrap();
    assert_eq!(stats.pids.current, 1);
    assert!(serde_json::to_string(&stats).unwrap().contains("\"pids\""));

    cg.signal_all(libc::SIGKILL).unwrap();
    let status = fx.child.take().unwrap().wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));

    // destroy from the saved state alone.
    let saved: ContainerCgroup =
        serde_json::from_str(&serde_json::to_string(&cg).unwrap()).unwrap();
    saved.destroy().unwrap();
    for dir in cg.dirs.values() {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
    saved.destroy().unwrap();
}

#[test]
fn real_freeze_and_thaw() {
    require_real_cgroups!();
    let fx = Fixture::new();
    let cg = ContainerCgroup::create(&fx.path, None, fx.pid()).expect("create");
    cg.set_frozen(true).unwrap();
    let state = |cg: &ContainerCgroup| match dir_for(&cg.dirs, "freezer") {
        Some((_, d)) => read(d, "freezer.state"),
        None => read(&cg.dirs[UNIFIED_KEY], "cgroup.freeze"),
    };
    assert!(matches!(state(&cg).as_str(), "FROZEN" | "1"));
    cg.set_frozen(false).unwrap();
    assert!(matches!(state(&cg).as_str(), "THAWED" | "0"));
    // pids() of a cgroup created without resources still works, and signal 0 is harmless.
    assert_eq!(cg.pids().unwrap(), vec![fx.pid()]);
    cg.signal_all(0).unwrap();
}

#[test]
fn real_errors_leave_nothing_behind() {
    require_real_cgroups!();
    let fx = Fixture::new();
    let env = Env::probe(
        &Layout::current().unwrap(),
        ContainerCgroup::host_mode().unwrap(),
    );

    // Refused before anything is created (net_cls is not mounted here, or a bogus size).
    let res = if env.v1.contains("net_cls") {
        LinuxResourcesBuilder::default()
            .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
                .page_size("3MB")
                .limit(1i64)
                .build()
                .unwrap()])
            .build()
            .unwrap()
    } else {
        LinuxResourcesBuilder::default()
            .network(
                LinuxNetworkBuilder::default()
                    .class_id(1u32)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    };
    let err = ContainerCgroup::create(&fx.path, Some(&res), fx.pid()).unwrap_err();
    assert!(matches!(err, CgroupError::Unsupported { .. }), "{err}");
    for dir in fx.dirs().values() {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    // Fails half-way (the kernel rejects a cpu that does not exist): everything removed.
    let res = LinuxResourcesBuilder::default()
        .cpu(LinuxCpuBuilder::default().cpus("4095").build().unwrap())
        .build()
        .unwrap();
    let err = ContainerCgroup::create(&fx.path, Some(&res), fx.pid()).unwrap_err();
    let msg = err.to_string();
    eprintln!("expected error: {msg}");
    assert!(
        msg.contains("linux.resources.cpu") && msg.contains(&fx.path),
        "{msg}"
    );
    for dir in fx.dirs().values() {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn root_create_empty_applies_limits_then_add_process_joins() {
    require_real_cgroups!();
    let fx = Fixture::new();
    let mut res = LinuxResources::default();
    let mut pids = oci_spec::runtime::LinuxPids::default();
    pids.set_limit(33);
    res.set_pids(Some(pids));
    let cg = ContainerCgroup::create_empty(&fx.path, Some(&res)).expect("create_empty");
    assert!(cg.pids().unwrap().is_empty(), "a member before add_process");
    if let Some((_, dir)) = dir_for(&cg.dirs, "pids") {
        assert_eq!(read(dir, "pids.max"), "33");
    }
    cg.add_process(fx.pid()).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![fx.pid()]);
}

#[test]
fn memory_writes_follow_runc() {
    use super::apply::memory_writes;
    let mem = |json: &str| *res(json).memory().as_ref().unwrap();
    let files = |w: Vec<(&str, String, &str)>| -> Vec<String> {
        w.into_iter().map(|(f, v, _)| format!("{f}={v}")).collect()
    };
    // v1, raising above the current limit: memory+swap first.
    let m = mem(r#"{"memory":{"limit":268435456,"swap":536870912}}"#);
    assert_eq!(
        files(memory_writes(false, &m, Some(67108864), true).unwrap()),
        [
            "memory.memsw.limit_in_bytes=536870912",
            "memory.limit_in_bytes=268435456"
        ]
    );
    // v1, lowering: memory first.
    assert_eq!(
        files(memory_writes(false, &m, Some(u64::MAX >> 1), true).unwrap()),
        [
            "memory.limit_in_bytes=268435456",
            "memory.memsw.limit_in_bytes=536870912"
        ]
    );
    // v1, -1 lifts memory+swap too, only when the kernel has it.
    let m = mem(r#"{"memory":{"limit":-1,"reservation":1048576}}"#);
    assert_eq!(
        files(memory_writes(false, &m, Some(1), true).unwrap()),
        [
            "memory.memsw.limit_in_bytes=-1",
            "memory.limit_in_bytes=-1",
            "memory.soft_limit_in_bytes=1048576"
        ]
    );
    assert_eq!(
        files(memory_writes(false, &m, Some(1), false).unwrap()),
        [
            "memory.limit_in_bytes=-1",
            "memory.soft_limit_in_bytes=1048576"
        ]
    );
    // v2: no swap asked for, memory.swap.max untouched; swap is memory+swap minus memory.
    let m = mem(r#"{"memory":{"limit":67108864}}"#);
    assert_eq!(
        files(memory_writes(true, &m, None, true).unwrap()),
        ["memory.max=67108864"]
    );
    let m = mem(r#"{"memory":{"limit":67108864,"swap":134217728,"reservation":1024}}"#);
    assert_eq!(
        files(memory_writes(true, &m, None, true).unwrap()),
        [
            "memory.swap.max=67108864",
            "memory.max=67108864",
            "memory.low=1024"
        ]
    );
    let m = mem(r#"{"memory":{"limit":67108864,"swap":67108864}}"#);
    assert_eq!(
        files(memory_writes(true, &m, None, true).unwrap()),
        ["memory.swap.max=0", "memory.max=67108864"]
    );
    let m = mem(r#"{"memory":{"limit":-1}}"#);
    assert_eq!(
        files(memory_writes(true, &m, None, false).unwrap()),
        ["memory.max=max"]
    );
    // v2 refusals are found by the plan, before any write.
    let err = plan::check(
        "/t",
        &res(r#"{"memory":{"swap":134217728}}"#),
        &v2_env(),
        Purpose::Update,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("linux.resources.memory.swap"), "{err}");
    let err = plan::check(
        "/t",
        &res(r#"{"memory":{"limit":134217728,"swap":67108864}}"#),
        &hybrid_env(),
        Purpose::Update,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("linux.resources.memory.swap"), "{err}");
}

/// `apply` on a fake v1 cpu directory (plain files): a kernel lacking a file refuses a
/// real value before anything is written, and needs no write for the default 0.
#[test]
fn apply_checks_every_file_first_and_skips_absent_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let cpu = tmp.path().join("cpu");
    std::fs::create_dir_all(&cpu).unwrap();
    std::fs::write(cpu.join("cpu.idle"), "0\n").unwrap();
    let env = Env {
        mode: Mode::V1,
        v1: set(&["cpu", "cpuset"]),
        unified: BTreeSet::new(),
        hugepage_sizes: BTreeSet::new(),
    };
    let dirs: BTreeMap<String, PathBuf> = [("cpu".to_string(), cpu.clone())].into();
    let target = super::apply::Target {
        path: "/t",
        dirs: &dirs,
        env: &env,
    };
    let run = |json: &str| {
        let r = normalize_resources(&res(json));
        let p = plan::check("/t", &r, &env, Purpose::Update).unwrap();
        super::apply::apply(&target, &r, &p)
    };
    // No cpu.cfs_burst_us here: burst 5 is refused and cpu.idle stays untouched.
    let err = run(r#"{"cpu":{"idle":1,"burst":5}}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("linux.resources.cpu.burst"), "{err}");
    assert_eq!(
        std::fs::read_to_string(cpu.join("cpu.idle")).unwrap(),
        "0\n"
    );
    // burst 0 is what this kernel does anyway.
    run(r#"{"cpu":{"idle":1,"burst":0}}"#).unwrap();
    assert_eq!(std::fs::read_to_string(cpu.join("cpu.idle")).unwrap(), "1");
    assert!(!cpu.join("cpu.cfs_burst_us").exists());
}

#[test]
fn kernel_threads_are_told_from_processes() {
    // kthreadd is pid 2 in the initial pid namespace, where the tests run.
    if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
        assert!(super::is_kernel_thread(2));
    }
    assert!(!super::is_kernel_thread(std::process::id() as i32));
    assert!(!super::is_kernel_thread(i32::MAX), "no such process");
}
