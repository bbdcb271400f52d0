//! seccomp filters for the VMM's threads, one per kind of thread, each
//! allowing only the system calls that kind makes once the guest runs.
//!
//! * **vCPU** threads run `KVM_RUN` and emulate devices on exits: writes
//!   (serial, eventfds, logs), the vhost-user messages of a virtio-fs
//!   activation (`sendmsg`/`recvmsg`), waking device threads.
//! * **device** threads (vsock worker, virtiofsd log reader) poll and move
//!   bytes over unix sockets.
//! * the **API** thread (the caller of [`crate::Vm::wait`] and the VM's
//!   teardown) kicks vCPUs, stops and reaps virtiofsd, removes sockets.
//!
//! Filters are built while the VMM still may do anything (in
//! [`crate::Vm::start`]), then each thread installs its own before it runs
//! guest-facing code. Threads that need more are created before any filter
//! is installed, so no thread inherits a filter meant for another kind.
//! Memory may be mapped but never made executable. Opening a file fails
//! with `EACCES` (glibc opens files behind the caller's back: `malloc`
//! reads `/proc/sys/vm/overcommit_memory` the first time it shrinks a
//! thread's heap, and copes with a failed open). Anything else kills the
//! process (`SIGSYS`).

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule,
};
use thiserror::Error;

/// The kinds of VMM threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// A vCPU thread.
    Vcpu,
    /// A device worker thread.
    Device,
    /// The thread that waits for and tears down the VM.
    Api,
}

/// Whether the VMM's threads are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeccompLevel {
    /// No filters (debugging).
    Off,
    /// Per-thread filters; a forbidden system call kills the process.
    #[default]
    Enforce,
}

/// Why a filter could not be built or installed.
#[derive(Debug, Error)]
pub enum SeccompError {
    /// The rules did not compile.
    #[error("building the {kind:?} seccomp filter: {source}")]
    Build {
        /// The thread kind.
        kind: ThreadKind,
        /// The cause.
        source: seccompiler::Error,
    },
    /// The kernel refused the filter.
    #[error("installing the {kind:?} seccomp filter: {source}")]
    Install {
        /// The thread kind.
        kind: ThreadKind,
        /// The cause.
        source: seccompiler::Error,
    },
}

/// `ioctl` requests a vCPU thread makes.
pub mod kvm_ioctls {
    /// KVM_RUN.
    pub const KVM_RUN: u64 = 0xae80;
    /// KVM_GET_REGS (the vCPU's last state, logged when its thread ends).
    pub const KVM_GET_REGS: u64 = 0x8090_ae81;
    /// KVM_GET_SREGS.
    pub const KVM_GET_SREGS: u64 = 0x8138_ae83;
}

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, seccompiler::Error> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).map_err(Into::into)
}

fn rule(c: SeccompCondition) -> Result<SeccompRule, seccompiler::Error> {
    SeccompRule::new(vec![c]).map_err(Into::into)
}

/// One rule per value: argument `arg` equals any of `values`.
fn arg_in(arg: u8, values: &[u64]) -> Result<Vec<SeccompRule>, seccompiler::Error> {
    values
        .iter()
        .map(|&v| rule(cond(arg, SeccompCmpOp::Eq, v)?))
        .collect()
}

fn allow(rules: &mut Rules, syscalls: &[libc::c_long]) {
    for &s in syscalls {
        rules.insert(s, Vec::new());
    }
}

/// Calls every thread makes: memory (never executable), locks, signals
/// returns, time, logging, thread exit.
fn common(rules: &mut Rules) -> Result<(), seccompiler::Error> {
    allow(
        rules,
        &[
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_writev,
            libc::SYS_close,
            libc::SYS_futex,
            libc::SYS_munmap,
            libc::SYS_madvise,
            libc::SYS_mremap,
            libc::SYS_brk,
            libc::SYS_rt_sigreturn,
            // The kernel resumes an interrupted timed sleep (poll, nanosleep) through it
            // after a stop or a freezer trap: without it, `pause` killed the VMM.
            libc::SYS_restart_syscall,
            libc::SYS_rt_sigprocmask,
            libc::SYS_sigaltstack,
            libc::SYS_sched_yield,
            libc::SYS_clock_gettime,
            libc::SYS_clock_nanosleep,
            libc::SYS_nanosleep,
            libc::SYS_getrandom,
            libc::SYS_gettid,
            libc::SYS_getpid,
            libc::SYS_exit,
            libc::SYS_exit_group,
        ],
    );
    let no_exec = || rule(cond(2, SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64), 0)?);
    rules.insert(libc::SYS_mmap, vec![no_exec()?]);
    rules.insert(libc::SYS_mprotect, vec![no_exec()?]);
    // Duplicating descriptors (eventfd clones) and flag changes only.
    let fcntl = [
        libc::F_DUPFD_CLOEXEC,
        libc::F_GETFL,
        libc::F_SETFL,
        libc::F_GETFD,
        libc::F_SETFD,
    ];
    let fcntl: Vec<u64> = fcntl.iter().map(|&c| c as u64).collect();
    rules.insert(libc::SYS_fcntl, arg_in(1, &fcntl)?);
    Ok(())
}

fn vcpu(rules: &mut Rules) -> Result<(), seccompiler::Error> {
    use kvm_ioctls::*;
    rules.insert(
        libc::SYS_ioctl,
        arg_in(1, &[KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS])?,
    );
    // vhost-user requests (virtio-fs activation and reset).
    allow(rules, &[libc::SYS_sendmsg, libc::SYS_recvmsg]);
    Ok(())
}

fn device(rules: &mut Rules) -> Result<(), seccompiler::Error> {
    allow(
        rules,
        &[
            libc::SYS_poll,
            libc::SYS_ppoll,
            libc::SYS_readv,
            libc::SYS_recvfrom,
            libc::SYS_sendto,
            libc::SYS_recvmsg,
            libc::SYS_sendmsg,
            libc::SYS_accept4,
            libc::SYS_connect,
            libc::SYS_shutdown,
            libc::SYS_getsockopt,
            libc::SYS_setsockopt,
        ],
    );
    // Guest-initiated vsock connections open unix sockets, nothing else.
    rules.insert(libc::SYS_socket, arg_in(0, &[libc::AF_UNIX as u64])?);
    // set_nonblocking on accepted and connected sockets.
    rules.insert(libc::SYS_ioctl, arg_in(1, &[libc::FIONBIO])?);
    Ok(())
}

fn api(rules: &mut Rules) -> Result<(), seccompiler::Error> {
    allow(
        rules,
        &[
            libc::SYS_tgkill,
            libc::SYS_kill,
            // Checking a socket is still a socket before removing it.
            libc::SYS_statx,
            libc::SYS_newfstatat,
            libc::SYS_fstat,
            libc::SYS_wait4,
            libc::SYS_waitid,
            libc::SYS_unlink,
            libc::SYS_unlinkat,
            libc::SYS_rmdir,
            libc::SYS_poll,
            libc::SYS_ppoll,
            libc::SYS_sendmsg,
            libc::SYS_recvmsg,
        ],
    );
    // Dropping the VM closes the KVM fds; the vCPU's last registers.
    rules.insert(
        libc::SYS_ioctl,
        arg_in(1, &[kvm_ioctls::KVM_GET_REGS, kvm_ioctls::KVM_GET_SREGS])?,
    );
    Ok(())
}

/// Instructions put before a compiled filter: `open` and `openat` return
/// `EACCES` instead of reaching the filter (which kills).
///
/// glibc's `malloc` opens `/proc/sys/vm/overcommit_memory` once, the first
/// time it shrinks a non-main arena's heap (`check_may_shrink_heap`); a
/// device thread moving many packets gets there after a few megabytes, and
/// a kill would end the VM. A failed open is handled by glibc (it then
/// shrinks the heap normally). The prefix only adds refusals: every other
/// call, whatever its architecture, goes on to the compiled filter (its
/// jumps are relative, so prepending keeps them valid).
fn refuse_opens() -> Vec<sock_filter> {
    const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        // seccomp_data.nr
        ins(BPF_LD_W_ABS, 0, 0, 0),
        ins(BPF_JEQ_K, 1, 0, libc::SYS_openat as u32),
        ins(BPF_JEQ_K, 0, 1, libc::SYS_open as u32),
        ins(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::EACCES as u32),
    ]
}

/// The filter for threads of `kind`.
pub fn filter(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let build = || -> Result<BpfProgram, seccompiler::Error> {
        let mut rules = Rules::new();
        common(&mut rules)?;
        match kind {
            ThreadKind::Vcpu => vcpu(&mut rules)?,
            ThreadKind::Device => device(&mut rules)?,
            ThreadKind::Api => api(&mut rules)?,
        }
        let f = SeccompFilter::new(
            rules,
            SeccompAction::KillProcess,
            SeccompAction::Allow,
            std::env::consts::ARCH.try_into()?,
        )?;
        let prog: BpfProgram = f.try_into()?;
        Ok(refuse_opens().into_iter().chain(prog).collect())
    };
    build().map_err(|source| SeccompError::Build { kind, source })
}

/// Installs `prog` (a filter for `kind`) on the calling thread.
pub fn install(kind: ThreadKind, prog: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(prog).map_err(|source| SeccompError::Install { kind, source })
}

/// Builds and installs the filter for `kind` on the calling thread (e.g.
/// the API thread of a VMM binary, once its VM is started).
pub fn confine_current_thread(kind: ThreadKind) -> Result<(), SeccompError> {
    install(kind, &filter(kind)?)
}

/// Filters built for one VM, handed to the threads that install them.
#[derive(Debug, Clone, Default)]
pub struct ThreadFilters {
    /// For vCPU threads.
    pub vcpu: Option<BpfProgram>,
    /// For device threads.
    pub device: Option<BpfProgram>,
}

impl ThreadFilters {
    /// Builds the filters `level` asks for.
    pub fn new(level: SeccompLevel) -> Result<Self, SeccompError> {
        match level {
            SeccompLevel::Off => Ok(Self::default()),
            SeccompLevel::Enforce => Ok(Self {
                vcpu: Some(filter(ThreadKind::Vcpu)?),
                device: Some(filter(ThreadKind::Device)?),
            }),
        }
    }
}
