//! The agent's server in-process on a unix socket (standing in for vsock), driven by the
//! protocol crate's client and by raw hostile bytes.

use std::io::{Cursor, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use hull_agent::{PlainLauncher, Server, ServerConfig, ShutdownHook, ShutdownReason};
use hull_agent_protocol::client::{Agent, ClientError, Control};
use hull_agent_protocol::frame::{encode, FrameReader};
use hull_agent_protocol::*;

struct Hook(Mutex<Sender<ShutdownReason>>);

impl ShutdownHook for Hook {
    fn shutdown(&self, reason: ShutdownReason) {
        let _ = self.0.lock().unwrap().send(reason);
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    shutdowns: Receiver<ShutdownReason>,
}

fn agent() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (tx, rx) = mpsc::channel();
    let config = ServerConfig {
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let server = Server::new(PlainLauncher::default(), Hook(Mutex::new(tx)), config);
    thread::spawn(move || server.serve(&listener));
    Fixture {
        _dir: dir,
        path,
        shutdowns: rx,
    }
}

fn connect(path: &Path) -> Agent {
    Agent::hello(UnixStream::connect(path).unwrap(), Duration::from_secs(5)).unwrap()
}

struct Outcome {
    status: ExitStatus,
    out: String,
    err: String,
}

fn run_spec(path: &Path, role: Role, spec: &ProcessSpec, stdin: Option<&str>) -> Outcome {
    let session = connect(path).start(role, spec).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let input = stdin.map(|s| Box::new(Cursor::new(s.as_bytes().to_vec())) as Box<dyn Read + Send>);
    let status = session.run(input, &mut out, &mut err).unwrap();
    Outcome {
        status,
        out: String::from_utf8_lossy(&out).into_owned(),
        err: String::from_utf8_lossy(&err).into_owned(),
    }
}

fn run(path: &Path, args: &[&str]) -> Outcome {
    run_spec(
        path,
        Role::Exec,
        &ProcessSpec::simple(args.iter().copied()),
        None,
    )
}

const EXIT_0: ExitStatus = ExitStatus::Exited { code: 0 };

#[test]
fn echo_prints_and_exits_zero() {
    let a = agent();
    let o = run(&a.path, &["echo", "hi"]);
    assert_eq!(
        (o.out.as_str(), o.err.as_str(), o.status),
        ("hi\n", "", EXIT_0)
    );
}

#[test]
fn exit_code_is_reported() {
    let a = agent();
    assert_eq!(
        run(&a.path, &["sh", "-c", "exit 7"]).status,
        ExitStatus::Exited { code: 7 }
    );
}

#[test]
fn killing_signal_is_reported() {
    let a = agent();
    let o = run(&a.path, &["sh", "-c", "kill -KILL $$"]);
    assert_eq!(o.status, ExitStatus::Signaled { signal: 9 });
    assert_eq!(o.status.shell_code(), 137);
}

#[test]
fn stdin_is_relayed_and_eof_ends_it() {
    let a = agent();
    let input = "hello\nworld\n".repeat(5000);
    let o = run_spec(
        &a.path,
        Role::Exec,
        &ProcessSpec::simple(["cat"]),
        Some(&input),
    );
    assert_eq!(o.status, EXIT_0);
    assert_eq!(o.out, input);
}

#[test]
fn stderr_is_separate_from_stdout() {
    let a = agent();
    let o = run(&a.path, &["sh", "-c", "echo out; echo err >&2; echo out2"]);
    assert_eq!((o.out.as_str(), o.err.as_str()), ("out\nout2\n", "err\n"));
}

#[test]
fn spec_fields_are_applied() {
    let a = agent();
    let mut spec = ProcessSpec::simple(["sh", "-c", "pwd; echo $FOO; ulimit -n; id -u; id -g"]);
    spec.cwd = "/tmp".into();
    spec.env.push("FOO=bar baz".into());
    spec.rlimits.push(Rlimit {
        kind: RlimitType::Nofile,
        soft: 100,
        hard: 200,
    });
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        spec.uid = 65534;
        spec.gid = 65534;
    }
    let o = run_spec(&a.path, Role::Exec, &spec, None);
    let ids = if root { "65534\n65534\n" } else { "" };
    assert!(
        o.out.starts_with(&format!("/tmp\nbar baz\n100\n{ids}")),
        "{}",
        o.out
    );
}

#[test]
fn missing_program_is_a_clear_error() {
    let a = agent();
    let err = connect(&a.path).start(Role::Exec, &ProcessSpec::simple(["no-such-program-xyz"]));
    let msg = err.err().unwrap().to_string();
    assert!(
        msg.contains("no-such-program-xyz") && msg.contains("No such file"),
        "{msg}"
    );
    assert_eq!(run(&a.path, &["true"]).status, EXIT_0);
}

#[test]
fn terminal_mode_has_a_pty_and_resizes() {
    let a = agent();
    let mut spec = ProcessSpec::simple(["sh", "-c", "tty; stty size; read x; stty size"]);
    spec.terminal = true;
    spec.console_size = Some(WindowSize { rows: 24, cols: 80 });
    let session = connect(&a.path).start(Role::Exec, &spec).unwrap();
    let control = session.control();
    let (tx, rx) = mpsc::channel();
    // Resize only once the first size was printed, so both sizes are seen.
    let mut out = Notify {
        buf: Vec::new(),
        want: "24 80",
        tx: Some(tx),
    };
    let t = thread::spawn(move || {
        let st = session.run(Some(Box::new(Gate(rx, control))), &mut out, &mut Vec::new());
        (st.unwrap(), String::from_utf8_lossy(&out.buf).into_owned())
    });
    let (status, out) = t.join().unwrap();
    assert_eq!(status, EXIT_0);
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("24 80"), "{out:?}");
    assert!(out.contains("50 132"), "{out:?}");
}

/// Output that tells a channel once it contains `want`.
struct Notify {
    buf: Vec<u8>,
    want: &'static str,
    tx: Option<Sender<()>>,
}

impl Write for Notify {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if String::from_utf8_lossy(&self.buf).contains(self.want) {
            if let Some(tx) = self.tx.take() {
                let _ = tx.send(());
            }
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Stdin that, when released, resizes the terminal and then types a line.
struct Gate(Receiver<()>, Control);

impl Read for Gate {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0.recv().is_err() {
            return Ok(0);
        }
        self.1
            .resize(WindowSize {
                rows: 50,
                cols: 132,
            })
            .unwrap();
        let line = b"go\n";
        buf[..line.len()].copy_from_slice(line);
        Ok(line.len())
    }
}

/// Stdout that signals the session once it has seen `ready`.
struct SignalOnReady(Control, Vec<u8>, bool);

impl Write for SignalOnReady {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(b);
        if !self.2 && String::from_utf8_lossy(&self.1).contains("ready") {
            self.2 = true;
            self.0.signal(libc::SIGTERM).unwrap();
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn signals_are_forwarded() {
    let a = agent();
    let script = "trap 'kill $!; exit 3' TERM; sleep 100 >/dev/null 2>&1 & echo ready; wait";
    let session = connect(&a.path)
        .start(Role::Exec, &ProcessSpec::simple(["sh", "-c", script]))
        .unwrap();
    let mut out = SignalOnReady(session.control(), Vec::new(), false);
    let t = Instant::now();
    let status = session.run(None, &mut out, &mut Vec::new()).unwrap();
    assert_eq!(status, ExitStatus::Exited { code: 3 });
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn concurrent_sessions_do_not_wait_for_each_other() {
    let a = agent();
    let t = Instant::now();
    let runs: Vec<_> = (0..2)
        .map(|i| {
            let p = a.path.clone();
            thread::spawn(move || run(&p, &["sh", "-c", &format!("sleep 2; echo {i}")]))
        })
        .collect();
    for (i, r) in runs.into_iter().enumerate() {
        let o = r.join().unwrap();
        assert_eq!((o.out, o.status), (format!("{i}\n"), EXIT_0));
    }
    // One after the other would take 4 s.
    assert!(
        t.elapsed() < Duration::from_millis(3500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn orphans_are_reaped() {
    let a = agent();
    let o = run(
        &a.path,
        &["sh", "-c", "sleep 0.3 >/dev/null 2>&1 & echo $!"],
    );
    let pid: u32 = o.out.trim().parse().unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let t = Instant::now();
    while proc_dir.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "orphan {pid} still there (zombie?)"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn main_process_exit_triggers_shutdown() {
    let a = agent();
    let o = run_spec(
        &a.path,
        Role::Init,
        &ProcessSpec::simple(["sh", "-c", "exit 5"]),
        None,
    );
    assert_eq!(o.status, ExitStatus::Exited { code: 5 });
    let reason = a.shutdowns.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        reason,
        ShutdownReason::MainExited(ExitStatus::Exited { code: 5 })
    );
}

#[test]
fn exec_exit_does_not_trigger_shutdown_and_init_is_started_once() {
    let a = agent();
    let init = connect(&a.path)
        .start(Role::Init, &ProcessSpec::simple(["cat"]))
        .unwrap();
    let err = connect(&a.path)
        .start(Role::Init, &ProcessSpec::simple(["true"]))
        .err()
        .unwrap();
    assert!(err.to_string().contains("already started"), "{err}");
    assert_eq!(run(&a.path, &["true"]).status, EXIT_0);
    assert!(a
        .shutdowns
        .recv_timeout(Duration::from_millis(200))
        .is_err());
    let status = init.run(None, &mut Vec::new(), &mut Vec::new()).unwrap();
    assert_eq!(status, EXIT_0);
    assert!(a.shutdowns.recv_timeout(Duration::from_secs(5)).is_ok());
}

#[test]
fn ps_lists_running_processes() {
    let a = agent();
    let session = connect(&a.path)
        .start(Role::Exec, &ProcessSpec::simple(["cat"]))
        .unwrap();
    let pid = session.pid();
    let pids = connect(&a.path).ps().unwrap();
    assert!(pids.contains(&pid), "{pid} not in {pids:?}");
    assert_eq!(
        session.run(None, &mut Vec::new(), &mut Vec::new()).unwrap(),
        EXIT_0
    );
}

#[test]
fn shutdown_request_is_acknowledged_and_reported() {
    let a = agent();
    connect(&a.path).shutdown().unwrap();
    assert_eq!(
        a.shutdowns.recv_timeout(Duration::from_secs(5)).unwrap(),
        ShutdownReason::Requested
    );
}

// ---- hostile hosts ----

fn frame(m: &HostMsg) -> Vec<u8> {
    encode(m).unwrap()
}

/// A control frame around arbitrary JSON (the encoder would refuse invalid messages).
fn control(json: &str) -> Vec<u8> {
    let mut f = b"hA\x01\x00".to_vec();
    f.extend_from_slice(&(json.len() as u32).to_be_bytes());
    f.extend_from_slice(json.as_bytes());
    f
}

fn hello(major: u16) -> Vec<u8> {
    frame(&HostMsg::Hello(Hello {
        version: Version { major, minor: 0 },
        software: "t".into(),
    }))
}

/// Send raw bytes, then collect everything the agent says until it closes.
fn raw(path: &Path, chunks: &[Vec<u8>]) -> Vec<GuestMsg> {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for c in chunks {
        let _ = (&s).write_all(c);
    }
    let mut r = FrameReader::<_, GuestMsg>::new(s);
    let mut got = Vec::new();
    while let Ok(Some(m)) = r.read_msg() {
        got.push(m);
    }
    got
}

fn fatal_error(got: &[GuestMsg]) -> String {
    match got.last() {
        Some(GuestMsg::Error {
            message,
            fatal: true,
        }) => message.clone(),
        other => panic!("expected a fatal error, got {other:?} (all: {got:?})"),
    }
}

#[test]
fn hostile_hosts_get_clear_errors_and_do_not_disturb_others() {
    let a = agent();
    // A session that must survive all of the below.
    let bystander = connect(&a.path)
        .start(Role::Exec, &ProcessSpec::simple(["cat"]))
        .unwrap();
    let ctl = bystander.control();

    let cases: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        (
            "garbage",
            vec![b"\x00\x01\x02 not a frame at all".to_vec()],
            "bad frame magic",
        ),
        (
            "oversize",
            vec![b"hA\x01\x00\x7f\xff\xff\xff".to_vec()],
            "exceeds the limit",
        ),
        (
            "unknown kind",
            vec![b"hA\x09\x00\x00\x00\x00\x01x".to_vec()],
            "unknown frame kind 9",
        ),
        (
            "wrong version",
            vec![hello(9)],
            "protocol version 9.0 is not supported",
        ),
        (
            "no hello",
            vec![frame(&HostMsg::Ps)],
            "expected a hello first",
        ),
        (
            "data before start",
            vec![hello(1), frame(&HostMsg::Stdin(b"x".to_vec()))],
            "stdin data before any process",
        ),
        (
            "signal before start",
            vec![hello(1), frame(&HostMsg::Signal { signal: 9 })],
            "signal before any process",
        ),
        (
            "bad json",
            vec![hello(1), b"hA\x01\x00\x00\x00\x00\x05{\"a\":".to_vec()],
            "malformed control message",
        ),
        (
            "out of range",
            vec![hello(1), control(r#"{"type":"signal","signal":0}"#)],
            "signal 0 is out of range",
        ),
    ];
    for (name, chunks, want) in cases {
        let got = raw(&a.path, &chunks);
        let msg = fatal_error(&got);
        assert!(msg.contains(want), "{name}: {msg:?}");
    }

    // A host that connects and says nothing is dropped after the request timeout.
    let t = Instant::now();
    let got = raw(&a.path, &[]);
    assert!(
        fatal_error(&got).contains("did not answer in time"),
        "{got:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(8));

    // The bystander still works.
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let mut out = Vec::new();
        let st = bystander.run(
            Some(Box::new(Cursor::new(b"still here\n".to_vec()))),
            &mut out,
            &mut Vec::new(),
        );
        let _ = tx.send(());
        (st.unwrap(), out)
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (st, out) = t.join().unwrap();
    assert_eq!((st, out.as_slice()), (EXIT_0, &b"still here\n"[..]));
    drop(ctl);
    assert_eq!(run(&a.path, &["echo", "ok"]).out, "ok\n");
}

#[test]
fn second_start_on_a_connection_is_refused_without_ending_the_session() {
    let a = agent();
    let start = |args: &[&str]| {
        frame(&HostMsg::Start {
            role: Role::Exec,
            process: Box::new(ProcessSpec::simple(args.iter().copied())),
        })
    };
    let got = raw(
        &a.path,
        &[
            hello(1),
            start(&["cat"]),
            start(&["true"]),
            frame(&HostMsg::Stdin(b"abc".to_vec())),
            frame(&HostMsg::CloseStdin),
        ],
    );
    let refused = got.iter().any(|m| {
        matches!(m, GuestMsg::Error { message, fatal: false } if message.contains("already runs on this connection"))
    });
    assert!(refused, "{got:?}");
    assert!(got.contains(&GuestMsg::Stdout(b"abc".to_vec())), "{got:?}");
    assert_eq!(
        got.last(),
        Some(&GuestMsg::Exit { status: EXIT_0 }),
        "{got:?}"
    );
}

#[test]
fn client_reports_agent_errors_during_start() {
    let a = agent();
    let mut spec = ProcessSpec::simple(["true"]);
    spec.cwd = "/no/such/dir".into();
    match connect(&a.path).start(Role::Exec, &spec) {
        Err(ClientError::Agent(m)) => assert!(m.contains("chdir"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
}
