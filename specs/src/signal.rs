//! Signal names and numbers, as `hull kill` accepts them (runc/moby conventions, Linux
//! x86_64 and arm64 numbering, glibc's real-time range 34..=64).

use crate::SpecError;

/// The first real-time signal as user space sees it (glibc reserves 32 and 33).
pub const SIGRTMIN: i32 = 34;
/// The last signal.
pub const SIGRTMAX: i32 = 64;

/// Standard signals 1..=31, indexed by number - 1.
const STANDARD: [&str; 31] = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// Real-time signals 34..=64, named as bash's `kill -l` does.
const REALTIME: [&str; 31] = [
    "SIGRTMIN",
    "SIGRTMIN+1",
    "SIGRTMIN+2",
    "SIGRTMIN+3",
    "SIGRTMIN+4",
    "SIGRTMIN+5",
    "SIGRTMIN+6",
    "SIGRTMIN+7",
    "SIGRTMIN+8",
    "SIGRTMIN+9",
    "SIGRTMIN+10",
    "SIGRTMIN+11",
    "SIGRTMIN+12",
    "SIGRTMIN+13",
    "SIGRTMIN+14",
    "SIGRTMIN+15",
    "SIGRTMAX-14",
    "SIGRTMAX-13",
    "SIGRTMAX-12",
    "SIGRTMAX-11",
    "SIGRTMAX-10",
    "SIGRTMAX-9",
    "SIGRTMAX-8",
    "SIGRTMAX-7",
    "SIGRTMAX-6",
    "SIGRTMAX-5",
    "SIGRTMAX-4",
    "SIGRTMAX-3",
    "SIGRTMAX-2",
    "SIGRTMAX-1",
    "SIGRTMAX",
];

/// Other names for standard signals.
const ALIASES: [(&str, i32); 3] = [("IOT", 6), ("CLD", 17), ("POLL", 29)];

/// Parses a signal given as a number (`"9"`) or a name in any case, with or without the
/// `SIG` prefix (`"KILL"`, `"SIGKILL"`, `"kill"`), including real-time names
/// (`"SIGRTMIN+3"`, `"RTMAX-1"`). Only 1..=64 is accepted.
pub fn parse_signal(s: &str) -> Result<i32, SpecError> {
    let fail = |reason: &str| SpecError::Signal {
        input: s.to_string(),
        reason: reason.to_string(),
    };
    if s.is_empty() {
        return Err(fail("empty"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<i32>() {
            Ok(n) if (1..=SIGRTMAX).contains(&n) => Ok(n),
            _ => Err(fail("signal numbers must be in 1..=64")),
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(pos) = STANDARD.iter().position(|n| &n[3..] == name) {
        return Ok(pos as i32 + 1);
    }
    if let Some((_, n)) = ALIASES.iter().find(|(a, _)| *a == name) {
        return Ok(*n);
    }
    let rt = |rest: &str, base: i32, sign: i32| -> Result<i32, SpecError> {
        if rest.is_empty() {
            return Ok(base);
        }
        let op = if sign > 0 { "+" } else { "-" };
        let digits = match rest.strip_prefix(op) {
            Some(d) if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) => d,
            _ => return Err(fail("expected RTMIN+n or RTMAX-n")),
        };
        match digits.parse::<i32>() {
            Ok(off) if off <= SIGRTMAX - SIGRTMIN => Ok(base + sign * off),
            _ => Err(fail(
                "real-time signal out of range SIGRTMIN..=SIGRTMAX (34..=64)",
            )),
        }
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return rt(rest, SIGRTMIN, 1);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return rt(rest, SIGRTMAX, -1);
    }
    Err(fail("unknown signal name"))
}

/// The canonical name (`"SIGKILL"`, `"SIGRTMIN+3"`) of a signal number; `None` outside
/// 1..=64 and for 32 and 33, which glibc reserves and which have no name.
pub fn signal_name(n: i32) -> Option<&'static str> {
    match n {
        1..=31 => STANDARD.get((n - 1) as usize).copied(),
        SIGRTMIN..=SIGRTMAX => REALTIME.get((n - SIGRTMIN) as usize).copied(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_signal("9").ok(), Some(9));
        assert_eq!(parse_signal("1").ok(), Some(1));
        assert_eq!(parse_signal("64").ok(), Some(64));
        assert_eq!(parse_signal("32").ok(), Some(32));
        assert_eq!(parse_signal("009").ok(), Some(9));
        for bad in ["0", "65", "-1", "+9", "99999999999999", " 9", "9 "] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        for (s, n) in [
            ("KILL", 9),
            ("SIGKILL", 9),
            ("kill", 9),
            ("sigterm", 15),
            ("SigHup", 1),
            ("TERM", 15),
            ("WINCH", 28),
            ("SYS", 31),
            ("IOT", 6),
            ("SIGCLD", 17),
            ("POLL", 29),
            ("USR1", 10),
            ("STKFLT", 16),
        ] {
            assert_eq!(parse_signal(s).ok(), Some(n), "{s}");
        }
        for bad in ["", "SIG", "FOO", "SIGFOO", "SIGKILLX", "KIL"] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn realtime() {
        for (s, n) in [
            ("SIGRTMIN", 34),
            ("RTMIN", 34),
            ("SIGRTMIN+3", 37),
            ("rtmin+30", 64),
            ("RTMAX", 64),
            ("RTMAX-1", 63),
            ("SIGRTMAX-30", 34),
        ] {
            assert_eq!(parse_signal(s).ok(), Some(n), "{s}");
        }
        for bad in [
            "RTMIN+31",
            "RTMAX-31",
            "RTMIN-1",
            "RTMAX+1",
            "RTMIN+",
            "RTMIN+x",
            "RTMIN+-1",
            "RTMIN+99999999999",
            "RTMINé",
            "RTMIN+é",
            "é",
        ] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_of_numbers() {
        assert_eq!(signal_name(9), Some("SIGKILL"));
        assert_eq!(signal_name(1), Some("SIGHUP"));
        assert_eq!(signal_name(31), Some("SIGSYS"));
        assert_eq!(signal_name(34), Some("SIGRTMIN"));
        assert_eq!(signal_name(37), Some("SIGRTMIN+3"));
        assert_eq!(signal_name(49), Some("SIGRTMIN+15"));
        assert_eq!(signal_name(50), Some("SIGRTMAX-14"));
        assert_eq!(signal_name(64), Some("SIGRTMAX"));
        for n in [0, 32, 33, 65, -1, i32::MIN, i32::MAX] {
            assert_eq!(signal_name(n), None, "{n}");
        }
    }

    #[test]
    fn every_name_parses_back_to_its_number() {
        for n in 1..=64 {
            if let Some(name) = signal_name(n) {
                assert_eq!(parse_signal(name).ok(), Some(n), "{name}");
                assert_eq!(parse_signal(&name[3..]).ok(), Some(n), "{name}");
                assert_eq!(parse_signal(&name.to_lowercase()).ok(), Some(n), "{name}");
            }
            assert_eq!(parse_signal(&n.to_string()).ok(), Some(n));
        }
    }
}
