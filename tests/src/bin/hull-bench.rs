//! `hull-bench`: side-by-side benchmark of hull, runc and crun on the same busybox bundle.
//!
//! Run it through `tests/bench/run` (builds hull in release mode first); see
//! `tests/bench/README.md` for what is measured and how to read the table.
//!
//! Conditions, identical for every runtime:
//! * one process (this one, root) in a private mount namespace (`unshare(CLONE_NEWNS)`, `/`
//!   made rprivate) with `/sys/fs/cgroup/unified` unmounted: crun refuses hybrid cgroups, so
//!   all three see cgroup v1 only;
//! * the same bundle (busybox-static rootfs, `runc spec`-shaped config from the test library:
//!   pid/net/ipc/uts/mount namespaces, read-only root, a unique v1 cgroupsPath);
//! * every CLI call is fork+exec'd from here with stdin/stdout `/dev/null` and stderr to a
//!   file, and timed from spawn to `wait4` (so the time includes the runtime's own
//!   process start and dynamic loading);
//! * the three runtimes are interleaved iteration by iteration (rotating order) so load
//!   drift on a shared machine hits all of them alike;
//! * "wait for exit": this process is a child subreaper, so once `create` returns the
//!   container's init is reparented to us and we `waitpid` it directly (pidfd fallback).

use hull_tests::bundle::{Bundle, CGROUP_PARENT};
use hull_tests::containerd::{self, Containerd};
use hull_tests::oci_image::{self, OciImage};
use hull_tests::runtime::Runtime;
use hull_tests::util::unique;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

// ------------------------------------------------------------------------------------------
// Options

struct Opts {
    quick: bool,
    hull: PathBuf,
    runc: PathBuf,
    crun: PathBuf,
    iterations: usize,
    warmup: usize,
    rss_iterations: usize,
    throughput_n: Vec<usize>,
    throughput_reps: usize,
    /// Containers each throughput batch creates in total (at least N, one per worker).
    throughput_total: usize,
    only: Option<Vec<String>>,
    /// Timed `ctr run --rm` iterations of each containerd row (2 with --quick).
    containerd_iterations: usize,
    /// Shim RSS samples per shim/runtime.
    containerd_rss_iterations: usize,
    /// Where `containerd-shim-hull-v2` is (`--shim-dir`).
    shim_dir: Option<PathBuf>,
    out: Option<PathBuf>,
    unshare: bool,
    no_hyperfine: bool,
    /// Exit 3 when hull's `run` or create→start→delete median exceeds crun's by more than
    /// the run's own noise (`--guard`, for CI).
    guard: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: hull-bench [--quick] [--hull PATH] [--runc PATH] [--crun PATH]\n\
         \x20                 [--iterations N] [--warmup N] [--throughput 1,2,8,32]\n\
         \x20                 [--only run,cycle,exec,throughput,rss,size,containerd]\n\
         \x20                 [--out FILE.md] [--no-unshare] [--no-hyperfine] [--guard]\n\
         \x20                 [--shim-dir DIR (of containerd-shim-hull-v2)]\n\
         Prints a Markdown table comparing hull, runc and crun. Must run as root."
    );
    std::process::exit(2)
}

fn parse_opts() -> Opts {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"));
    let mut o = Opts {
        quick: false,
        hull: std::env::var_os("HULL_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| target.join("release/hull")),
        runc: "/usr/sbin/runc".into(),
        crun: "/usr/bin/crun".into(),
        iterations: 40,
        warmup: 3,
        rss_iterations: 10,
        throughput_n: vec![1, 2, 8, 32],
        throughput_reps: 3,
        throughput_total: 64,
        only: None,
        containerd_iterations: 40,
        containerd_rss_iterations: 3,
        shim_dir: None,
        out: None,
        unshare: true,
        no_hyperfine: false,
        guard: false,
    };
    let mut explicit_iters = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--quick" => o.quick = true,
            "--hull" => o.hull = val().into(),
            "--runc" => o.runc = val().into(),
            "--crun" => o.crun = val().into(),
            "--iterations" => explicit_iters = Some(val().parse().unwrap_or_else(|_| usage())),
            "--warmup" => o.warmup = val().parse().unwrap_or_else(|_| usage()),
            "--throughput" => {
                o.throughput_n = val()
                    .split(',')
                    .map(|s| s.parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--only" => o.only = Some(val().split(',').map(str::to_owned).collect()),
            "--out" => o.out = Some(val().into()),
            "--shim-dir" => o.shim_dir = Some(val().into()),
            "--no-unshare" => o.unshare = false,
            "--no-hyperfine" => o.no_hyperfine = true,
            "--guard" => o.guard = true,
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    if o.quick {
        o.iterations = 3;
        o.warmup = 1;
        o.rss_iterations = 2;
        o.throughput_reps = 1;
        o.throughput_total = 0; // one container per worker
        o.containerd_iterations = 2;
        o.containerd_rss_iterations = 1;
    }
    if let Some(n) = explicit_iters {
        o.iterations = n;
        o.containerd_iterations = n;
    }
    if o.guard {
        // A verdict needs a distribution: at least 40 samples of each guarded row (about
        // 10 s for `run` and the cycle together here).
        o.iterations = o.iterations.max(40);
    }
    o
}

impl Opts {
    fn wants(&self, what: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|v| v.iter().any(|x| x == what))
    }
}

// ------------------------------------------------------------------------------------------
// Process helpers

/// Result of one timed CLI call.
struct Call {
    wall: Duration,
    ok: bool,
    /// ru_maxrss of the reaped runtime process (and the descendants it reaped), KiB.
    maxrss_kib: i64,
    /// user+sys CPU of the same.
    cpu: Duration,
    err: String,
}

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// Spawn `cmd` (stdio: /dev/null, stderr to `errlog`), wait for it with wait4.
fn timed(mut cmd: Command, errlog: &Path) -> Call {
    let errf = File::create(errlog).expect("create stderr log");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(errf));
    let t0 = Instant::now();
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Call {
                wall: t0.elapsed(),
                ok: false,
                maxrss_kib: 0,
                cpu: Duration::ZERO,
                err: format!("spawn {cmd:?}: {e}"),
            }
        }
    };
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = loop {
        // SAFETY: wait4 on our own child's pid.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break r;
    };
    let wall = t0.elapsed();
    std::mem::forget(child); // already reaped
    let ok = r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let err = if ok {
        String::new()
    } else {
        let s = std::fs::read_to_string(errlog).unwrap_or_default();
        format!(
            "{:?} failed (status {status:#x}): {}",
            cmd.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
            s.trim().lines().last().unwrap_or("")
        )
    };
    Call {
        wall,
        ok,
        maxrss_kib: ru.ru_maxrss,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        err,
    }
}

/// Wait until container init `pid` has exited: it is our child (we are a subreaper and the
/// runtime that created it has exited), so waitpid; otherwise poll a pidfd.
static WAITED_CHILD: AtomicUsize = AtomicUsize::new(0);
static WAITED_PIDFD: AtomicUsize = AtomicUsize::new(0);

fn wait_exit(pid: i32, timeout: Duration) -> bool {
    let mut st = 0;
    // SAFETY: waitpid on a specific pid.
    let r = unsafe { libc::waitpid(pid, &mut st, 0) };
    if r == pid {
        WAITED_CHILD.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    WAITED_PIDFD.fetch_add(1, Ordering::Relaxed);
    // Not our child: pidfd_open + poll (readable once the process has exited).
    // SAFETY: raw syscall with plain integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return true; // ESRCH: gone already
    }
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    n == 1
}

/// Reap exited orphans (intermediate runtime processes, container inits) that were
/// reparented to us. Only called while no CLI call of ours is in flight.
fn reap_orphans() {
    loop {
        let mut st = 0;
        // SAFETY: non-blocking waitpid for any child.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if r <= 0 {
            break;
        }
    }
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

// ------------------------------------------------------------------------------------------
// Mount namespace set-up

/// Enter a private mount namespace and drop the cgroup2 mount of the hybrid layout.
/// Must run before any thread is started. Returns a description of the conditions.
fn private_mount_ns() -> Result<String, String> {
    // SAFETY: plain syscalls with valid C strings; single-threaded at this point.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNS): {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(format!(
                "make / rprivate: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    // Every runtime keeps its state (`--root`) where it is told: by default runc, crun and
    // hull all use a tmpfs under /run. The harness's roots, bundles and scratch files live
    // in temporary directories: on a tmpfs of this namespace's own, over /tmp, so that
    // no runtime pays for the host's /tmp filesystem (ext4 here, where every new inode
    // scanned the inode table for recently deleted ones: 12% of hull's CPU time).
    // SAFETY: mount(2) with valid C strings, in our private namespace.
    if unsafe {
        libc::mount(
            c"bench-tmp".as_ptr(),
            c"/tmp".as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=1777".as_ptr().cast(),
        )
    } != 0
    {
        return Err(format!(
            "tmpfs on /tmp: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let unified = mi.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() > 4 && f[4] == "/sys/fs/cgroup/unified"
    });
    if unified {
        // SAFETY: umount2 of a path in our private namespace.
        if unsafe { libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(format!(
                "umount /sys/fs/cgroup/unified: {}",
                std::io::Error::last_os_error()
            ));
        }
        // crun, finding no cgroup2 there, still mkdirs `<cgroupsPath>` and writes a plain
        // `cgroup.procs` file under /sys/fs/cgroup/unified, i.e. into the host's /sys/fs/cgroup
        // tmpfs, hidden under the host's cgroup2 mount. A throw-away tmpfs, gone with this
        // namespace, takes those writes instead.
        // SAFETY: mount(2) with valid C strings, in our private namespace.
        if unsafe {
            libc::mount(
                c"bench-unified".as_ptr(),
                c"/sys/fs/cgroup/unified".as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"size=1m,mode=755".as_ptr().cast(),
            )
        } != 0
        {
            return Err(format!(
                "tmpfs on /sys/fs/cgroup/unified: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(
            "private mount namespace (unshare -m, / rprivate), the cgroup2 mount at \
            /sys/fs/cgroup/unified replaced by an empty tmpfs in it: all runtimes see and use \
            cgroup v1 only; a tmpfs over /tmp in it holds every runtime's `--root`, the bundles \
            and scratch files (runc, crun and hull keep state on a tmpfs under /run by default)"
                .into(),
        )
    } else {
        Ok(
            "private mount namespace (unshare -m, / rprivate); no /sys/fs/cgroup/unified mount \
            to remove; a tmpfs over /tmp in it holds every runtime's `--root`, the bundles and \
            scratch files"
                .into(),
        )
    }
}

fn cgroup_mode() -> String {
    let mi = std::fs::read_to_string("/proc/1/mountinfo")
        .or_else(|_| std::fs::read_to_string("/proc/self/mountinfo"))
        .unwrap_or_default();
    let mut v1 = false;
    let mut v2_at = None;
    for l in mi.lines() {
        let Some((pre, post)) = l.split_once(" - ") else {
            continue;
        };
        let mp = pre.split(' ').nth(4).unwrap_or("");
        let fstype = post.split(' ').next().unwrap_or("");
        if !mp.starts_with("/sys/fs/cgroup") {
            continue;
        }
        match fstype {
            "cgroup" => v1 = true,
            "cgroup2" => v2_at = Some(mp.to_string()),
            _ => {}
        }
    }
    match (v1, v2_at) {
        (true, Some(p)) => format!("hybrid (v1 controllers + cgroup2 at {p})"),
        (true, None) => "legacy (cgroup v1 only)".into(),
        (false, Some(_)) => "unified (cgroup v2)".into(),
        _ => "unknown".into(),
    }
}

// ------------------------------------------------------------------------------------------
// Runtimes under test

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Hull,
    Runc,
    Crun,
}
const ALL: [Who; 3] = [Who::Hull, Who::Runc, Who::Crun];

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Hull => "hull",
            Who::Runc => "runc",
            Who::Crun => "crun",
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
}

/// A runtime binary with a private `--root` (the test library's `Runtime`, which also
/// `delete --force`s any id we `adopt` when it drops).
struct Rt {
    who: Who,
    rt: Runtime,
    version: String,
}

impl Rt {
    fn new(who: Who, bin: &Path) -> Rt {
        let version = Command::new(bin)
            .arg("--version")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_else(|e| format!("? ({e})"));
        Rt {
            who,
            rt: Runtime::with_bin(bin, &format!("bench-{}", who.name())),
            version,
        }
    }
    fn errlog(&self, tag: &str) -> PathBuf {
        self.rt.scratch().join(format!("stderr-{tag}.log"))
    }
    fn call(&self, args: &[&str], tag: &str) -> Call {
        timed(self.rt.cmd(args), &self.errlog(tag))
    }
    fn id(&self) -> String {
        unique(&format!("bench-{}", self.who.name()))
    }
    /// Best-effort cleanup of a container left by a failed step.
    fn force_delete(&self, id: &str) {
        let c = self.call(&["delete", "--force", id], "cleanup");
        if !c.ok {
            self.rt.adopt(id); // retried when the Runtime drops
        }
    }
}

/// One create → start → wait for exit → delete cycle. Returns per-phase wall times
/// (create, start, wait, delete) and the create call (for RSS/CPU).
struct Cycle {
    create: Call,
    start: Duration,
    wait: Duration,
    delete: Duration,
    total: Duration,
}

fn cycle(rt: &Rt, b: &Bundle, tag: &str) -> Result<Cycle, String> {
    let id = rt.id();
    let pidf = rt.rt.scratch().join(format!("{id}.pid"));
    let bp = b.path().to_str().unwrap();
    let t0 = Instant::now();
    let create = rt.call(
        &[
            "create",
            "--bundle",
            bp,
            "--pid-file",
            pidf.to_str().unwrap(),
            &id,
        ],
        tag,
    );
    if !create.ok {
        rt.force_delete(&id);
        return Err(create.err);
    }
    let pid: i32 = match std::fs::read_to_string(&pidf)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        Some(p) => p,
        None => {
            rt.force_delete(&id);
            return Err(format!(
                "{}: no pid in {pidf:?} after create",
                rt.who.name()
            ));
        }
    };
    let _ = std::fs::remove_file(&pidf);
    let t1 = Instant::now();
    let start = rt.call(&["start", &id], tag);
    if !start.ok {
        rt.force_delete(&id);
        return Err(start.err);
    }
    let t2 = Instant::now();
    if !wait_exit(pid, Duration::from_secs(30)) {
        rt.force_delete(&id);
        return Err(format!("{}: container {id} did not exit", rt.who.name()));
    }
    let t3 = Instant::now();
    let del = rt.call(&["delete", &id], tag);
    if !del.ok {
        rt.force_delete(&id);
        return Err(del.err);
    }
    let t4 = Instant::now();
    Ok(Cycle {
        create,
        start: t2 - t1,
        wait: t3 - t2,
        delete: t4 - t3,
        total: t4 - t0,
    })
}

// ------------------------------------------------------------------------------------------
// Statistics and table

#[derive(Default, Clone)]
struct Samples(Vec<f64>);

impl Samples {
    fn push(&mut self, v: f64) {
        self.0.push(v)
    }
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    }
    fn pct(&self, p: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        // Linear interpolation between closest ranks.
        let r = p / 100.0 * (v.len() - 1) as f64;
        let (lo, hi) = (r.floor() as usize, r.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (r - lo as f64)
    }
    fn median(&self) -> f64 {
        self.pct(50.0)
    }
    fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }
    fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

/// One cell: a measurement, or why there is none.
#[derive(Clone)]
enum Cell {
    /// median with spread p10–p90 (or min–max for few samples).
    Dist(Samples),
    /// A single number.
    Value(f64),
    /// Not applicable / failed, with the reason.
    Na(String),
}

impl Cell {
    fn median(&self) -> Option<f64> {
        match self {
            Cell::Dist(s) if !s.0.is_empty() => Some(s.median()),
            Cell::Value(v) => Some(*v),
            _ => None,
        }
    }
    fn render(&self, decimals: usize) -> String {
        match self {
            Cell::Dist(s) if s.0.is_empty() => "n/a (no samples)".into(),
            Cell::Dist(s) if s.0.len() < 10 => format!(
                "{:.d$} ({:.d$}–{:.d$})",
                s.median(),
                s.min(),
                s.max(),
                d = decimals
            ),
            Cell::Dist(s) => format!(
                "{:.d$} ({:.d$}–{:.d$})",
                s.median(),
                s.pct(10.0),
                s.pct(90.0),
                d = decimals
            ),
            Cell::Value(v) => format!("{v:.decimals$}"),
            Cell::Na(why) => why.clone(),
        }
    }
}

struct Row {
    name: String,
    unit: &'static str,
    /// true: lower is better (times, sizes); false: higher is better (throughput).
    lower_better: bool,
    decimals: usize,
    cells: [Cell; 3],
    /// Print the hull/crun, hull/runc ratios.
    ratios: bool,
}

impl Row {
    fn new(
        name: impl Into<String>,
        unit: &'static str,
        lower_better: bool,
        cells: [Cell; 3],
    ) -> Row {
        Row {
            name: name.into(),
            unit,
            lower_better,
            decimals: 1,
            cells,
            ratios: true,
        }
    }
    fn decimals(mut self, d: usize) -> Row {
        self.decimals = d;
        self
    }
    fn no_ratios(mut self) -> Row {
        self.ratios = false;
        self
    }
}

fn ratio(r: &Row, other: Who) -> String {
    if !r.ratios {
        return "".into();
    }
    match (r.cells[0].median(), r.cells[other.idx()].median()) {
        (Some(h), Some(o)) if o > 0.0 => format!("{:.2}", h / o),
        _ => "–".into(),
    }
}

fn render_table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("| benchmark | unit | hull | runc | crun | hull/crun | hull/runc |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let arrow = if r.lower_better { "↓" } else { "↑" };
        s.push_str(&format!(
            "| {} | {} {} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.unit,
            arrow,
            r.cells[0].render(r.decimals),
            r.cells[1].render(r.decimals),
            r.cells[2].render(r.decimals),
            ratio(r, Who::Crun),
            ratio(r, Who::Runc),
        ));
    }
    s
}

/// The regression guard (`--guard`): for the `run` and create→start→delete rows, hull's
/// median may exceed crun's by no more than the run's own noise: the larger relative
/// half-spread of the two runtimes' middle half (p25–p75; the tails are where one slow
/// call from another process's work lands, and crun's are long here). Times from one
/// interleaved run, compared as a ratio, never against an absolute figure. Returns one
/// verdict line per row and whether any failed.
fn guard(rows: &[Row]) -> (Vec<String>, bool) {
    let mut lines = vec![];
    let mut failed = false;
    for name in [RUN_ROW, CYCLE_ROW] {
        let Some(r) = rows.iter().find(|r| r.name == name) else {
            continue;
        };
        let (Cell::Dist(h), Cell::Dist(c)) = (&r.cells[Who::Hull.idx()], &r.cells[Who::Crun.idx()])
        else {
            lines.push(format!("{name}: no verdict (a runtime failed; see notes)"));
            failed = true;
            continue;
        };
        let half_spread = |s: &Samples| (s.pct(75.0) - s.pct(25.0)) / 2.0 / s.median();
        let noise = half_spread(h).max(half_spread(c));
        let ratio = h.median() / c.median();
        let ok = ratio <= 1.0 + noise;
        failed |= !ok;
        lines.push(format!(
            "{name}: hull/crun {ratio:.2}, allowed up to {:.2} (noise ±{:.0}%): {}",
            1.0 + noise,
            noise * 100.0,
            if ok { "ok" } else { "REGRESSION" }
        ));
    }
    (lines, failed)
}

// ------------------------------------------------------------------------------------------
// Benchmarks

/// Order of the runtimes in iteration `i`: rotated so none always goes first.
fn order(i: usize) -> [Who; 3] {
    let mut o = ALL;
    o.rotate_left(i % 3);
    o
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Ctx {
    opts: Opts,
    rts: Vec<Rt>,
    /// Runs `/bin/true`.
    bundle_true: Bundle,
    /// Runs `sleep` (exec target).
    bundle_sleep: Bundle,
    notes: Vec<String>,
}

impl Ctx {
    fn rt(&self, w: Who) -> &Rt {
        &self.rts[w.idx()]
    }
    fn note(&mut self, w: Who, what: &str, err: &str) {
        let n = format!("{} {what}: {err}", w.name());
        eprintln!("  ! {n}");
        self.notes.push(n);
    }
}

const RUN_ROW: &str = "`run` /bin/true";
const CYCLE_ROW: &str = "create → start → wait → delete";

/// The kernel's floor for what `run` does: new mount, UTS, IPC, network and pid namespaces
/// and a fork that execs /bin/true (util-linux `unshare`, itself a dynamic binary).
const FLOOR: [&str; 7] = [
    "--mount",
    "--uts",
    "--ipc",
    "--net",
    "--pid",
    "--fork",
    "/bin/true",
];

/// `run /bin/true` of each runtime, interleaved with the kernel floor (`unshare`); returns
/// the `run` row and the row of each runtime's median over the floor's.
fn bench_run(cx: &mut Ctx) -> Vec<Row> {
    let mut s: [Samples; 3] = Default::default();
    let mut failed: [Option<String>; 3] = Default::default();
    let mut floor = Samples::default();
    let mut floor_failed = None;
    let floor_log = cx.rt(Who::Hull).errlog("unshare");
    let bp = cx.bundle_true.path().to_str().unwrap().to_string();
    for i in 0..cx.opts.warmup + cx.opts.iterations {
        if floor_failed.is_none() {
            let mut c = Command::new("unshare");
            c.args(FLOOR);
            let call = timed(c, &floor_log);
            if !call.ok {
                floor_failed = Some(call.err);
            } else if i >= cx.opts.warmup {
                floor.push(ms(call.wall));
            }
        }
        for w in order(i) {
            if failed[w.idx()].is_some() {
                continue;
            }
            let rt = cx.rt(w);
            let id = rt.id();
            let c = rt.call(&["run", "--bundle", &bp, &id], "run");
            if !c.ok {
                rt.force_delete(&id);
                failed[w.idx()] = Some(c.err);
                continue;
            }
            if i >= cx.opts.warmup {
                s[w.idx()].push(ms(c.wall));
            }
        }
        reap_orphans();
    }
    let cells = cells_from(cx, "run", s, failed);
    let over_floor: [Cell; 3] = std::array::from_fn(|i| match (&cells[i], &floor_failed) {
        (_, Some(e)) => Cell::Na(format!("failed: unshare: {e}")),
        (c, None) => match c.median() {
            Some(m) => Cell::Value(m / floor.median()),
            None => c.clone(),
        },
    });
    vec![
        Row::new(RUN_ROW, "ms", true, cells),
        Row::new(
            format!(
                "`run` /bin/true ÷ kernel floor (`unshare {}`, interleaved: {} ms)",
                FLOOR.join(" "),
                Cell::Dist(floor).render(2)
            ),
            "×",
            true,
            over_floor,
        )
        .decimals(2)
        .no_ratios(),
    ]
}

/// Rounds of hyperfine runs per runtime in the whole-process row.
const HYPERFINE_ROUND: usize = 5;

/// The `run` row as an outside observer times it: `hyperfine -N` (no shell) of the whole
/// process, in rounds of 5 runs per runtime, the order rotated each round (the same id is
/// reused: `run` deletes its container on exit). hull-bench's own loop times spawn → wait4
/// of the same command; this row is the cross-check with the tool users measure with.
fn bench_run_hyperfine(cx: &mut Ctx) -> Row {
    let mut cells: [Cell; 3] = [
        Cell::Dist(Samples::default()),
        Cell::Dist(Samples::default()),
        Cell::Dist(Samples::default()),
    ];
    let hf = Path::new("/usr/bin/hyperfine");
    let bp = cx.bundle_true.path().to_str().unwrap().to_string();
    let per_round = HYPERFINE_ROUND.min(cx.opts.iterations.max(2));
    let rounds = cx.opts.iterations.div_ceil(per_round).max(1);
    for (round, w) in (0..rounds).flat_map(|r| order(r).map(move |w| (r, w))) {
        if !hf.exists() {
            cells[w.idx()] = Cell::Na("n/a (no hyperfine)".into());
            continue;
        }
        if !matches!(cells[w.idx()], Cell::Dist(_)) {
            continue;
        }
        let rt = cx.rt(w);
        let id = rt.id();
        let json = rt.rt.scratch().join("hyperfine.json");
        let cmdline = format!(
            "{} --root {} run --bundle {bp} {id}",
            rt.rt.bin.display(),
            rt.rt.root().display()
        );
        let mut c = Command::new(hf);
        c.args(["-N", "--style", "none", "--warmup"])
            .arg(if round == 0 { cx.opts.warmup } else { 1 }.to_string())
            .arg("--runs")
            .arg(per_round.to_string())
            .arg("--export-json")
            .arg(&json)
            .arg(&cmdline);
        let call = timed(c, &rt.errlog("hyperfine"));
        reap_orphans();
        if !call.ok {
            rt.force_delete(&id);
            let e = call.err.clone();
            cx.note(w, "hyperfine run", &e);
            cells[w.idx()] = Cell::Na("failed (see notes)".into());
            continue;
        }
        let v: serde_json::Value = std::fs::read(&json)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if let Cell::Dist(s) = &mut cells[w.idx()] {
            for t in v["results"][0]["times"].as_array().into_iter().flatten() {
                if let Some(t) = t.as_f64() {
                    s.push(t * 1e3);
                }
            }
        }
    }
    Row::new(
        format!(
            "`run` /bin/true, whole process (hyperfine -N, {rounds} rotated rounds of {per_round})"
        ),
        "ms",
        true,
        cells,
    )
}

fn cells_from(cx: &mut Ctx, what: &str, s: [Samples; 3], failed: [Option<String>; 3]) -> [Cell; 3] {
    let mut out: [Cell; 3] = [
        Cell::Na(String::new()),
        Cell::Na(String::new()),
        Cell::Na(String::new()),
    ];
    for w in ALL {
        out[w.idx()] = match &failed[w.idx()] {
            Some(e) => {
                cx.note(w, what, e);
                Cell::Na("failed (see notes)".into())
            }
            None => Cell::Dist(s[w.idx()].clone()),
        };
    }
    out
}

fn bench_cycle(cx: &mut Ctx) -> Vec<Row> {
    let mut total: [Samples; 3] = Default::default();
    let mut create: [Samples; 3] = Default::default();
    let mut start: [Samples; 3] = Default::default();
    let mut wait: [Samples; 3] = Default::default();
    let mut delete: [Samples; 3] = Default::default();
    let mut failed: [Option<String>; 3] = Default::default();
    for i in 0..cx.opts.warmup + cx.opts.iterations {
        for w in order(i) {
            if failed[w.idx()].is_some() {
                continue;
            }
            match cycle(cx.rt(w), &cx.bundle_true, "cycle") {
                Err(e) => failed[w.idx()] = Some(e),
                Ok(c) if i >= cx.opts.warmup => {
                    let k = w.idx();
                    total[k].push(ms(c.total));
                    create[k].push(ms(c.create.wall));
                    start[k].push(ms(c.start));
                    wait[k].push(ms(c.wait));
                    delete[k].push(ms(c.delete));
                }
                Ok(_) => {}
            }
        }
        reap_orphans();
    }
    let f2 = failed.clone();
    vec![
        Row::new(
            CYCLE_ROW,
            "ms",
            true,
            cells_from(cx, "cycle", total, failed),
        ),
        Row::new("  · create", "ms", true, cells_quiet(create, &f2)),
        Row::new("  · start", "ms", true, cells_quiet(start, &f2)),
        Row::new("  · wait for exit", "ms", true, cells_quiet(wait, &f2)).decimals(2),
        Row::new("  · delete", "ms", true, cells_quiet(delete, &f2)),
    ]
}

fn cells_quiet(s: [Samples; 3], failed: &[Option<String>; 3]) -> [Cell; 3] {
    let mut out: [Cell; 3] = [
        Cell::Na(String::new()),
        Cell::Na(String::new()),
        Cell::Na(String::new()),
    ];
    for w in ALL {
        out[w.idx()] = if failed[w.idx()].is_some() {
            Cell::Na("failed".into())
        } else {
            Cell::Dist(s[w.idx()].clone())
        };
    }
    out
}

fn bench_exec(cx: &mut Ctx) -> Row {
    let mut s: [Samples; 3] = Default::default();
    let mut failed: [Option<String>; 3] = Default::default();
    let mut ids: [Option<String>; 3] = Default::default();
    let bp = cx.bundle_sleep.path().to_str().unwrap().to_string();
    for w in ALL {
        let rt = cx.rt(w);
        let id = rt.id();
        rt.rt.adopt(&id);
        let pidf = rt.rt.scratch().join(format!("{id}.pid"));
        let c = rt.call(
            &[
                "create",
                "--bundle",
                &bp,
                "--pid-file",
                pidf.to_str().unwrap(),
                &id,
            ],
            "exec",
        );
        let c = if c.ok {
            rt.call(&["start", &id], "exec")
        } else {
            c
        };
        if !c.ok {
            failed[w.idx()] = Some(c.err);
            continue;
        }
        // Probe once: a runtime without `exec` is reported, not measured.
        let p = rt.call(&["exec", &id, "/bin/true"], "exec");
        if !p.ok {
            failed[w.idx()] = Some(p.err);
        }
        ids[w.idx()] = Some(id);
    }
    for i in 0..cx.opts.warmup + cx.opts.iterations {
        for w in order(i) {
            let (Some(id), None) = (&ids[w.idx()], &failed[w.idx()]) else {
                continue;
            };
            let c = cx.rt(w).call(&["exec", id, "/bin/true"], "exec");
            if !c.ok {
                failed[w.idx()] = Some(c.err);
            } else if i >= cx.opts.warmup {
                s[w.idx()].push(ms(c.wall));
            }
        }
    }
    for w in ALL {
        if let Some(id) = &ids[w.idx()] {
            cx.rt(w).force_delete(id);
        }
    }
    reap_orphans();
    let mut cells: [Cell; 3] = [
        Cell::Na(String::new()),
        Cell::Na(String::new()),
        Cell::Na(String::new()),
    ];
    for w in ALL {
        cells[w.idx()] = match &failed[w.idx()] {
            None => Cell::Dist(s[w.idx()].clone()),
            Some(e) => {
                let unimplemented = w == Who::Hull
                    && [
                        "unrecognized subcommand",
                        "not implemented",
                        "unknown command",
                        "invalid value",
                    ]
                    .iter()
                    .any(|n| e.to_lowercase().contains(n));
                if unimplemented {
                    cx.notes.push(format!("hull exec: {e}"));
                    Cell::Na("n/a (not implemented)".into())
                } else {
                    cx.note(w, "exec", e);
                    Cell::Na("failed (see notes)".into())
                }
            }
        };
    }
    Row::new("`exec` /bin/true (running container)", "ms", true, cells)
}

/// N workers, each with its own bundle (own cgroupsPath), run create→start→wait→delete
/// cycles; containers/s over the whole batch.
fn bench_throughput(cx: &mut Ctx) -> Vec<Row> {
    let max_n = cx.opts.throughput_n.iter().copied().max().unwrap_or(1);
    let bundles: Vec<Arc<Bundle>> = (0..max_n)
        .map(|_| {
            let mut b = Bundle::new();
            b.args(&["/bin/true"]);
            b.write();
            Arc::new(b)
        })
        .collect();
    let mut rows = vec![];
    for &n in &cx.opts.throughput_n.clone() {
        let per_worker = cx.opts.throughput_total.max(n).div_ceil(n);
        let mut s: [Samples; 3] = Default::default();
        let mut failed: [Option<String>; 3] = Default::default();
        for rep in 0..cx.opts.throughput_reps {
            for w in order(rep) {
                if failed[w.idx()].is_some() {
                    continue;
                }
                let rt = cx.rt(w);
                let barrier = Arc::new(Barrier::new(n + 1));
                let (secs, errs) = std::thread::scope(|sc| {
                    let hs: Vec<_> = (0..n)
                        .map(|k| {
                            let b = bundles[k].clone();
                            let barrier = barrier.clone();
                            sc.spawn(move || {
                                barrier.wait();
                                let mut err = None;
                                for _ in 0..per_worker {
                                    if let Err(e) = cycle(rt, &b, &format!("tp{k}")) {
                                        err = Some(e);
                                        break;
                                    }
                                }
                                err
                            })
                        })
                        .collect();
                    barrier.wait();
                    let t0 = Instant::now();
                    let errs: Vec<String> =
                        hs.into_iter().filter_map(|h| h.join().unwrap()).collect();
                    (t0.elapsed().as_secs_f64(), errs)
                });
                reap_orphans();
                if let Some(e) = errs.into_iter().next() {
                    failed[w.idx()] = Some(e);
                    continue;
                }
                s[w.idx()].push((n * per_worker) as f64 / secs);
            }
        }
        let cells = cells_from(cx, &format!("throughput N={n}"), s, failed);
        rows.push(Row::new(
            format!(
                "throughput, N={n} parallel workers ({} containers)",
                n * per_worker
            ),
            "containers/s",
            false,
            cells,
        ));
    }
    rows
}

fn bench_rss(cx: &mut Ctx) -> Vec<Row> {
    let mut rss: [Samples; 3] = Default::default();
    let mut cpu: [Samples; 3] = Default::default();
    let mut failed: [Option<String>; 3] = Default::default();
    for i in 0..cx.opts.rss_iterations {
        for w in order(i) {
            if failed[w.idx()].is_some() {
                continue;
            }
            match cycle(cx.rt(w), &cx.bundle_true, "rss") {
                Err(e) => failed[w.idx()] = Some(e),
                Ok(c) => {
                    rss[w.idx()].push(c.create.maxrss_kib as f64 / 1024.0);
                    cpu[w.idx()].push(ms(c.create.cpu));
                }
            }
        }
        reap_orphans();
    }
    let f2 = failed.clone();
    vec![
        Row::new(
            "peak RSS of `create` (wait4 ru_maxrss)",
            "MiB",
            true,
            cells_from(cx, "rss", rss, failed),
        ),
        Row::new(
            "CPU time of `create` (user+sys)",
            "ms",
            true,
            cells_quiet(cpu, &f2),
        ),
    ]
}

fn bench_size(cx: &Ctx) -> Vec<Row> {
    let mut size: [Cell; 3] = [
        Cell::Na(String::new()),
        Cell::Na(String::new()),
        Cell::Na(String::new()),
    ];
    let mut libs: [Cell; 3] = [
        Cell::Na(String::new()),
        Cell::Na(String::new()),
        Cell::Na(String::new()),
    ];
    for w in ALL {
        let bin = &cx.rt(w).rt.bin;
        size[w.idx()] = match std::fs::metadata(bin) {
            Ok(m) => Cell::Value(m.len() as f64 / (1024.0 * 1024.0)),
            Err(e) => Cell::Na(format!("? ({e})")),
        };
        let ldd = Command::new("ldd").arg(bin).output();
        libs[w.idx()] = match ldd {
            Ok(o) => {
                let s = String::from_utf8_lossy(&o.stdout);
                if s.contains("not a dynamic") || s.contains("statically linked") {
                    Cell::Value(0.0)
                } else {
                    Cell::Value(
                        s.lines()
                            .filter(|l| l.contains("=>") && !l.contains("linux-vdso"))
                            .count() as f64,
                    )
                }
            }
            Err(_) => Cell::Na("? (no ldd)".into()),
        };
    }
    let mut total: [Cell; 3] = [
        Cell::Na(String::new()),
        Cell::Na(String::new()),
        Cell::Na(String::new()),
    ];
    for w in ALL {
        let bin = &cx.rt(w).rt.bin;
        let mut bytes = std::fs::metadata(bin).map_or(0, |m| m.len());
        if let Ok(o) = Command::new("ldd").arg(bin).output() {
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                // "libx.so => /path (0x...)" or "/lib64/ld-linux... (0x...)"
                let path = l
                    .split("=>")
                    .last()
                    .unwrap_or("")
                    .trim()
                    .split(' ')
                    .next()
                    .unwrap_or("");
                if path.starts_with('/') {
                    bytes += std::fs::metadata(path).map_or(0, |m| m.len());
                }
            }
        }
        total[w.idx()] = Cell::Value(bytes as f64 / (1024.0 * 1024.0));
    }
    vec![
        Row::new("binary size", "MiB", true, size).decimals(2),
        Row::new(
            "binary + its shared libraries (incl. libc, ld.so)",
            "MiB",
            true,
            total,
        )
        .decimals(2),
        Row::new("shared libraries loaded (ldd)", "count", true, libs)
            .decimals(0)
            .no_ratios(),
    ]
}

/// How `ctr run` reaches a runtime in the containerd rows.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    /// containerd-shim-runc-v2 (`io.containerd.runc.v2`) with this runtime as `BinaryName`.
    RuncShim(Who),
    /// containerd-shim-hull-v2 (`io.containerd.hull.v2`).
    HullShim,
}
const VIAS: [Via; 4] = [
    Via::RuncShim(Who::Hull),
    Via::RuncShim(Who::Runc),
    Via::RuncShim(Who::Crun),
    Via::HullShim,
];

impl Via {
    fn idx(self) -> usize {
        match self {
            Via::RuncShim(w) => w.idx(),
            Via::HullShim => 3,
        }
    }
    fn name(self) -> String {
        match self {
            Via::RuncShim(w) => format!("containerd-shim-runc-v2 → {}", w.name()),
            Via::HullShim => HULL_SHIM.into(),
        }
    }
}

const HULL_SHIM: &str = "containerd-shim-hull-v2";

/// Where `containerd-shim-hull-v2` is: `--shim-dir`, `$HULL_SHIM_DIR`, next to hull, or the
/// workspace target's release dir.
fn shim_dir(o: &Opts) -> PathBuf {
    if let Some(d) = &o.shim_dir {
        return d.clone();
    }
    if let Some(d) = std::env::var_os("HULL_SHIM_DIR").filter(|d| !d.is_empty()) {
        return d.into();
    }
    let next_to_hull = o.hull.parent().map(Path::to_path_buf).unwrap_or_default();
    if next_to_hull.join(HULL_SHIM).exists() {
        return next_to_hull;
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"))
        .join("release")
}

/// The private containerd of the containerd rows, with the busybox image imported.
struct CdEnv {
    cd: Containerd,
    image: OciImage,
    runc: PathBuf,
    hull: PathBuf,
    crun: PathBuf,
}

impl CdEnv {
    /// `run [extra] --fifo-dir F --cgroup C <runtime options> IMAGE ID ARGS...`
    fn run_args(&self, via: Via, extra: &[&str], id: &str, args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec!["run".into()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend([
            "--fifo-dir".into(),
            self.cd.fifo_dir().display().to_string(),
            "--cgroup".into(),
            format!("{CGROUP_PARENT}/{id}"),
        ]);
        match via {
            Via::RuncShim(w) => {
                v.extend(["--runtime".into(), "io.containerd.runc.v2".into()]);
                let bin = match w {
                    Who::Hull => Some(&self.hull),
                    Who::Crun => Some(&self.crun),
                    // runc: the shim's default ("runc" on PATH) unless another was given.
                    Who::Runc => (self.runc != Path::new("/usr/sbin/runc")).then_some(&self.runc),
                };
                if let Some(b) = bin {
                    v.extend(["--runc-binary".into(), b.display().to_string()]);
                }
                // Never the host's /run/containerd/runc: a root of each runtime's own.
                v.extend([
                    "--runc-root".into(),
                    self.cd.runc_root().join(w.name()).display().to_string(),
                ]);
            }
            Via::HullShim => v.extend(["--runtime".into(), "io.containerd.hull.v2".into()]),
        }
        v.push(self.image.name.clone());
        v.push(id.into());
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// `ctr ARGS` against our containerd, timed like every other CLI call.
    fn timed_ctr(&self, args: &[String]) -> Call {
        let mut cmd = self.cd.ctr_cmd();
        cmd.args(args);
        timed(cmd, &self.cd.scratch().join("ctr-stderr.log"))
    }

    /// Kill and remove task and container `id` (best effort).
    fn remove(&self, id: &str) {
        let _ = self.cd.ctr(&["task", "delete", "-f", id]);
        let _ = self.cd.ctr(&["container", "delete", id]);
    }

    /// `ctr run -d` `n` sleeping containers through `via`, then the memory of the shims
    /// serving them (the distinct parents of their inits) per container, in MiB, each of
    /// [`SHIM_MEM`]: VmRSS, Pss from smaps_rollup (shared pages divided among the processes
    /// mapping them) and RssAnon (private memory no other process can share).
    /// Removes the containers.
    /// `grouped`: the containers carry one pod's CRI sandbox id, which both shims group by.
    fn shim_mem(&self, via: Via, n: usize, grouped: bool) -> Result<[f64; 3], String> {
        let ids: Vec<String> = (0..n).map(|_| unique("bench-cd-mem")).collect();
        let pod = format!("io.kubernetes.cri.sandbox-id={}", unique("bench-pod"));
        let extra: &[&str] = if grouped {
            &["-d", "--annotation", &pod]
        } else {
            &["-d"]
        };
        let mut started = vec![];
        let mut r = Ok(());
        for id in &ids {
            let c = self.timed_ctr(&self.run_args(via, extra, id, &["sleep", "100000"]));
            started.push(id);
            if !c.ok {
                r = Err(c.err);
                break;
            }
        }
        let r = r.and_then(|()| {
            let mut shims = std::collections::BTreeSet::new();
            for id in &ids {
                shims.insert(self.shim_of(via, id)?);
            }
            let mut sum = [0.0; 3];
            for pid in &shims {
                for (s, (_, file, field)) in sum.iter_mut().zip(SHIM_MEM) {
                    *s += kib_field(&format!("/proc/{pid}/{file}"), field)?;
                }
            }
            Ok(sum.map(|kib| kib / 1024.0 / n as f64))
        });
        for id in started {
            self.remove(id);
        }
        r
    }

    /// The pid of the shim serving task `id` (the parent of its init), checked to be one of
    /// our containerd's shims and the binary `via` names.
    fn shim_of(&self, via: Via, id: &str) -> Result<i32, String> {
        let ls = self.cd.ctr(&["task", "ls"]);
        let pid: i32 = ls
            .stdout
            .lines()
            .find_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.first() == Some(&id)).then(|| cols.get(1)?.parse().ok())?
            })
            .ok_or_else(|| format!("task {id} not in `ctr task ls`: {ls}"))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
        // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        let ppid: i32 = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
            .ok_or_else(|| format!("no ppid in /proc/{pid}/stat"))?;
        let shims = self.cd.shim_pids();
        if !shims.contains(&ppid) {
            return Err(format!(
                "parent {ppid} of task {id} (pid {pid}) is not one of our shims {shims:?}"
            ));
        }
        let exe = std::fs::read_link(format!("/proc/{ppid}/exe")).unwrap_or_default();
        let want = match via {
            Via::RuncShim(_) => "containerd-shim-runc-v2",
            Via::HullShim => HULL_SHIM,
        };
        if !exe.ends_with(want) {
            return Err(format!("shim {ppid} is {exe:?}, not {want}"));
        }
        Ok(ppid)
    }
}

/// The shim memory rows' measures: (name, /proc/PID file, field).
const SHIM_MEM: [(&str, &str, &str); 3] = [
    ("VmRSS", "status", "VmRSS:"),
    ("Pss", "smaps_rollup", "Pss:"),
    ("RssAnon", "status", "RssAnon:"),
];

/// Shim memory rows: (containers running, grouped in one pod), each with every SHIM_MEM.
const SHIM_MEM_SIZES: [(usize, bool); 3] = [(1, false), (10, false), (10, true)];

/// A "Field:  N kB" line of a /proc file, in KiB.
fn kib_field(path: &str, field: &str) -> Result<f64, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("{path}: {e}"))?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no {field} in {path}"))
}

/// containerd rows: one private containerd for all of them (`containerd::Containerd`:
/// own config, root, state and socket under a temp dir, started in this mount namespace,
/// stopped by pid on drop), the busybox image imported once, then interleaved
/// `ctr run --rm IMG ID /bin/true` through containerd-shim-runc-v2 driving hull, runc and
/// crun as `BinaryName`, and through containerd-shim-hull-v2; then the VmRSS of the shim
/// serving one running (`sleep`) container, for each of the four.
fn bench_containerd(cx: &mut Ctx) -> Vec<Row> {
    // mem: SHIM_MEM_SIZES × SHIM_MEM, each indexed like VIAS (the runc shim's own
    // memory hardly depends on the runtime it drives: hull's column is its own shim).
    let rows = |time: [Cell; 4], mem: [[Cell; 4]; 9]| {
        let [th, tr, tc, ts] = time;
        let mut v = vec![
            Row::new(
                "`ctr run --rm` /bin/true, containerd-shim-runc-v2 → runtime (BinaryName)",
                "ms",
                true,
                [th, tr.clone(), tc.clone()],
            ),
            Row::new(
                "`ctr run --rm` /bin/true, hull: containerd-shim-hull-v2 (runc, crun: as above)",
                "ms",
                true,
                [ts, tr, tc],
            ),
        ];
        for (i, [_, r, c, s]) in mem.into_iter().enumerate() {
            let (n, grouped) = SHIM_MEM_SIZES[i / SHIM_MEM.len()];
            let what = SHIM_MEM[i % SHIM_MEM.len()].0;
            let pod = if grouped {
                " in one pod (grouped: one shim)"
            } else {
                ""
            };
            v.push(Row::new(
                format!(
                    "shim {what} per running container, {n} running{pod} (hull: containerd-shim-hull-v2; runc, crun: containerd-shim-runc-v2 → runtime)"
                ),
                "MiB",
                true,
                [s, r, c],
            ).decimals(2));
        }
        v
    };
    let all = |c: Cell| [c.clone(), c.clone(), c.clone(), c];
    let all_mem = |c: Cell| -> [[Cell; 4]; 9] { std::array::from_fn(|_| all(c.clone())) };
    if let Some(r) = containerd::skip_reason() {
        eprintln!("hull-bench: containerd rows skipped: {r}");
        return rows(
            all(Cell::Na(format!("skipped: {r}"))),
            all_mem(Cell::Na(format!("skipped: {r}"))),
        );
    }
    let shim_dir = shim_dir(&cx.opts);
    let hull_shim_missing = (!shim_dir.join(HULL_SHIM).is_file()).then(|| {
        format!(
            "skipped: {} missing (cargo build --release -p hull-shim)",
            shim_dir.join(HULL_SHIM).display()
        )
    });
    let opts = containerd::Options {
        path_prepend: vec![shim_dir.clone()],
        cri: None,
    };
    let failed_all = |cx: &mut Ctx, e: String| {
        cx.notes.push(format!("containerd: {e}"));
        eprintln!("  ! containerd: {e}");
        let f = Cell::Na("failed (see notes)".into());
        rows(all(f.clone()), all_mem(f))
    };
    let cd = match Containerd::start(&opts) {
        Ok(cd) => cd,
        Err(e) => return failed_all(cx, e),
    };
    let image = match oci_image::busybox_image(&unique("hull-bench-busybox")) {
        Ok(i) => i,
        Err(e) => return failed_all(cx, format!("busybox image: {e}")),
    };
    let imp = cd.import(&image.tar);
    if !imp.ok() {
        return failed_all(cx, format!("image import: {imp}"));
    }
    let env = CdEnv {
        cd,
        image,
        runc: cx.opts.runc.clone(),
        hull: cx.opts.hull.clone(),
        crun: cx.opts.crun.clone(),
    };
    let mut failed: [Option<String>; 4] = Default::default();
    if let Some(why) = &hull_shim_missing {
        failed[3] = Some(why.clone());
    }
    let iterations = cx.opts.containerd_iterations;
    let mut time: [Samples; 4] = Default::default();
    for i in 0..cx.opts.warmup + iterations {
        let mut ord = VIAS;
        ord.rotate_left(i % 4);
        for via in ord {
            if failed[via.idx()].is_some() {
                continue;
            }
            let id = unique("bench-cd");
            let c = env.timed_ctr(&env.run_args(via, &["--rm"], &id, &["/bin/true"]));
            if !c.ok {
                env.remove(&id);
                failed[via.idx()] = Some(c.err);
                continue;
            }
            if i >= cx.opts.warmup {
                time[via.idx()].push(ms(c.wall));
            }
        }
    }
    // SHIM_MEM_SIZES × SHIM_MEM, by via.
    let mut mem: [[Samples; 4]; 9] = Default::default();
    let mut mem_failed: [Option<String>; 4] = failed.clone();
    mem_failed[Via::RuncShim(Who::Hull).idx()] = Some("skipped".into());
    for (k, (n, grouped)) in SHIM_MEM_SIZES.into_iter().enumerate() {
        let k = SHIM_MEM.len() * k;
        let reps = if n == 1 {
            cx.opts.containerd_rss_iterations
        } else {
            1
        };
        for i in 0..reps {
            let mut ord = VIAS;
            ord.rotate_left(i % 4);
            for via in ord {
                if mem_failed[via.idx()].is_some() {
                    continue;
                }
                match env.shim_mem(via, n, grouped) {
                    Ok(m) => {
                        for (j, v) in m.into_iter().enumerate() {
                            mem[k + j][via.idx()].push(v);
                        }
                    }
                    Err(e) => mem_failed[via.idx()] = Some(format!("{n} running: {e}")),
                }
            }
        }
    }
    let version = env
        .cd
        .ctr(&["version"])
        .stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Version:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let leftover = env.cd.shim_pids();
    drop(env); // cleans the namespace, stops containerd by pid, removes its temp dir
    reap_orphans(); // shims were reparented to us (subreaper)
    cx.notes.push(format!(
        "containerd rows: a private containerd {version} (own root/state/socket under /tmp, \
         stopped afterwards), `ctr run --rm --fifo-dir F --cgroup {CGROUP_PARENT}/ID \
         [--runtime io.containerd.runc.v2 --runc-binary B --runc-root R | --runtime \
         io.containerd.hull.v2] IMG ID /bin/true` (ctr's default spec, not the bundle above), \
         {} timed (+{} warm-up) per shim/runtime, interleaved; shim memory: VmRSS, Pss \
         (smaps_rollup) and RssAnon of the shims (parents of the inits) of 1 (× {}) and of 10 `ctr run -d` \
         sleeping containers (and of 10 carrying one `io.kubernetes.cri.sandbox-id`, which \
         both shims group by: one shim per pod), summed and divided by the number of \
         containers; hull shim from {}",
        iterations,
        cx.opts.warmup,
        cx.opts.containerd_rss_iterations,
        shim_dir.display()
    ));
    if !leftover.is_empty() {
        cx.notes.push(format!(
            "containerd: shims {leftover:?} still running at the end (killed)"
        ));
    }
    let mut cells = |samples: [Samples; 4], failed: [Option<String>; 4], what: &str| {
        let mut out: [Cell; 4] = std::array::from_fn(|_| Cell::Na(String::new()));
        for via in VIAS {
            out[via.idx()] = match &failed[via.idx()] {
                Some(e) if e.starts_with("skipped") => Cell::Na(e.clone()),
                Some(e) => {
                    let n = format!("{} {what}: {e}", via.name());
                    eprintln!("  ! {n}");
                    cx.notes.push(n);
                    Cell::Na("failed (see notes)".into())
                }
                None => Cell::Dist(samples[via.idx()].clone()),
            };
        }
        out
    };
    let t = cells(time, failed, "ctr run --rm");
    let m = mem.map(|s| cells(s, mem_failed.clone(), "shim memory"));
    rows(t, m)
}

// ------------------------------------------------------------------------------------------

fn machine(cx: &Ctx, conditions: &str, load_before: &str, load_after: &str) -> String {
    let kernel = sh("uname -sr");
    let cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2");
    let mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo");
    let os = sh(". /etc/os-release && echo $PRETTY_NAME");
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut s = String::new();
    s.push_str(&format!(
        "- machine: {os}, kernel {kernel}, {nproc} CPUs ({cpu}), {mem} RAM\n"
    ));
    s.push_str(&format!("- cgroups on the host: {}\n", cgroup_mode()));
    s.push_str(&format!(
        "- conditions: {conditions}; runtimes interleaved per iteration, \
        every call fork+exec'd with stdio on /dev/null, container = same busybox bundle \
        (pid/net/ipc/uts/mount namespaces, read-only rootfs, own v1 cgroup), `--root` under /tmp\n"
    ));
    s.push_str(&format!(
        "- iterations: {} timed (+{} warm-up) per latency row, {} for RSS/CPU; throughput: {} rep(s) per N{}\n",
        cx.opts.iterations,
        cx.opts.warmup,
        cx.opts.rss_iterations,
        cx.opts.throughput_reps,
        if cx.opts.quick { " — **--quick: numbers not meaningful**" } else { "" }
    ));
    s.push_str(&format!(
        "- load average (1/5/15 min) before: {load_before}; after: {load_after}\n"
    ));
    for rt in &cx.rts {
        s.push_str(&format!(
            "- {}: `{}` ({})\n",
            rt.who.name(),
            rt.rt.bin.display(),
            rt.version
        ));
    }
    s.push_str("- cells: median (p10–p90; min–max when fewer than 10 samples); ratios are of medians; ↓ lower is better, ↑ higher is better\n");
    s
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let opts = parse_opts();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("hull-bench: must run as root (namespaces, cgroups, mounts)");
        std::process::exit(1);
    }
    // Opened before /tmp is replaced in our namespace (an --out under /tmp stays visible).
    let mut out_file = opts.out.as_ref().map(|p| {
        File::create(p).unwrap_or_else(|e| {
            eprintln!("hull-bench: creating {}: {e}", p.display());
            std::process::exit(1)
        })
    });
    // Before any thread exists (unshare(CLONE_NEWNS) fails in a multi-threaded process).
    let conditions = if opts.unshare {
        match private_mount_ns() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("hull-bench: {e}");
                std::process::exit(1);
            }
        }
    } else {
        "--no-unshare: the caller's mount namespace, as is".into()
    };
    // Container inits are reparented to us once `create` exits: wait for them directly.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    for (w, p) in [
        (Who::Hull, &opts.hull),
        (Who::Runc, &opts.runc),
        (Who::Crun, &opts.crun),
    ] {
        if !p.is_file() {
            eprintln!(
                "hull-bench: {} binary not found at {} (tests/bench/run builds hull and installs runc/crun)",
                w.name(),
                p.display()
            );
            std::process::exit(1);
        }
    }
    let rts = vec![
        Rt::new(Who::Hull, &opts.hull),
        Rt::new(Who::Runc, &opts.runc),
        Rt::new(Who::Crun, &opts.crun),
    ];
    let mut bundle_true = Bundle::new();
    bundle_true.args(&["/bin/true"]);
    bundle_true.write();
    let mut bundle_sleep = Bundle::new();
    bundle_sleep.args(&["sleep", "100000"]);
    bundle_sleep.write();
    let load_before = loadavg();
    let mut cx = Ctx {
        opts,
        rts,
        bundle_true,
        bundle_sleep,
        notes: vec![],
    };
    let t0 = Instant::now();
    let mut rows = vec![];
    let step = |what: &str| eprintln!("hull-bench: {what} ({:.0?} so far)", t0.elapsed());
    if cx.opts.wants("run") {
        step("run /bin/true");
        rows.extend(bench_run(&mut cx));
        if !cx.opts.no_hyperfine {
            rows.push(bench_run_hyperfine(&mut cx));
        }
    }
    if cx.opts.wants("cycle") {
        step("create → start → wait → delete");
        rows.extend(bench_cycle(&mut cx));
    }
    if cx.opts.wants("exec") {
        step("exec");
        rows.push(bench_exec(&mut cx));
    }
    if cx.opts.wants("throughput") {
        step("throughput");
        rows.extend(bench_throughput(&mut cx));
    }
    if cx.opts.wants("rss") {
        step("peak RSS / CPU of create");
        rows.extend(bench_rss(&mut cx));
    }
    if cx.opts.wants("size") {
        rows.extend(bench_size(&cx));
    }
    if cx.opts.wants("containerd") {
        step("containerd");
        rows.extend(bench_containerd(&mut cx));
    }
    step("done");
    // Anything a runtime left behind in its --root (should be nothing).
    for rt in &cx.rts {
        let c = rt.call(&["list", "-q"], "list");
        let _ = c;
        if let Ok(rd) = std::fs::read_dir(rt.rt.root()) {
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if id.starts_with("bench-") {
                    cx.notes
                        .push(format!("{}: left {id} behind; deleted", rt.who.name()));
                    rt.force_delete(&id);
                }
            }
        }
    }
    reap_orphans();
    cx.notes.push(format!(
        "wait for exit: {} container inits reaped as our children (subreaper), {} via pidfd",
        WAITED_CHILD.load(Ordering::Relaxed),
        WAITED_PIDFD.load(Ordering::Relaxed)
    ));
    let load_after = loadavg();
    let guarded = cx.opts.guard;
    let mut md = String::new();
    md.push_str(&render_table(&rows));
    md.push('\n');
    md.push_str(&machine(&cx, &conditions, &load_before, &load_after));
    md.push_str(&format!(
        "- command: `tests/bench/run{}` ({:.0?})\n",
        if cx.opts.quick { " --quick" } else { "" },
        t0.elapsed()
    ));
    if !cx.notes.is_empty() {
        md.push_str("\nNotes:\n");
        for n in &cx.notes {
            md.push_str(&format!("- {n}\n"));
        }
    }
    print!("{md}");
    let _ = std::io::stdout().flush();
    if let (Some(out), Some(f)) = (&cx.opts.out, out_file.as_mut()) {
        if let Err(e) = f.write_all(md.as_bytes()) {
            eprintln!("hull-bench: writing {}: {e}", out.display());
        }
    }
    let failed = rows.iter().any(|r| {
        r.cells
            .iter()
            .any(|c| matches!(c, Cell::Na(s) if s.starts_with("failed")))
    });
    drop(cx);
    if failed {
        std::process::exit(1);
    }
    if guarded {
        let (lines, regressed) = guard(&rows);
        for l in &lines {
            println!("guard: {l}");
        }
        if regressed {
            eprintln!("hull-bench: --guard: hull is slower than crun beyond this run's noise");
            std::process::exit(3);
        }
    }
    std::process::exit(0);
}
