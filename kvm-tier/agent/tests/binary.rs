//! The `hull-agent` binary as a child process on a unix socket: init runs, its status comes
//! back, and the agent exits with it (the stand-in for powering off).

use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use hull_agent_protocol::client::Agent;
use hull_agent_protocol::{ExitStatus, ProcessSpec, Role};

#[test]
fn agent_binary_serves_and_exits_with_init() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("a.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hull-agent"))
        .arg("--unix")
        .arg(&sock)
        .spawn()
        .unwrap();
    let t = Instant::now();
    let stream = loop {
        match UnixStream::connect(&sock) {
            Ok(s) => break s,
            Err(_) if t.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("agent did not come up: {e}"),
        }
    };
    let agent = Agent::hello(stream, Duration::from_secs(5)).unwrap();
    assert!(agent.peer().software.starts_with("hull-agent"));
    let spec = ProcessSpec::simple(["sh", "-c", "echo hi; exit 4"]);
    let mut out = Vec::new();
    let status = agent
        .start(Role::Init, &spec)
        .unwrap()
        .run(None, &mut out, &mut Vec::new())
        .unwrap();
    assert_eq!(
        (status, out.as_slice()),
        (ExitStatus::Exited { code: 4 }, &b"hi\n"[..])
    );
    assert_eq!(child.wait().unwrap().code(), Some(4));
}
