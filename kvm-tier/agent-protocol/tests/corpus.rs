//! Replays the fuzz corpus through the decoder, so CI without nightly exercises it too.
//! `cargo test -p hull-agent-protocol --test corpus -- --ignored write_seed_corpus` rewrites
//! the hand-made seeds.

use std::path::PathBuf;

use hull_agent_protocol::frame::{self, encode, encode_data, fuzz_one_guest_stream};
use hull_agent_protocol::msg::*;
use hull_agent_protocol::PROTOCOL_VERSION;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_guest")
}

#[test]
fn replay_corpus() {
    let mut n = 0;
    for e in std::fs::read_dir(corpus_dir()).expect("corpus directory") {
        let path = e.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        fuzz_one_guest_stream(&data);
        n += 1;
    }
    assert!(n >= 10, "only {n} corpus files");
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let enc = |m: GuestMsg| encode(&m).expect("valid seed");
    let hello = || {
        GuestMsg::Hello(Hello {
            version: PROTOCOL_VERSION,
            software: "hull-agent".into(),
        })
    };
    let mut v = vec![
        ("hello", enc(hello())),
        ("started", enc(GuestMsg::Started { pid: 17 })),
        ("stdout", enc(GuestMsg::Stdout(b"hi\n".to_vec()))),
        ("stderr", enc(GuestMsg::Stderr(b"oops\n".to_vec()))),
        (
            "exit-code",
            enc(GuestMsg::Exit {
                status: ExitStatus::Exited { code: 7 },
            }),
        ),
        (
            "exit-signal",
            enc(GuestMsg::Exit {
                status: ExitStatus::Signaled { signal: 15 },
            }),
        ),
        (
            "pids",
            enc(GuestMsg::Pids {
                pids: vec![1, 20, 300],
            }),
        ),
        ("shutting-down", enc(GuestMsg::ShuttingDown)),
        (
            "error",
            enc(GuestMsg::Error {
                message: "exec: no such file".into(),
                fatal: true,
            }),
        ),
    ];
    let mut session = enc(hello());
    session.extend(enc(GuestMsg::Started { pid: 2 }));
    session.extend(enc(GuestMsg::Stdout(b"a".to_vec())));
    session.extend(enc(GuestMsg::Stderr(b"b".to_vec())));
    session.extend(enc(GuestMsg::Exit {
        status: ExitStatus::Exited { code: 0 },
    }));
    v.push(("whole-session", session));
    let mut bad_stream = Vec::new();
    encode_data(frame::STREAM_STDIN, b"x", &mut bad_stream).expect("encodes");
    v.push(("hostile-stdin-from-guest", bad_stream));
    v.push(("hostile-oversize", b"hA\x02\x00\xff\xff\xff\xff".to_vec()));
    v.push((
        "hostile-unknown-kind",
        b"hA\x07\x00\x00\x00\x00\x01x".to_vec(),
    ));
    v.push(("hostile-bad-magic", b"GET / HTTP/1.0\r\n\r\n".to_vec()));
    let json = |j: &str| {
        let mut f = b"hA\x01\x00".to_vec();
        f.extend_from_slice(&(j.len() as u32).to_be_bytes());
        f.extend_from_slice(j.as_bytes());
        f
    };
    v.push((
        "hostile-exit-256",
        json(r#"{"type":"exit","status":{"exited":{"code":256}}}"#),
    ));
    v.push(("hostile-unknown-type", json(r#"{"type":"format_disk"}"#)));
    v.push((
        "hostile-trailing",
        json(r#"{"type":"shutting_down"}garbage"#),
    ));
    v.push((
        "hostile-deep-json",
        json(&format!("{}{}", "[".repeat(200), "]".repeat(200))),
    ));
    let mut t = enc(GuestMsg::Started { pid: 3 });
    t.truncate(t.len() - 2);
    v.push(("hostile-truncated", t));
    // The first byte of every file is the fuzz target's chunk size: 1 = byte by byte.
    v.into_iter()
        .map(|(n, mut f)| {
            f.insert(0, if n == "whole-session" { 1 } else { 255 });
            (n, f)
        })
        .collect()
}

#[test]
#[ignore = "writes the seed corpus into the source tree"]
fn write_seed_corpus() {
    std::fs::create_dir_all(corpus_dir()).expect("mkdir corpus");
    for (name, bytes) in seeds() {
        std::fs::write(corpus_dir().join(format!("seed-{name}")), bytes).expect("write seed");
    }
}
