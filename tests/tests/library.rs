//! The runtime as a library, the way `containerd-shim-hull-v2` uses it: create with the
//! container's own stdio descriptors (not the caller's), start, wait, exec with its own
//! stdio, delete.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use hull_runtime::exec::ExecOptions;
use hull_runtime::{CreateOptions, Runtime};
use hull_tests::{setup, wait_until, Bundle};

fn pipe() -> (std::fs::File, OwnedFd) {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    (std::fs::File::from(r), w)
}

fn read_all(mut f: std::fs::File) -> String {
    let mut s = String::new();
    f.read_to_string(&mut s).expect("read pipe");
    s
}

#[test]
fn create_and_exec_with_their_own_stdio() {
    let Some(rt) = setup("library-stdio") else {
        return;
    };
    if rt.is_runc() {
        eprintln!("skipped: tests hull's library API");
        return;
    }
    let mut b = Bundle::new();
    b.sh("read line; echo got:$line; echo to-stderr >&2; sleep 60");
    b.write();
    let lib = Runtime {
        root: rt.root().to_path_buf(),
        systemd_cgroup: false,
        rootless: false,
        init_binary: Some(hull_tests::runtime::bin_path()),
    };
    let id = rt.id();
    let (in_r, in_w) = nix::unistd::pipe().unwrap();
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let created = lib
        .create(
            &id,
            &CreateOptions {
                bundle: b.path().to_path_buf(),
                stdio: Some([in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()]),
                ..Default::default()
            },
        )
        .expect("create");
    // The caller's copies are closed, so EOF arrives when the container closes its own.
    drop((in_r, out_w, err_w));
    lib.start(&id).expect("start");
    nix::unistd::write(&in_w, b"hello\n").unwrap();
    drop(in_w);

    let (x_out_r, x_out_w) = pipe();
    let null = std::fs::File::open("/dev/null").unwrap();
    let mut process = lib.state_config(&id).unwrap().process().clone().unwrap();
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "echo from-exec; exit 3".into(),
    ]));
    let code = lib
        .exec(
            &id,
            &ExecOptions {
                process,
                detach: false,
                pid_file: None,
                console_socket: None,
                preserve_fds: 0,
                stdio: Some([null.as_raw_fd(), x_out_w.as_raw_fd(), x_out_w.as_raw_fd()]),
            },
        )
        .expect("exec");
    drop(x_out_w);
    assert_eq!(code, 3);
    assert_eq!(read_all(x_out_r), "from-exec\n");

    lib.kill(&id, libc::SIGKILL, false).expect("kill");
    // We are init's parent here, as a shim is: reap it.
    let status = nix::sys::wait::waitpid(created.pid, None).expect("waitpid");
    assert!(
        matches!(
            status,
            nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)
        ),
        "{status:?}"
    );
    assert!(wait_until(Duration::from_secs(5), || lib
        .state(&id)
        .map(|s| s.pid == 0)
        .unwrap_or(false)));
    lib.delete(&id, false).expect("delete");
    assert_eq!(read_all(out_r), "got:hello\n");
    assert_eq!(read_all(err_r), "to-stderr\n");
}
