//! A small, synchronous CRI client for the tests: unary gRPC calls over containerd's unix
//! socket, with the protobuf messages encoded and decoded by hand.
//!
//! Why by hand: Debian has no `crictl`, and the `k8s-cri` crate needs `protoc` plus
//! tonic/tokio/hyper (over a minute of extra build on 2 cores). A unary gRPC call is an
//! HTTP/2 stream with one HEADERS and one DATA frame each way, so this module speaks just
//! that much HTTP/2 (prior knowledge, one connection per call, HPACK through the tiny
//! `hpack` crate) and the few CRI messages the tests use (field numbers from
//! `k8s.io/cri-api/pkg/apis/runtime/v1/api.proto`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An error of a CRI call: transport, protocol or a non-OK gRPC status.
#[derive(Debug)]
pub enum CriError {
    Io(String, std::io::Error),
    Protocol(String),
    /// grpc-status and grpc-message of a failed call.
    Status {
        method: String,
        code: u32,
        message: String,
    },
}

impl std::fmt::Display for CriError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CriError::Io(what, e) => write!(f, "{what}: {e}"),
            CriError::Protocol(m) => write!(f, "gRPC protocol error: {m}"),
            CriError::Status {
                method,
                code,
                message,
            } => write!(f, "{method}: gRPC status {code}: {message}"),
        }
    }
}

impl std::error::Error for CriError {}

// ---------------------------------------------------------------------------------------
// Protobuf: a builder for requests and a field list for responses.

/// A protobuf message being encoded.
#[derive(Debug, Default, Clone)]
pub struct Msg(Vec<u8>);

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

impl Msg {
    pub fn new() -> Msg {
        Msg(Vec::new())
    }
    fn key(&mut self, field: u32, wire: u8) {
        put_varint(&mut self.0, (u64::from(field) << 3) | u64::from(wire));
    }
    /// A varint field (int32/int64/uint32/uint64/bool/enum); zero is left out as proto3 does.
    pub fn int(mut self, field: u32, v: i64) -> Msg {
        if v != 0 {
            self.key(field, 0);
            put_varint(&mut self.0, v as u64);
        }
        self
    }
    pub fn bytes(mut self, field: u32, v: &[u8]) -> Msg {
        self.key(field, 2);
        put_varint(&mut self.0, v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }
    pub fn str(self, field: u32, v: &str) -> Msg {
        if v.is_empty() {
            return self;
        }
        self.bytes(field, v.as_bytes())
    }
    /// A repeated string field.
    pub fn strs(mut self, field: u32, v: &[&str]) -> Msg {
        for s in v {
            self = self.bytes(field, s.as_bytes());
        }
        self
    }
    pub fn msg(self, field: u32, m: Msg) -> Msg {
        self.bytes(field, &m.0)
    }
    /// A `map<string,string>` entry.
    pub fn map_entry(self, field: u32, k: &str, v: &str) -> Msg {
        self.msg(field, Msg::new().str(1, k).str(2, v))
    }
    pub fn encode(&self) -> &[u8] {
        &self.0
    }
}

/// One decoded field value.
#[derive(Debug, Clone)]
pub enum Value {
    Varint(u64),
    Fixed64(u64),
    Bytes(Vec<u8>),
    Fixed32(u32),
}

/// A decoded protobuf message: its fields in wire order.
#[derive(Debug, Clone, Default)]
pub struct Fields(pub Vec<(u32, Value)>);

fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, CriError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*pos)
            .ok_or_else(|| CriError::Protocol("truncated varint".into()))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(CriError::Protocol("varint longer than 10 bytes".into()))
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], CriError> {
    let end = pos
        .checked_add(n)
        .filter(|e| *e <= buf.len())
        .ok_or_else(|| CriError::Protocol("truncated field".into()))?;
    let s = &buf[*pos..end];
    *pos = end;
    Ok(s)
}

impl Fields {
    pub fn decode(buf: &[u8]) -> Result<Fields, CriError> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < buf.len() {
            let key = get_varint(buf, &mut pos)?;
            let field = (key >> 3) as u32;
            let v = match key & 7 {
                0 => Value::Varint(get_varint(buf, &mut pos)?),
                1 => {
                    let b = take(buf, &mut pos, 8)?;
                    Value::Fixed64(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                }
                2 => {
                    let n = get_varint(buf, &mut pos)? as usize;
                    Value::Bytes(take(buf, &mut pos, n)?.to_vec())
                }
                5 => {
                    let b = take(buf, &mut pos, 4)?;
                    Value::Fixed32(u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
                }
                w => return Err(CriError::Protocol(format!("wire type {w} not supported"))),
            };
            out.push((field, v));
        }
        Ok(Fields(out))
    }
    fn last(&self, field: u32) -> Option<&Value> {
        self.0
            .iter()
            .rev()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v)
    }
    /// A varint field (0 when absent, as proto3 defaults).
    pub fn uint(&self, field: u32) -> u64 {
        match self.last(field) {
            Some(Value::Varint(v)) | Some(Value::Fixed64(v)) => *v,
            Some(Value::Fixed32(v)) => u64::from(*v),
            _ => 0,
        }
    }
    /// An int32 field (sign-extended varint).
    pub fn int32(&self, field: u32) -> i32 {
        self.uint(field) as i64 as i32
    }
    pub fn bytes(&self, field: u32) -> Vec<u8> {
        match self.last(field) {
            Some(Value::Bytes(b)) => b.clone(),
            _ => Vec::new(),
        }
    }
    pub fn string(&self, field: u32) -> String {
        String::from_utf8_lossy(&self.bytes(field)).into_owned()
    }
    /// A sub-message field (empty when absent).
    pub fn msg(&self, field: u32) -> Result<Fields, CriError> {
        Fields::decode(&self.bytes(field))
    }
    pub fn has(&self, field: u32) -> bool {
        self.last(field).is_some()
    }
    /// Every occurrence of a repeated message field.
    pub fn msgs(&self, field: u32) -> Result<Vec<Fields>, CriError> {
        self.0
            .iter()
            .filter(|(f, _)| *f == field)
            .map(|(_, v)| match v {
                Value::Bytes(b) => Fields::decode(b),
                other => Err(CriError::Protocol(format!(
                    "field {field}: expected a message, got {other:?}"
                ))),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// gRPC over HTTP/2 (prior knowledge), one stream per connection.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const MAX_FRAME: usize = 16384;

fn write_frame(
    s: &mut UnixStream,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    s.write_all(&f)
}

fn read_frame(s: &mut UnixStream) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut h = [0u8; 9];
    s.read_exact(&mut h)?;
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)?;
    Ok((h[3], h[4], stream, payload))
}

/// The payload of a frame with the padding (and priority fields) removed.
fn strip(flags: u8, kind: u8, p: &[u8]) -> Result<Vec<u8>, CriError> {
    let mut start = 0;
    let mut end = p.len();
    if flags & PADDED != 0 {
        let pad = *p
            .first()
            .ok_or_else(|| CriError::Protocol("empty padded frame".into()))?
            as usize;
        start = 1;
        end = end
            .checked_sub(pad)
            .ok_or_else(|| CriError::Protocol("padding longer than frame".into()))?;
    }
    if kind == HEADERS && flags & PRIORITY != 0 {
        start += 5;
    }
    if start > end {
        return Err(CriError::Protocol("frame shorter than its fields".into()));
    }
    Ok(p[start..end].to_vec())
}

/// Percent-decoding of `grpc-message`.
fn percent_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&s[i + 1..i + 3]), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One unary gRPC call: `path` is `/package.Service/Method`; returns the response message.
pub fn unary(
    socket: &Path,
    path: &str,
    request: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, CriError> {
    let io = |what: &str| {
        let what = format!("{path}: {what}");
        move |e| CriError::Io(what, e)
    };
    let mut s = UnixStream::connect(socket).map_err(io(&format!("connect {socket:?}")))?;
    s.set_read_timeout(Some(timeout)).map_err(io("timeout"))?;
    s.set_write_timeout(Some(timeout)).map_err(io("timeout"))?;
    s.write_all(PREFACE).map_err(io("preface"))?;
    write_frame(&mut s, SETTINGS, 0, 0, &[]).map_err(io("settings"))?;
    let secs = timeout.as_secs().max(1).to_string();
    let grpc_timeout = format!("{secs}S");
    let headers: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.as_bytes()),
        (b":authority", b"localhost"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"grpc-timeout", grpc_timeout.as_bytes()),
    ];
    let block = hpack::Encoder::new().encode(headers);
    if block.len() > MAX_FRAME {
        return Err(CriError::Protocol("request headers too large".into()));
    }
    write_frame(&mut s, HEADERS, END_HEADERS, 1, &block).map_err(io("headers"))?;
    let mut body = Vec::with_capacity(5 + request.len());
    body.push(0);
    body.extend_from_slice(&(request.len() as u32).to_be_bytes());
    body.extend_from_slice(request);
    if body.len() > 65535 {
        return Err(CriError::Protocol(
            "request larger than the initial flow-control window".into(),
        ));
    }
    let chunks: Vec<&[u8]> = body.chunks(MAX_FRAME).collect();
    for (i, c) in chunks.iter().enumerate() {
        let flags = if i + 1 == chunks.len() { END_STREAM } else { 0 };
        write_frame(&mut s, DATA, flags, 1, c).map_err(io("data"))?;
    }

    let mut decoder = hpack::Decoder::new();
    let mut header_block = Vec::new();
    let mut header_end_stream = false;
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    let mut data = Vec::new();
    loop {
        let (kind, flags, stream, payload) = read_frame(&mut s).map_err(io("reading response"))?;
        let mut ended = false;
        match kind {
            SETTINGS if flags & ACK == 0 => {
                write_frame(&mut s, SETTINGS, ACK, 0, &[]).map_err(io("settings ack"))?;
            }
            PING if flags & ACK == 0 => {
                write_frame(&mut s, PING, ACK, 0, &payload).map_err(io("ping ack"))?;
            }
            GOAWAY => {
                let code = payload
                    .get(4..8)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                return Err(CriError::Protocol(format!(
                    "GOAWAY (error {code}): {}",
                    String::from_utf8_lossy(payload.get(8..).unwrap_or_default())
                )));
            }
            RST_STREAM if stream == 1 => {
                return Err(CriError::Protocol(format!(
                    "stream reset by the server: {payload:?}"
                )));
            }
            HEADERS | CONTINUATION if stream == 1 => {
                header_block.extend_from_slice(&strip(flags, kind, &payload)?);
                if kind == HEADERS {
                    header_end_stream = flags & END_STREAM != 0;
                }
                if flags & END_HEADERS != 0 {
                    let decoded = decoder
                        .decode(&header_block)
                        .map_err(|e| CriError::Protocol(format!("HPACK: {e:?}")))?;
                    for (k, v) in decoded {
                        headers.push((String::from_utf8_lossy(&k).into_owned(), v));
                    }
                    header_block.clear();
                    ended = header_end_stream;
                }
            }
            DATA if stream == 1 => {
                let n = payload.len() as u32;
                data.extend_from_slice(&strip(flags, kind, &payload)?);
                ended = flags & END_STREAM != 0;
                if n > 0 && !ended {
                    let inc = n.to_be_bytes();
                    write_frame(&mut s, WINDOW_UPDATE, 0, 0, &inc).map_err(io("window"))?;
                    write_frame(&mut s, WINDOW_UPDATE, 0, 1, &inc).map_err(io("window"))?;
                }
            }
            _ => {}
        }
        if ended {
            break;
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if let Some(st) = header(":status") {
        if st != b"200" {
            return Err(CriError::Protocol(format!(
                "HTTP status {}",
                String::from_utf8_lossy(&st)
            )));
        }
    }
    let code: u32 = match header("grpc-status") {
        Some(v) => String::from_utf8_lossy(&v)
            .trim()
            .parse()
            .map_err(|_| CriError::Protocol(format!("bad grpc-status {v:?}")))?,
        None => return Err(CriError::Protocol("no grpc-status in the response".into())),
    };
    if code != 0 {
        return Err(CriError::Status {
            method: path.into(),
            code,
            message: percent_decode(&header("grpc-message").unwrap_or_default()),
        });
    }
    if data.len() < 5 {
        return Err(CriError::Protocol(format!(
            "response of {} bytes has no gRPC message",
            data.len()
        )));
    }
    if data[0] != 0 {
        return Err(CriError::Protocol("compressed response".into()));
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    data.get(5..5 + len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| CriError::Protocol("truncated gRPC message".into()))
}

// ---------------------------------------------------------------------------------------
// The CRI calls the tests use.

pub const RUNTIME_SERVICE: &str = "runtime.v1.RuntimeService";

/// NamespaceMode values.
pub const NS_POD: i64 = 0;
pub const NS_CONTAINER: i64 = 1;
pub const NS_NODE: i64 = 2;

/// ContainerState values.
pub const CONTAINER_CREATED: u64 = 0;
pub const CONTAINER_RUNNING: u64 = 1;
pub const CONTAINER_EXITED: u64 = 2;

/// PodSandboxState values.
pub const SANDBOX_READY: u64 = 0;
pub const SANDBOX_NOTREADY: u64 = 1;

/// The result of `ExecSync`.
#[derive(Debug)]
pub struct ExecSync {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

/// `ContainerStats` reduced to what the tests look at.
#[derive(Debug)]
pub struct Stats {
    pub id: String,
    pub cpu_usage_core_nanos: Option<u64>,
    pub memory_working_set: Option<u64>,
    pub memory_usage: Option<u64>,
}

/// `ContainerStatus` reduced to what the tests look at.
#[derive(Debug)]
pub struct ContainerStatus {
    pub id: String,
    pub state: u64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub log_path: String,
}

/// A CRI runtime-service client on containerd's grpc socket.
#[derive(Debug, Clone)]
pub struct CriClient {
    pub socket: PathBuf,
    pub timeout: Duration,
}

/// Optional `UInt64Value` field `field` of `m`.
fn uint_value(m: &Fields, field: u32) -> Result<Option<u64>, CriError> {
    Ok(if m.has(field) {
        Some(m.msg(field)?.uint(1))
    } else {
        None
    })
}

impl CriClient {
    pub fn new(socket: &Path) -> CriClient {
        CriClient {
            socket: socket.to_path_buf(),
            timeout: Duration::from_secs(120),
        }
    }

    /// Call `RuntimeService/<method>` with `req`.
    pub fn call(&self, method: &str, req: Msg) -> Result<Fields, CriError> {
        let path = format!("/{RUNTIME_SERVICE}/{method}");
        let resp = unary(&self.socket, &path, req.encode(), self.timeout)?;
        Fields::decode(&resp)
    }

    /// `Version`: (runtime_name, runtime_version, runtime_api_version).
    pub fn version(&self) -> Result<(String, String, String), CriError> {
        let r = self.call("Version", Msg::new().str(1, "v1"))?;
        Ok((r.string(2), r.string(3), r.string(4)))
    }

    /// `RunPodSandbox` of `config` (a PodSandboxConfig) with `handler`; the sandbox id.
    pub fn run_pod_sandbox(&self, config: &Msg, handler: &str) -> Result<String, CriError> {
        let r = self.call(
            "RunPodSandbox",
            Msg::new().msg(1, config.clone()).str(2, handler),
        )?;
        Ok(r.string(1))
    }

    /// `PodSandboxStatus`: (state, runtime_handler).
    pub fn pod_sandbox_status(&self, id: &str) -> Result<(u64, String), CriError> {
        let r = self.call("PodSandboxStatus", Msg::new().str(1, id))?;
        let st = r.msg(1)?;
        Ok((st.uint(3), st.string(9)))
    }

    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        self.call("StopPodSandbox", Msg::new().str(1, id)).map(drop)
    }

    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        self.call("RemovePodSandbox", Msg::new().str(1, id))
            .map(drop)
    }

    /// Ids of every pod sandbox.
    pub fn list_pod_sandbox(&self) -> Result<Vec<String>, CriError> {
        let r = self.call("ListPodSandbox", Msg::new())?;
        Ok(r.msgs(1)?.iter().map(|p| p.string(1)).collect())
    }

    /// `CreateContainer` of `config` (a ContainerConfig) in sandbox `pod` made from
    /// `sandbox_config`; the container id.
    pub fn create_container(
        &self,
        pod: &str,
        config: &Msg,
        sandbox_config: &Msg,
    ) -> Result<String, CriError> {
        let r = self.call(
            "CreateContainer",
            Msg::new()
                .str(1, pod)
                .msg(2, config.clone())
                .msg(3, sandbox_config.clone()),
        )?;
        Ok(r.string(1))
    }

    pub fn start_container(&self, id: &str) -> Result<(), CriError> {
        self.call("StartContainer", Msg::new().str(1, id)).map(drop)
    }

    pub fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), CriError> {
        self.call("StopContainer", Msg::new().str(1, id).int(2, timeout_secs))
            .map(drop)
    }

    pub fn remove_container(&self, id: &str) -> Result<(), CriError> {
        self.call("RemoveContainer", Msg::new().str(1, id))
            .map(drop)
    }

    /// Ids of every container.
    pub fn list_containers(&self) -> Result<Vec<String>, CriError> {
        let r = self.call("ListContainers", Msg::new())?;
        Ok(r.msgs(1)?.iter().map(|c| c.string(1)).collect())
    }

    pub fn container_status(&self, id: &str) -> Result<ContainerStatus, CriError> {
        let r = self.call("ContainerStatus", Msg::new().str(1, id))?;
        let st = r.msg(1)?;
        Ok(ContainerStatus {
            id: st.string(1),
            state: st.uint(3),
            exit_code: st.int32(7),
            reason: st.string(10),
            message: st.string(11),
            log_path: st.string(15),
        })
    }

    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout_secs: i64,
    ) -> Result<ExecSync, CriError> {
        let r = self.call(
            "ExecSync",
            Msg::new().str(1, id).strs(2, cmd).int(3, timeout_secs),
        )?;
        Ok(ExecSync {
            stdout: String::from_utf8_lossy(&r.bytes(1)).into_owned(),
            stderr: String::from_utf8_lossy(&r.bytes(2)).into_owned(),
            exit_code: r.int32(3),
        })
    }

    pub fn container_stats(&self, id: &str) -> Result<Stats, CriError> {
        let r = self.call("ContainerStats", Msg::new().str(1, id))?;
        let st = r.msg(1)?;
        let cpu = st.msg(2)?;
        let mem = st.msg(3)?;
        Ok(Stats {
            id: st.msg(1)?.string(1),
            cpu_usage_core_nanos: uint_value(&cpu, 2)?,
            memory_working_set: uint_value(&mem, 2)?,
            memory_usage: uint_value(&mem, 4)?,
        })
    }
}

/// `PodSandboxMetadata` + `LinuxPodSandboxConfig` of a pod on the host network (no CNI
/// needed), its PID and IPC namespaces per pod, cgroups under `cgroup_parent`.
pub fn pod_sandbox_config(name: &str, log_dir: &Path, cgroup_parent: &str) -> Msg {
    let ns = Msg::new().int(1, NS_NODE).int(2, NS_POD).int(3, NS_POD);
    Msg::new()
        .msg(
            1,
            Msg::new()
                .str(1, name)
                .str(2, &format!("uid-{name}"))
                .str(3, "hull-e2e"),
        )
        .str(3, &log_dir.to_string_lossy())
        .map_entry(6, "io.hull.test", name)
        .msg(
            8,
            Msg::new()
                .str(1, cgroup_parent)
                .msg(2, Msg::new().msg(1, ns)),
        )
}

/// A `ContainerConfig`: `image`, `command`, log file `log_path` (relative to the pod's log
/// directory), in the pod's namespaces except the host network.
pub fn container_config(name: &str, image: &str, command: &[&str], log_path: &str) -> Msg {
    let ns = Msg::new().int(1, NS_NODE).int(2, NS_POD).int(3, NS_POD);
    Msg::new()
        .msg(1, Msg::new().str(1, name))
        .msg(2, Msg::new().str(1, image))
        .strs(3, command)
        .str(11, log_path)
        .msg(15, Msg::new().msg(2, Msg::new().msg(3, ns)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_round_trip() {
        let m = Msg::new()
            .str(1, "abc")
            .int(2, 300)
            .int(3, -1)
            .msg(4, Msg::new().str(1, "inner"))
            .strs(5, &["x", "y"])
            .int(6, 0);
        let f = Fields::decode(m.encode()).unwrap();
        assert_eq!(f.string(1), "abc");
        assert_eq!(f.uint(2), 300);
        assert_eq!(f.int32(3), -1);
        assert_eq!(f.msg(4).unwrap().string(1), "inner");
        assert_eq!(f.0.iter().filter(|(n, _)| *n == 5).count(), 2);
        assert!(!f.has(6));
        assert!(Fields::decode(&[0x0a, 0x05, b'a']).is_err());
    }

    #[test]
    fn grpc_message_is_percent_decoded() {
        assert_eq!(percent_decode(b"a%20b%3Ac"), "a b:c");
        assert_eq!(percent_decode(b"100%"), "100%");
        assert_eq!(percent_decode(b"%4"), "%4");
    }
}
