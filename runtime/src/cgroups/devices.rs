//! Device access rules: runc's default allowlist, validation of `linux.resources.devices`,
//! the v1 `devices.allow`/`devices.deny` encoding, and what can be accepted on cgroup v2
//! (where hull has no eBPF device filter yet).

use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

/// One device cgroup rule, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub allow: bool,
    /// 'a', 'b' or 'c'.
    pub kind: char,
    /// None = any (`*`).
    pub major: Option<i64>,
    pub minor: Option<i64>,
    /// Non-empty subset of "rwm", in that order.
    pub access: String,
}

impl Rule {
    fn allow_char(major: i64, minor: Option<i64>) -> Rule {
        Rule {
            allow: true,
            kind: 'c',
            major: Some(major),
            minor,
            access: String::new(),
        }
    }

    /// The line written to `devices.allow` / `devices.deny` (v1).
    pub fn v1_line(&self) -> String {
        let num = |n: Option<i64>| n.map_or_else(|| "*".to_string(), |v| v.to_string());
        format!(
            "{} {}:{} {}",
            self.kind,
            num(self.major),
            num(self.minor),
            self.access
        )
    }

    /// Does `self` (an allow rule) grant at least everything `other` asks for?
    fn covers(&self, other: &Rule) -> bool {
        let kind_ok = self.kind == 'a' || self.kind == other.kind;
        let num_ok = |mine: Option<i64>, theirs: Option<i64>| mine.is_none() || mine == theirs;
        kind_ok
            && num_ok(self.major, other.major)
            && num_ok(self.minor, other.minor)
            && other.access.chars().all(|c| self.access.contains(c))
    }
}

/// runc's default allowed devices (libcontainer/specconv `AllowedDevices`): mknod of any
/// char/block device, then rwm on null, random, full, tty, zero, urandom, console, pts/*,
/// ptmx and net/tun.
pub(crate) fn default_allowed() -> Vec<Rule> {
    let rwm = |mut r: Rule| {
        r.access = "rwm".into();
        r
    };
    let mknod = |kind| Rule {
        allow: true,
        kind,
        major: None,
        minor: None,
        access: "m".into(),
    };
    vec![
        mknod('c'),
        mknod('b'),
        rwm(Rule::allow_char(1, Some(3))),    // /dev/null
        rwm(Rule::allow_char(1, Some(8))),    // /dev/random
        rwm(Rule::allow_char(1, Some(7))),    // /dev/full
        rwm(Rule::allow_char(5, Some(0))),    // /dev/tty
        rwm(Rule::allow_char(1, Some(5))),    // /dev/zero
        rwm(Rule::allow_char(1, Some(9))),    // /dev/urandom
        rwm(Rule::allow_char(5, Some(1))),    // /dev/console
        rwm(Rule::allow_char(136, None)),     // /dev/pts/*
        rwm(Rule::allow_char(5, Some(2))),    // /dev/ptmx
        rwm(Rule::allow_char(10, Some(200))), // /dev/net/tun
    ]
}

/// Validates one OCI rule (`index` is its position, for the error).
pub(crate) fn parse_rule(index: usize, d: &LinuxDeviceCgroup) -> Result<Rule, (String, String)> {
    let field = format!("linux.resources.devices[{index}]");
    let kind = match d.typ().unwrap_or_default() {
        LinuxDeviceType::A => 'a',
        LinuxDeviceType::B => 'b',
        LinuxDeviceType::C | LinuxDeviceType::U => 'c',
        LinuxDeviceType::P => {
            return Err((
                format!("{field}.type"),
                "'p' (FIFO) is not a device cgroup type (use a, b or c)".into(),
            ))
        }
    };
    let num = |n: Option<i64>, what: &str| match n {
        None | Some(-1) => Ok(None),
        Some(v) if v >= 0 => Ok(Some(v)),
        Some(v) => Err((format!("{field}.{what}"), format!("{v} is negative"))),
    };
    let major = num(d.major(), "major")?;
    let minor = num(d.minor(), "minor")?;
    let raw = d.access().as_deref().unwrap_or("");
    let access = if raw.is_empty() {
        "rwm".to_string()
    } else {
        if let Some(bad) = raw.chars().find(|c| !"rwm".contains(*c)) {
            return Err((
                format!("{field}.access"),
                format!("{raw:?} contains {bad:?}; only r, w and m are allowed"),
            ));
        }
        "rwm".chars().filter(|c| raw.contains(*c)).collect()
    };
    Ok(Rule {
        allow: d.allow(),
        kind,
        major,
        minor,
        access,
    })
}

/// Parses every rule of `linux.resources.devices`.
pub(crate) fn parse_rules(resources: &LinuxResources) -> Result<Vec<Rule>, (String, String)> {
    resources
        .devices()
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, d)| parse_rule(i, d))
        .collect()
}

/// The full v1 rule list, in runc's order: deny everything, the user's rules, then the default
/// allowlist (appended last so a user's "deny all" cannot remove /dev/null and friends).
pub(crate) fn v1_program(user: &[Rule]) -> Vec<Rule> {
    let mut rules = vec![Rule {
        allow: false,
        kind: 'a',
        major: None,
        minor: None,
        access: "rwm".into(),
    }];
    rules.extend(user.iter().cloned());
    rules.extend(default_allowed());
    rules
}

/// On cgroup v2, device access is filtered by an eBPF program, which hull does not load yet.
/// Rules that only deny, or only allow what the default list allows anyway, are accepted
/// (with the caveat that nothing is enforced); returns the first rule that would grant more.
pub(crate) fn first_v2_unenforceable(user: &[Rule]) -> Option<(usize, &Rule)> {
    let defaults = default_allowed();
    user.iter()
        .enumerate()
        .find(|(_, r)| r.allow && !defaults.iter().any(|d| d.covers(r)))
}

/// Allow rules (rwm) for the device nodes of `linux.devices`. The lifecycle code appends
/// these to `linux.resources.devices` before `create`. A FIFO (`type: "p"`) is not a device
/// the device cgroup controls: its node is made and no rule is added (as runc).
pub fn spec_device_rules(devices: &[LinuxDevice]) -> Vec<LinuxDeviceCgroup> {
    devices
        .iter()
        .filter(|d| d.typ() != LinuxDeviceType::P)
        .map(LinuxDeviceCgroup::from)
        .collect()
}
