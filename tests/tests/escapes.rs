//! Escape-CVE regressions: each test attempts the attack and asserts it fails.

use hull_tests::{assert_no_leftovers, hull_only, setup, wait_until, Bundle};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// CVE-2019-5736: a container process holding `/proc/<pid>/exe` of a hull process in the
/// container (here the init blocked before `start`, whose image is hull) must not be able
/// to reopen it for writing once that process is gone — that would overwrite the host's
/// hull binary.
#[test]
fn cve_2019_5736_proc_self_exe_cannot_be_written() {
    let Some(rt) = setup("cve-2019-5736") else {
        return;
    };
    if rt.is_runc() {
        eprintln!("skipped: checks hull's read-only exe mount");
        return;
    }
    // A private copy of the binary under test: if the defence ever fails, this copy, not
    // the suite's binary, is what the test could reach.
    let copy = rt.scratch().join("hull-copy");
    std::fs::copy(hull_tests::runtime::bin_path(), &copy).unwrap();
    let rt_copy = hull_tests::Runtime::with_bin(&copy, "cve-2019-5736-copy");
    let mut b = Bundle::new();
    b.args(&["true"]);
    let id = rt_copy.id();
    rt_copy.create(&id, &b).assert_ok();
    let pid = rt_copy.state_json(&id)["pid"].as_i64().unwrap();
    let exe = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{pid}/exe"))
        .expect("O_PATH open of init's exe");
    rt_copy.call(&["kill", &id, "KILL"]).assert_ok();
    assert!(wait_until(T, || rt_copy.status(&id).as_deref() == Some("stopped")));
    let reopen = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&exe));
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(&reopen)
        .expect_err("the hull binary was writable through /proc/<pid>/exe");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    rt_copy.call(&["delete", &id]).assert_ok();
    // The copy is intact and still runs.
    let o = std::process::Command::new(&copy)
        .arg("--version")
        .output()
        .unwrap();
    assert!(o.status.success());
}

/// The config `hull spec` writes (runc's shape plus hull's secure defaults), made runnable
/// in the bundle `b`: no terminal, `args`, and the bundle's own cgroupsPath so the test's
/// leftover checks find it.
fn hull_spec_config(rt: &hull_tests::Runtime, b: &mut Bundle, args: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    rt.call(&["spec", "--bundle", d]).assert_ok();
    let text = std::fs::read_to_string(dir.path().join("config.json")).expect("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["process"]["terminal"] = serde_json::json!(false);
    v["process"]["args"] = serde_json::json!(args);
    v["linux"]["cgroupsPath"] = serde_json::json!(b.cgroups_path());
    b.config = v;
}

/// The shell's open descriptors, listed by a child (`ls`) so the listing opens none in it.
const LIST_FDS: &str = "ls /proc/$$/fd; true";

/// The fd numbers `ls /proc/$$/fd` printed, sorted.
fn fd_list(out: &str) -> Vec<u32> {
    let mut v: Vec<u32> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

/// CVE-2024-21626, part 1: no descriptor of the host reaches the container but 0-2 and the
/// `--preserve-fds` ones, for init's process and for an exec'd one, even when the runtime
/// itself was handed more open descriptors (here host directories, the dangerous kind).
#[test]
fn cve_2024_21626_only_stdio_and_preserved_fds_reach_the_container() {
    let Some(rt) = setup("cve-2024-21626-fds") else {
        return;
    };
    let mut b = Bundle::new();
    // `; true`: busybox sh would exec a lone command itself, listing ls's own descriptors.
    b.sh(LIST_FDS);
    let dir = |p: &str| std::fs::File::open(p).expect("open a host directory");
    let io = || hull_tests::runtime::Io {
        extra_fds: vec![(3, dir("/")), (4, dir("/tmp")), (5, dir("/etc"))],
        ..Default::default()
    };
    let id = rt.id();
    let o = rt.run_with(&id, &b, &[], io());
    o.assert_ok();
    assert_eq!(fd_list(&o.stdout), vec![0, 1, 2], "{o}");
    let id = rt.id();
    let o = rt.run_with(&id, &b, &["--preserve-fds", "2"], io());
    o.assert_ok();
    assert_eq!(fd_list(&o.stdout), vec![0, 1, 2, 3, 4], "{o}");

    // An exec'd process: same rule.
    let mut b2 = Bundle::new();
    b2.args(&["sleep", "60"]);
    let id = rt.start_running(&b2);
    let mut c = rt.cmd(&["exec", &id, "sh", "-c", LIST_FDS]);
    c.stdin(std::process::Stdio::null());
    let o = rt.exec_cmd(c, io());
    o.assert_ok();
    assert_eq!(fd_list(&o.stdout), vec![0, 1, 2], "{o}");
    let c = rt.cmd(&["exec", "--preserve-fds", "1", &id, "sh", "-c", LIST_FDS]);
    let o = rt.exec_cmd(c, io());
    o.assert_ok();
    assert_eq!(fd_list(&o.stdout), vec![0, 1, 2, 3], "{o}");
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
    assert_no_leftovers(&rt, &b2);
}

/// CVE-2024-21626, part 2: `process.cwd` through `/proc/self/fd/N` must not leave the
/// process in a host directory. Here fd 3 is a host directory handed over on purpose with
/// `--preserve-fds` (the worst case: init really holds it while it changes directory); every
/// other N is tried too. Either hull refuses, or the process runs inside the container: it
/// must never reach a host file through `..`.
#[test]
fn cve_2024_21626_cwd_through_a_host_fd_is_refused() {
    let Some(rt) = setup("cve-2024-21626-cwd") else {
        return;
    };
    // A file only the host has, reached from a host cwd by enough `..`.
    let marker_dir = rt.scratch().join("marker");
    std::fs::create_dir_all(&marker_dir).unwrap();
    let marker = marker_dir.join("secret");
    std::fs::write(&marker, "HOST-SECRET\n").unwrap();
    let up = format!("../../../../../../../../..{}", marker.display());
    let script = format!("cat {up} 2>/dev/null; echo done");
    let host_dir = || std::fs::File::open(&marker_dir).expect("open marker dir");
    for n in 3..=9 {
        let mut b = Bundle::new();
        b.sh(&script).cwd(&format!("/proc/self/fd/{n}"));
        let id = rt.id();
        let o = rt.run_with(
            &id,
            &b,
            &["--preserve-fds", "1"],
            hull_tests::runtime::Io {
                extra_fds: vec![(3, host_dir())],
                ..Default::default()
            },
        );
        assert!(
            !o.stdout.contains("HOST-SECRET"),
            "escaped with fd {n}: {o}"
        );
        if n == 3 && !rt.is_runc() {
            o.assert_fail()
                .assert_error_contains("outside the container's root");
        }
        rt.delete_force(&id);
        assert_no_leftovers(&rt, &b);
    }
    // The same through exec --cwd.
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    let id = rt.start_running(&b);
    let c = rt.cmd(&[
        "exec",
        "--preserve-fds",
        "1",
        "--cwd",
        "/proc/self/fd/3",
        &id,
        "sh",
        "-c",
        &script,
    ]);
    let o = rt.exec_cmd(
        c,
        hull_tests::runtime::Io {
            extra_fds: vec![(3, host_dir())],
            ..Default::default()
        },
    );
    assert!(!o.stdout.contains("HOST-SECRET"), "exec escaped: {o}");
    if !rt.is_runc() {
        o.assert_fail()
            .assert_error_contains("outside the container's root");
    }
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

/// Mount points and filesystem types of the host's mount table, for before/after checks.
fn host_mounts() -> Vec<String> {
    let mut v: Vec<String> = hull_tests::mountinfo()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some(format!("{} {}", f.get(4)?, f.get(sep + 1)?))
        })
        .collect();
    v.sort();
    v
}

/// CVE-2021-30465: a process on the host keeps swapping a mount target directory in the
/// rootfs with a symlink to `/` (atomically, `renameat2(RENAME_EXCHANGE)`, the exploit's
/// technique) while `hull run` mounts tmpfs there again and again. Whatever each run
/// does, nothing may be mounted on the host.
#[test]
fn cve_2021_30465_racing_symlink_swap_never_mounts_on_the_host() {
    let Some(rt) = setup("cve-2021-30465") else {
        return;
    };
    let before = host_mounts();
    let mut b = Bundle::new();
    let mnt = b.rootfs().join("mnt");
    std::fs::create_dir_all(mnt.join("t")).unwrap();
    std::os::unix::fs::symlink("/", mnt.join("link")).unwrap();
    // Many mounts on the racing path (and below it) per run widen the window.
    for i in 0..8 {
        b.mount("/mnt/t", "tmpfs", "tmpfs", &["size=64k"]);
        b.mount(&format!("/mnt/t/d{i}"), "tmpfs", "tmpfs", &["size=64k"]);
    }
    b.args(&["true"]);
    let racer = hull_tests::util::SwapRacer::start(&mnt.join("t"), &mnt.join("link"));
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..25 {
        let id = rt.id();
        let o = rt.run(&id, &b);
        if o.ok() {
            ok += 1;
        } else {
            failed += 1;
        }
        rt.delete_force(&id);
    }
    let swaps = racer.stop();
    assert!(swaps > 0, "the racer never swapped");
    eprintln!("30465 race: {ok} runs succeeded, {failed} refused, {swaps} swaps");
    assert_eq!(host_mounts(), before, "the host's mount table changed");
    // Nothing was mounted over the host's root or over the bundle's files.
    assert!(!hull_tests::mountinfo().contains(b.path().to_str().unwrap()));
    assert_no_leftovers(&rt, &b);
}

/// CVE-2019-16884: a rootfs whose `/proc` is a symlink (here to a directory with a fake
/// `self/attr`) is refused, naming `/proc`.
#[test]
fn cve_2019_16884_symlinked_proc_is_refused() {
    let Some(rt) = setup("cve-2019-16884-link") else {
        return;
    };
    let mut b = Bundle::new();
    let fake = b.rootfs().join("fakeproc");
    std::fs::create_dir_all(fake.join("self/attr")).unwrap();
    std::fs::write(fake.join("self/attr/exec"), "").unwrap();
    std::fs::remove_dir(b.rootfs().join("proc")).unwrap();
    std::os::unix::fs::symlink("/fakeproc", b.rootfs().join("proc")).unwrap();
    b.args(&["true"]);
    let o = rt.run_bundle(&b);
    o.assert_fail().assert_error_contains("/proc");
    // Nothing was written through the fake /proc.
    assert_eq!(
        std::fs::read_to_string(fake.join("self/attr/exec")).unwrap(),
        ""
    );
    assert_no_leftovers(&rt, &b);
}

/// CVE-2019-16884: a bind mount that puts a plain directory over `/proc` (a volume the
/// attacker controls) is refused, before and after the real procfs mount, naming `/proc`.
#[test]
fn cve_2019_16884_directory_bound_over_proc_is_refused() {
    let Some(rt) = setup("cve-2019-16884-bind") else {
        return;
    };
    let fake = rt.scratch().join("fakeproc");
    std::fs::create_dir_all(fake.join("self/attr")).unwrap();
    std::fs::write(fake.join("self/attr/exec"), "").unwrap();
    for proc_first in [true, false] {
        let mut b = Bundle::new();
        if !proc_first {
            b.without_mount("/proc");
        }
        b.bind(&fake, "/proc", &["rbind", "rw"]);
        b.args(&["true"]);
        let o = rt.run_bundle(&b);
        o.assert_fail().assert_error_contains("/proc");
        assert_eq!(
            std::fs::read_to_string(fake.join("self/attr/exec")).unwrap(),
            ""
        );
        assert_no_leftovers(&rt, &b);
    }
}

/// Masked paths stay masked: without CAP_SYS_ADMIN (the `hull spec` capability set) the
/// container cannot unmount the mask over `/proc/kcore` or mount a fresh procfs to see
/// it; `/proc/sys` and `/proc/sysrq-trigger` are read-only. Also the other `hull spec`
/// defaults: noNewPrivileges, the seccomp profile, the pids limit.
#[test]
fn masked_paths_stay_masked_and_proc_sys_is_read_only_with_hull_spec_defaults() {
    let Some(rt) = setup("masked-defaults") else {
        return;
    };
    hull_only!(rt, "runc spec sets no pids limit and no seccomp profile");
    let mut b = Bundle::new();
    let script = r#"
        for p in /proc/kcore /proc/keys /proc/timer_list; do
            test -e $p || continue
            umount $p 2>/dev/null && echo UNMASKED-umount-$p
            umount -l $p 2>/dev/null && echo UNMASKED-lazy-$p
            echo masked-bytes=$(head -c 16 $p | wc -c)
        done
        mount -t proc proc /tmp 2>/dev/null && echo MOUNTED-proc
        d=$(cat /proc/sys/kernel/domainname)
        echo "$d" > /proc/sys/kernel/domainname 2>/dev/null && echo WROTE-proc-sys
        if test -e /proc/sysrq-trigger; then
            echo h > /proc/sysrq-trigger 2>/dev/null && echo WROTE-sysrq
        else
            echo no-sysrq
        fi
        mount -o remount,rw /proc/sys 2>/dev/null && echo REMOUNTED
        grep -E ' /proc/(sys|sysrq-trigger) ' /proc/self/mountinfo | cut -d' ' -f5,6
        grep -E '^(NoNewPrivs|Seccomp|CapEff):' /proc/self/status
        cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max
    "#;
    hull_spec_config(&rt, &mut b, &["sh", "-c", script]);
    let o = rt.run_bundle(&b);
    o.assert_ok();
    for bad in [
        "UNMASKED",
        "MOUNTED-proc",
        "WROTE-proc-sys",
        "WROTE-sysrq",
        "REMOUNTED",
    ] {
        assert!(!o.stdout.contains(bad), "{bad}: {o}");
    }
    // Every masked file present reads empty (the host kernel here has no /proc/kcore).
    assert!(o.stdout.contains("masked-bytes=0"), "{o}");
    assert!(
        !o.stdout
            .lines()
            .any(|l| l.starts_with("masked-bytes=") && l != "masked-bytes=0"),
        "{o}"
    );
    let mut ro_paths = vec!["/proc/sys"];
    if !o.stdout.contains("no-sysrq") {
        ro_paths.push("/proc/sysrq-trigger");
    } else {
        eprintln!("note: this kernel has no /proc/sysrq-trigger; only /proc/sys checked");
    }
    for path in ro_paths {
        let line = o
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{path} ")))
            .unwrap_or_else(|| panic!("{path} is not a mount: {o}"));
        assert!(
            line.split(' ')
                .nth(1)
                .unwrap_or("")
                .split(',')
                .any(|f| f == "ro"),
            "{line}"
        );
    }
    assert!(o.stdout.contains("NoNewPrivs:\t1"), "{o}");
    assert!(o.stdout.contains("Seccomp:\t2"), "{o}");
    // CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE: no CAP_SYS_ADMIN (bit 21).
    assert!(o.stdout.contains("CapEff:\t0000000020000420"), "{o}");
    assert!(
        o.stdout.lines().any(|l| l.trim() == "4096"),
        "pids limit: {o}"
    );
    assert_no_leftovers(&rt, &b);
}

/// The rootfs for the CVE-2025-31133 tests: no tmpfs on `/dev` (the rootfs's own `/dev`
/// is used, as an image may ask), `/proc/cmdline` masked, and a container process that
/// prints how many bytes it can read there (0 when masked by the real `/dev/null`).
fn dev_null_bundle() -> Bundle {
    let mut b = Bundle::new();
    b.without_mount("/dev");
    b.set("/linux/maskedPaths", serde_json::json!(["/proc/cmdline"]));
    b.args(&["sh", "-c", "echo bytes=$(cat /proc/cmdline | wc -c)"]);
    std::fs::create_dir_all(b.rootfs().join("dev")).unwrap();
    b
}

/// CVE-2025-31133: maskedPaths are masked by bind-mounting `/dev/null`. A rootfs whose
/// `/dev/null` is a symlink to a procfs file (here `/proc/version`) must never get that
/// file bound over a masked path: create fails, naming `/dev/null`.
#[test]
fn cve_2025_31133_a_dev_null_symlink_is_refused() {
    let Some(rt) = setup("cve-2025-31133") else {
        return;
    };
    hull_only!(rt, "hull's message names the check");
    let b = dev_null_bundle();
    std::os::unix::fs::symlink("/proc/version", b.rootfs().join("dev/null")).unwrap();
    let o = rt.run_bundle(&b);
    o.assert_fail().assert_error_contains("/dev/null");
    assert!(!o.stdout.contains("bytes="), "{o}");
    assert_no_leftovers(&rt, &b);
}

/// CVE-2025-31133, raced: a host process keeps exchanging the rootfs's real `/dev/null`
/// node with a symlink to `/proc/version` (`renameat2(RENAME_EXCHANGE)`) while containers
/// start. Each run either is refused or masks with the real node (reads 0 bytes); none may
/// read `/proc/version` through the masked path.
#[test]
fn cve_2025_31133_a_racing_dev_null_swap_never_unmasks() {
    let Some(rt) = setup("cve-2025-31133-race") else {
        return;
    };
    let b = dev_null_bundle();
    let dev = b.rootfs().join("dev");
    nix::sys::stat::mknod(
        &dev.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    std::os::unix::fs::symlink("/proc/version", dev.join("null-link")).unwrap();
    let racer = hull_tests::util::SwapRacer::start(&dev.join("null"), &dev.join("null-link"));
    let (mut masked, mut refused) = (0, 0);
    for _ in 0..25 {
        let id = rt.id();
        let o = rt.run(&id, &b);
        if o.ok() {
            assert!(o.stdout.contains("bytes=0"), "masked path readable: {o}");
            masked += 1;
        } else {
            refused += 1;
        }
        rt.delete_force(&id);
    }
    let swaps = racer.stop();
    assert!(swaps > 0, "the racer never swapped");
    eprintln!("31133 race: {masked} runs masked, {refused} refused, {swaps} swaps");
    assert_no_leftovers(&rt, &b);
}

/// CVE-2025-52565: the pty is bound over `/dev/console`; a host process keeps exchanging
/// the rootfs's `/dev/console` (a plain file; no tmpfs on `/dev`) with a symlink to
/// `/proc/sys/kernel/core_pattern` while containers start. Each run is refused or binds the
/// pty on the file checked as `/dev/console`: never on what the symlink names.
#[test]
fn cve_2025_52565_a_racing_dev_console_symlink_never_redirects_the_bind() {
    use hull_tests::console::{read_until, ConsoleSocket};
    let Some(rt) = setup("cve-2025-52565") else {
        return;
    };
    hull_only!(rt, "hull's own /dev/console checks");
    let mut b = Bundle::new();
    b.without_mount("/dev");
    b.terminal(true);
    b.sh("echo console=$(stat -L -c %F /dev/console) core=$(stat -L -c %F /proc/sys/kernel/core_pattern); echo done");
    let dev = b.rootfs().join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("console"), "").unwrap();
    std::os::unix::fs::symlink("/proc/sys/kernel/core_pattern", dev.join("console-link")).unwrap();
    let racer = hull_tests::util::SwapRacer::start(&dev.join("console"), &dev.join("console-link"));
    let (mut bound, mut refused) = (0, 0);
    for _ in 0..25 {
        let sock = ConsoleSocket::new(rt.scratch());
        let id = rt.id();
        let o = rt.create_with(&id, &b, &["--console-socket", sock.path.to_str().unwrap()]);
        if !o.ok() {
            refused += 1;
            rt.delete_force(&id);
            continue;
        }
        let msg = sock.receive(T);
        rt.start(&id).assert_ok();
        let out = read_until(&msg.fds[0], "done", T);
        // (What the name /dev/console shows later depends on the racer, which keeps going
        // while the container runs: the bind stays on the file it was checked on.)
        assert!(
            out.contains("core=regular file") || out.contains("core=regular empty file"),
            "the pty landed on core_pattern: {out:?}"
        );
        bound += 1;
        rt.delete_force(&id);
    }
    let swaps = racer.stop();
    assert!(swaps > 0, "the racer never swapped");
    eprintln!("52565 race: {bound} runs bound the pty, {refused} refused, {swaps} swaps");
    assert!(
        hull_tests::mountinfo()
            .lines()
            .all(|l| !l.contains("core_pattern")),
        "something is mounted on the host's core_pattern"
    );
    assert_no_leftovers(&rt, &b);
}
