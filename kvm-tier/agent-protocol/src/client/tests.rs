//! The client against fake agents that misbehave.

use super::*;
use crate::frame::{encode, HEADER_LEN};
use std::os::unix::net::UnixListener;
use std::time::Instant;

/// A fake agent on the other end of a socket pair: reads the client's hello, then runs `act`.
fn fake_agent(act: impl FnOnce(&mut UnixStream) + Send + 'static) -> UnixStream {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    thread::spawn(move || {
        let mut hdr = [0u8; HEADER_LEN];
        if theirs.read_exact(&mut hdr).is_ok() {
            let len = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
            let mut body = vec![0u8; len.min(1 << 20)];
            let _ = theirs.read_exact(&mut body);
        }
        act(&mut theirs);
        // Keep the socket open a while so the client cannot just see EOF.
        thread::sleep(Duration::from_secs(3));
    });
    ours
}

fn hello_frame(major: u16) -> Vec<u8> {
    encode(&GuestMsg::Hello(Hello {
        version: crate::Version { major, minor: 0 },
        software: "fake".into(),
    }))
    .unwrap()
}

#[test]
fn garbage_from_the_agent_is_a_decode_error() {
    let s = fake_agent(|s| {
        let _ = s.write_all(b"\x00\x01garbage garbage");
    });
    let r = Agent::hello(s, Duration::from_secs(2));
    assert!(
        matches!(
            r,
            Err(ClientError::Read {
                source: ReadError::Decode(_),
                ..
            })
        ),
        "{:?}",
        r.err()
    );
}

#[test]
fn oversize_frame_from_the_agent_is_refused_without_reading_it() {
    let s = fake_agent(|s| {
        let _ = s.write_all(b"hA\x02\x00\xff\xff\xff\xff");
    });
    let err = Agent::hello(s, Duration::from_secs(2)).err().unwrap();
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
}

#[test]
fn silent_agent_times_out() {
    let s = fake_agent(|_| {});
    let t = Instant::now();
    let r = Agent::hello(s, Duration::from_millis(300));
    assert!(
        matches!(
            r,
            Err(ClientError::Read {
                source: ReadError::Timeout,
                ..
            })
        ),
        "{:?}",
        r.err()
    );
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn wrong_major_version_is_refused() {
    let s = fake_agent(|s| {
        let _ = s.write_all(&hello_frame(2));
    });
    let err = Agent::hello(s, Duration::from_secs(2)).err().unwrap();
    assert!(matches!(err, ClientError::Version { .. }), "{err}");
    assert!(err.to_string().contains("2.0"), "{err}");
}

#[test]
fn out_of_order_answer_is_refused() {
    let s = fake_agent(|s| {
        let _ = s.write_all(&hello_frame(1));
        let _ = s.write_all(
            &encode(&GuestMsg::Exit {
                status: ExitStatus::Exited { code: 0 },
            })
            .unwrap(),
        );
    });
    let a = Agent::hello(s, Duration::from_secs(2)).unwrap();
    let err = a
        .start(Role::Exec, &ProcessSpec::simple(["true"]))
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            ClientError::Unexpected {
                during: "start",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn agent_error_is_reported_with_its_message() {
    let s = fake_agent(|s| {
        let _ = s.write_all(&hello_frame(1));
        let e = GuestMsg::Error {
            message: "no such file".into(),
            fatal: true,
        };
        let _ = s.write_all(&encode(&e).unwrap());
    });
    let a = Agent::hello(s, Duration::from_secs(2)).unwrap();
    let err = a
        .start(Role::Exec, &ProcessSpec::simple(["nope"]))
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "agent error: no such file");
}

#[test]
fn hybrid_handshake_success_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.sock");
    let l = UnixListener::bind(&path).unwrap();
    thread::spawn(move || {
        for (i, c) in l.incoming().enumerate() {
            let Ok(mut c) = c else { return };
            let mut line = [0u8; 13];
            let _ = c.read_exact(&mut line);
            let answer: &[u8] = match i {
                0 => b"OK 1024\n",
                1 => b"NO\n",
                _ => b"",
            };
            let _ = c.write_all(answer);
            thread::spawn(move || {
                thread::sleep(Duration::from_secs(2));
                drop(c);
            });
        }
    });
    assert!(connect_hybrid(&path, 1024, Duration::from_secs(2)).is_ok());
    let e = connect_hybrid(&path, 1024, Duration::from_secs(2))
        .err()
        .unwrap();
    assert!(e.to_string().contains("unexpected answer"), "{e}");
    let e = connect_hybrid(&path, 1024, Duration::from_millis(300))
        .err()
        .unwrap();
    assert!(matches!(e, ClientError::Hybrid { .. }), "{e}");
}

#[test]
fn trickling_agent_cannot_stretch_the_handshake() {
    let s = fake_agent(|s| {
        for b in hello_frame(1) {
            let _ = s.write_all(&[b]);
            thread::sleep(Duration::from_millis(100));
        }
    });
    let t = Instant::now();
    let r = Agent::hello(s, Duration::from_millis(500));
    assert!(
        matches!(
            r,
            Err(ClientError::Read {
                source: ReadError::Timeout,
                ..
            })
        ),
        "{:?}",
        r.err()
    );
    assert!(t.elapsed() < Duration::from_millis(1500));
}

#[test]
fn session_survives_non_fatal_errors_and_relays_output() {
    let s = fake_agent(|s| {
        let mut all = hello_frame(1);
        for m in [
            GuestMsg::Started { pid: 9 },
            GuestMsg::Stdout(b"out".to_vec()),
            GuestMsg::Error {
                message: "signal 15: the process has exited".into(),
                fatal: false,
            },
            GuestMsg::Stderr(b"err".to_vec()),
            GuestMsg::Exit {
                status: ExitStatus::Signaled { signal: 15 },
            },
        ] {
            all.extend(encode(&m).unwrap());
        }
        let _ = s.write_all(&all);
    });
    let session = Agent::hello(s, Duration::from_secs(2))
        .unwrap()
        .start(Role::Exec, &ProcessSpec::simple(["x"]))
        .unwrap();
    assert_eq!(session.pid(), 9);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let st = session.run(None, &mut out, &mut err).unwrap();
    assert_eq!(
        (st, out.as_slice(), err.as_slice()),
        (
            ExitStatus::Signaled { signal: 15 },
            &b"out"[..],
            &b"err"[..]
        )
    );
}

#[test]
fn agent_closing_mid_session_is_an_error_not_a_hang() {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    thread::spawn(move || {
        let read_frame = |s: &mut UnixStream| {
            let mut hdr = [0u8; HEADER_LEN];
            let _ = s.read_exact(&mut hdr);
            let len = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
            let _ = s.read_exact(&mut vec![0u8; len.min(1 << 20)]);
        };
        read_frame(&mut theirs);
        let _ = theirs.write_all(&hello_frame(1));
        // The start request.
        read_frame(&mut theirs);
        let _ = theirs.write_all(&encode(&GuestMsg::Started { pid: 3 }).unwrap());
        // Half a frame, then gone.
        let _ = theirs.write_all(&encode(&GuestMsg::Stdout(b"abc".to_vec())).unwrap()[..5]);
    });
    let session = Agent::hello(ours, Duration::from_secs(2))
        .unwrap()
        .start(Role::Exec, &ProcessSpec::simple(["x"]))
        .unwrap();
    let err = session
        .run(None, &mut Vec::new(), &mut Vec::new())
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("stream ended inside a frame"),
        "{err}"
    );
}
