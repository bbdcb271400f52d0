//! One good and one bad case (at least) for every rule.

use serde_json::{json, Value};

use crate::defaults::default_spec;
use crate::json::spec_to_value;
use crate::{validate, validate_spec, Spec, SpecError};

fn base() -> Value {
    spec_to_value(&default_spec(false, 0, 0)).expect("serializes")
}

/// The default spec with `edit` applied to its JSON.
fn spec_with(edit: impl FnOnce(&mut Value)) -> Spec {
    let mut v = base();
    edit(&mut v);
    serde_json::from_value(v).expect("edited spec still parses")
}

fn ok(edit: impl FnOnce(&mut Value)) {
    let spec = spec_with(edit);
    if let Err(e) = validate_spec(&spec) {
        panic!("expected valid, got: {e}");
    }
}

fn bad(edit: impl FnOnce(&mut Value)) -> SpecError {
    let spec = spec_with(edit);
    match validate_spec(&spec) {
        Ok(()) => panic!("expected an error"),
        Err(e) => {
            assert!(e.to_string().starts_with("config.json: "), "{e}");
            e
        }
    }
}

fn bad_field(edit: impl FnOnce(&mut Value), field: &str) -> SpecError {
    let e = bad(edit);
    assert_eq!(e.field(), Some(field), "{e}");
    assert!(e.to_string().contains(field), "message names {field}: {e}");
    e
}

fn set_ns(v: &mut Value, ns: Value) {
    v["linux"]["namespaces"] = ns;
}

// ---- ociVersion ----

#[test]
fn oci_version() {
    ok(|_| {});
    ok(|v| v["ociVersion"] = json!("1.2.0"));
    bad_field(|v| v["ociVersion"] = json!("2.0.0"), "ociVersion");
    bad_field(|v| v["ociVersion"] = json!("abc"), "ociVersion");
    let e = bad_field(
        |v| {
            v.as_object_mut().map(|o| o.remove("ociVersion"));
        },
        "ociVersion",
    );
    assert!(matches!(e, SpecError::OciVersion { .. }));
}

// ---- root ----

#[test]
fn root_required() {
    let e = bad_field(
        |v| {
            v.as_object_mut().map(|o| o.remove("root"));
        },
        "root",
    );
    assert!(matches!(e, SpecError::Missing { .. }));
    bad_field(|v| v["root"]["path"] = json!(""), "root.path");
    ok(|v| v["root"]["path"] = json!("/some/abs/rootfs"));
}

#[test]
fn rootfs_is_resolved_against_the_bundle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = std::fs::canonicalize(dir.path()).expect("canonical");
    std::fs::create_dir(bundle.join("rootfs")).expect("mkdir");
    std::fs::create_dir(bundle.join("other")).expect("mkdir");
    std::os::unix::fs::symlink("other", bundle.join("link")).expect("symlink");
    std::fs::write(bundle.join("file"), b"").expect("file");

    let spec = spec_with(|_| {});
    assert_eq!(validate(&spec, &bundle).ok(), Some(bundle.join("rootfs")));

    let abs = bundle.join("other");
    let spec = spec_with(|v| v["root"]["path"] = json!(abs));
    assert_eq!(validate(&spec, &bundle).ok(), Some(abs.clone()));

    let spec = spec_with(|v| v["root"]["path"] = json!("link"));
    assert_eq!(validate(&spec, &bundle).ok(), Some(abs));

    let spec = spec_with(|v| v["root"]["path"] = json!("missing"));
    let e = validate(&spec, &bundle).expect_err("missing rootfs");
    assert!(matches!(e, SpecError::Rootfs { .. }), "{e}");
    assert!(e.to_string().contains("root.path"), "{e}");
    assert!(e.to_string().contains("missing"), "{e}");

    let spec = spec_with(|v| v["root"]["path"] = json!("file"));
    let e = validate(&spec, &bundle).expect_err("file rootfs");
    assert!(matches!(e, SpecError::RootfsNotDir { .. }), "{e}");

    // Pure rules run first: an invalid spec fails before the rootfs is looked at.
    let spec = spec_with(|v| v["ociVersion"] = json!("9.0.0"));
    assert!(matches!(
        validate(&spec, &bundle),
        Err(SpecError::OciVersion { .. })
    ));
}

// ---- process ----

#[test]
fn process_required_with_args_and_cwd() {
    bad_field(
        |v| {
            v.as_object_mut().map(|o| o.remove("process"));
        },
        "process",
    );
    bad_field(|v| v["process"]["args"] = json!([]), "process.args");
    bad_field(
        |v| {
            v["process"].as_object_mut().map(|o| o.remove("args"));
        },
        "process.args",
    );
    bad_field(|v| v["process"]["args"] = json!([""]), "process.args[0]");
    bad_field(
        |v| v["process"]["args"] = json!(["sh", "a\u{0}b"]),
        "process.args[1]",
    );
    ok(|v| v["process"]["args"] = json!(["/bin/true", ""]));

    let e = bad_field(|v| v["process"]["cwd"] = json!("tmp"), "process.cwd");
    assert!(matches!(e, SpecError::NotAbsolute { .. }));
    bad_field(|v| v["process"]["cwd"] = json!(""), "process.cwd");
    ok(|v| v["process"]["cwd"] = json!("/work/dir"));
}

#[test]
fn process_env() {
    ok(|v| v["process"]["env"] = json!(["A=1", "B=", "C=x=y"]));
    bad_field(
        |v| v["process"]["env"] = json!(["A=1", "B"]),
        "process.env[1]",
    );
    bad_field(|v| v["process"]["env"] = json!(["=x"]), "process.env[0]");
}

#[test]
fn process_user() {
    ok(|v| {
        v["process"]["user"] =
            json!({"uid": 1000, "gid": 1000, "umask": 18, "additionalGids": [5, 6]})
    });
    bad_field(
        |v| v["process"]["user"]["uid"] = json!(u32::MAX),
        "process.user.uid",
    );
    bad_field(
        |v| v["process"]["user"]["gid"] = json!(u32::MAX),
        "process.user.gid",
    );
    bad_field(
        |v| v["process"]["user"]["additionalGids"] = json!([1, u32::MAX]),
        "process.user.additionalGids[1]",
    );
    bad_field(
        |v| v["process"]["user"]["umask"] = json!(0o1000),
        "process.user.umask",
    );
}

#[test]
fn process_rlimits() {
    ok(|v| {
        v["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512},
            {"type": "RLIMIT_NPROC", "hard": 10, "soft": 10}
        ])
    });
    let e = bad_field(
        |v| {
            v["process"]["rlimits"] = json!([
                {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
                {"type": "RLIMIT_NOFILE", "hard": 10, "soft": 10}
            ])
        },
        "process.rlimits[1]",
    );
    assert!(e.to_string().contains("RLIMIT_NOFILE"), "{e}");
    assert!(e.to_string().contains("process.rlimits[0]"), "{e}");
    let e = bad_field(
        |v| v["process"]["rlimits"] = json!([{"type": "RLIMIT_CORE", "hard": 1, "soft": 2}]),
        "process.rlimits[0]",
    );
    assert!(matches!(e, SpecError::RlimitSoftAboveHard { .. }));
}

#[test]
fn process_oom_score_adj() {
    ok(|v| v["process"]["oomScoreAdj"] = json!(-1000));
    ok(|v| v["process"]["oomScoreAdj"] = json!(1000));
    bad_field(
        |v| v["process"]["oomScoreAdj"] = json!(1001),
        "process.oomScoreAdj",
    );
    bad_field(
        |v| v["process"]["oomScoreAdj"] = json!(-1001),
        "process.oomScoreAdj",
    );
}

#[test]
fn process_io_priority() {
    ok(|v| v["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 7}));
    bad_field(
        |v| v["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 8}),
        "process.ioPriority.priority",
    );
}

// ---- hostname / domainname ----

#[test]
fn hostname_needs_uts() {
    let e = bad_field(
        |v| set_ns(v, json!([{"type": "pid"}, {"type": "mount"}])),
        "hostname",
    );
    assert!(
        e.to_string()
            .contains("unable to set hostname without a private UTS namespace"),
        "{e}"
    );
    ok(|v| set_ns(v, json!([{"type": "uts", "path": "/proc/1/ns/uts"}])));
    ok(|v| {
        set_ns(v, json!([{"type": "mount"}]));
        v.as_object_mut().map(|o| o.remove("hostname"));
    });
    bad_field(|v| v["hostname"] = json!("x".repeat(65)), "hostname");
    ok(|v| v["hostname"] = json!("x".repeat(64)));
}

#[test]
fn domainname_needs_uts() {
    ok(|v| v["domainname"] = json!("example.org"));
    bad_field(
        |v| {
            v["domainname"] = json!("example.org");
            v.as_object_mut().map(|o| o.remove("hostname"));
            set_ns(v, json!([{"type": "mount"}]));
        },
        "domainname",
    );
}

// ---- namespaces ----

#[test]
fn namespaces_unique_with_absolute_paths() {
    let e = bad_field(
        |v| {
            set_ns(
                v,
                json!([{"type": "pid"}, {"type": "uts"}, {"type": "pid"}]),
            )
        },
        "linux.namespaces[2]",
    );
    assert!(e.to_string().contains("linux.namespaces[0]"), "{e}");
    assert!(e.to_string().contains("\"pid\""), "{e}");
    let e = bad_field(
        |v| {
            set_ns(
                v,
                json!([{"type": "uts"}, {"type": "network", "path": "proc/1/ns/net"}]),
            )
        },
        "linux.namespaces[1].path",
    );
    assert!(matches!(e, SpecError::NotAbsolute { .. }));
    bad_field(
        |v| set_ns(v, json!([{"type": "uts"}, {"type": "network", "path": ""}])),
        "linux.namespaces[1].path",
    );
    ok(|v| {
        set_ns(
            v,
            json!([{"type": "uts"}, {"type": "network", "path": "/var/run/netns/x"},
                   {"type": "time"}, {"type": "cgroup"}, {"type": "ipc"}, {"type": "pid"},
                   {"type": "mount"}]),
        )
    });
}

#[test]
fn new_user_namespace_needs_mappings() {
    let e = bad(|v| {
        set_ns(
            v,
            json!([{"type": "pid"}, {"type": "uts"}, {"type": "user"}]),
        );
        v["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    });
    assert_eq!(
        e.to_string(),
        "config.json: linux.namespaces[2]: namespace \"user\" has no uidMappings"
    );
    let e = bad_field(
        |v| {
            set_ns(v, json!([{"type": "user"}, {"type": "uts"}]));
            v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
        },
        "linux.namespaces[0]",
    );
    assert!(e.to_string().ends_with("has no gidMappings"), "{e}");
    ok(|v| {
        set_ns(v, json!([{"type": "user"}, {"type": "uts"}]));
        v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 65536}]);
        v["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 65536}]);
    });
    // A joined user namespace brings its own mappings.
    ok(|v| {
        set_ns(
            v,
            json!([{"type": "user", "path": "/proc/1/ns/user"}, {"type": "uts"}]),
        )
    });
}

#[test]
fn mappings_need_a_user_namespace() {
    let e = bad_field(
        |v| v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}]),
        "linux.uidMappings",
    );
    assert!(matches!(e, SpecError::MappingsWithoutUserNs { .. }));
    bad_field(
        |v| v["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}]),
        "linux.gidMappings",
    );
    ok(|v| v["linux"]["uidMappings"] = json!([]));
}

fn userns(v: &mut Value, uid: Value, gid: Value) {
    set_ns(v, json!([{"type": "user"}, {"type": "uts"}]));
    v["linux"]["uidMappings"] = uid;
    v["linux"]["gidMappings"] = gid;
}

#[test]
fn mapping_sizes_and_ranges() {
    let one = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    bad_field(
        |v| {
            userns(
                v,
                json!([{"containerID": 0, "hostID": 1000, "size": 0}]),
                one.clone(),
            )
        },
        "linux.uidMappings[0].size",
    );
    bad_field(
        |v| {
            userns(
                v,
                one.clone(),
                json!([{"containerID": 0, "hostID": 1, "size": 1},
                       {"containerID": 1, "hostID": 2, "size": 0}]),
            )
        },
        "linux.gidMappings[1].size",
    );
    bad_field(
        |v| {
            userns(
                v,
                json!([{"containerID": 0, "hostID": 4294967295u32, "size": 2}]),
                one.clone(),
            )
        },
        "linux.uidMappings[0]",
    );
    ok(|v| {
        userns(
            v,
            json!([{"containerID": 0, "hostID": 4294967294u32, "size": 2}]),
            one.clone(),
        )
    });
}

#[test]
fn process_ids_must_be_mapped() {
    let m = json!([{"containerID": 0, "hostID": 100000, "size": 1000}]);
    ok(|v| {
        userns(v, m.clone(), m.clone());
        v["process"]["user"] = json!({"uid": 999, "gid": 5, "additionalGids": [0, 998]});
    });
    bad_field(
        |v| {
            userns(v, m.clone(), m.clone());
            v["process"]["user"] = json!({"uid": 1000, "gid": 0});
        },
        "process.user.uid",
    );
    bad_field(
        |v| {
            userns(v, m.clone(), m.clone());
            v["process"]["user"] = json!({"uid": 0, "gid": 1000});
        },
        "process.user.gid",
    );
    bad_field(
        |v| {
            userns(v, m.clone(), m.clone());
            v["process"]["user"] = json!({"uid": 0, "gid": 0, "additionalGids": [1, 5000]});
        },
        "process.user.additionalGids[1]",
    );
}

// ---- time offsets ----

#[test]
fn time_offsets_need_a_new_time_namespace() {
    let offs = json!({"monotonic": {"secs": 10, "nanosecs": 5}, "boottime": {"secs": -3}});
    let e = bad_field(
        |v| v["linux"]["timeOffsets"] = offs.clone(),
        "linux.timeOffsets",
    );
    assert!(matches!(e, SpecError::NeedsNamespace { .. }));
    ok(|v| {
        set_ns(v, json!([{"type": "uts"}, {"type": "time"}]));
        v["linux"]["timeOffsets"] = offs.clone();
    });
    bad_field(
        |v| {
            set_ns(
                v,
                json!([{"type": "uts"}, {"type": "time", "path": "/proc/1/ns/time"}]),
            );
            v["linux"]["timeOffsets"] = offs.clone();
        },
        "linux.timeOffsets",
    );
    bad_field(
        |v| {
            set_ns(v, json!([{"type": "uts"}, {"type": "time"}]));
            v["linux"]["timeOffsets"] = json!({"realtime": {"secs": 1}});
        },
        "linux.timeOffsets[\"realtime\"]",
    );
    bad_field(
        |v| {
            set_ns(v, json!([{"type": "uts"}, {"type": "time"}]));
            v["linux"]["timeOffsets"] = json!({"boottime": {"nanosecs": 1000000000}});
        },
        "linux.timeOffsets[\"boottime\"].nanosecs",
    );
    // Empty map: nothing to set.
    ok(|v| v["linux"]["timeOffsets"] = json!({}));
}

// ---- sysctl ----

fn sysctl(v: &mut Value, key: &str) {
    v["linux"]["sysctl"] = json!({ key: "1" });
}

#[test]
fn sysctl_net_needs_network_namespace() {
    ok(|v| sysctl(v, "net.ipv4.ip_forward"));
    let e = bad_field(
        |v| {
            sysctl(v, "net.ipv4.ip_forward");
            set_ns(v, json!([{"type": "uts"}, {"type": "ipc"}]));
        },
        "linux.sysctl[\"net.ipv4.ip_forward\"]",
    );
    assert!(e.to_string().contains("network namespace"), "{e}");
    // A joined network namespace (a CRI pod's) is fine.
    ok(|v| {
        sysctl(v, "net.core.somaxconn");
        set_ns(
            v,
            json!([{"type": "uts"}, {"type": "network", "path": "/var/run/netns/p"}]),
        );
    });
}

#[test]
fn sysctl_uts_keys_need_uts() {
    ok(|v| sysctl(v, "kernel.domainname"));
    bad_field(
        |v| {
            sysctl(v, "kernel.domainname");
            v.as_object_mut().map(|o| o.remove("hostname"));
            set_ns(v, json!([{"type": "ipc"}]));
        },
        "linux.sysctl[\"kernel.domainname\"]",
    );
    ok(|v| {
        sysctl(v, "kernel.hostname");
        v.as_object_mut().map(|o| o.remove("hostname"));
    });
    bad_field(
        |v| {
            sysctl(v, "kernel.hostname");
            v.as_object_mut().map(|o| o.remove("hostname"));
            set_ns(v, json!([{"type": "ipc"}]));
        },
        "linux.sysctl[\"kernel.hostname\"]",
    );
    // Conflicts with the hostname field.
    bad_field(
        |v| sysctl(v, "kernel.hostname"),
        "linux.sysctl[\"kernel.hostname\"]",
    );
}

#[test]
fn sysctl_ipc_keys_need_ipc() {
    ok(|v| sysctl(v, "kernel.shmmax"));
    ok(|v| sysctl(v, "fs.mqueue.msg_max"));
    bad_field(
        |v| {
            sysctl(v, "kernel.msgmax");
            set_ns(v, json!([{"type": "uts"}]));
        },
        "linux.sysctl[\"kernel.msgmax\"]",
    );
}

#[test]
fn sysctl_host_wide_keys_rejected() {
    let e = bad_field(
        |v| sysctl(v, "vm.max_map_count"),
        "linux.sysctl[\"vm.max_map_count\"]",
    );
    assert!(
        e.to_string()
            .contains("is not in a separate kernel namespace"),
        "{e}"
    );
}

#[test]
fn sysctl_key_syntax() {
    bad_field(|v| sysctl(v, ""), "linux.sysctl[\"\"]");
    bad_field(
        |v| sysctl(v, "net/ipv4/ip_forward"),
        "linux.sysctl[\"net/ipv4/ip_forward\"]",
    );
    bad_field(|v| sysctl(v, "net..ipv4"), "linux.sysctl[\"net..ipv4\"]");
    bad_field(|v| sysctl(v, ".net.x"), "linux.sysctl[\".net.x\"]");
    bad_field(|v| sysctl(v, "net.x."), "linux.sysctl[\"net.x.\"]");
    bad_field(|v| sysctl(v, "net.a\u{0}b"), "linux.sysctl[\"net.a\\0b\"]");
    ok(|v| sysctl(v, "net.ipv4.conf.all.rp_filter"));
}

// ---- mounts ----

fn mount(v: &mut Value, m: Value) {
    if let Some(list) = v["mounts"].as_array_mut() {
        list.push(m);
    }
}

#[test]
fn mount_destination_absolute() {
    let e = bad(|v| {
        mount(
            v,
            json!({"destination": "tmp", "type": "tmpfs", "source": "tmpfs"}),
        )
    });
    assert!(
        e.to_string()
            .starts_with("config.json: mounts[7].destination \"tmp\" is not an absolute path"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("mount destination tmp is not absolute"),
        "{e}"
    );
    bad_field(
        |v| mount(v, json!({"destination": "", "type": "tmpfs"})),
        "mounts[7].destination",
    );
    let e = bad_field(
        |v| mount(v, json!({"destination": "/a/../../etc", "type": "tmpfs"})),
        "mounts[7].destination",
    );
    assert!(matches!(e, SpecError::DotDot { .. }));
    ok(|v| {
        mount(
            v,
            json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}),
        )
    });
}

#[test]
fn bind_mount_needs_source() {
    bad_field(
        |v| {
            mount(
                v,
                json!({"destination": "/data", "options": ["rbind", "ro"]}),
            )
        },
        "mounts[7].source",
    );
    bad_field(
        |v| {
            mount(
                v,
                json!({"destination": "/data", "type": "bind", "source": ""}),
            )
        },
        "mounts[7].source",
    );
    ok(|v| {
        mount(
            v,
            json!({"destination": "/data", "type": "none", "source": "/srv", "options": ["bind"]}),
        )
    });
    ok(|v| {
        mount(
            v,
            json!({"destination": "/data", "type": "bind", "source": "relative/dir"}),
        )
    });
}

#[test]
fn mount_type_and_source_where_needed() {
    bad_field(
        |v| mount(v, json!({"destination": "/x", "source": "tmpfs"})),
        "mounts[7].type",
    );
    bad_field(
        |v| {
            mount(
                v,
                json!({"destination": "/x", "type": "", "source": "tmpfs"}),
            )
        },
        "mounts[7].type",
    );
    bad_field(
        |v| mount(v, json!({"destination": "/x", "type": "ext4"})),
        "mounts[7].source",
    );
    ok(|v| {
        mount(
            v,
            json!({"destination": "/x", "type": "ext4", "source": "/dev/sdb1"}),
        )
    });
    ok(|v| mount(v, json!({"destination": "/x", "type": "tmpfs"})));
}

#[test]
fn mount_options_non_empty() {
    bad_field(
        |v| {
            mount(
                v,
                json!({"destination": "/x", "type": "tmpfs", "options": ["ro", ""]}),
            )
        },
        "mounts[7].options[1]",
    );
    bad_field(
        |v| {
            mount(
                v,
                json!({"destination": "/x", "type": "tmpfs", "options": ["a\u{0}"]}),
            )
        },
        "mounts[7].options[0]",
    );
    ok(|v| {
        mount(
            v,
            json!({"destination": "/x", "type": "tmpfs", "options": ["nosuid", "size=1m"]}),
        )
    });
}

#[test]
fn idmapped_mounts_unsupported() {
    let e = bad_field(
        |v| {
            mount(
                v,
                json!({"destination": "/x", "type": "bind", "source": "/s", "options": ["idmap"]}),
            )
        },
        "mounts[7].options[0]",
    );
    assert!(matches!(e, SpecError::Unsupported { .. }));
    bad_field(
        |v| {
            mount(
                v,
                json!({"destination": "/x", "type": "bind", "source": "/s",
                       "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}],
                       "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}),
            )
        },
        "mounts[7]",
    );
}

// ---- cgroupsPath ----

#[test]
fn cgroups_path() {
    ok(|v| v["linux"]["cgroupsPath"] = json!("/hull/c1"));
    ok(|v| v["linux"]["cgroupsPath"] = json!("relative/c1"));
    ok(|v| v["linux"]["cgroupsPath"] = json!("system.slice:hull:c1"));
    ok(|v| v["linux"]["cgroupsPath"] = json!("/a..b/c"));
    let e = bad_field(
        |v| v["linux"]["cgroupsPath"] = json!("/hull/../../escape"),
        "linux.cgroupsPath",
    );
    assert!(matches!(e, SpecError::DotDot { .. }));
    bad_field(
        |v| v["linux"]["cgroupsPath"] = json!("../x"),
        "linux.cgroupsPath",
    );
    bad_field(
        |v| v["linux"]["cgroupsPath"] = json!("/a\u{0}b"),
        "linux.cgroupsPath",
    );
}

// ---- devices ----

fn device(v: &mut Value, d: Value) {
    v["linux"]["devices"] = json!([{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}, d]);
}

#[test]
fn devices() {
    ok(|v| {
        device(
            v,
            json!({"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438, "uid": 0, "gid": 0}),
        )
    });
    ok(|v| {
        device(
            v,
            json!({"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}),
        )
    });
    ok(|v| device(v, json!({"path": "/dev/fifo", "type": "p"})));
    ok(|v| {
        device(
            v,
            json!({"path": "/dev/net/tun", "type": "u", "major": 10, "minor": 200}),
        )
    });
    bad_field(
        |v| {
            device(
                v,
                json!({"path": "dev/x", "type": "c", "major": 1, "minor": 1}),
            )
        },
        "linux.devices[1].path",
    );
    bad_field(
        |v| {
            device(
                v,
                json!({"path": "/tmp/x", "type": "c", "major": 1, "minor": 1}),
            )
        },
        "linux.devices[1].path",
    );
    bad_field(
        |v| {
            device(
                v,
                json!({"path": "/dev", "type": "c", "major": 1, "minor": 1}),
            )
        },
        "linux.devices[1].path",
    );
    bad_field(
        |v| {
            device(
                v,
                json!({"path": "/dev/../etc/x", "type": "c", "major": 1, "minor": 1}),
            )
        },
        "linux.devices[1].path",
    );
    bad_field(
        |v| {
            device(
                v,
                json!({"path": "/dev/x", "type": "a", "major": 1, "minor": 1}),
            )
        },
        "linux.devices[1].type",
    );
    bad_field(
        |v| {
            device(
                v,
                json!({"path": "/dev/x", "type": "c", "major": -1, "minor": 1}),
            )
        },
        "linux.devices[1].major",
    );
    bad_field(
        |v| {
            device(
                v,
                json!({"path": "/dev/x", "type": "c", "major": 1, "minor": 1, "fileMode": 0o60666}),
            )
        },
        "linux.devices[1].fileMode",
    );
    bad_field(
        |v| {
            device(
                v,
                json!({"path": "/dev/x", "type": "c", "major": 1, "minor": 1, "fileMode": 0o100666}),
            )
        },
        "linux.devices[1].fileMode",
    );
    // st_mode as is, with the matching type bits, is accepted.
    ok(|v| {
        device(
            v,
            json!({"path": "/dev/x", "type": "c", "major": 1, "minor": 1, "fileMode": 0o20666}),
        )
    });
}

// ---- rootfsPropagation, masked and read-only paths ----

#[test]
fn rootfs_propagation() {
    for p in ["", "private", "rslave", "shared", "runbindable"] {
        ok(|v| v["linux"]["rootfsPropagation"] = json!(p));
    }
    bad_field(
        |v| v["linux"]["rootfsPropagation"] = json!("bogus"),
        "linux.rootfsPropagation",
    );
}

#[test]
fn masked_and_readonly_paths_absolute() {
    ok(|v| v["linux"]["maskedPaths"] = json!(["/proc/kcore"]));
    bad_field(
        |v| v["linux"]["maskedPaths"] = json!(["/proc/kcore", "proc/keys"]),
        "linux.maskedPaths[1]",
    );
    bad_field(
        |v| v["linux"]["readonlyPaths"] = json!(["sys"]),
        "linux.readonlyPaths[0]",
    );
}

// ---- resources ----

#[test]
fn memory_swap_at_least_limit() {
    ok(|v| v["linux"]["resources"]["memory"] = json!({"limit": 100, "swap": 100}));
    ok(|v| v["linux"]["resources"]["memory"] = json!({"limit": 100, "swap": 200}));
    ok(|v| v["linux"]["resources"]["memory"] = json!({"limit": 100, "swap": -1}));
    ok(|v| v["linux"]["resources"]["memory"] = json!({"limit": 100, "swap": 0}));
    ok(|v| v["linux"]["resources"]["memory"] = json!({"swap": 50}));
    let e = bad(|v| v["linux"]["resources"]["memory"] = json!({"limit": 100, "swap": 50}));
    assert!(matches!(e, SpecError::SwapBelowLimit { .. }));
    assert_eq!(e.field(), Some("linux.resources.memory.swap"));
    bad_field(
        |v| v["linux"]["resources"]["memory"] = json!({"limit": -2}),
        "linux.resources.memory.limit",
    );
    bad_field(
        |v| v["linux"]["resources"]["memory"] = json!({"swappiness": 101}),
        "linux.resources.memory.swappiness",
    );
    ok(|v| v["linux"]["resources"]["memory"] = json!({"swappiness": 60}));
    ok(|v| v["linux"]["resources"]["memory"] = json!({"swappiness": u64::MAX}));
}

#[test]
fn cpu_quota_and_period() {
    ok(|v| v["linux"]["resources"]["cpu"] = json!({"quota": 50000}));
    ok(|v| v["linux"]["resources"]["cpu"] = json!({"quota": 50000, "period": 0}));
    ok(|v| v["linux"]["resources"]["cpu"] = json!({"quota": 50000, "period": 100000}));
    ok(|v| v["linux"]["resources"]["cpu"] = json!({"quota": -1, "period": 100000}));
    bad_field(
        |v| v["linux"]["resources"]["cpu"] = json!({"quota": 50000, "period": 500}),
        "linux.resources.cpu.period",
    );
    bad_field(
        |v| v["linux"]["resources"]["cpu"] = json!({"period": 2000000}),
        "linux.resources.cpu.period",
    );
    bad_field(
        |v| v["linux"]["resources"]["cpu"] = json!({"quota": 10}),
        "linux.resources.cpu.quota",
    );
}

#[test]
fn device_cgroup_rules() {
    ok(|v| {
        v["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": -1, "access": "rw"}])
    });
    bad_field(
        |v| v["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwx"}]),
        "linux.resources.devices[0].access",
    );
    bad_field(
        |v| v["linux"]["resources"]["devices"] = json!([{"allow": true, "major": -2}]),
        "linux.resources.devices[0].major",
    );
}

#[test]
fn unified_keys_stay_in_the_cgroup() {
    ok(|v| v["linux"]["resources"]["unified"] = json!({"memory.high": "1G"}));
    bad_field(
        |v| v["linux"]["resources"]["unified"] = json!({"../../cgroup.procs": "1"}),
        "linux.resources.unified[\"../../cgroup.procs\"]",
    );
    bad_field(
        |v| v["linux"]["resources"]["unified"] = json!({"..": "1"}),
        "linux.resources.unified[\"..\"]",
    );
    bad_field(
        |v| v["linux"]["resources"]["unified"] = json!({"": "1"}),
        "linux.resources.unified[\"\"]",
    );
}

#[test]
fn hugepage_page_size() {
    ok(|v| v["linux"]["resources"]["hugepageLimits"] = json!([{"pageSize": "2MB", "limit": 0}]));
    bad_field(
        |v| v["linux"]["resources"]["hugepageLimits"] = json!([{"pageSize": "", "limit": 0}]),
        "linux.resources.hugepageLimits[0].pageSize",
    );
    bad_field(
        |v| v["linux"]["resources"]["hugepageLimits"] = json!([{"pageSize": "../x", "limit": 0}]),
        "linux.resources.hugepageLimits[0].pageSize",
    );
}

// ---- hooks ----

#[test]
fn hooks() {
    ok(|v| {
        v["hooks"] = json!({"prestart": [{"path": "/bin/true", "args": ["true"], "env": ["A=b"], "timeout": 5}],
                            "poststop": [{"path": "/bin/true"}]})
    });
    let e = bad_field(
        |v| v["hooks"] = json!({"createRuntime": [{"path": "/bin/true"}, {"path": "bin/x"}]}),
        "hooks.createRuntime[1].path",
    );
    assert!(matches!(e, SpecError::NotAbsolute { .. }));
    bad_field(
        |v| v["hooks"] = json!({"poststart": [{"path": "/bin/true", "timeout": 0}]}),
        "hooks.poststart[0].timeout",
    );
    bad_field(
        |v| v["hooks"] = json!({"startContainer": [{"path": "/bin/true", "env": ["X"]}]}),
        "hooks.startContainer[0].env[0]",
    );
}

// ---- annotations ----

#[test]
fn annotations() {
    ok(|v| v["annotations"] = json!({"io.hull.isolation": "vm", "org.example": ""}));
    ok(|v| v["annotations"] = json!({"io.hull.isolation": "container"}));
    let e = bad(|v| v["annotations"] = json!({"io.hull.isolation": "kvm"}));
    assert!(matches!(e, SpecError::Isolation { .. }));
    assert!(
        e.to_string().contains("annotations[\"io.hull.isolation\"]"),
        "{e}"
    );
    bad_field(|v| v["annotations"] = json!({"": "x"}), "annotations");
}
