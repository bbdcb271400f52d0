use super::*;
use crate::msg::*;

fn header(kind: u8, len: u32) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.push(kind);
    h.push(0);
    h.extend_from_slice(&len.to_be_bytes());
    h
}

fn control(json: &str) -> Vec<u8> {
    let mut f = header(KIND_CONTROL, json.len() as u32);
    f.extend_from_slice(json.as_bytes());
    f
}

fn decode_all<M: Message>(bytes: &[u8]) -> Result<Vec<M>, DecodeError> {
    let mut d = Decoder::<M>::new();
    let mut input = bytes;
    let mut out = Vec::new();
    while let Some(m) = d.decode(&mut input)? {
        out.push(m);
    }
    d.finish()?;
    Ok(out)
}

fn guest(bytes: &[u8]) -> Result<Vec<GuestMsg>, DecodeError> {
    decode_all(bytes)
}

fn host(bytes: &[u8]) -> Result<Vec<HostMsg>, DecodeError> {
    decode_all(bytes)
}

fn all_guest_msgs() -> Vec<GuestMsg> {
    vec![
        GuestMsg::Hello(Hello {
            version: crate::PROTOCOL_VERSION,
            software: "t".into(),
        }),
        GuestMsg::Started { pid: 42 },
        GuestMsg::Stdout(b"out".to_vec()),
        GuestMsg::Stderr(b"err".to_vec()),
        GuestMsg::Exit {
            status: ExitStatus::Exited { code: 7 },
        },
        GuestMsg::Exit {
            status: ExitStatus::Signaled { signal: 9 },
        },
        GuestMsg::Pids {
            pids: vec![1, 2, 3],
        },
        GuestMsg::ShuttingDown,
        GuestMsg::Error {
            message: "no".into(),
            fatal: true,
        },
    ]
}

fn all_host_msgs() -> Vec<HostMsg> {
    let mut p = ProcessSpec::simple(["sh", "-c", "true"]);
    p.rlimits.push(Rlimit {
        kind: RlimitType::Nofile,
        soft: 10,
        hard: 20,
    });
    p.terminal = true;
    p.console_size = Some(WindowSize { rows: 24, cols: 80 });
    p.oci = Some(serde_json::json!({"args": ["sh"]}));
    vec![
        HostMsg::Hello(Hello {
            version: crate::PROTOCOL_VERSION,
            software: "t".into(),
        }),
        HostMsg::Start {
            role: Role::Init,
            process: Box::new(p),
        },
        HostMsg::Ps,
        HostMsg::Signal { signal: 15 },
        HostMsg::Resize(WindowSize { rows: 1, cols: 1 }),
        HostMsg::CloseStdin,
        HostMsg::Shutdown,
        HostMsg::Stdin(vec![0, 1, 2]),
    ]
}

#[test]
fn every_message_round_trips_even_byte_by_byte() {
    let msgs = all_guest_msgs();
    let bytes: Vec<u8> = msgs.iter().flat_map(|m| encode(m).unwrap()).collect();
    assert_eq!(guest(&bytes).unwrap(), msgs);
    let mut d = Decoder::<GuestMsg>::new();
    let mut got = Vec::new();
    for b in &bytes {
        let mut one = std::slice::from_ref(b);
        if let Some(m) = d.decode(&mut one).unwrap() {
            got.push(m);
        }
        assert!(one.is_empty());
    }
    assert_eq!(got, msgs);

    let msgs = all_host_msgs();
    let bytes: Vec<u8> = msgs.iter().flat_map(|m| encode(m).unwrap()).collect();
    assert_eq!(host(&bytes).unwrap(), msgs);
}

#[test]
fn rejects_bad_magic_and_reserved_byte() {
    assert!(matches!(
        guest(b"GET / HTTP/1.1\r\n"),
        Err(DecodeError::BadMagic(_))
    ));
    let mut f = header(KIND_CONTROL, 2);
    f[3] = 1;
    assert!(matches!(guest(&f), Err(DecodeError::Reserved(1))));
}

#[test]
fn rejects_unknown_kind() {
    assert!(matches!(
        guest(&header(9, 4)),
        Err(DecodeError::UnknownKind(9))
    ));
    assert!(matches!(
        guest(&header(0, 4)),
        Err(DecodeError::UnknownKind(0))
    ));
}

#[test]
fn rejects_oversize_before_buffering() {
    let mut d = Decoder::<GuestMsg>::new();
    let f = header(KIND_DATA, u32::MAX);
    assert!(matches!(
        d.decode(&mut &f[..]),
        Err(DecodeError::Oversize { .. })
    ));
    assert_eq!(d.payload.capacity(), 0);
    let f = header(KIND_CONTROL, MAX_CONTROL_LEN as u32 + 1);
    assert!(matches!(
        guest(&f),
        Err(DecodeError::Oversize {
            what: "control",
            ..
        })
    ));
    let f = header(KIND_DATA, MAX_DATA_LEN as u32 + 2);
    assert!(matches!(
        guest(&f),
        Err(DecodeError::Oversize { what: "data", .. })
    ));
}

#[test]
fn rejects_empty_frames() {
    assert!(matches!(
        guest(&header(KIND_CONTROL, 0)),
        Err(DecodeError::Empty("control"))
    ));
    let mut f = header(KIND_DATA, 1);
    f.push(STREAM_STDOUT);
    assert!(matches!(guest(&f), Err(DecodeError::Empty("data"))));
    assert!(encode(&GuestMsg::Stdout(Vec::new())).is_err());
}

#[test]
fn rejects_streams_of_the_other_direction() {
    let mut f = Vec::new();
    encode_data(STREAM_STDIN, b"x", &mut f).unwrap();
    assert!(matches!(guest(&f), Err(DecodeError::BadStream(0))));
    let mut f = Vec::new();
    encode_data(STREAM_STDOUT, b"x", &mut f).unwrap();
    assert!(matches!(host(&f), Err(DecodeError::BadStream(1))));
    let mut f = Vec::new();
    encode_data(7, b"x", &mut f).unwrap();
    assert!(matches!(guest(&f), Err(DecodeError::BadStream(7))));
}

#[test]
fn rejects_malformed_json_unknown_types_and_fields() {
    for bad in [
        "{",
        "null",
        r#"{"type":"launch_missiles"}"#,
        r#"{"type":"started","pid":1,"extra":true}"#,
        r#"{"type":"started","pid":-1}"#,
        r#"{"type":"started","pid":1,"pid":2}"#,
        r#"{"type":"started","pid":"1"}"#,
        r#"{"type":"stdout"}"#,
    ] {
        assert!(
            matches!(guest(&control(bad)), Err(DecodeError::Json(_))),
            "{bad}"
        );
    }
}

#[test]
fn rejects_trailing_garbage_in_a_control_frame() {
    let r = guest(&control(r#"{"type":"shutting_down"} x"#));
    assert!(matches!(r, Err(DecodeError::Json(_))));
    // Trailing whitespace is still JSON.
    assert!(guest(&control("{\"type\":\"shutting_down\"} \n")).is_ok());
}

#[test]
fn rejects_bad_utf8() {
    let mut f = header(KIND_CONTROL, 0);
    let body = b"{\"type\":\"error\",\"message\":\"\xff\xfe\",\"fatal\":true}";
    f[4..8].copy_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    assert!(matches!(guest(&f), Err(DecodeError::Json(_))));
}

#[test]
fn rejects_out_of_range_values() {
    let cases: &[(&str, ValidationError)] = &[
        (
            r#"{"type":"exit","status":{"exited":{"code":256}}}"#,
            ValidationError::ExitCode(256),
        ),
        (
            r#"{"type":"exit","status":{"exited":{"code":-1}}}"#,
            ValidationError::ExitCode(-1),
        ),
        (
            r#"{"type":"exit","status":{"signaled":{"signal":0}}}"#,
            ValidationError::Signal(0),
        ),
        (
            r#"{"type":"exit","status":{"signaled":{"signal":65}}}"#,
            ValidationError::Signal(65),
        ),
        (r#"{"type":"started","pid":0}"#, ValidationError::Pid),
        (r#"{"type":"pids","pids":[3,0]}"#, ValidationError::Pid),
    ];
    for (json, want) in cases {
        match guest(&control(json)) {
            Err(DecodeError::Invalid(e)) => assert_eq!(&e, want, "{json}"),
            other => panic!("{json}: {other:?}"),
        }
    }
    let cases: &[(&str, ValidationError)] = &[
        (
            r#"{"type":"signal","signal":0}"#,
            ValidationError::Signal(0),
        ),
        (
            r#"{"type":"signal","signal":99}"#,
            ValidationError::Signal(99),
        ),
        (
            r#"{"type":"resize","rows":0,"cols":80}"#,
            ValidationError::WindowSize { rows: 0, cols: 80 },
        ),
        (
            r#"{"type":"resize","rows":24,"cols":0}"#,
            ValidationError::WindowSize { rows: 24, cols: 0 },
        ),
        (
            r#"{"type":"start","role":"exec","process":{"args":[],"cwd":"/"}}"#,
            ValidationError::NoArgs,
        ),
        (
            r#"{"type":"start","role":"exec","process":{"args":["a"],"cwd":"rel"}}"#,
            ValidationError::NotAbsolute {
                field: "cwd",
                value: "rel".into(),
            },
        ),
        (
            r#"{"type":"start","role":"exec","process":{"args":["a\u0000b"],"cwd":"/"}}"#,
            ValidationError::Nul { field: "args" },
        ),
        (
            r#"{"type":"start","role":"exec","process":{"args":["a"],"cwd":"/","env":["X"]}}"#,
            ValidationError::EnvWithoutEquals("X".into()),
        ),
        (
            r#"{"type":"start","role":"exec","process":{"args":["a"],"cwd":"/","oci":[1]}}"#,
            ValidationError::OciNotObject,
        ),
        (
            r#"{"type":"start","role":"exec","process":{"args":["a"],"cwd":"/","rlimits":[{"type":"RLIMIT_NOFILE","soft":2,"hard":1}]}}"#,
            ValidationError::RlimitSoftAboveHard {
                kind: RlimitType::Nofile,
                soft: 2,
                hard: 1,
            },
        ),
    ];
    for (json, want) in cases {
        match host(&control(json)) {
            Err(DecodeError::Invalid(e)) => assert_eq!(&e, want, "{json}"),
            other => panic!("{json}: {other:?}"),
        }
    }
    let huge = format!(
        r#"{{"type":"error","message":"{}","fatal":false}}"#,
        "x".repeat(MAX_ERROR_LEN + 1)
    );
    assert!(matches!(
        guest(&control(&huge)),
        Err(DecodeError::Invalid(ValidationError::TooLong { .. }))
    ));
    // Unknown rlimit names are a JSON error.
    let j = r#"{"type":"start","role":"exec","process":{"args":["a"],"cwd":"/","rlimits":[{"type":"RLIMIT_FOO","soft":1,"hard":1}]}}"#;
    assert!(matches!(host(&control(j)), Err(DecodeError::Json(_))));
}

#[test]
fn truncated_stream_is_an_error_at_finish() {
    let f = encode(&GuestMsg::ShuttingDown).unwrap();
    for cut in 1..f.len() {
        assert!(
            matches!(guest(&f[..cut]), Err(DecodeError::Truncated { .. })),
            "cut {cut}"
        );
    }
}

#[test]
fn decoder_stays_failed_after_an_error() {
    let mut d = Decoder::<GuestMsg>::new();
    assert!(d.decode(&mut &b"garbage!"[..]).is_err());
    let good = encode(&GuestMsg::ShuttingDown).unwrap();
    assert!(matches!(
        d.decode(&mut &good[..]),
        Err(DecodeError::Poisoned)
    ));
}

#[test]
fn encoder_refuses_invalid_and_oversize_messages() {
    assert!(matches!(
        encode(&HostMsg::Signal { signal: 0 }),
        Err(EncodeError::Invalid(_))
    ));
    let mut out = Vec::new();
    let big = vec![0u8; MAX_DATA_LEN + 1];
    assert!(matches!(
        encode_data(1, &big, &mut out),
        Err(EncodeError::Oversize { .. })
    ));
    let msg = GuestMsg::Stdout(vec![1u8; MAX_DATA_LEN]);
    assert_eq!(guest(&encode(&msg).unwrap()).unwrap(), vec![msg]);
}
