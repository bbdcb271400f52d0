//! A partition's configuration: `partition.toml` in its directory, written by `hull vps
//! create`/`set` and meant to be read and edited by people (every key is documented in the
//! README's "Hosting VPS partitions"). Read again at every start, so an edit takes effect at
//! the next start; `hull vps set` also applies it live.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionConfig {
    /// The partition's name (also its directory's name and, by default, its hostname).
    pub name: String,
    /// The hostname inside.
    pub hostname: String,
    /// Where the root filesystem came from (`debian-12`, or `tar:<path>`); informational.
    pub template: String,
    /// A random 128-bit id in hex: `container_uuid` in PID 1's environment.
    pub uuid: String,
    /// First host uid/gid of the partition's 65,536-id user namespace range.
    pub id_base: u32,
    /// Start at the host's boot (`hull vps start --all-autostart`).
    #[serde(default)]
    pub autostart: bool,
    /// What the monitor does when the partition stops by itself.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Seconds `stop` waits for a clean shutdown before killing what is left.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: u64,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub network: crate::network::NetworkConfig,
}

fn default_stop_timeout() -> u64 {
    60
}

/// When the monitor starts the partition again after it stopped without `hull vps stop`.
/// A `reboot` inside always restarts it; a `poweroff` inside never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    #[default]
    OnFailure,
    Always,
}

/// Limits, all optional (absent = unlimited, or the host's default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Relative CPU weight (cgroup v1 `cpu.shares`, 2..262144; 1024 is one share).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// CPU time as a number of CPUs (e.g. 1.5): quota per 100 ms period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// CPUs the partition may run on (`0-1,3`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    /// Memory limit (`512M`, `2G`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Size>,
    /// Swap on top of memory (`1G`); needs a memory limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap: Option<Size>,
    /// Maximum number of processes and threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// Relative block I/O weight (10..1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_weight: Option<u16>,
    /// Read and write bandwidth limits of host block devices: `["8:0 10M", ...]`
    /// (major:minor, bytes per second).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_read_bps: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_write_bps: Vec<String>,
    /// Size of the root disk image (a hard limit; grows online with `hull vps set --disk`).
    pub disk: Size,
}

/// A byte count written with an optional binary suffix (`K`, `M`, `G`, `T`; `512M`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (num, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
            Some('K') => (&t[..t.len() - 1], 10),
            Some('M') => (&t[..t.len() - 1], 20),
            Some('G') => (&t[..t.len() - 1], 30),
            Some('T') => (&t[..t.len() - 1], 40),
            _ => (t, 0),
        };
        let n: u64 = num
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a size (a whole number with K, M, G or T)"))?;
        n.checked_mul(1 << shift)
            .map(Size)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suffix, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if self.0 >= 1 << shift && self.0 & ((1 << shift) - 1) == 0 {
                return write!(f, "{}{suffix}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(Size(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Partition names: what a hostname label allows, lower case (`web1`, `shop-eu`).
pub fn validate_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: "partition name".into(),
            reason: format!(
                "{name:?}: use 1-63 lower-case letters, digits and '-', not at either end"
            ),
        })
    }
}

const HEADER: &str = "\
# hull vps partition configuration. Edit freely: it is read again at every start, and
# `hull vps set` changes it (and applies it live). Keys: README, \"Hosting VPS partitions\".
";

impl PartitionConfig {
    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: "reading".into(),
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: PartitionConfig = toml::from_str(&text).map_err(|e| Error::Invalid {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?;
        cfg.validate().map_err(|e| match e {
            Error::Invalid { what, reason } => Error::Invalid {
                what: format!("{}: {what}", path.display()),
                reason,
            },
            other => other,
        })?;
        Ok(cfg)
    }

    /// Write `path` atomically (a crash leaves the old or the new file, never half of one).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        self.validate()?;
        let body = toml::to_string(self).map_err(|e| Error::Invalid {
            what: "partition configuration".into(),
            reason: e.to_string(),
        })?;
        let tmp = path.with_extension("toml.tmp");
        let io = |source| Error::Io {
            what: "writing".into(),
            path: path.to_path_buf(),
            source,
        };
        std::fs::write(&tmp, format!("{HEADER}{body}")).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Values the file format cannot rule out.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str, reason: String| {
            Err(Error::Invalid {
                what: what.into(),
                reason,
            })
        };
        validate_name(&self.name)?;
        if self.hostname.is_empty()
            || self.hostname.len() > 64
            || !self
                .hostname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return bad(
                "hostname",
                format!("{:?} is not a host name", self.hostname),
            );
        }
        if self.uuid.len() != 32 || !self.uuid.chars().all(|c| c.is_ascii_hexdigit()) {
            return bad("uuid", format!("{:?} is not 32 hex digits", self.uuid));
        }
        let r = &self.resources;
        if let Some(s) = r.cpu_shares {
            if !(2..=262_144).contains(&s) {
                return bad("resources.cpu_shares", format!("{s} is outside 2..262144"));
            }
        }
        if let Some(c) = r.cpus {
            if !(c > 0.0 && c <= 4096.0) {
                return bad("resources.cpus", format!("{c} is not a positive CPU count"));
            }
        }
        if let Some(set) = &r.cpuset {
            if set.is_empty()
                || !set
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c == '-')
            {
                return bad("resources.cpuset", format!("{set:?} is not a CPU list"));
            }
        }
        if let Some(m) = r.memory {
            if m.0 < 32 << 20 {
                return bad("resources.memory", format!("{m} is below 32M"));
            }
        }
        if r.swap.is_some() && r.memory.is_none() {
            return bad("resources.swap", "needs resources.memory".into());
        }
        if let Some(p) = r.pids {
            if p < 16 {
                return bad("resources.pids", format!("{p} is below 16"));
            }
        }
        if let Some(w) = r.io_weight {
            if !(10..=1000).contains(&w) {
                return bad("resources.io_weight", format!("{w} is outside 10..1000"));
            }
        }
        for (what, list) in [
            ("resources.io_read_bps", &r.io_read_bps),
            ("resources.io_write_bps", &r.io_write_bps),
        ] {
            for rule in list {
                parse_bps_rule(rule).map_err(|reason| Error::Invalid {
                    what: what.into(),
                    reason,
                })?;
            }
        }
        if r.disk.0 < 256 << 20 {
            return bad("resources.disk", format!("{} is below 256M", r.disk));
        }
        self.network.validate().map_err(|e| Error::Invalid {
            what: "network".into(),
            reason: e.to_string(),
        })?;
        if self.stop_timeout == 0 || self.stop_timeout > 3600 {
            return bad(
                "stop_timeout",
                format!("{} is outside 1..3600 seconds", self.stop_timeout),
            );
        }
        Ok(())
    }
}

/// `"8:0 10M"` → (8, 0, bytes per second).
pub fn parse_bps_rule(rule: &str) -> Result<(i64, i64, u64), String> {
    let bad = || format!("{rule:?} is not \"MAJOR:MINOR RATE\" (e.g. \"8:0 10M\")");
    let (dev, rate) = rule.trim().split_once(' ').ok_or_else(bad)?;
    let (major, minor) = dev.split_once(':').ok_or_else(bad)?;
    let major = major.parse().map_err(|_| bad())?;
    let minor = minor.parse().map_err(|_| bad())?;
    let rate: Size = rate.parse()?;
    Ok((major, minor, rate.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PartitionConfig {
        PartitionConfig {
            name: "web1".into(),
            hostname: "web1".into(),
            template: "debian-12".into(),
            uuid: "0123456789abcdef0123456789abcdef".into(),
            id_base: 2_147_483_648,
            autostart: true,
            restart: RestartPolicy::OnFailure,
            stop_timeout: 30,
            resources: Resources {
                memory: Some(Size(1 << 30)),
                cpus: Some(1.5),
                io_read_bps: vec!["8:0 10M".into()],
                disk: Size(2 << 30),
                ..Default::default()
            },
            network: Default::default(),
        }
    }

    #[test]
    fn sizes_read_and_print() {
        assert_eq!("512M".parse::<Size>(), Ok(Size(512 << 20)));
        assert_eq!("2g".parse::<Size>(), Ok(Size(2 << 30)));
        assert_eq!("4096".parse::<Size>(), Ok(Size(4096)));
        assert!("1.5G".parse::<Size>().is_err());
        assert!("99999999999T".parse::<Size>().is_err());
        assert_eq!(Size(3 << 30).to_string(), "3G");
        assert_eq!(Size(1536 << 20).to_string(), "1536M");
    }

    #[test]
    fn the_file_round_trips_and_is_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("partition.toml");
        sample().save(&path).expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("# hull vps"), "{text}");
        assert!(text.contains("memory = \"1G\""), "{text}");
        assert!(text.contains("restart = \"on-failure\""), "{text}");
        assert_eq!(PartitionConfig::load(&path).expect("load"), sample());
    }

    #[test]
    fn bad_values_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("partition.toml");
        let check = |edit: &dyn Fn(&mut String), want: &str| {
            let mut text = toml::to_string(&sample()).expect("toml");
            edit(&mut text);
            std::fs::write(&path, &text).expect("write");
            let e = PartitionConfig::load(&path).expect_err(want).to_string();
            assert!(e.contains(want), "{want}: {e}");
        };
        check(
            &|t| *t = t.replace("memory = \"1G\"", "memory = \"1Q\""),
            "memory",
        );
        check(
            &|t| *t = t.replace("cpus = 1.5", "cpus = -1.0"),
            "resources.cpus",
        );
        check(&|t| t.push_str("\n[extra]\nx = 1\n"), "unknown field");
        check(
            &|t| *t = t.replace("name = \"web1\"", "name = \"Web_1\""),
            "partition name",
        );
        check(&|t| *t = t.replace("8:0 10M", "sda 10M"), "io_read_bps");
        check(
            &|t| *t = t.replace("disk = \"2G\"", "disk = \"1M\""),
            "resources.disk",
        );
    }

    #[test]
    fn names() {
        assert!(validate_name("web1").is_ok());
        assert!(validate_name("shop-eu-2").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", "a/b", "..", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
