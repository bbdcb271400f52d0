//! `/etc/passwd` lookups: the container's (a process's `HOME`) and the host's (the owner
//! `hull state` shows). Plain parsing, no NSS: the container's user database is a file.

use std::fs;
use std::path::Path;

/// The home directory of `uid` from the container's `/etc/passwd` (call after pivot_root).
pub fn home_for_uid(uid: u32) -> Option<String> {
    home_for_uid_in(Path::new("/etc/passwd"), uid)
}

/// [`home_for_uid`] reading the given passwd file: the first well-formed
/// `name:password:uid:gid:gecos:home:shell` line with that uid and a non-empty home.
pub fn home_for_uid_in(passwd: &Path, uid: u32) -> Option<String> {
    let text = fs::read(passwd).ok()?;
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 6 || fields[2].trim().parse::<u32>().ok()? != uid {
                return None;
            }
            Some(fields[5].to_string())
        })
        .filter(|h| !h.is_empty())
}

/// runc's `HOME` default: when `env` has no non-empty `HOME=`, add `HOME=<home of uid>`
/// (from the container's `/etc/passwd`, `/` when unknown).
pub fn ensure_home(env: &mut Vec<String>, uid: u32) {
    ensure_home_with(env, || home_for_uid(uid))
}

/// [`ensure_home`] with the lookup supplied (for tests).
pub fn ensure_home_with(env: &mut Vec<String>, lookup: impl FnOnce() -> Option<String>) {
    let has_home = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("HOME="))
        .is_some_and(|h| !h.is_empty());
    if !has_home {
        env.retain(|e| !e.starts_with("HOME="));
        env.push(format!("HOME={}", lookup().unwrap_or_else(|| "/".into())));
    }
}

/// The name of `uid` in the host's /etc/passwd, or `#uid` as runc shows it.
pub fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| format!("#{uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|s| s.to_string()).collect()
    }

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment
broken line
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
nohome:x:7:7:::/bin/sh
user:x:1000:1000:User,,,:/home/user:/bin/sh
dup:x:1000:1000::/home/dup:/bin/sh
";

    #[test]
    fn home_for_uid_in_parses_passwd() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("passwd");
        fs::write(&p, PASSWD).unwrap();
        assert_eq!(home_for_uid_in(&p, 0).as_deref(), Some("/root"));
        assert_eq!(home_for_uid_in(&p, 1).as_deref(), Some("/usr/sbin"));
        assert_eq!(home_for_uid_in(&p, 1000).as_deref(), Some("/home/user"));
        assert_eq!(home_for_uid_in(&p, 7), None);
        assert_eq!(home_for_uid_in(&p, 4242), None);
        assert_eq!(home_for_uid_in(&dir.path().join("missing"), 0), None);
    }

    #[test]
    fn ensure_home_adds_home_only_when_missing_or_empty() {
        let mut e = env(&["PATH=/bin"]);
        ensure_home_with(&mut e, || Some("/home/u".into()));
        assert_eq!(e, env(&["PATH=/bin", "HOME=/home/u"]));

        let mut e = env(&["HOME=/x"]);
        ensure_home_with(&mut e, || panic!("must not look up"));
        assert_eq!(e, env(&["HOME=/x"]));

        let mut e = env(&["HOME="]);
        ensure_home_with(&mut e, || None);
        assert_eq!(e, env(&["HOME=/"]));
    }
}
