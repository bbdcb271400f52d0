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
