//! The nested test host: a real KVM for the VM-tier tests on machines whose own `/dev/kvm`
//! cannot boot Linux.
//!
//! QEMU with TCG emulates AMD-V (`-M q35,accel=tcg -cpu max`); in that L1 guest the guest
//! kernel's own `irqbypass`, `kvm`, `kvm-amd` modules give a real `/dev/kvm`, and `hull-vmm`
//! boots L2 guests there. A [`Plan`] is a set of files (a [`Initramfs`]) and named shell
//! steps; [`Plan::run`] boots one L1 for all of them and returns each step's exit status and
//! output.
//!
//! * Results travel on L1's second serial port (COM2), which only the step runner writes,
//!   framed by marker lines carrying a per-run nonce; the first port is L1's console (kernel
//!   noise, kept as [`Report::console`]).
//! * Every step runs under `timeout -s KILL`; processes a step leaves behind are reported
//!   ([`StepResult::leftovers`]) and killed; L1 powers itself off at the end and is killed
//!   by the host when the overall deadline passes.
//! * L1's initramfs is cached by content hash (`$HULL_NESTED_CACHE`, default
//!   `/var/cache/hull/nested`).
//! * Where the host's own KVM boots a standard kernel, the same steps run directly on the
//!   host instead ([`Mode::Host`]): the payload is laid out in a temp dir (`$NEST`) and each
//!   step runs in its own session with the same timeout and leftover check.
//!
//! Step scripts are `busybox sh` scripts; they find the payload under `$NEST` (empty in L1,
//! the temp dir on the host), run in an empty scratch directory, and must not assume
//! anything else of the machine.

pub mod vm_containers;

pub use hull_kvm::guest_image::GuestKernel;
pub use hull_kvm::initramfs::{shared_libraries, Initramfs, InitramfsError};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The guest kernel: `$HULL_TEST_KERNEL` (a vmlinuz inside an unpacked package tree), else
/// the cache of `dev/guest-kernel`. `Err` says why there is none.
pub fn guest_kernel() -> Result<GuestKernel, String> {
    match std::env::var_os("HULL_TEST_KERNEL").filter(|v| !v.is_empty()) {
        Some(v) => GuestKernel::at(Path::new(&v)),
        None => GuestKernel::find_in(Path::new(hull_kvm::guest_image::KERNEL_CACHE)),
    }
    .map_err(|e| e.to_string())
}

/// Whether this host's own KVM boots a standard kernel, so no nesting is needed: `/dev/kvm`
/// exists and is not the nested PVM hypervisor (`kvm_pvm`), which cannot (the same rule as
/// the kernel probe in `kvm-tier/tests/kernel_probe.rs`).
pub fn host_kvm_boots_linux() -> bool {
    Path::new("/dev/kvm").exists() && !Path::new("/sys/module/kvm_pvm").exists()
}

/// Where the steps ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Directly on this host (its KVM boots a standard kernel).
    Host,
    /// Inside the QEMU/TCG L1 guest.
    Nested,
}

/// A named shell step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Name (letters, digits, `-`, `_`).
    pub name: String,
    /// The `busybox sh` script.
    pub script: String,
    /// Killed (SIGKILL) after this long.
    pub timeout: Duration,
    /// Steps in different lanes run at the same time, in different L1s (one after the
    /// other on a host).
    pub lane: u32,
}

/// What one step did.
#[derive(Debug, Clone, Default)]
pub struct StepResult {
    /// Exit status; `None` when the step never finished (L1 died or was killed).
    pub status: Option<i32>,
    /// Its stdout and stderr, interleaved.
    pub output: String,
    /// Processes it left running (`pid:exe`), killed afterwards.
    pub leftovers: Vec<String>,
    /// How long it ran.
    pub elapsed: Option<Duration>,
}

impl StepResult {
    /// Whether the step was killed by its timeout (`timeout -s KILL` exits 137).
    pub fn timed_out(&self) -> bool {
        self.status == Some(137)
    }
}

/// Everything a run brought back.
#[derive(Debug, Clone)]
pub struct Report {
    /// Where it ran.
    pub mode: Mode,
    /// Per step, by name.
    pub steps: BTreeMap<String, StepResult>,
    /// L1's console (or empty on the host).
    pub console: String,
    /// L1's kernel log after the last step (`dmesg`; on the host: empty).
    pub dmesg: String,
    /// Wall time of the whole run.
    pub wall: Duration,
}

impl Report {
    /// The result of `name`; panics naming the step and the console tail if it is missing.
    pub fn step(&self, name: &str) -> &StepResult {
        self.steps.get(name).unwrap_or_else(|| {
            let tail: String = self
                .console
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            panic!("step {name} did not run; L1 console tail:\n{tail}")
        })
    }
}

/// The one run a test file's tests share: built and run on first use (on the host where
/// its KVM boots Linux, else nested), summarised on stderr as `label: ran in ...`; `None`
/// (after printing why) when it cannot run here.
pub fn shared_run(
    cell: &'static std::sync::OnceLock<Result<Report, Skip>>,
    label: &str,
    build: fn() -> Result<Plan, Skip>,
) -> Option<&'static Report> {
    let r = cell.get_or_init(|| {
        if let Some(r) = crate::skip::env_skip_reason() {
            return Err(Skip(r));
        }
        let report = build()?.run(host_kvm_boots_linux())?;
        let steps: Vec<String> = report
            .steps
            .iter()
            .map(|(n, s)| {
                format!(
                    "{n} {:?} status {:?}",
                    s.elapsed.unwrap_or_default(),
                    s.status
                )
            })
            .collect();
        eprintln!(
            "{label}: ran in {:?} ({:?}); steps: {}",
            report.wall,
            report.mode,
            steps.join(", ")
        );
        Ok(report)
    });
    match r {
        Ok(r) => Some(r),
        Err(Skip(why)) => {
            crate::skip::skipped(why);
            None
        }
    }
}

/// Why the steps cannot run here at all.
#[derive(Debug, Clone)]
pub struct Skip(pub String);

/// Files plus steps, run in one L1 boot (or on the host).
#[derive(Debug, Default)]
pub struct Plan {
    /// Files the steps use, under `/nested/...` by convention.
    pub payload: Initramfs,
    steps: Vec<Step>,
    /// vCPUs of L1 (TCG runs one host thread per vCPU).
    pub l1_cpus: u32,
    /// Memory of L1 in MiB.
    pub l1_mem_mib: u32,
}

/// The QEMU binary.
const QEMU: &str = "qemu-system-x86_64";

impl Plan {
    /// An empty plan: 1 vCPU and 3 GiB per L1 (one L1 per lane, each with a host core).
    pub fn new() -> Self {
        Self {
            payload: Initramfs::new(),
            steps: Vec::new(),
            l1_cpus: 1,
            l1_mem_mib: 3072,
        }
    }

    /// Adds a step in lane 0; a lane's steps run in the order added.
    pub fn step(&mut self, name: &str, timeout: Duration, script: &str) -> &mut Self {
        self.step_in_lane(0, name, timeout, script)
    }

    /// Adds a step to `lane`: each lane gets its own L1, all booted at once; a lane's
    /// steps run one after the other.
    pub fn step_in_lane(
        &mut self,
        lane: u32,
        name: &str,
        timeout: Duration,
        script: &str,
    ) -> &mut Self {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "bad step name {name:?}"
        );
        assert!(
            !self.steps.iter().any(|s| s.name == name),
            "step {name} added twice"
        );
        self.steps.push(Step {
            name: name.into(),
            script: script.into(),
            timeout,
            lane,
        });
        self
    }

    /// Adds `(lane, name, timeout in seconds, body)` steps, each body after `prelude`; with
    /// `$HULL_NESTED_STEPS=a,b` only those (while working on one scenario).
    pub fn steps(&mut self, prelude: &str, steps: &[(u32, &str, u64, &str)]) -> &mut Self {
        let only = std::env::var("HULL_NESTED_STEPS").unwrap_or_default();
        for (lane, name, secs, body) in steps {
            if only.is_empty() || only.split(',').any(|o| o == *name) {
                self.step_in_lane(
                    *lane,
                    name,
                    Duration::from_secs(*secs),
                    &format!("{prelude}{body}"),
                );
            }
        }
        self
    }

    /// Runs the steps: on the host when `host_kvm_boots_linux`, else in the nested host.
    pub fn run(&self, host_kvm_boots_linux: bool) -> Result<Report, Skip> {
        if host_kvm_boots_linux {
            Ok(self.run_on_host())
        } else {
            self.run_nested()
        }
    }

    fn run_on_host(&self) -> Report {
        let start = Instant::now();
        let tree = tempfile::tempdir().expect("temp dir for the payload");
        self.payload
            .write_tree(tree.path())
            .unwrap_or_else(|e| panic!("laying out the payload: {e}"));
        let mut steps = BTreeMap::new();
        for s in &self.steps {
            let work = tempfile::tempdir().expect("step scratch dir");
            let script = work.path().join(".step.sh");
            fs::write(&script, &s.script).expect("write step script");
            let path = format!(
                "{}/nested/bin:{}",
                tree.path().display(),
                std::env::var("PATH").unwrap_or_default()
            );
            let t0 = Instant::now();
            let out_file = work.path().join(".out");
            let out = fs::File::create(&out_file).expect("step output file");
            let mut cmd = Command::new("/bin/busybox");
            cmd.arg("sh")
                .arg(&script)
                .current_dir(work.path())
                .env("NEST", tree.path())
                .env("PATH", path)
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("dup"))
                .stderr(out);
            // SAFETY: setsid is async-signal-safe; the step and all it starts share a session
            // we can find and kill afterwards.
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
            let mut child = cmd.spawn().expect("spawn busybox sh");
            let sid = child.id() as i32;
            let status = wait_deadline(&mut child, s.timeout);
            let status = match status {
                Some(st) => st.code().or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    st.signal().map(|n| 128 + n)
                }),
                None => {
                    // SAFETY: kills the step's own process group.
                    unsafe { libc::kill(-sid, libc::SIGKILL) };
                    let _ = child.wait();
                    Some(137)
                }
            };
            let leftovers = session_members(sid);
            for l in &leftovers {
                if let Some(pid) = l.split(':').next().and_then(|p| p.parse::<i32>().ok()) {
                    // SAFETY: kills a process of the step's own session.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            steps.insert(
                s.name.clone(),
                StepResult {
                    status,
                    output: fs::read_to_string(&out_file).unwrap_or_default(),
                    leftovers,
                    elapsed: Some(t0.elapsed()),
                },
            );
        }
        Report {
            mode: Mode::Host,
            steps,
            console: String::new(),
            dmesg: String::new(),
            wall: start.elapsed(),
        }
    }

    /// Checks that QEMU can give an L1 with SVM, without booting it.
    pub fn nested_skip_reason() -> Option<String> {
        let out = match Command::new(QEMU).args(["-cpu", "help"]).output() {
            Ok(o) => o,
            Err(e) => {
                return Some(format!(
                    "{QEMU} not runnable ({e}); install Debian's qemu-system-x86"
                ))
            }
        };
        let cpus = String::from_utf8_lossy(&out.stdout);
        if !cpus
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("max"))
        {
            return Some(format!(
                "{QEMU} has no -cpu max (needed for an emulated AMD-V)"
            ));
        }
        if !cpus.contains("svm") {
            return Some(format!("{QEMU} does not list the svm CPU flag"));
        }
        None
    }

    fn l1_payload(&self, kernel: &GuestKernel, nonce: &str) -> Result<Initramfs, Skip> {
        let mut p = self.payload.clone();
        p.file("bin/busybox", Path::new(crate::skip::BUSYBOX), 0o755);
        for d in [
            "dev", "proc", "sys", "tmp", "run", "sbin", "usr/bin", "usr/sbin",
        ] {
            p.dir(d);
        }
        for m in ["irqbypass", "kvm", "kvm-amd"] {
            let path = kernel.module(m).map_err(|e| Skip(e.to_string()))?;
            p.file(&format!("nested/l1-mods/{m}.ko"), &path, 0o644);
        }
        let mut order = String::new();
        for s in &self.steps {
            p.bytes(
                &format!("nested/steps/{}.sh", s.name),
                s.script.clone(),
                0o755,
            );
            order.push_str(&format!(
                "{} {} {}\n",
                s.name,
                s.timeout.as_secs().max(1),
                s.lane
            ));
        }
        p.bytes("nested/steps/order", order, 0o644);
        p.bytes("init", l1_init(nonce), 0o755);
        Ok(p)
    }

    fn run_nested(&self) -> Result<Report, Skip> {
        if let Some(r) = Self::nested_skip_reason() {
            return Err(Skip(r));
        }
        let kernel = guest_kernel().map_err(Skip)?;
        let start = Instant::now();
        // The nonce is in the cached runner script, so it only needs to be unlikely in
        // step output, not secret.
        let nonce = "hull-nested-7f3a9c";
        let payload = self.l1_payload(&kernel, nonce)?;
        let initrd =
            cached_cpio(&payload).unwrap_or_else(|e| panic!("building L1's initramfs: {e}"));
        let dir = tempfile::tempdir().expect("temp dir for L1's serial files");
        let mut per_lane: BTreeMap<u32, Duration> = BTreeMap::new();
        for s in &self.steps {
            *per_lane.entry(s.lane).or_default() += s.timeout;
        }
        // One L1 per lane, all at once: an L1 never runs two L2 guests at the same time.
        // (With two L2s sharing one L1, QEMU's emulated SVM corrupted them now and then:
        // L2 triple faults, once an oops in L1's KVM_RUN.)
        let mut l1s = Vec::new();
        for (&lane, &budget) in &per_lane {
            let console = dir.path().join(format!("console-{lane}.log"));
            let results = dir.path().join(format!("results-{lane}.log"));
            let child = self.spawn_l1(&kernel, &initrd, lane, &console, &results)?;
            l1s.push((
                lane,
                budget + Duration::from_secs(90),
                child,
                console,
                results,
            ));
        }
        let mut report = Report {
            mode: Mode::Nested,
            steps: BTreeMap::new(),
            console: String::new(),
            dmesg: String::new(),
            wall: Duration::ZERO,
        };
        for (lane, deadline, mut child, console, results) in l1s {
            let left = deadline.saturating_sub(start.elapsed());
            let exited = wait_deadline(&mut child, left);
            let mut qemu_err = String::new();
            if exited.is_none() {
                let _ = child.kill();
                let _ = child.wait();
                qemu_err = format!("L1 killed after the {deadline:?} deadline");
            } else if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut qemu_err);
            }
            // HULL_NESTED_DUMP=DIR keeps L1's serial logs (for looking at a failed run).
            if let Some(d) = std::env::var_os("HULL_NESTED_DUMP").filter(|d| !d.is_empty()) {
                let d = PathBuf::from(d);
                let _ = fs::create_dir_all(&d);
                let _ = fs::copy(&console, d.join(format!("console-{lane}.log")));
                let _ = fs::copy(&results, d.join(format!("results-{lane}.log")));
            }
            let read = |p: &Path| {
                String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).replace('\r', "")
            };
            let mut part = parse_results(&read(&results), nonce, read(&console))?;
            if !qemu_err.trim().is_empty() {
                part.console
                    .push_str(&format!("\n[host] {}\n", qemu_err.trim()));
            }
            report.steps.append(&mut part.steps);
            report
                .console
                .push_str(&format!("=== L1 lane {lane}\n{}", part.console));
            report
                .dmesg
                .push_str(&format!("=== L1 lane {lane}\n{}", part.dmesg));
        }
        report.wall = start.elapsed();
        Ok(report)
    }
}

impl Plan {
    /// Starts the L1 that runs `lane`'s steps.
    fn spawn_l1(
        &self,
        kernel: &GuestKernel,
        initrd: &Path,
        lane: u32,
        console: &Path,
        results: &Path,
    ) -> Result<Child, Skip> {
        let mut cmd = Command::new(QEMU);
        cmd.args(["-M", "q35", "-cpu", "max", "-nodefaults", "-no-user-config"])
            // One TCG thread per L1: each L1 already has a host core to itself.
            .args([
                "-accel",
                "tcg,thread=single",
                "-display",
                "none",
                "-no-reboot",
            ])
            .args(["-smp", &self.l1_cpus.max(1).to_string()])
            .args(["-m", &self.l1_mem_mib.to_string()])
            .arg("-kernel")
            .arg(&kernel.vmlinuz)
            .arg("-initrd")
            .arg(initrd)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 panic=-1 loglevel=4 8250.nr_uarts=2 hull.lane={lane}"
            ))
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-serial")
            .arg(format!("file:{}", results.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; L1 dies with the test (or bench) that
        // started it, even when that is killed.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd.spawn()
            .map_err(|e| Skip(format!("{QEMU} failed to start: {e}")))
    }
}

/// L1's /init: loads KVM, runs each step framed on COM2, powers off.
fn l1_init(nonce: &str) -> String {
    format!(
        r#"#!/bin/busybox sh
# The initramfs root cannot be pivot_root'ed (virtiofsd's namespace sandbox does that in
# its mount namespace): move everything to a tmpfs root first.
if [ ! -e /.stage2 ]; then
  /bin/busybox mkdir -p /newroot
  /bin/busybox mount -t tmpfs -o size=90% root /newroot
  for f in /*; do
    case $f in /newroot|/proc|/sys|/dev) ;; *) /bin/busybox cp -a $f /newroot/ ;; esac
  done
  /bin/busybox mkdir -p /newroot/proc /newroot/sys /newroot/dev
  /bin/busybox touch /newroot/.stage2
  exec /bin/busybox switch_root /newroot /init
fi
/bin/busybox --install -s
mount -t devtmpfs dev /dev; mount -t proc proc /proc; mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp; mount -t tmpfs run /run
R=/dev/ttyS1
stty -F $R raw -echo 115200 2>/dev/null
say() {{ echo "@@{nonce} $*" > $R; }}
for m in irqbypass kvm kvm-amd; do insmod /nested/l1-mods/$m.ko 2>/tmp/insmod || say note insmod $m: $(cat /tmp/insmod); done
if [ ! -c /dev/kvm ]; then
  say nokvm $(dmesg | grep -i -E 'kvm|svm' | tail -n 3 | tr '\n' ' ')
  poweroff -f
fi
say ready $(nproc) cpus
export NEST= PATH=/nested/bin:/bin:/sbin:/usr/bin:/usr/sbin
now() {{ cut -d' ' -f1 /proc/uptime; }}
# run_step NAME SECS: in its own session (so what it leaves behind can be found), killed
# after SECS; results in /tmp/{{out,rc,time,left}}-NAME.
run_step() {{
  mkdir -p /tmp/step-$1; cd /tmp/step-$1
  t0=$(now)
  setsid sh -c 'echo $$ > /tmp/sid-'$1'; exec timeout -s KILL '$2' sh /nested/steps/'$1'.sh' > /tmp/out-$1 2>&1 < /dev/null
  echo $? > /tmp/rc-$1
  echo $t0 $(now) > /tmp/time-$1
  sid=$(cat /tmp/sid-$1)
  left=
  for p in /proc/[0-9]*; do
    pid=${{p#/proc/}}
    [ "$(cut -d' ' -f6 $p/stat 2>/dev/null)" = "$sid" ] || continue
    # busybox timeout's watcher lingers up to a second after the step: not the step's.
    [ "$(cat $p/comm 2>/dev/null)" = timeout ] && {{ kill -9 $pid 2>/dev/null; continue; }}
    left="$left $pid:$(readlink $p/exe 2>/dev/null)"
    kill -9 $pid 2>/dev/null
  done
  echo "$left" > /tmp/left-$1
  cd /
}}
lane=$(sed -n 's/.*hull\.lane=\([0-9]*\).*/\1/p' /proc/cmdline)
while read name secs l; do
  [ "$l" = "$lane" ] || continue
  run_step $name $secs
  say begin $name
  cat /tmp/out-$name > $R
  say end $name $(cat /tmp/rc-$name) $(cat /tmp/time-$name) $(cat /tmp/left-$name)
done < /nested/steps/order
say dmesg
dmesg > $R
say done
poweroff -f
"#
    )
}

/// Parses COM2's framed output.
fn parse_results(text: &str, nonce: &str, console: String) -> Result<Report, Skip> {
    let tag = format!("@@{nonce} ");
    let mut steps = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut dmesg: Option<String> = None;
    let mut ready = false;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&tag) else {
            if let Some((_, out)) = current.as_mut() {
                out.push_str(line);
                out.push('\n');
            } else if let Some(d) = dmesg.as_mut() {
                d.push_str(line);
                d.push('\n');
            }
            continue;
        };
        let mut words = rest.split_whitespace();
        match words.next() {
            Some("nokvm") => {
                return Err(Skip(format!(
                "the nested host (QEMU TCG, -cpu max) gave no /dev/kvm after loading kvm-amd: {}",
                words.collect::<Vec<_>>().join(" ")
            )))
            }
            Some("ready") => ready = true,
            Some("begin") => {
                let name = words.next().unwrap_or_default().to_string();
                steps.insert(name.clone(), StepResult::default());
                current = Some((name, String::new()));
                dmesg = None;
            }
            Some("end") => {
                let name = words.next().unwrap_or_default().to_string();
                let status = words.next().and_then(|s| s.parse().ok());
                let t0: Option<f64> = words.next().and_then(|s| s.parse().ok());
                let t1: Option<f64> = words.next().and_then(|s| s.parse().ok());
                let leftovers = words.map(String::from).collect();
                let output = current.take().map(|(_, o)| o).unwrap_or_default();
                let elapsed = t0
                    .zip(t1)
                    .map(|(a, b)| Duration::from_secs_f64((b - a).max(0.0)));
                steps.insert(
                    name,
                    StepResult {
                        status,
                        output,
                        leftovers,
                        elapsed,
                    },
                );
            }
            Some("dmesg") => {
                current = None;
                dmesg = Some(String::new());
            }
            _ => {}
        }
    }
    if !ready && steps.is_empty() {
        let tail: Vec<&str> = console.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "L1 never reported ready; its console ends with:\n{}",
            tail.join("\n")
        );
    }
    // A step that began but never ended keeps status None and whatever output arrived.
    if let Some((name, out)) = current {
        if let Some(s) = steps.get_mut(&name) {
            s.output = out;
        }
    }
    Ok(Report {
        mode: Mode::Nested,
        steps,
        console,
        dmesg: dmesg.unwrap_or_default(),
        wall: Duration::ZERO,
    })
}

/// Packs `payload` into the cache (once per content) and returns the archive's path.
fn cached_cpio(payload: &Initramfs) -> Result<PathBuf, InitramfsError> {
    let dir = std::env::var_os("HULL_NESTED_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/hull/nested"));
    fs::create_dir_all(&dir).map_err(|e| InitramfsError::Write(dir.clone(), e))?;
    let hash = payload.content_hash()?;
    let path = dir.join(format!("l1-{}.cpio", &hash[..16]));
    if !path.exists() {
        let tmp = dir.join(format!(".l1-{}.{}.tmp", &hash[..16], std::process::id()));
        payload.write_cpio(&tmp)?;
        fs::rename(&tmp, &path).map_err(|e| InitramfsError::Write(path.clone(), e))?;
        prune_cache(&dir, 3);
    }
    Ok(path)
}

/// Keeps the `keep` newest archives in the cache.
fn prune_cache(dir: &Path, keep: usize) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("l1-"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    let n = files.len().saturating_sub(keep);
    for (_, p) in files.into_iter().take(n) {
        let _ = fs::remove_file(p);
    }
}

/// Waits for `child` up to `limit`; `None` if it is still running.
fn wait_deadline(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Processes in session `sid` (`pid:exe`).
fn session_members(sid: i32) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: getsid has no memory-safety preconditions.
        if unsafe { libc::getsid(pid) } == sid {
            let exe = fs::read_link(e.path().join("exe"))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            out.push(format!("{pid}:{exe}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_parsed_and_noise_is_not_a_result() {
        let n = "nonce1";
        let text = "garbage before\n@@nonce1 ready 2 cpus\n@@nonce1 begin a\nline 1\n@@other end a 0\n@@nonce1 end a 3 1.50 2.00 77:/bin/x\n@@nonce1 begin b\npartial\n";
        let r = parse_results(text, n, String::new()).unwrap();
        let a = &r.steps["a"];
        assert_eq!(a.status, Some(3));
        assert_eq!(a.output, "line 1\n@@other end a 0\n");
        assert_eq!(a.leftovers, vec!["77:/bin/x".to_string()]);
        assert_eq!(a.elapsed, Some(Duration::from_millis(500)));
        let b = &r.steps["b"];
        assert_eq!(
            b.status, None,
            "a step without an end marker did not finish"
        );
        assert_eq!(b.output, "partial\n");
        let skip =
            parse_results("@@nonce1 nokvm svm: not supported\n", n, String::new()).unwrap_err();
        assert!(skip.0.contains("svm: not supported"), "{}", skip.0);
    }

    #[test]
    fn host_mode_runs_steps_with_timeouts_and_finds_leftovers() {
        if crate::skip::env_skip_reason().is_some() {
            crate::skip::skipped("not root or no busybox");
            return;
        }
        let mut plan = Plan::new();
        plan.payload.bytes("nested/data/x", "payload-file\n", 0o644);
        plan.step(
            "reads",
            Duration::from_secs(10),
            "cat \"$NEST/nested/data/x\"; exit 5",
        )
        .step("slow", Duration::from_secs(1), "sleep 30")
        .step("leaves", Duration::from_secs(10), "sleep 60 & echo started");
        let r = plan.run(true).unwrap();
        assert_eq!(r.mode, Mode::Host);
        assert_eq!(r.step("reads").status, Some(5));
        assert_eq!(r.step("reads").output, "payload-file\n");
        assert!(r.step("slow").timed_out());
        assert_eq!(r.step("leaves").status, Some(0));
        assert_eq!(
            r.step("leaves").leftovers.len(),
            1,
            "{:?}",
            r.step("leaves").leftovers
        );
    }
}
