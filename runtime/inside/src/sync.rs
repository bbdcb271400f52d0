//! The conversation between `hull create` (the parent) and the container's init over a
//! socketpair: length-prefixed JSON frames, one message each.
//!
//! Written by hand: it is a dozen lines of framing over `std::io`, not worth a crate.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The environment variable naming init's end of the sync socket.
pub const INIT_FD_ENV: &str = "_HULL_INIT_FD";

/// Frames larger than this are refused: a message is a config plus a little state.
const MAX_FRAME: u32 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("container init closed the connection")]
    Closed,
    #[error("sync socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("sync message of {0} bytes exceeds the limit")]
    TooLarge(u32),
    #[error("malformed sync message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unexpected sync message: expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: String },
}

impl SyncError {
    /// The other end went away (closed, or died with data unread: a reset or broken pipe).
    pub fn peer_gone(&self) -> bool {
        match self {
            SyncError::Closed => true,
            SyncError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }
}

/// Everything the init needs, sent by the parent right after it placed init in its cgroup.
#[derive(Debug, Serialize, Deserialize)]
pub struct InitPlan {
    pub id: String,
    pub spec: oci_spec::runtime::Spec,
    pub rootfs: PathBuf,
    pub bundle: PathBuf,
    pub fifo: PathBuf,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    /// Descriptor (inherited) of the console socket, when `process.terminal` is set.
    pub console_fd: Option<i32>,
    pub preserve_fds: i32,
    /// A user namespace to join by path.
    pub join_user: Option<PathBuf>,
    /// `CLONE_NEW*` flags init unshares itself.
    pub unshare_flags: i32,
    pub in_user_ns: bool,
    /// `linux.seccomp`, compiled by the parent.
    pub seccomp: Option<crate::seccomp::Compiled>,
}

/// What init needs to start one more process in a running container (`exec`).
#[derive(Debug, Serialize, Deserialize)]
pub struct ExecPlan {
    pub id: String,
    pub process: oci_spec::runtime::Process,
    /// The container's user namespace, when it has its own.
    pub join_user: Option<PathBuf>,
    /// The container's mount namespace (its root is the container's root).
    pub join_mount: PathBuf,
    pub console_fd: Option<i32>,
    pub preserve_fds: i32,
    pub personality: Option<oci_spec::runtime::LinuxPersonality>,
    /// The container's seccomp filter, compiled by the parent: exec'd processes are
    /// confined like init.
    pub seccomp: Option<crate::seccomp::Compiled>,
    pub oci_version: String,
    /// The container's state JSON, for a seccomp agent.
    pub state_json: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ToInit {
    Plan(Box<InitPlan>),
    /// Init is in its cgroup now (sent after the plan).
    CgroupJoined,
    /// The cgroup is ready (limits applied, the cgroup2 hierarchy joined by the parent):
    /// init joins the cgroup v1 hierarchies itself by writing "0" to their `tasks` files,
    /// whose descriptors (opened by the parent) follow in one [`send_fds`] message, in
    /// this order. A thread that moves itself takes no global lock; any other cgroup move
    /// (the parent writing init's pid) first waits for an RCU grace period: 4-8 ms here.
    JoinCgroup {
        files: Vec<PathBuf>,
    },
    Exec(Box<ExecPlan>),
    /// Prestart and createRuntime hooks ran; carries the state JSON for createContainer.
    HooksDone {
        state_json: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum FromInit {
    /// Mounts are prepared; the parent may run prestart/createRuntime hooks now.
    MountsReady,
    /// Init is set up and about to block on the exec fifo.
    Ready,
    Error(String),
}

pub fn send<T: Serialize>(sock: &mut UnixStream, msg: &T) -> Result<(), SyncError> {
    let body = serde_json::to_vec(msg)?;
    let len = u32::try_from(body.len()).map_err(|_| SyncError::TooLarge(u32::MAX))?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    write_frame(sock, &frame)
}

/// `send(MSG_NOSIGNAL)` (what `UnixStream` writes with); when that fails for another reason
/// than the peer being gone, plain `write(2)`: init may report an error after a seccomp
/// filter that does not allow `sendto` is loaded, and the error must still reach `create`.
fn write_frame(sock: &mut UnixStream, mut frame: &[u8]) -> Result<(), SyncError> {
    use std::io::ErrorKind;
    while !frame.is_empty() {
        let n = match sock.write(frame) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) => {
                return Err(e.into())
            }
            Err(_) => loop {
                match nix::unistd::write(&*sock, frame) {
                    Ok(n) => break n,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(std::io::Error::from(e).into()),
                }
            },
        };
        if n == 0 {
            return Err(std::io::Error::from(ErrorKind::WriteZero).into());
        }
        frame = &frame[n..];
    }
    Ok(())
}

/// The most descriptors one [`send_fds`] carries (one per cgroup v1 hierarchy: the
/// kernel has 13 v1 controllers, plus named hierarchies).
pub const MAX_FDS: usize = 32;

/// Sends `fds` as one byte with SCM_RIGHTS (after the frame that says what they are).
pub fn send_fds(sock: &UnixStream, fds: &[BorrowedFd<'_>]) -> Result<(), SyncError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    if fds.len() > MAX_FDS {
        return Err(SyncError::TooLarge(fds.len() as u32));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let iov = [std::io::IoSlice::new(&[0u8])];
    sendmsg::<UnixAddr>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(std::io::Error::from)?;
    Ok(())
}

/// Receives the `n` descriptors of one [`send_fds`]; any other count is an error (and
/// whatever arrived is closed).
pub fn recv_fds(sock: &UnixStream, n: usize) -> Result<Vec<OwnedFd>, SyncError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    if n > MAX_FDS {
        return Err(SyncError::TooLarge(n as u32));
    }
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = recvmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    if msg.bytes == 0 {
        return Err(SyncError::Closed);
    }
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: SCM_RIGHTS delivered these descriptors into this process; nothing
            // else owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if fds.len() != n {
        return Err(SyncError::Unexpected {
            expected: "the cgroup descriptors",
            got: format!("{} descriptors instead of {n}", fds.len()),
        });
    }
    Ok(fds)
}

pub fn recv<T: for<'de> Deserialize<'de>>(sock: &mut UnixStream) -> Result<T, SyncError> {
    read_frame(sock)
}

/// Decodes one frame from the front of `bytes` and advances `bytes` past it: what [`recv`]
/// does with the bytes it reads from the socket, without a socket (the fuzz targets and
/// their corpus replay use it).
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &mut &[u8]) -> Result<T, SyncError> {
    read_frame(bytes)
}

/// One frame from `r`: a little-endian `u32` length, then that many bytes of JSON.
fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<T, SyncError> {
    let mut len = [0u8; 4];
    if let Err(e) = r.read_exact(&mut len) {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            SyncError::Closed
        } else {
            SyncError::Io(e)
        });
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(SyncError::TooLarge(len));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            SyncError::Closed
        } else {
            SyncError::Io(e)
        }
    })?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_arrive_in_order_and_a_wrong_count_is_refused() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let names = ["one", "two"];
        let files: Vec<std::fs::File> = names
            .iter()
            .map(|n| {
                std::fs::write(dir.path().join(n), n).unwrap();
                std::fs::File::open(dir.path().join(n)).unwrap()
            })
            .collect();
        let fds: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
        let paths: Vec<PathBuf> = names.iter().map(|n| dir.path().join(n)).collect();
        send(
            &mut a,
            &ToInit::JoinCgroup {
                files: paths.clone(),
            },
        )
        .unwrap();
        send_fds(&a, &fds).unwrap();
        let ToInit::JoinCgroup { files: got } = recv::<ToInit>(&mut b).unwrap() else {
            panic!("not JoinCgroup");
        };
        assert_eq!(got, paths);
        let received = recv_fds(&b, got.len()).unwrap();
        for (fd, n) in received.into_iter().zip(names) {
            let mut s = String::new();
            std::fs::File::from(fd).read_to_string(&mut s).unwrap();
            assert_eq!(s, n);
        }
        // Two sent, three expected: refused.
        send_fds(&a, &fds).unwrap();
        assert!(matches!(recv_fds(&b, 3), Err(SyncError::Unexpected { .. })));
        // More than MAX_FDS is refused before anything is sent.
        let many: Vec<_> = (0..=MAX_FDS).map(|_| files[0].as_fd()).collect();
        assert!(matches!(send_fds(&a, &many), Err(SyncError::TooLarge(_))));
        // The peer gone: Closed, not a hang.
        drop(a);
        assert!(matches!(recv_fds(&b, 1), Err(SyncError::Closed)));
    }

    #[test]
    fn round_trip_and_eof() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        send(&mut a, &FromInit::Error("boom".into())).unwrap();
        send(&mut a, &FromInit::Ready).unwrap();
        drop(a);
        match recv::<FromInit>(&mut b).unwrap() {
            FromInit::Error(m) => assert_eq!(m, "boom"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(recv::<FromInit>(&mut b).unwrap(), FromInit::Ready));
        assert!(matches!(recv::<FromInit>(&mut b), Err(SyncError::Closed)));
    }

    #[test]
    fn oversized_and_garbage_frames_are_refused() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&(MAX_FRAME + 1).to_le_bytes()).unwrap();
        assert!(matches!(
            recv::<FromInit>(&mut b),
            Err(SyncError::TooLarge(_))
        ));
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&3u32.to_le_bytes()).unwrap();
        a.write_all(b"{x}").unwrap();
        assert!(matches!(
            recv::<FromInit>(&mut b),
            Err(SyncError::Malformed(_))
        ));
    }

    #[test]
    fn decode_reads_what_send_writes_and_what_recv_refuses() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        send(&mut a, &FromInit::Error("boom".into())).unwrap();
        send(
            &mut a,
            &ToInit::HooksDone {
                state_json: "{}".into(),
            },
        )
        .unwrap();
        drop(a);
        let mut wire = Vec::new();
        b.read_to_end(&mut wire).unwrap();
        let mut rest = &wire[..];
        match decode::<FromInit>(&mut rest).unwrap() {
            FromInit::Error(m) => assert_eq!(m, "boom"),
            other => panic!("unexpected {other:?}"),
        }
        match decode::<ToInit>(&mut rest).unwrap() {
            ToInit::HooksDone { state_json } => assert_eq!(state_json, "{}"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            decode::<FromInit>(&mut rest),
            Err(SyncError::Closed)
        ));
        let big = (MAX_FRAME + 1).to_le_bytes();
        assert!(matches!(
            decode::<FromInit>(&mut &big[..]),
            Err(SyncError::TooLarge(_))
        ));
        let mut garbage = 3u32.to_le_bytes().to_vec();
        garbage.extend_from_slice(b"{x}");
        assert!(matches!(
            decode::<FromInit>(&mut &garbage[..]),
            Err(SyncError::Malformed(_))
        ));
        let mut short = 10u32.to_le_bytes().to_vec();
        short.extend_from_slice(b"\"Rea");
        assert!(matches!(
            decode::<FromInit>(&mut &short[..]),
            Err(SyncError::Closed)
        ));
    }
}
