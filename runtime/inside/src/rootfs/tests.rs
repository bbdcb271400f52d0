//! Root-only tests of the whole set-up. Each scenario runs in a forked child that first
//! enters its own mount namespace and makes `/` rprivate, so nothing reaches the host's
//! mount table; the child reports failure through a pipe and its exit status.

use super::mountinfo::{self, MountInfo};
use super::*;
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::{stat, SFlag};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Uid};
use oci_spec::runtime::Spec;
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn skip_unless_root() -> bool {
    if !Uid::effective().is_root() {
        println!("skipped: needs root (mounts, mknod, unshare)");
        return true;
    }
    if !Path::new("/bin/busybox").exists() {
        println!("skipped: /bin/busybox (busybox-static) is not installed");
        return true;
    }
    false
}

type Check = Box<dyn FnOnce() -> Result<(), String>>;

/// Run `f` in a forked child in a new, rprivate mount namespace; panic with its message if
/// it fails.
fn in_child(f: Check) {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    // SAFETY: the child only runs `f` (allocation and system calls, no locks shared with
    // other test threads are taken by these code paths) and leaves with `_exit`.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(r);
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare: {e}"))?;
                sys_mount(
                    None,
                    Path::new("/"),
                    None,
                    libc::MS_REC | libc::MS_PRIVATE,
                    None,
                )
                .map_err(|e| format!("make / rprivate: {e}"))?;
                f()
            }));
            let code = match res {
                Ok(Ok(())) => 0,
                Ok(Err(msg)) => {
                    let _ = std::fs::File::from(w).write_all(msg.as_bytes());
                    1
                }
                Err(_) => 2,
            };
            // SAFETY: `_exit` ends the forked child without running the parent's atexit
            // handlers or unwinding into the test harness.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let mut msg = String::new();
            let _ = std::fs::File::from(r).read_to_string(&mut msg);
            let status = waitpid(child, None).expect("waitpid");
            assert_eq!(status, WaitStatus::Exited(child, 0), "child failed: {msg}");
        }
    }
}

struct Bundle {
    _dir: tempfile::TempDir,
    bundle: PathBuf,
    rootfs: PathBuf,
}

/// A bundle whose rootfs holds `/bin/busybox` (and `sh`), plus `data/` and `file` beside it.
fn bundle() -> Bundle {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = std::fs::canonicalize(dir.path()).expect("canonicalize");
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "proc", "dev", "tmp", "etc", "sys"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
    symlink("busybox", rootfs.join("bin/sh")).expect("symlink");
    std::fs::create_dir(bundle.join("data")).expect("mkdir");
    std::fs::write(bundle.join("data/hello"), b"hello").expect("write");
    std::fs::write(bundle.join("file"), b"file").expect("write");
    Bundle {
        _dir: dir,
        bundle,
        rootfs,
    }
}

fn spec(json: &str) -> Spec {
    serde_json::from_str(json).expect("spec json")
}

fn mounts() -> Result<Vec<MountInfo>, String> {
    mountinfo::read_self().map_err(|e| format!("mountinfo: {e}"))
}

/// The topmost mount at `p`.
fn mount_at(p: &Path) -> Result<MountInfo, String> {
    mounts()?
        .into_iter()
        .rev()
        .find(|m| m.mount_point == p)
        .ok_or_else(|| format!("no mount at {p:?}"))
}

fn ensure(cond: bool, what: impl Into<String>) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what.into())
    }
}

fn e2s(e: RootfsError) -> String {
    e.to_string()
}

const BASE_MOUNTS: &str = r#"
    {"destination":"/proc","type":"proc","source":"proc"},
    {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]},
    {"destination":"/dev/pts","type":"devpts","source":"devpts","options":["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620"]},
    {"destination":"/dev/mqueue","type":"mqueue","source":"mqueue","options":["nosuid","noexec","nodev"]},
    {"destination":"/sys","type":"sysfs","source":"sysfs","options":["nosuid","noexec","nodev","ro"]},
    {"destination":"/tmp","type":"tmpfs","source":"tmpfs","options":["nosuid","nodev","noexec"]},
    {"destination":"/data","type":"bind","source":"data","options":["rbind","ro","nosuid"]},
    {"destination":"/etc/file","type":"none","source":"file","options":["bind"]}
"#;

#[test]
fn mounts_devices_pivot_masked_readonly() {
    if skip_unless_root() {
        return;
    }
    let b = bundle();
    let s = spec(&format!(
        r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs","readonly":true}},
            "mounts":[{BASE_MOUNTS}],
            "linux":{{"maskedPaths":["/proc/keys","/proc/acpi","/proc/nonexistent","/data"],
                      "readonlyPaths":["/proc/sys","/nonexistent"],
                      "devices":[{{"path":"/dev/fuse","type":"c","major":10,"minor":229,"fileMode":384}}]}}}}"#
    ));
    in_child(Box::new(move || {
        let plan = RootfsPlan {
            spec: &s,
            rootfs: &b.rootfs,
            bundle: &b.bundle,
            no_pivot: false,
            in_user_ns: false,
        };
        prepare(&plan).map_err(e2s)?;
        let r = &b.rootfs;

        // The mounts, with their flags, in the child's mount table.
        let tmp = mount_at(&r.join("tmp"))?;
        ensure(tmp.fs_type == "tmpfs", format!("/tmp: {tmp:?}"))?;
        for o in ["nosuid", "nodev", "noexec", "rw"] {
            ensure(tmp.has_option(o), format!("/tmp lacks {o}: {tmp:?}"))?;
        }
        let data = mount_at(&r.join("data"))?;
        ensure(
            data.has_option("ro") && data.has_option("nosuid"),
            format!("/data: {data:?}"),
        )?;
        let proc_ = mount_at(&r.join("proc"))?;
        ensure(proc_.fs_type == "proc", format!("/proc: {proc_:?}"))?;
        let sys = mount_at(&r.join("sys"))?;
        ensure(
            sys.fs_type == "sysfs" && sys.has_option("ro"),
            format!("/sys: {sys:?}"),
        )?;
        let dev = mount_at(&r.join("dev"))?;
        ensure(
            dev.fs_type == "tmpfs" && dev.has_option("nosuid"),
            format!("/dev: {dev:?}"),
        )?;
        ensure(
            dev.super_options.contains("mode=755"),
            format!("/dev: {dev:?}"),
        )?;
        ensure(mount_at(&r.join("dev/pts"))?.fs_type == "devpts", "devpts")?;
        ensure(
            mount_at(&r.join("dev/mqueue"))?.fs_type == "mqueue",
            "mqueue",
        )?;
        ensure(mount_at(&r.join("etc/file")).is_ok(), "file bind")?;
        ensure(
            std::fs::read(r.join("etc/file")).map_err(|e| e.to_string())? == b"file",
            "file bind content",
        )?;

        // A read-only bind is really read-only.
        match std::fs::write(r.join("data/new"), b"x") {
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
            other => return Err(format!("write into ro bind: {other:?}")),
        }

        // Devices.
        let null = std::fs::metadata(r.join("dev/null")).map_err(|e| e.to_string())?;
        ensure(
            null.file_type().is_char_device(),
            "/dev/null is not a char device",
        )?;
        ensure(null.permissions().mode() & 0o777 == 0o666, "/dev/null mode")?;
        let fuse = stat(&r.join("dev/fuse")).map_err(|e| e.to_string())?;
        ensure(fuse.st_mode & 0o7777 == 0o600, "/dev/fuse mode")?;
        ensure(
            fuse.st_rdev == nix::sys::stat::makedev(10, 229),
            "/dev/fuse rdev",
        )?;
        for n in ["zero", "full", "random", "urandom", "tty"] {
            let m = std::fs::metadata(r.join("dev").join(n)).map_err(|e| format!("{n}: {e}"))?;
            ensure(m.file_type().is_char_device(), format!("/dev/{n}"))?;
        }
        let ptmx = std::fs::read_link(r.join("dev/ptmx")).map_err(|e| e.to_string())?;
        ensure(ptmx == Path::new("pts/ptmx"), "ptmx link")?;
        let fd = std::fs::read_link(r.join("dev/fd")).map_err(|e| e.to_string())?;
        ensure(fd == Path::new("/proc/self/fd"), "fd link")?;
        let stderr = std::fs::read_link(r.join("dev/stderr")).map_err(|e| e.to_string())?;
        ensure(stderr == Path::new("/proc/self/fd/2"), "stderr link")?;

        enter(&plan).map_err(e2s)?;
        // The host's root is gone: only the rootfs is visible.
        ensure(
            Path::new("/bin/busybox").exists(),
            "no /bin/busybox after pivot",
        )?;
        ensure(
            !Path::new("/etc/debian_version").exists(),
            "host /etc visible after pivot",
        )?;
        ensure(
            !b.rootfs.exists(),
            "host path of the rootfs visible after pivot",
        )?;
        let ms = mounts()?;
        ensure(
            ms.iter().any(|m| m.mount_point == Path::new("/")),
            "no / mount",
        )?;
        ensure(
            ms.iter().all(|m| !m.mount_point.starts_with(&b.rootfs)),
            format!("host paths in mountinfo: {ms:?}"),
        )?;
        ensure(
            std::env::current_dir().map_err(|e| e.to_string())? == Path::new("/"),
            "cwd",
        )?;

        finish(&plan).map_err(e2s)?;
        // Masked: a file reads as empty, a directory lists nothing.
        let keys = std::fs::read("/proc/keys").map_err(|e| format!("/proc/keys: {e}"))?;
        ensure(keys.is_empty(), "/proc/keys not masked")?;
        let acpi: Vec<_> = std::fs::read_dir("/proc/acpi")
            .map_err(|e| e.to_string())?
            .collect();
        ensure(acpi.is_empty(), "/proc/acpi not masked")?;
        let data: Vec<_> = std::fs::read_dir("/data")
            .map_err(|e| e.to_string())?
            .collect();
        ensure(data.is_empty(), "/data not masked")?;
        ensure(
            mount_at(Path::new("/data"))?.has_option("ro"),
            "masked dir not ro",
        )?;
        // Read-only paths.
        match std::fs::OpenOptions::new()
            .write(true)
            .open("/proc/sys/kernel/hostname")
        {
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
            other => return Err(format!("/proc/sys writable: {other:?}")),
        }
        // root.readonly, and the delayed read-only /sys (not a tmpfs: ro from the start).
        match std::fs::write("/newfile", b"x") {
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
            other => return Err(format!("/ writable: {other:?}")),
        }
        ensure(mount_at(Path::new("/"))?.has_option("ro"), "/ not ro")?;
        // Other mounts stay writable.
        std::fs::write("/tmp/ok", b"x").map_err(|e| format!("/tmp: {e}"))?;
        Ok(())
    }));
}

#[test]
fn symlink_destinations_stay_inside_rootfs() {
    if skip_unless_root() {
        return;
    }
    let b = bundle();
    let host = tempfile::tempdir().expect("tempdir");
    let host_dir = std::fs::canonicalize(host.path()).expect("canonicalize");
    symlink(&host_dir, b.rootfs.join("evil")).expect("symlink");
    let up = format!("../../../../../../../..{}", host_dir.display());
    symlink(&up, b.rootfs.join("tmp/evil2")).expect("symlink");
    symlink("/etc/hostname", b.rootfs.join("evilfile")).expect("symlink");
    let s = spec(
        r#"{"ociVersion":"1.0.2","mounts":[
            {"destination":"/evil","type":"tmpfs","source":"tmpfs"},
            {"destination":"/tmp/evil2/sub","type":"tmpfs","source":"tmpfs"},
            {"destination":"/evilfile","type":"bind","source":"file","options":["bind"]},
            {"destination":"/dev","type":"tmpfs","source":"tmpfs"}]}"#,
    );
    in_child(Box::new(move || {
        let plan = RootfsPlan {
            spec: &s,
            rootfs: &b.rootfs,
            bundle: &b.bundle,
            no_pivot: false,
            in_user_ns: false,
        };
        prepare(&plan).map_err(e2s)?;
        let ms = mounts()?;
        let bad: Vec<_> = ms
            .iter()
            .filter(|m| {
                m.mount_point.starts_with(&host_dir) || m.mount_point == Path::new("/etc/hostname")
            })
            .collect();
        ensure(
            bad.is_empty(),
            format!("mounts landed on the host: {bad:?}"),
        )?;
        let inside = b
            .rootfs
            .join(host_dir.strip_prefix("/").map_err(|e| e.to_string())?);
        ensure(
            mount_at(&inside)?.fs_type == "tmpfs",
            "tmpfs not inside the rootfs",
        )?;
        ensure(
            mount_at(&inside.join("sub"))?.fs_type == "tmpfs",
            "relative escape",
        )?;
        ensure(
            mount_at(&b.rootfs.join("etc/hostname")).is_ok(),
            "file bind not inside",
        )?;
        ensure(
            std::fs::read_dir(&host_dir)
                .map_err(|e| e.to_string())?
                .next()
                .is_none(),
            "host dir was written",
        )?;
        Ok(())
    }));
}

#[test]
fn proc_on_symlink_and_inside_proc_are_refused() {
    if skip_unless_root() {
        return;
    }
    let b = bundle();
    symlink("/tmp", b.rootfs.join("proclink")).expect("symlink");
    let cases = [
        (
            r#"{"destination":"/proclink","type":"proc","source":"proc"}"#,
            "ordinary directory",
        ),
        (
            r#"{"destination":"/proc/self","type":"tmpfs","source":"tmpfs"}"#,
            "inside /proc",
        ),
        (
            r#"{"destination":"/proc","type":"tmpfs","source":"tmpfs"}"#,
            "only a procfs",
        ),
        (
            r#"{"destination":"/x","type":"nosuchfs","source":"none"}"#,
            "mounts[1]: mount nosuchfs on \"/x\": ENODEV",
        ),
        (
            r#"{"destination":"/x","type":"bind","source":"missing","options":["bind"]}"#,
            "ENOENT",
        ),
    ];
    for (m, want) in cases {
        let b2 = bundle();
        symlink("/tmp", b2.rootfs.join("proclink")).expect("symlink");
        let s = spec(&format!(
            r#"{{"ociVersion":"1.0.2","mounts":[{{"destination":"/proc","type":"proc","source":"proc"}},{m}]}}"#
        ));
        let want = want.to_string();
        in_child(Box::new(move || {
            let plan = RootfsPlan {
                spec: &s,
                rootfs: &b2.rootfs,
                bundle: &b2.bundle,
                no_pivot: false,
                in_user_ns: false,
            };
            match prepare(&plan) {
                Err(e) if e.to_string().contains(&want) => Ok(()),
                other => Err(format!("want an error with {want:?}, got {other:?}")),
            }
        }));
    }
    drop(b);
}

#[test]
fn no_pivot_moves_root() {
    if skip_unless_root() {
        return;
    }
    let b = bundle();
    let s = spec(
        r#"{"ociVersion":"1.0.2","mounts":[
            {"destination":"/proc","type":"proc","source":"proc"},
            {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["ro"]}],
            "linux":{"maskedPaths":["/proc/keys"]}}"#,
    );
    in_child(Box::new(move || {
        let plan = RootfsPlan {
            spec: &s,
            rootfs: &b.rootfs,
            bundle: &b.bundle,
            no_pivot: true,
            in_user_ns: false,
        };
        prepare(&plan).map_err(e2s)?;
        enter(&plan).map_err(e2s)?;
        ensure(Path::new("/bin/busybox").exists(), "no /bin/busybox")?;
        ensure(!Path::new("/etc/debian_version").exists(), "host visible")?;
        finish(&plan).map_err(e2s)?;
        ensure(
            std::fs::read("/proc/keys")
                .map_err(|e| e.to_string())?
                .is_empty(),
            "keys",
        )?;
        // The ro tmpfs /dev was made read-only only now, after its nodes were created.
        ensure(Path::new("/dev/null").exists(), "no /dev/null")?;
        ensure(mount_at(Path::new("/dev"))?.has_option("ro"), "/dev not ro")?;
        Ok(())
    }));
}

#[test]
fn cgroup_v1_binds_own_cgroup() {
    if skip_unless_root() {
        return;
    }
    let own = match mounts::own_cgroup_v1_dirs() {
        Ok(d) if !d.is_empty() => d,
        _ => {
            println!("skipped: no cgroup v1 hierarchies on this host");
            return;
        }
    };
    let b = bundle();
    let s = spec(
        r#"{"ociVersion":"1.0.2","mounts":[
            {"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["nosuid","noexec","nodev","relatime","ro"]}]}"#,
    );
    in_child(Box::new(move || {
        let plan = RootfsPlan {
            spec: &s,
            rootfs: &b.rootfs,
            bundle: &b.bundle,
            no_pivot: false,
            in_user_ns: false,
        };
        prepare(&plan).map_err(e2s)?;
        let cg = b.rootfs.join("sys/fs/cgroup");
        let t = mount_at(&cg)?;
        ensure(
            t.fs_type == "tmpfs" && t.has_option("noexec"),
            format!("{t:?}"),
        )?;
        for d in &own {
            let m = mount_at(&cg.join(&d.name))?;
            ensure(m.fs_type == "cgroup", format!("{m:?}"))?;
            ensure(
                m.has_option("ro") && m.has_option("nosuid"),
                format!("not ro: {m:?}"),
            )?;
        }
        Ok(())
    }));
}

#[test]
fn user_ns_devices_are_bind_mounted() {
    if skip_unless_root() {
        return;
    }
    let b = bundle();
    let s = spec(
        r#"{"ociVersion":"1.0.2","mounts":[{"destination":"/dev","type":"tmpfs","source":"tmpfs"}]}"#,
    );
    in_child(Box::new(move || {
        let plan = RootfsPlan {
            spec: &s,
            rootfs: &b.rootfs,
            bundle: &b.bundle,
            no_pivot: false,
            in_user_ns: true,
        };
        prepare(&plan).map_err(e2s)?;
        for n in ["null", "zero", "full", "random", "urandom", "tty"] {
            let p = b.rootfs.join("dev").join(n);
            ensure(mount_at(&p).is_ok(), format!("{p:?} is not a bind mount"))?;
            let st = stat(&p).map_err(|e| e.to_string())?;
            ensure(
                SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR,
                format!("{p:?} is not a char device"),
            )?;
        }
        Ok(())
    }));
}

#[test]
fn tmpcopyup_recursive_attrs_and_root_propagation() {
    if skip_unless_root() {
        return;
    }
    let b = bundle();
    std::fs::write(b.rootfs.join("etc/passwd"), b"root:x:0:0::/:/bin/sh\n").expect("write");
    std::fs::set_permissions(b.rootfs.join("etc"), std::fs::Permissions::from_mode(0o750))
        .expect("chmod");
    symlink("passwd", b.rootfs.join("etc/link")).expect("symlink");
    std::fs::create_dir(b.rootfs.join("etc/sub")).expect("mkdir");
    let s = spec(
        r#"{"ociVersion":"1.0.2","mounts":[
            {"destination":"/proc","type":"proc","source":"proc"},
            {"destination":"/etc","type":"tmpfs","source":"tmpfs","options":["tmpcopyup","nosuid"]},
            {"destination":"/data","type":"bind","source":"data","options":["rbind","rro"]}],
            "linux":{"rootfsPropagation":"rshared"}}"#,
    );
    in_child(Box::new(move || {
        let plan = RootfsPlan {
            spec: &s,
            rootfs: &b.rootfs,
            bundle: &b.bundle,
            no_pivot: false,
            in_user_ns: false,
        };
        prepare(&plan).map_err(e2s)?;
        enter(&plan).map_err(e2s)?;
        finish(&plan).map_err(e2s)?;
        let etc = mount_at(Path::new("/etc"))?;
        ensure(etc.fs_type == "tmpfs", format!("/etc: {etc:?}"))?;
        // The tmpfs took the covered directory's mode and its contents.
        ensure(
            etc.super_options.contains("mode=750"),
            format!("/etc mode: {etc:?}"),
        )?;
        let passwd = std::fs::read("/etc/passwd").map_err(|e| e.to_string())?;
        ensure(passwd.starts_with(b"root:"), "passwd not copied")?;
        let link = std::fs::read_link("/etc/link").map_err(|e| e.to_string())?;
        ensure(link == Path::new("passwd"), "symlink not copied")?;
        ensure(Path::new("/etc/sub").is_dir(), "dir not copied")?;
        ensure(
            mount_at(Path::new("/data"))?.has_option("ro"),
            "rro not applied",
        )?;
        let root = mount_at(Path::new("/"))?;
        ensure(
            root.optional.iter().any(|o| o.starts_with("shared:")),
            format!("/ not shared: {root:?}"),
        )?;
        Ok(())
    }));
}

#[test]
fn cgroup_v1_with_cgroupns_mounts_hierarchies() {
    if skip_unless_root() {
        return;
    }
    let own = match mounts::own_cgroup_v1_dirs() {
        Ok(d) if !d.is_empty() => d,
        _ => {
            println!("skipped: no cgroup v1 hierarchies on this host");
            return;
        }
    };
    let b = bundle();
    let s = spec(
        r#"{"ociVersion":"1.0.2","mounts":[
            {"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["nosuid","noexec","nodev","ro"]}],
            "linux":{"namespaces":[{"type":"mount"},{"type":"cgroup"}]}}"#,
    );
    in_child(Box::new(move || {
        unshare(CloneFlags::CLONE_NEWCGROUP).map_err(|e| format!("unshare cgroupns: {e}"))?;
        let plan = RootfsPlan {
            spec: &s,
            rootfs: &b.rootfs,
            bundle: &b.bundle,
            no_pivot: false,
            in_user_ns: false,
        };
        prepare(&plan).map_err(e2s)?;
        let cg = b.rootfs.join("sys/fs/cgroup");
        for d in &own {
            let m = mount_at(&cg.join(&d.name))?;
            ensure(m.fs_type == "cgroup", format!("{m:?}"))?;
            ensure(m.root == Path::new("/"), format!("not namespaced: {m:?}"))?;
            ensure(
                m.has_option("ro") && m.has_option("noexec"),
                format!("flags: {m:?}"),
            )?;
        }
        Ok(())
    }));
}
