//! Replays the seed corpora of `runtime/fuzz/` through the code each fuzz target runs, so
//! that CI without nightly exercises them too: every file must give Ok or an error with a
//! message, never a panic.

use std::path::PathBuf;

use hull_runtime::fuzzing;

fn replay(target: &str, body: fn(&[u8]) -> Result<(), String>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = e.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        if let Err(msg) = body(&data) {
            assert!(!msg.is_empty(), "{}: empty error message", path.display());
        }
        n += 1;
    }
    assert!(n >= 5, "only {n} files in {}", dir.display());
}

#[test]
fn replay_config_corpus() {
    replay("config", fuzzing::config);
}

#[test]
fn replay_process_corpus() {
    replay("process", fuzzing::process);
}

#[test]
fn replay_seccomp_corpus() {
    replay("seccomp", fuzzing::seccomp);
}

#[test]
fn replay_sync_corpus() {
    replay("sync", fuzzing::sync);
}

#[test]
fn replay_resources_corpus() {
    replay("resources", fuzzing::resources);
}

/// Seeds that are valid inputs pass, so the targets do not fuzz only error paths.
#[test]
fn valid_seeds_pass() {
    let seed = |target: &str, name: &str| {
        std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/corpus")
                .join(target)
                .join(format!("seed-{name}")),
        )
        .expect("seed")
    };
    fuzzing::process(&seed("process", "full")).expect("a full process.json");
    fuzzing::resources(&seed("resources", "memory-cpu")).expect("resources");
    // Decoding stops at the end of the input with "closed".
    let err = fuzzing::sync(&seed("sync", "from-init")).expect_err("ends");
    assert!(err.contains("closed"), "{err}");
}
