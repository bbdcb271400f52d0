//! User namespace id maps: writing a new user namespace's `uid_map`/`gid_map` (directly as
//! root, through `newuidmap`/`newgidmap` when unprivileged), and the `io.hull.userns=auto`
//! id-range allocator.
//!
//! **Maps.** Root writes `/proc/<pid>/{uid,gid}_map` itself, any number of ranges. An
//! unprivileged hull may write a map itself only when it maps exactly its own id (one
//! range of size 1); for a gid map that needs `setgroups` set to `deny` first, so the
//! container cannot drop groups (`process_setup` then skips `setgroups`). Any other map is
//! handed to the setuid helpers of Debian's `uidmap` package, which check it against
//! `/etc/subuid` and `/etc/subgid`.
//!
//! **`io.hull.userns=auto`.** Each such container gets the lowest free 65,536-id slot of a
//! pool. The pool is the subordinate-id range of a dedicated user, [`DEFAULT_POOL_USER`]
//! (`hull`; [`USER_ENV`] names another), in `/etc/subuid` and `/etc/subgid` — the same
//! range in both, as `useradd` and `usermod --add-subuids` make them — as podman and CRI-O
//! take theirs from `containers`. `dev/install-deps` adds `hull:2147483648:2147418112` when
//! there is no entry. Any other user's subordinate range that overlaps the pool is refused,
//! so a container never gets ids that `newuidmap` would also hand to that user.
//! [`BASE_ENV`] and [`SLOTS_ENV`] give the pool explicitly instead (tests; still checked for
//! overlaps). The slot is chosen under an exclusive `flock` of the `--root` directory itself (nothing
//! else locks it; per-container commands lock files inside the container directories) by
//! reading the allocations of every container under the same `--root`, and is recorded in the
//! container's own state directory ([`RECORD_FILE`]) before the lock is released, so two
//! concurrent `create`s never pick the same slot. Deleting the container removes its state
//! directory and with it the allocation. A stopped but not deleted container keeps its
//! range.
//!
//! Rootfs ownership is not changed: files appear owned by root in the container only if the
//! rootfs is owned by the range's first host id.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_spec::runtime::LinuxIdMapping;

/// The user whose subordinate ids are the pool, unless [`USER_ENV`] names another.
pub const DEFAULT_POOL_USER: &str = "hull";
/// Environment variable naming the pool's user.
pub const USER_ENV: &str = "HULL_USERNS_AUTO_USER";
/// Environment variable giving the pool's first host id explicitly (with [`SLOTS_ENV`]).
pub const BASE_ENV: &str = "HULL_USERNS_AUTO_BASE";
/// Environment variable giving the pool's number of 65,536-id slots (default 1024 with
/// [`BASE_ENV`]).
pub const SLOTS_ENV: &str = "HULL_USERNS_AUTO_SLOTS";
/// Slots of an explicit pool whose size is not given.
pub const DEFAULT_SLOTS: u32 = 1024;
/// Where `hull vps` keeps its partitions, each directory holding the partition's range
/// record: their ranges are taken whatever `--root` a container uses. `HULL_VPS_DIR`
/// moves it (as it moves `hull vps`'s own).
pub const PARTITIONS_DIR: &str = "/var/lib/hull/vps";

fn partitions_dir() -> PathBuf {
    std::env::var_os("HULL_VPS_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(PARTITIONS_DIR))
}

/// Where the subordinate uid and gid ranges are.
pub const SUBUID_FILE: &str = "/etc/subuid";
pub const SUBGID_FILE: &str = "/etc/subgid";
/// The allocation record in a container's state directory: the first host id, in decimal.
pub const RECORD_FILE: &str = "userns-auto";

const SIZE: u32 = hull_specs::annotations::USERNS_AUTO_SIZE;

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("{field}: writing {path:?}: {source}")]
    WriteMap {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{field}: running {program} (needed to map ids other than hull's own as an unprivileged user; Debian package uidmap): {source}")]
    Helper {
        field: &'static str,
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{field}: {program} refused the mapping ({status}): {stderr} (are the ranges in /etc/sub{kind}?)")]
    HelperFailed {
        field: &'static str,
        program: &'static str,
        kind: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("annotations[\"io.hull.userns\"]: {var}: {reason}")]
    Config { var: &'static str, reason: String },
    #[error("annotations[\"io.hull.userns\"]: all {slots} id ranges from host id {base} are in use under {root:?}")]
    Exhausted {
        base: u32,
        slots: u32,
        root: PathBuf,
    },
    #[error("annotations[\"io.hull.userns\"]: {what} {path:?}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Spec(#[from] hull_specs::SpecError),
}

// ---- id maps ---------------------------------------------------------------------------

/// `uid` or `gid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Uid,
    Gid,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Uid => "uid",
            Kind::Gid => "gid",
        }
    }
    fn field(self) -> &'static str {
        match self {
            Kind::Uid => "linux.uidMappings",
            Kind::Gid => "linux.gidMappings",
        }
    }
    fn helper(self) -> &'static str {
        match self {
            Kind::Uid => "newuidmap",
            Kind::Gid => "newgidmap",
        }
    }
}

/// How one map gets written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapWriter {
    /// Write `/proc/<pid>/<kind>_map` ourselves.
    Direct,
    /// Write `deny` to `/proc/<pid>/setgroups`, then the gid map ourselves (an unprivileged
    /// process mapping its own gid).
    DirectDenySetgroups,
    /// Run `newuidmap`/`newgidmap`.
    Helper,
}

/// The writer for a map: `privileged` is hull running as root, `own` hull's euid (or egid).
pub fn map_writer(maps: &[LinuxIdMapping], privileged: bool, own: u32, gid: bool) -> MapWriter {
    let only_own = matches!(maps, [m] if m.size() == 1 && m.host_id() == own);
    match (privileged, only_own, gid) {
        (true, _, _) => MapWriter::Direct,
        (false, true, false) => MapWriter::Direct,
        (false, true, true) => MapWriter::DirectDenySetgroups,
        (false, false, _) => MapWriter::Helper,
    }
}

/// The text of a `uid_map`/`gid_map`: one `container host size` line per range.
pub fn map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Write the id maps of the new user namespace of process `pid` (still waiting for them).
pub fn write_id_maps(
    pid: i32,
    uid_maps: &[LinuxIdMapping],
    gid_maps: &[LinuxIdMapping],
) -> Result<(), UsernsError> {
    let euid = nix::unistd::geteuid();
    let egid = nix::unistd::getegid();
    let privileged = euid.is_root();
    for (kind, maps, own) in [
        (Kind::Uid, uid_maps, euid.as_raw()),
        (Kind::Gid, gid_maps, egid.as_raw()),
    ] {
        match map_writer(maps, privileged, own, kind == Kind::Gid) {
            MapWriter::Direct => write_map_file(pid, kind, maps)?,
            MapWriter::DirectDenySetgroups => {
                let path = PathBuf::from(format!("/proc/{pid}/setgroups"));
                fs::write(&path, b"deny").map_err(|source| UsernsError::WriteMap {
                    field: kind.field(),
                    path,
                    source,
                })?;
                write_map_file(pid, kind, maps)?;
            }
            MapWriter::Helper => run_helper(pid, kind, maps)?,
        }
    }
    Ok(())
}

fn write_map_file(pid: i32, kind: Kind, maps: &[LinuxIdMapping]) -> Result<(), UsernsError> {
    let path = PathBuf::from(format!("/proc/{pid}/{}_map", kind.name()));
    // One write(2): the kernel accepts a map once, whole.
    fs::write(&path, map_text(maps).as_bytes()).map_err(|source| UsernsError::WriteMap {
        field: kind.field(),
        path,
        source,
    })
}

fn run_helper(pid: i32, kind: Kind, maps: &[LinuxIdMapping]) -> Result<(), UsernsError> {
    let program = kind.helper();
    let mut cmd = Command::new(program);
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.arg(m.container_id().to_string())
            .arg(m.host_id().to_string())
            .arg(m.size().to_string());
    }
    // The helper must not inherit our sync socket or the container's stdio.
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let out = cmd.output().map_err(|source| UsernsError::Helper {
        field: kind.field(),
        program,
        source,
    })?;
    if !out.status.success() {
        return Err(UsernsError::HelperFailed {
            field: kind.field(),
            program,
            kind: kind.name(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

// ---- io.hull.userns=auto -----------------------------------------------------------------

/// The pool of host ids `auto` ranges come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub base: u32,
    pub slots: u32,
}

/// One line of `/etc/subuid` or `/etc/subgid`: `owner:start:count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubidRange {
    pub owner: String,
    pub start: u64,
    pub count: u64,
}

impl SubidRange {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.start + self.count
    }
}

/// The ranges of a subordinate-id file. Lines that are not `owner:start:count` (comments,
/// blanks, damage) are skipped, as shadow-utils' own readers skip them.
pub fn parse_subid(text: &str) -> Vec<SubidRange> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.trim().split(':');
            let (owner, start, count) = (f.next()?, f.next()?, f.next()?);
            if f.next().is_some() || owner.is_empty() || owner.starts_with('#') {
                return None;
            }
            Some(SubidRange {
                owner: owner.to_string(),
                start: start.parse().ok()?,
                count: count.parse().ok()?,
            })
        })
        .collect()
}

/// What the pool is read from: the environment's explicit pool and user, and the texts of
/// the two subordinate-id files.
#[derive(Debug, Default)]
pub struct PoolSource<'a> {
    pub base: Option<&'a str>,
    pub slots: Option<&'a str>,
    pub user: Option<&'a str>,
    pub subuid: &'a str,
    pub subgid: &'a str,
}

impl Pool {
    /// The pool of this host: [`BASE_ENV`]/[`SLOTS_ENV`] if set, else the pool user's
    /// ranges in [`SUBUID_FILE`] and [`SUBGID_FILE`]; see [`Pool::resolve`].
    pub fn from_system() -> Result<Self, UsernsError> {
        let read = |path: &str| match fs::read_to_string(path) {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(UsernsError::Io {
                what: "reading",
                path: path.into(),
                source,
            }),
        };
        let (subuid, subgid) = (read(SUBUID_FILE)?, read(SUBGID_FILE)?);
        let env = |var| std::env::var(var).ok();
        let (base, slots, user) = (env(BASE_ENV), env(SLOTS_ENV), env(USER_ENV));
        Pool::resolve(&PoolSource {
            base: base.as_deref(),
            slots: slots.as_deref(),
            user: user.as_deref(),
            subuid: &subuid,
            subgid: &subgid,
        })
    }

    /// The pool `src` describes. An explicit base (and slot count) wins; otherwise the pool
    /// user must have one range in the subuid file and the same one in the subgid file. The
    /// pool is refused when another user's range in either file overlaps it.
    pub fn resolve(src: &PoolSource) -> Result<Self, UsernsError> {
        let user = src.user.unwrap_or(DEFAULT_POOL_USER);
        let number = |var: &'static str, v: &str| {
            v.trim().parse::<u32>().map_err(|e| UsernsError::Config {
                var,
                reason: format!("{v:?}: {e}"),
            })
        };
        let pool = match src.base {
            Some(base) => Pool {
                base: number(BASE_ENV, base)?,
                slots: match src.slots {
                    Some(s) => number(SLOTS_ENV, s)?,
                    None => DEFAULT_SLOTS,
                },
            },
            None => Pool::of_user(user, src.subuid, src.subgid)?,
        };
        pool.check()?;
        let (start, end) = (u64::from(pool.base), pool.end());
        for (file, text) in [(SUBUID_FILE, src.subuid), (SUBGID_FILE, src.subgid)] {
            if let Some(r) = parse_subid(text)
                .into_iter()
                .find(|r| r.owner != user && r.overlaps(start, end))
            {
                return Err(UsernsError::Config {
                    var: file,
                    reason: format!(
                        "user {:?} has ids {}..{}, which overlap hull's pool {start}..{end}: those ids could belong to both; give {user:?} a range of its own",
                        r.owner,
                        r.start,
                        r.start + r.count
                    ),
                });
            }
        }
        Ok(pool)
    }

    /// The pool from `user`'s subordinate ranges.
    fn of_user(user: &str, subuid: &str, subgid: &str) -> Result<Self, UsernsError> {
        let missing = |file: &'static str| {
            UsernsError::Config {
            var: file,
            reason: format!(
                "no range for user {user:?}, the pool of automatic user namespaces: add one line `{user}:2147483648:2147418112` (or another range no one else uses) to both {SUBUID_FILE} and {SUBGID_FILE}"
            ),
        }
        };
        let own = |file: &'static str, text: &str| {
            let mut ranges = parse_subid(text).into_iter().filter(|r| r.owner == user);
            match (ranges.next(), ranges.next()) {
                (None, _) => Err(missing(file)),
                (Some(r), None) => Ok(r),
                (Some(_), Some(_)) => Err(UsernsError::Config {
                    var: file,
                    reason: format!(
                        "user {user:?} has more than one range; hull's pool must be one range"
                    ),
                }),
            }
        };
        let (u, g) = (own(SUBUID_FILE, subuid)?, own(SUBGID_FILE, subgid)?);
        if (u.start, u.count) != (g.start, g.count) {
            return Err(UsernsError::Config {
                var: USER_ENV,
                reason: format!(
                    "user {user:?} has uids {}:{} in {SUBUID_FILE} but gids {}:{} in {SUBGID_FILE}: hull maps uids and gids alike and needs the same range in both",
                    u.start, u.count, g.start, g.count
                ),
            });
        }
        let slots = u.count / u64::from(SIZE);
        if slots == 0 || u.start > u64::from(u32::MAX) {
            return Err(UsernsError::Config {
                var: USER_ENV,
                reason: format!(
                    "{SUBUID_FILE}: user {user:?}'s range {}:{} does not hold one {SIZE}-id slot of 32-bit ids",
                    u.start, u.count
                ),
            });
        }
        Ok(Pool {
            base: u.start as u32,
            slots: u32::try_from(slots).unwrap_or(u32::MAX),
        })
    }

    /// One past the pool's last host id.
    fn end(&self) -> u64 {
        u64::from(self.base) + u64::from(self.slots) * u64::from(SIZE)
    }

    fn check(&self) -> Result<(), UsernsError> {
        let pool = self;
        if pool.base == 0 || pool.slots == 0 {
            return Err(UsernsError::Config {
                var: BASE_ENV,
                reason:
                    "the base and the number of slots must be greater than 0 (host id 0 is root)"
                        .into(),
            });
        }
        // Host id 2^32-1 is the invalid id (-1): the pool ends before it.
        if pool.end() > u64::from(u32::MAX) {
            return Err(UsernsError::Config {
                var: SLOTS_ENV,
                reason: format!(
                    "{} slots of {SIZE} ids from {} exceed the 32-bit id range",
                    pool.slots, pool.base
                ),
            });
        }
        Ok(())
    }

    /// The first host id of the lowest slot no range in `used` overlaps.
    pub fn pick(&self, used: &[u32]) -> Option<u32> {
        (0..self.slots)
            .map(|i| self.base + i * SIZE)
            .find(|&start| {
                used.iter().all(|&u| {
                    let (a, b) = (u64::from(start), u64::from(u));
                    a + u64::from(SIZE) <= b || b + u64::from(SIZE) <= a
                })
            })
    }
}

/// The range recorded in a container's state directory, if any.
pub fn allocated(state_dir: &Path) -> Option<u32> {
    fs::read_to_string(state_dir.join(RECORD_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Choose a free range for the container whose state directory is `state_dir` (under
/// `root`) and record it there. Returns the range's first host id. The ranges recorded
/// under `root` and those of `hull vps`'s partitions ([`PARTITIONS_DIR`]) are in use.
pub fn allocate(root: &Path, state_dir: &Path, pool: Pool) -> Result<u32, UsernsError> {
    let partitions = partitions_dir();
    if partitions != root && partitions.is_dir() {
        // Partitions are created under their directory's lock: take it first, always in
        // this order, so a partition and a container never pick the same free slot.
        return allocate_with(root, state_dir, pool, Some(&partitions));
    }
    allocate_with(root, state_dir, pool, None)
}

fn lock_dir(dir: &Path) -> Result<nix::fcntl::Flock<fs::File>, UsernsError> {
    let file = fs::File::open(dir).map_err(|source| UsernsError::Io {
        what: "opening",
        path: dir.to_path_buf(),
        source,
    })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
        UsernsError::Io {
            what: "locking",
            path: dir.to_path_buf(),
            source: e.into(),
        }
    })
}

fn recorded_under(dir: &Path, except: &Path) -> Vec<u32> {
    let mut used = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let d = entry.path();
        if d != except && entry.file_type().is_ok_and(|t| t.is_dir()) {
            used.extend(allocated(&d));
        }
    }
    used
}

fn allocate_with(
    root: &Path,
    state_dir: &Path,
    pool: Pool,
    partitions: Option<&Path>,
) -> Result<u32, UsernsError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| UsernsError::Io { what, path, source }
    };
    let _partitions_lock = partitions.map(lock_dir).transpose()?;
    // The root directory is the lock: no file to leave behind. Released when `lock` is
    // dropped, after the record is written.
    let lock = lock_dir(root)?;
    fs::read_dir(root).map_err(io("reading", root))?;
    let mut used = recorded_under(root, state_dir);
    if let Some(p) = partitions {
        used.extend(recorded_under(p, state_dir));
    }
    let start = pool.pick(&used).ok_or_else(|| UsernsError::Exhausted {
        base: pool.base,
        slots: pool.slots,
        root: root.to_path_buf(),
    })?;
    let record = state_dir.join(RECORD_FILE);
    let tmp = state_dir.join(format!(".{RECORD_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(start.to_string().as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &record)
    };
    write().map_err(io("recording the range in", &record))?;
    drop(lock);
    Ok(start)
}

/// For a spec annotated `io.hull.userns=auto`: allocate a range for it (see [`allocate`])
/// and put the user namespace and its mappings into `spec`. Returns the range's first host
/// id, or None when the spec does not ask for it.
pub fn apply_if_annotated(
    root: &Path,
    state_dir: &Path,
    spec: &mut hull_specs::Spec,
) -> Result<Option<u32>, UsernsError> {
    if !hull_specs::annotations::userns_auto(spec)? {
        return Ok(None);
    }
    let start = allocate(root, state_dir, Pool::from_system()?)?;
    hull_specs::annotations::apply_userns_auto(spec, start)?;
    Ok(Some(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: u32, h: u32, s: u32) -> LinuxIdMapping {
        oci_spec::runtime::LinuxIdMappingBuilder::default()
            .container_id(c)
            .host_id(h)
            .size(s)
            .build()
            .expect("mapping")
    }

    #[test]
    fn several_ranges_become_several_lines() {
        let maps = [m(0, 1000, 1), m(1, 100000, 65536)];
        assert_eq!(map_text(&maps), "0 1000 1\n1 100000 65536\n");
    }

    #[test]
    fn writer_choice() {
        let own = [m(0, 1000, 1)];
        let sub = [m(0, 1000, 1), m(1, 100000, 65536)];
        assert_eq!(map_writer(&sub, true, 0, false), MapWriter::Direct);
        assert_eq!(map_writer(&sub, true, 0, true), MapWriter::Direct);
        assert_eq!(map_writer(&own, false, 1000, false), MapWriter::Direct);
        assert_eq!(
            map_writer(&own, false, 1000, true),
            MapWriter::DirectDenySetgroups
        );
        assert_eq!(map_writer(&own, false, 1001, false), MapWriter::Helper);
        assert_eq!(map_writer(&sub, false, 1000, true), MapWriter::Helper);
    }

    #[test]
    fn pick_lowest_free_slot() {
        let p = Pool {
            base: 1_000_000,
            slots: 3,
        };
        assert_eq!(p.pick(&[]), Some(1_000_000));
        assert_eq!(p.pick(&[1_000_000]), Some(1_065_536));
        assert_eq!(p.pick(&[1_065_536]), Some(1_000_000));
        assert_eq!(p.pick(&[1_000_000, 1_065_536, 1_131_072]), None);
        // A record off the grid (another base) blocks every slot it overlaps.
        assert_eq!(p.pick(&[1_000_001]), Some(1_131_072));
    }

    #[test]
    fn allocate_records_and_frees_with_the_state_dir() {
        let root = tempfile::tempdir().expect("tempdir");
        let pool = Pool {
            base: 2_000_000,
            slots: 2,
        };
        let dirs: Vec<PathBuf> = ["a", "b", "c"]
            .iter()
            .map(|n| {
                let d = root.path().join(n);
                fs::create_dir(&d).expect("mkdir");
                d
            })
            .collect();
        let a = allocate(root.path(), &dirs[0], pool).expect("a");
        let b = allocate(root.path(), &dirs[1], pool).expect("b");
        assert_eq!((a, b), (2_000_000, 2_065_536));
        assert_eq!(allocated(&dirs[0]), Some(a));
        let e = allocate(root.path(), &dirs[2], pool).expect_err("pool full");
        assert!(e.to_string().contains("io.hull.userns"), "{e}");
        fs::remove_dir_all(&dirs[0]).expect("delete a");
        assert_eq!(allocate(root.path(), &dirs[2], pool).ok(), Some(a));
    }

    #[test]
    fn concurrent_allocations_never_share() {
        let root = tempfile::tempdir().expect("tempdir");
        let pool = Pool {
            base: 3_000_000,
            slots: 64,
        };
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let root = root.path().to_path_buf();
                std::thread::spawn(move || {
                    let d = root.join(format!("c{i}"));
                    fs::create_dir(&d).expect("mkdir");
                    allocate(&root, &d, pool).expect("allocate")
                })
            })
            .collect();
        let mut got: Vec<u32> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len(), 16);
    }

    fn resolve(
        base: Option<&str>,
        user: Option<&str>,
        subuid: &str,
        subgid: &str,
    ) -> Result<Pool, String> {
        Pool::resolve(&PoolSource {
            base,
            slots: None,
            user,
            subuid,
            subgid,
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn subid_lines() {
        let text =
            "# comment\nalice:100000:65536\n\nbad line\nbob:x:1\nhull:2147483648:2147418112\n";
        let r = parse_subid(text);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[1].owner, "hull");
        assert_eq!((r[1].start, r[1].count), (2_147_483_648, 2_147_418_112));
    }

    #[test]
    fn pool_is_the_pool_users_range() {
        let sub = "alice:100000:65536\nhull:2147483648:2147418112\n";
        let p = resolve(None, None, sub, sub).expect("pool");
        assert_eq!(
            p,
            Pool {
                base: 2_147_483_648,
                slots: 32767
            }
        );
        let p = resolve(
            None,
            Some("containers"),
            "containers:500000:131073\n",
            "containers:500000:131073\n",
        )
        .expect("other user");
        assert_eq!(
            p,
            Pool {
                base: 500_000,
                slots: 2
            }
        );
    }

    #[test]
    fn pool_refusals_name_the_problem() {
        let e = resolve(None, None, "", "").expect_err("no entry");
        assert!(e.contains("/etc/subuid") && e.contains("\"hull\""), "{e}");
        let e = resolve(None, None, "hull:1000000:65536\n", "").expect_err("no gid entry");
        assert!(e.contains("/etc/subgid"), "{e}");
        let e = resolve(None, None, "hull:1000000:65536\n", "hull:2000000:65536\n")
            .expect_err("different");
        assert!(e.contains("same range"), "{e}");
        let e = resolve(None, None, "hull:1000000:100\n", "hull:1000000:100\n").expect_err("small");
        assert!(e.contains("slot"), "{e}");
        let two = "hull:1000000:65536\nhull:3000000:65536\n";
        let e = resolve(None, None, two, two).expect_err("two ranges");
        assert!(e.contains("more than one"), "{e}");
        // Debian's useradd: the 15th user gets 100000 + 14 * 65536 = 1017504.
        let sub = "hull:1000000:655360\nuser15:1017504:65536\n";
        let e = resolve(None, None, sub, "hull:1000000:655360\n").expect_err("overlap");
        assert!(
            e.contains("\"user15\"") && e.contains("/etc/subuid") && e.contains("overlap"),
            "{e}"
        );
        let e = resolve(None, None, "hull:1000000:655360\n", sub).expect_err("gid overlap");
        assert!(e.contains("/etc/subgid"), "{e}");
        // An explicit pool is checked too; a range just past it is fine.
        let e = resolve(Some("1000000"), None, "user15:1017504:65536\n", "")
            .expect_err("explicit overlap");
        assert!(e.contains("user15"), "{e}");
        let past = format!("x:{}:10\n", 1_000_000u64 + 1024 * 65536);
        assert!(resolve(Some("1000000"), None, &past, &past).is_ok());
        let e = resolve(Some("4294901760"), None, "", "").expect_err("past 32 bits");
        assert!(e.contains("32-bit"), "{e}");
    }

    #[test]
    fn partitions_ranges_are_in_use_for_containers() {
        let root = tempfile::tempdir().expect("tempdir");
        let parts = tempfile::tempdir().expect("tempdir");
        let pool = Pool {
            base: 4_000_000,
            slots: 4,
        };
        let web1 = parts.path().join("web1");
        fs::create_dir(&web1).expect("mkdir");
        let p = allocate_with(parts.path(), &web1, pool, None).expect("partition");
        let c = root.path().join("c1");
        fs::create_dir(&c).expect("mkdir");
        let got = allocate_with(root.path(), &c, pool, Some(parts.path())).expect("container");
        assert_eq!((p, got), (4_000_000, 4_065_536));
    }
}
