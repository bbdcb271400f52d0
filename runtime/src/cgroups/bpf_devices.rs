//! Device access on cgroup v2: a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the
//! container's cgroup (`BPF_F_ALLOW_MULTI`), with runc's semantics for the rule list (the
//! list `devices::v1_program` builds: deny everything, the user's rules, the default
//! allowlist; the last rule that matches an access decides, nothing matching denies).
//!
//! Written by hand: the program is a few dozen instructions of one fixed shape, and the
//! maintained eBPF crates (aya, libbpf-rs) bring a loader, an ELF parser and BTF for what
//! is four `bpf(2)` commands here. `cgroups-rs`, the project's cgroup library, has no eBPF
//! device support.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::devices::Rule;

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const BPF_LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const BPF_ALU32_AND_K: u8 = 0x54;
const BPF_ALU32_RSH_K: u8 = 0x74;
const BPF_ALU32_MOV_X: u8 = 0xbc;
const BPF_ALU64_MOV_K: u8 = 0xb7;
const BPF_JNE_K: u8 = 0x55;
const BPF_JNE_X: u8 = 0x5d;
const BPF_EXIT: u8 = 0x95;

/// `struct bpf_cgroup_dev_ctx` field offsets and values.
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// The program for `rules` (in list order; later rules take precedence).
pub(crate) fn program(rules: &[Rule]) -> Vec<Insn> {
    // r2 = type, r3 = access, r4 = major, r5 = minor (r1 is the context, then scratch).
    let mut p = vec![
        insn(BPF_LDX_MEM_W, 2, 1, CTX_ACCESS_TYPE, 0),
        insn(BPF_ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(BPF_LDX_MEM_W, 3, 1, CTX_ACCESS_TYPE, 0),
        insn(BPF_ALU32_RSH_K, 3, 0, 0, 16),
        insn(BPF_LDX_MEM_W, 4, 1, CTX_MAJOR, 0),
        insn(BPF_LDX_MEM_W, 5, 1, CTX_MINOR, 0),
    ];
    // Last rule first: the first block that matches returns. A block that matches every
    // access ends the program (the verifier refuses unreachable code after it).
    for rule in rules.iter().rev() {
        let mut checks: Vec<Vec<Insn>> = Vec::new();
        match rule.kind {
            'b' => checks.push(vec![insn(BPF_JNE_K, 2, 0, 0, DEV_BLOCK)]),
            'c' => checks.push(vec![insn(BPF_JNE_K, 2, 0, 0, DEV_CHAR)]),
            _ => {}
        }
        let access: i32 = rule
            .access
            .chars()
            .map(|c| match c {
                'm' => ACC_MKNOD,
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                _ => 0,
            })
            .sum();
        if access != ACC_MKNOD | ACC_READ | ACC_WRITE {
            // Matches when the access asked for is within the rule's: (r3 & access) == r3.
            checks.push(vec![
                insn(BPF_ALU32_MOV_X, 1, 3, 0, 0),
                insn(BPF_ALU32_AND_K, 1, 0, 0, access),
                insn(BPF_JNE_X, 1, 3, 0, 0),
            ]);
        }
        let mut never = false;
        for (reg, n) in [(4u8, rule.major), (5u8, rule.minor)] {
            match n.map(i32::try_from) {
                None => {}
                Some(Ok(n)) => checks.push(vec![insn(BPF_JNE_K, reg, 0, 0, n)]),
                // Device numbers are 12 (major) and 20 (minor) bits: no device has it.
                Some(Err(_)) => never = true,
            }
        }
        if never {
            continue;
        }
        let verdict = [
            insn(BPF_ALU64_MOV_K, 0, 0, 0, i32::from(rule.allow)),
            insn(BPF_EXIT, 0, 0, 0, 0),
        ];
        let mut block: Vec<Insn> = checks.into_iter().flatten().collect();
        let total = block.is_empty();
        // Each jump skips to the end of the block (past the verdict).
        let len = block.len() + verdict.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == BPF_JNE_K || ins.code == BPF_JNE_X {
                ins.off = i16::try_from(len - i - 1).unwrap_or(i16::MAX);
            }
        }
        p.extend(block);
        p.extend(verdict);
        if total {
            return p;
        }
    }
    // Nothing matched: deny.
    p.push(insn(BPF_ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(BPF_EXIT, 0, 0, 0, 0));
    p
}

/// Runs `prog` on one access, as the kernel would: a tiny interpreter for the
/// instructions [`program`] emits, for unit tests.
#[cfg(test)]
pub(crate) fn evaluate(prog: &[Insn], kind: char, major: u32, minor: u32, access: &str) -> bool {
    let ty = if kind == 'b' { DEV_BLOCK } else { DEV_CHAR } as u32;
    let acc: u32 = access
        .chars()
        .map(|c| match c {
            'm' => ACC_MKNOD as u32,
            'r' => ACC_READ as u32,
            _ => ACC_WRITE as u32,
        })
        .sum();
    let ctx = [(acc << 16) | ty, major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        let (dst, src) = ((i.regs & 0x0f) as usize, (i.regs >> 4) as usize);
        pc += 1;
        match i.code {
            BPF_LDX_MEM_W => r[dst] = u64::from(ctx[(i.off / 4) as usize]),
            BPF_ALU32_AND_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
            BPF_ALU32_RSH_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
            BPF_ALU32_MOV_X => r[dst] = r[src] as u32 as u64,
            BPF_ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
            BPF_JNE_K => {
                if r[dst] != i.imm as i64 as u64 {
                    pc += i.off as usize;
                }
            }
            BPF_JNE_X => {
                if r[dst] != r[src] {
                    pc += i.off as usize;
                }
            }
            BPF_EXIT => return r[0] == 1,
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
}

// bpf(2) commands, program and attach types, flags.
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const BPF_F_REPLACE: u32 = 4;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, padded to the size the kernel accepts.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH`/`DETACH` part.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// The `BPF_PROG_QUERY` part.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
}

/// The `BPF_PROG_GET_FD_BY_ID` part.
#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `bpf(cmd, attr, sizeof attr)`.
fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a repr(C) prefix of `union bpf_attr` for `cmd`, fully initialised,
    // living for the call; its size is passed so the kernel reads no further.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loads `prog` into the kernel; the verifier's log is in the error.
pub(crate) fn load(prog: &[Insn]) -> std::io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(prog.len()).map_err(std::io::Error::other)?,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    attr.prog_name[..9].copy_from_slice(b"hull_devs");
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a new descriptor that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(0);
            let text = String::from_utf8_lossy(&log[..end]);
            Err(std::io::Error::new(
                e.kind(),
                format!(
                    "{e}{}",
                    if text.is_empty() {
                        String::new()
                    } else {
                        format!(": {text}")
                    }
                ),
            ))
        }
    }
}

/// Ids of the device programs attached directly to the cgroup `cgroup`.
fn attached(cgroup: BorrowedFd<'_>) -> std::io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

fn prog_fd(id: u32) -> std::io::Result<OwnedFd> {
    let mut attr = GetFdAttr {
        prog_id: id,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Makes `prog` the cgroup's device program. With one program of ours attached it is
/// replaced in one step (`BPF_F_REPLACE`); otherwise the new one is attached before the
/// old ones are detached, so that at no moment is access wider than either allows (all
/// attached programs must agree).
pub(crate) fn install(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> std::io::Result<()> {
    let old = attached(cgroup)?;
    if let [only] = old[..] {
        let old_fd = prog_fd(only)?;
        let mut attr = AttachAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_bpf_fd: prog.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            attach_flags: BPF_F_ALLOW_MULTI | BPF_F_REPLACE,
            replace_bpf_fd: old_fd.as_raw_fd() as u32,
        };
        if bpf(BPF_PROG_ATTACH, &mut attr).is_ok() {
            return Ok(());
        }
    }
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_ATTACH, &mut attr)?;
    for id in old {
        let fd = prog_fd(id)?;
        let mut attr = AttachAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_bpf_fd: fd.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        bpf(BPF_PROG_DETACH, &mut attr)?;
    }
    Ok(())
}

/// Loads the program for `rules` and makes it the device program of the cgroup directory
/// `dir`.
pub(crate) fn apply(dir: &std::path::Path, rules: &[Rule]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let cgroup = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?;
    let prog = load(&program(rules))?;
    install(
        std::os::fd::AsFd::as_fd(&cgroup),
        std::os::fd::AsFd::as_fd(&prog),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::devices::{default_allowed, v1_program};

    fn rule(allow: bool, kind: char, major: Option<i64>, minor: Option<i64>, access: &str) -> Rule {
        Rule {
            allow,
            kind,
            major,
            minor,
            access: access.into(),
        }
    }

    #[test]
    fn the_default_program_denies_disks_and_allows_the_default_devices() {
        let p = program(&v1_program(&[]));
        assert!(!evaluate(&p, 'b', 8, 0, "r"), "a disk");
        assert!(
            !evaluate(&p, 'c', 10, 229, "rw"),
            "/dev/fuse is not in the defaults"
        );
        assert!(evaluate(&p, 'c', 1, 3, "rw"), "/dev/null");
        assert!(evaluate(&p, 'c', 136, 7, "rw"), "/dev/pts/7");
        assert!(
            evaluate(&p, 'b', 8, 0, "m"),
            "mknod of any node (opening it is denied)"
        );
        assert!(!evaluate(&p, 'b', 8, 0, "rm"), "mknod and read together");
        for d in default_allowed() {
            assert!(d.allow);
        }
    }

    #[test]
    fn later_rules_win_and_access_must_be_within_the_rule() {
        let user = [
            rule(true, 'c', Some(10), Some(229), "rw"),
            rule(true, 'b', Some(7), None, "r"),
            rule(false, 'b', Some(7), Some(3), "r"),
        ];
        let p = program(&v1_program(&user));
        assert!(evaluate(&p, 'c', 10, 229, "rw"));
        assert!(
            !evaluate(&p, 'c', 10, 229, "rwm"),
            "m is not in the rule's access"
        );
        assert!(evaluate(&p, 'b', 7, 0, "r"), "wildcard minor");
        assert!(!evaluate(&p, 'b', 7, 0, "w"));
        assert!(!evaluate(&p, 'b', 7, 3, "r"), "the later deny wins");
        // The default allowlist comes last: a user's deny of /dev/null does not hold (runc).
        let p = program(&v1_program(&[rule(false, 'c', Some(1), Some(3), "rwm")]));
        assert!(evaluate(&p, 'c', 1, 3, "w"));
        // Allow everything, then deny one.
        let p = program(&[
            rule(true, 'a', None, None, "rwm"),
            rule(false, 'c', Some(1), Some(5), "w"),
        ]);
        assert!(evaluate(&p, 'b', 8, 0, "rw"));
        assert!(!evaluate(&p, 'c', 1, 5, "w"));
        assert!(evaluate(&p, 'c', 1, 5, "r"));
    }

    #[test]
    fn numbers_no_device_has_never_match() {
        let p = program(&[
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(i64::from(u32::MAX) + 5), None, "rwm"),
        ]);
        assert!(!evaluate(&p, 'c', 4, 0, "r"));
    }

    #[test]
    fn the_kernel_accepts_the_program() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: loading eBPF needs root");
            return;
        }
        let user = [rule(true, 'c', Some(10), Some(229), "rw")];
        match load(&program(&v1_program(&user))) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                eprintln!("skipped: no bpf(2) here")
            }
            Err(e) => panic!("the verifier refused it: {e}"),
        }
    }
}
