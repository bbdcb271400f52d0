//! Replays the seed corpus of `kvm-tier/fuzz/` through the code the fuzz target runs, so
//! that CI without nightly exercises it too: every file must be handled without a panic.

use std::path::PathBuf;

#[test]
fn replay_vsock_queue_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/vsock_queue");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = e.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        hull_kvm::fuzzing::vsock_queue(&data);
        n += 1;
    }
    assert!(n >= 5, "only {n} files in {}", dir.display());
}
