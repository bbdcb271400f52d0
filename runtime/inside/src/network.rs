//! The network of a container's new network namespace: only the loopback device, brought
//! up as runc does (`ip link set lo up`), so a process can listen on 127.0.0.1 without CNI.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("bringing up the loopback device lo in the new network namespace: {op}: {errno}")]
    Loopback {
        op: &'static str,
        errno: nix::errno::Errno,
    },
}

/// True when the container gets a network namespace of its own (a `network` entry of
/// `linux.namespaces` without a `path`); a namespace joined by path is left as it is.
pub fn has_new_netns(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|list| {
            list.iter()
                .any(|ns| ns.typ() == LinuxNamespaceType::Network && ns.path().is_none())
        })
}

/// Set `IFF_UP` on `lo` of the calling process's network namespace.
pub fn bring_up_loopback() -> Result<(), NetworkError> {
    let err = |op| move |errno| NetworkError::Loopback { op, errno };
    // SAFETY: socket(2) with constant arguments returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err("socket(AF_INET)")(nix::errno::Errno::last()));
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = ifreq_lo();
    get_flags(&sock, &mut req).map_err(err("SIOCGIFFLAGS"))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    set_flags(&sock, &req).map_err(err("SIOCSIFFLAGS"))
}

fn ifreq_lo() -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    req
}

fn get_flags(sock: &OwnedFd, req: &mut libc::ifreq) -> Result<(), nix::errno::Errno> {
    // SAFETY: SIOCGIFFLAGS writes into the ifreq we own.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFFLAGS,
            req as *mut libc::ifreq,
        )
    };
    nix::errno::Errno::result(rc).map(drop)
}

fn set_flags(sock: &OwnedFd, req: &libc::ifreq) -> Result<(), nix::errno::Errno> {
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCSIFFLAGS,
            req as *const libc::ifreq,
        )
    };
    nix::errno::Errno::result(rc).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).expect("spec parses")
    }

    #[test]
    fn only_a_new_network_namespace_is_set_up() {
        let new = spec(r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"network"}]}}"#);
        assert!(has_new_netns(&new));
        let joined = spec(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"network","path":"/run/netns/x"}]}}"#,
        );
        assert!(!has_new_netns(&joined));
        let none = spec(r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid"}]}}"#);
        assert!(!has_new_netns(&none));
    }

    #[test]
    fn ifreq_names_lo() {
        let r = ifreq_lo();
        assert_eq!(r.ifr_name[0] as u8, b'l');
        assert_eq!(r.ifr_name[1] as u8, b'o');
        assert_eq!(r.ifr_name[2], 0);
    }
}
