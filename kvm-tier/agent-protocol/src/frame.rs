//! The frame codec. Hand-written: no maintained crate does this exact framing with per-kind
//! limits and a decoder that is safe against a hostile peer.
//!
//! Every frame is an 8-byte header followed by `len` payload bytes:
//!
//! ```text
//! 0      2      3          4                 8
//! | "hA" | kind | reserved | len (u32, big-endian) | payload ...
//! ```
//!
//! * kind 1, control: payload is one JSON message, 1..=[`MAX_CONTROL_LEN`] bytes.
//! * kind 2, data: payload is a stream id (0 stdin, 1 stdout, 2 stderr) followed by
//!   1..=[`MAX_DATA_LEN`] bytes of that stream.
//! * reserved must be 0; anything else in the header is an error.
//!
//! The decoder buffers at most one frame, checks the length against the kind's limit before
//! buffering anything, and after its first error refuses all further input (there is no way to
//! resynchronise a byte stream with a corrupt header).

use std::io::{self, Read, Write};
use std::marker::PhantomData;

use crate::msg::{GuestMsg, HostMsg, ValidationError};

pub const MAGIC: [u8; 2] = *b"hA";
pub const HEADER_LEN: usize = 8;
pub const KIND_CONTROL: u8 = 1;
pub const KIND_DATA: u8 = 2;
/// Largest stdio chunk in one data frame.
pub const MAX_DATA_LEN: usize = 1024 * 1024;
/// Largest JSON control message.
pub const MAX_CONTROL_LEN: usize = 256 * 1024;
pub const STREAM_STDIN: u8 = 0;
pub const STREAM_STDOUT: u8 = 1;
pub const STREAM_STDERR: u8 = 2;

/// Why a byte stream is not a valid sequence of frames.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "bad frame magic {0:02x?} (expected \"hA\"): not a hull-agent peer or stream out of sync"
    )]
    BadMagic([u8; 2]),
    #[error("reserved header byte is {0:#04x}, must be 0")]
    Reserved(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("{what} frame of {len} bytes exceeds the limit of {max}")]
    Oversize {
        what: &'static str,
        len: u32,
        max: usize,
    },
    #[error("empty {0} frame")]
    Empty(&'static str),
    #[error("data frame for stream {0}, which this direction does not carry")]
    BadStream(u8),
    #[error("malformed control message: {0}")]
    Json(#[source] serde_json::Error),
    #[error("invalid control message: {0}")]
    Invalid(#[from] ValidationError),
    #[error("stream ended inside a frame ({have} of {want} bytes)")]
    Truncated { have: usize, want: usize },
    #[error("decoder already failed; the stream cannot be resynchronised")]
    Poisoned,
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("message is invalid: {0}")]
    Invalid(#[from] ValidationError),
    #[error("{what} frame of {len} bytes exceeds the limit of {max}")]
    Oversize {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("cannot serialise control message: {0}")]
    Json(#[source] serde_json::Error),
}

/// One direction's message type: how it maps to and from frames.
pub trait Message: Sized {
    /// Parse and validate a control payload.
    fn from_control(json: &[u8]) -> Result<Self, DecodeError>;
    /// Build a message from a data frame's stream id and bytes.
    fn from_data(stream: u8, bytes: Vec<u8>) -> Result<Self, DecodeError>;
    /// The stream id and bytes if this is a data message.
    fn as_data(&self) -> Option<(u8, &[u8])>;
    fn validate(&self) -> Result<(), ValidationError>;
}

fn parse_control<M: serde::de::DeserializeOwned>(json: &[u8]) -> Result<M, DecodeError> {
    // from_slice rejects trailing non-whitespace and invalid UTF-8 inside strings.
    serde_json::from_slice(json).map_err(DecodeError::Json)
}

impl Message for HostMsg {
    fn from_control(json: &[u8]) -> Result<Self, DecodeError> {
        let m: HostMsg = parse_control(json)?;
        m.validate()?;
        Ok(m)
    }
    fn from_data(stream: u8, bytes: Vec<u8>) -> Result<Self, DecodeError> {
        match stream {
            STREAM_STDIN => Ok(HostMsg::Stdin(bytes)),
            s => Err(DecodeError::BadStream(s)),
        }
    }
    fn as_data(&self) -> Option<(u8, &[u8])> {
        match self {
            HostMsg::Stdin(d) => Some((STREAM_STDIN, d)),
            _ => None,
        }
    }
    fn validate(&self) -> Result<(), ValidationError> {
        HostMsg::validate(self)
    }
}

impl Message for GuestMsg {
    fn from_control(json: &[u8]) -> Result<Self, DecodeError> {
        let m: GuestMsg = parse_control(json)?;
        m.validate()?;
        Ok(m)
    }
    fn from_data(stream: u8, bytes: Vec<u8>) -> Result<Self, DecodeError> {
        match stream {
            STREAM_STDOUT => Ok(GuestMsg::Stdout(bytes)),
            STREAM_STDERR => Ok(GuestMsg::Stderr(bytes)),
            s => Err(DecodeError::BadStream(s)),
        }
    }
    fn as_data(&self) -> Option<(u8, &[u8])> {
        match self {
            GuestMsg::Stdout(d) => Some((STREAM_STDOUT, d)),
            GuestMsg::Stderr(d) => Some((STREAM_STDERR, d)),
            _ => None,
        }
    }
    fn validate(&self) -> Result<(), ValidationError> {
        GuestMsg::validate(self)
    }
}

/// Encode one message as a frame appended to `out`.
pub fn encode_into<M: Message + serde::Serialize>(
    msg: &M,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    msg.validate()?;
    if let Some((stream, bytes)) = msg.as_data() {
        return encode_data(stream, bytes, out);
    }
    let json = serde_json::to_vec(msg).map_err(EncodeError::Json)?;
    if json.len() > MAX_CONTROL_LEN {
        return Err(EncodeError::Oversize {
            what: "control",
            len: json.len(),
            max: MAX_CONTROL_LEN,
        });
    }
    push_header(out, KIND_CONTROL, json.len());
    out.extend_from_slice(&json);
    Ok(())
}

/// Encode one message as a new frame.
pub fn encode<M: Message + serde::Serialize>(msg: &M) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(msg, &mut out)?;
    Ok(out)
}

/// Encode stdio bytes without building a message first (saves a copy on the hot path).
pub fn encode_data(stream: u8, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if bytes.is_empty() {
        return Err(EncodeError::Invalid(ValidationError::EmptyData));
    }
    if bytes.len() > MAX_DATA_LEN {
        return Err(EncodeError::Oversize {
            what: "data",
            len: bytes.len(),
            max: MAX_DATA_LEN,
        });
    }
    push_header(out, KIND_DATA, bytes.len() + 1);
    out.push(stream);
    out.extend_from_slice(bytes);
    Ok(())
}

fn push_header(out: &mut Vec<u8>, kind: u8, len: usize) {
    out.extend_from_slice(&MAGIC);
    out.push(kind);
    out.push(0);
    // Callers checked len against a limit far below u32::MAX.
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

/// Incremental decoder: give it bytes as they arrive, take messages out.
#[derive(Debug)]
pub struct Decoder<M> {
    header: [u8; HEADER_LEN],
    header_have: usize,
    /// Payload of the current frame once its header is accepted.
    payload: Vec<u8>,
    want: usize,
    failed: bool,
    _msg: PhantomData<fn() -> M>,
}

impl<M> Default for Decoder<M> {
    fn default() -> Self {
        Decoder {
            header: [0; HEADER_LEN],
            header_have: 0,
            payload: Vec::new(),
            want: 0,
            failed: false,
            _msg: PhantomData,
        }
    }
}

impl<M: Message> Decoder<M> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consume bytes from the front of `input` until one message is complete (returned, with
    /// `input` advanced past it) or `input` is used up (`Ok(None)`, everything buffered).
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<M>, DecodeError> {
        if self.failed {
            return Err(DecodeError::Poisoned);
        }
        let r = self.step(input);
        if r.is_err() {
            self.failed = true;
            self.payload = Vec::new();
        }
        r
    }

    fn step(&mut self, input: &mut &[u8]) -> Result<Option<M>, DecodeError> {
        if self.header_have < HEADER_LEN {
            let n = (HEADER_LEN - self.header_have).min(input.len());
            self.header[self.header_have..self.header_have + n].copy_from_slice(&input[..n]);
            self.header_have += n;
            *input = &input[n..];
            if self.header_have < HEADER_LEN {
                return Ok(None);
            }
            self.want = self.check_header()?;
            self.payload = Vec::with_capacity(self.want);
        }
        let n = (self.want - self.payload.len()).min(input.len());
        self.payload.extend_from_slice(&input[..n]);
        *input = &input[n..];
        if self.payload.len() < self.want {
            return Ok(None);
        }
        let payload = std::mem::take(&mut self.payload);
        self.header_have = 0;
        self.want = 0;
        match self.header[2] {
            KIND_CONTROL => M::from_control(&payload).map(Some),
            _ => {
                let (stream, bytes) = match payload.split_first() {
                    Some((s, b)) => (*s, b.to_vec()),
                    None => return Err(DecodeError::Empty("data")),
                };
                M::from_data(stream, bytes).map(Some)
            }
        }
    }

    /// Check a complete header; returns the payload length.
    fn check_header(&self) -> Result<usize, DecodeError> {
        let h = &self.header;
        if h[..2] != MAGIC {
            return Err(DecodeError::BadMagic([h[0], h[1]]));
        }
        if h[3] != 0 {
            return Err(DecodeError::Reserved(h[3]));
        }
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let (what, min, max) = match h[2] {
            KIND_CONTROL => ("control", 1, MAX_CONTROL_LEN),
            // stream id + at least one byte
            KIND_DATA => ("data", 2, MAX_DATA_LEN + 1),
            k => return Err(DecodeError::UnknownKind(k)),
        };
        let len_usize = len as usize;
        if len_usize > max {
            return Err(DecodeError::Oversize { what, len, max });
        }
        if len_usize < min {
            return Err(DecodeError::Empty(what));
        }
        Ok(len_usize)
    }

    /// True when no partial frame is buffered.
    pub fn is_idle(&self) -> bool {
        self.header_have == 0
    }

    /// Call at end of stream: a partial frame is an error.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.failed {
            return Err(DecodeError::Poisoned);
        }
        if self.header_have == 0 {
            return Ok(());
        }
        if self.header_have < HEADER_LEN {
            return Err(DecodeError::Truncated {
                have: self.header_have,
                want: HEADER_LEN,
            });
        }
        Err(DecodeError::Truncated {
            have: HEADER_LEN + self.payload.len(),
            want: HEADER_LEN + self.want,
        })
    }
}

/// Why reading a message from a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading from the peer: {0}")]
    Io(#[source] io::Error),
    #[error("the peer did not answer in time")]
    Timeout,
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Reads messages from a byte stream through a [`Decoder`].
pub struct FrameReader<R, M> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    dec: Decoder<M>,
}

impl<R: Read, M: Message> FrameReader<R, M> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            dec: Decoder::new(),
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The next message, or `None` at a clean end of stream.
    pub fn read_msg(&mut self) -> Result<Option<M>, ReadError> {
        loop {
            let mut input = &self.buf[self.start..self.end];
            let before = input.len();
            let r = self.dec.decode(&mut input);
            self.start += before - input.len();
            if let Some(m) = r? {
                return Ok(Some(m));
            }
            // The decoder took everything: the buffer is free again.
            let n = loop {
                match self.inner.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        return Err(ReadError::Timeout)
                    }
                    Err(e) => return Err(ReadError::Io(e)),
                }
            };
            self.start = 0;
            self.end = n;
            if n == 0 {
                self.dec.finish()?;
                return Ok(None);
            }
        }
    }
}

/// Encode and write one message.
pub fn write_msg<W: Write, M: Message + serde::Serialize>(
    w: &mut W,
    msg: &M,
) -> Result<(), WriteError> {
    let frame = encode(msg)?;
    w.write_all(&frame).map_err(WriteError::Io)
}

/// Why writing a message failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("writing to the peer: {0}")]
    Io(#[source] io::Error),
}

/// The fuzz targets' body, shared with the corpus replay test: the first byte picks how the
/// rest is chunked; every decoded message must re-encode to a frame that decodes to itself.
fn fuzz_one_stream<M>(data: &[u8])
where
    M: Message + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let Some((&chunk, mut rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut dec = Decoder::<M>::new();
    while !rest.is_empty() {
        let n = chunk.min(rest.len());
        let mut input = &rest[..n];
        rest = &rest[n..];
        loop {
            match dec.decode(&mut input) {
                Ok(Some(m)) => {
                    let again = encode(&m).map(|f| {
                        let mut d = Decoder::<M>::new();
                        d.decode(&mut &f[..]).map(|m| m.map(|m| (m, d.is_idle())))
                    });
                    match again {
                        Ok(Ok(Some((m2, true)))) if m2 == m => {}
                        other => panic!("decoded {m:?} does not round-trip: {other:?}"),
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(input.is_empty(), "decoder returned None with input left");
    }
    let _ = dec.finish();
}

/// Fuzz body for what the host decodes (bytes from a possibly malicious guest).
#[doc(hidden)]
pub fn fuzz_one_guest_stream(data: &[u8]) {
    fuzz_one_stream::<GuestMsg>(data)
}

/// Fuzz body for what the agent decodes (bytes from the host).
#[doc(hidden)]
pub fn fuzz_one_host_stream(data: &[u8]) {
    fuzz_one_stream::<HostMsg>(data)
}

#[cfg(test)]
mod tests;
