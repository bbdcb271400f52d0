//! Replays the fuzz corpus through the decoder, so CI without nightly exercises it too.
//! `cargo test -p hull-agent-protocol --test corpus -- --ignored write_seed_corpus` rewrites
//! the hand-made seeds.

use std::path::PathBuf;

use hull_agent_protocol::frame::{
    self, encode, encode_data, fuzz_one_guest_stream, fuzz_one_host_stream,
};
use hull_agent_protocol::msg::*;
use hull_agent_protocol::PROTOCOL_VERSION;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_guest")
}

fn host_corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_host")
}

fn replay(dir: PathBuf, body: fn(&[u8])) {
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = e.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        body(&data);
        n += 1;
    }
    assert!(n >= 10, "only {n} files in {}", dir.display());
}

#[test]
fn replay_guest_corpus() {
    replay(corpus_dir(), fuzz_one_guest_stream);
}

#[test]
fn replay_host_corpus() {
    replay(host_corpus_dir(), fuzz_one_host_stream);
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

fn host_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let enc = |m: HostMsg| encode(&m).expect("valid seed");
    let hello = || {
        HostMsg::Hello(Hello {
            version: PROTOCOL_VERSION,
            software: "hull".into(),
        })
    };
    let mut p = ProcessSpec::simple(["sh", "-c", "echo hi"]);
    p.env.push("TERM=xterm".into());
    p.additional_gids = vec![10, 20];
    p.rlimits.push(Rlimit {
        kind: RlimitType::Nofile,
        soft: 1024,
        hard: 4096,
    });
    p.terminal = true;
    p.console_size = Some(WindowSize { rows: 24, cols: 80 });
    p.root = Some("/run/hull/root".into());
    p.oci = Some(serde_json::json!({"terminal": true, "args": ["sh"], "capabilities": {}}));
    let start = || HostMsg::Start {
        role: Role::Init,
        process: Box::new(p.clone()),
    };
    let mut session = enc(hello());
    session.extend(enc(start()));
    session.extend(enc(HostMsg::Stdin(b"ls\n".to_vec())));
    session.extend(enc(HostMsg::Resize(WindowSize {
        rows: 50,
        cols: 132,
    })));
    session.extend(enc(HostMsg::Signal { signal: 15 }));
    session.extend(enc(HostMsg::CloseStdin));
    let mut v = vec![
        ("hello", enc(hello())),
        ("start", enc(start())),
        ("ps", enc(HostMsg::Ps)),
        ("signal", enc(HostMsg::Signal { signal: 9 })),
        (
            "resize",
            enc(HostMsg::Resize(WindowSize { rows: 1, cols: 1 })),
        ),
        ("close-stdin", enc(HostMsg::CloseStdin)),
        ("shutdown", enc(HostMsg::Shutdown)),
        ("stdin", enc(HostMsg::Stdin(b"input".to_vec()))),
        ("whole-session", session),
    ];
    v.push(("hostile-oversize", b"hA\x01\x00\x7f\xff\xff\xff".to_vec()));
    v.into_iter()
        .map(|(n, mut f)| {
            f.insert(0, if n == "whole-session" { 3 } else { 255 });
            (n, f)
        })
        .collect()
}

#[test]
#[ignore = "writes the seed corpus into the source tree"]
fn write_seed_corpus() {
    for (dir, seeds) in [(corpus_dir(), seeds()), (host_corpus_dir(), host_seeds())] {
        std::fs::create_dir_all(&dir).expect("mkdir corpus");
        for (name, bytes) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
        }
    }
}
