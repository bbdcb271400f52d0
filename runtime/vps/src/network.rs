//! A partition's network: the `[network]` table of its config, and the plumbing that gives
//! its network namespace (made by the container runtime) a link to the host.
//!
//! - `none`: loopback only.
//! - `bridge`: a veth pair, the host side a port of an existing host bridge, the partition
//!   side `eth0` with the configured addresses and an optional default route.
//! - `routed` (OpenVZ venet-like): an L3 point-to-point veth; the host side has no address,
//!   routes each of the partition's /32 addresses to it and answers ARP by proxy; inside,
//!   `eth0` holds the /32s and routes everything via 169.254.1.1 (Calico's model), so the
//!   partition never sees the host's LAN. Forwarding beyond the host needs the host's
//!   `net.ipv4.ip_forward=1`, which is left as the hoster set it.
//!
//! In both modes the host side of the veth gets an ingress filter (the partition may send
//! only from its own addresses) and, with `egress_mbit`, a policer: done on the host side
//! because whatever is set up inside the partition's netns its root can undo.
//!
//! Links, addresses, routes and neighbours are configured over rtnetlink with the
//! synchronous `netlink-packet-route` + `netlink-sys` crates (no async runtime).
//!
//! The ingress filter is an nftables table of the netdev family hooked on the host veth's
//! ingress (`nft -f -`, Debian package nftables), rather than a tc clsact qdisc with
//! flower/matchall filters and a police action: cls_flower, cls_matchall, act_gact and
//! act_police are optional kernel features, and minimal kernels (some VM hosts', the test
//! machine's among them) leave tc with no way to drop a packet, while nftables' netdev
//! ingress hook and `limit` come with any kernel that runs container firewalls. The hook
//! sits where tc's ingress does (before the bridge and routing). No crate builds nftables
//! rules over netlink without the C libnftnl, so the rules are text for the `nft` tool.
//! A netdev table outlives its device on recent kernels: `teardown` deletes it, and
//! `setup` replaces a stale one (left if the partition's netns died without teardown).
//!
//! Work inside the partition's netns runs on a dedicated short-lived thread that
//! `setns(CLONE_NEWNET)`s into `/proc/<pid>/ns/net` (a netns is per thread) and opens its
//! own netlink socket there.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

/// The partition-side interface name.
const INSIDE_IF: &str = "eth0";
/// Routed mode's next hop inside the partition (answered by the host veth).
const ROUTED_GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// Linux's IFNAMSIZ less the terminating NUL.
const IFNAME_MAX: usize = 15;

/// How a partition is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// Loopback only.
    #[default]
    None,
    /// A port of an existing host bridge (L2).
    Bridge,
    /// A routed point-to-point link, /32 addresses only (L3).
    Routed,
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkMode::None => "none",
            NetworkMode::Bridge => "bridge",
            NetworkMode::Routed => "routed",
        })
    }
}

/// The `[network]` table of `partition.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    #[serde(default)]
    pub mode: NetworkMode,
    /// Bridge mode: the existing host bridge to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// IPv4 addresses with prefix (`10.77.0.2/24`); routed mode: /32 only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Bridge mode, optional: the default route's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Optional limit of the partition's outgoing traffic, Mbit/s (policed on the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_mbit: Option<u32>,
}

/// Everything the network setup can fail with.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A bad `[network]` key: `key` is e.g. `network.addresses[1]`.
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error(
        "network.bridge: bridge {0:?} does not exist on the host \
         (create it first, e.g. `ip link add {0} type bridge && ip link set {0} up`)"
    )]
    NoBridge(String),
    #[error("network.bridge: host interface {0:?} is not a bridge")]
    NotABridge(String),
    #[error(
        "host interface {name} for partition {partition:?} already exists (its network is \
         set up already, or a stale one is left: `ip link del {name}`)"
    )]
    VethExists { partition: String, name: String },
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("network namespace of the partition's init (pid {pid}): {source}")]
    Netns {
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}: {source}")]
    Sysctl {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{program}: {detail}")]
    Tool { program: String, detail: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> NetworkError {
    NetworkError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

fn netlink(what: impl Into<String>) -> impl FnOnce(io::Error) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Netlink { what, source }
}

/// An IPv4 address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Cidr {
    fn mask(self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(self.addr) & self.mask() == u32::from(ip) & self.mask()
    }

    fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
}

/// Parses `a.b.c.d/n`, with the reason (without the key) on failure.
fn parse_cidr(s: &str) -> Result<Cidr, String> {
    if s.contains(':') {
        return Err(format!(
            "{s:?} is IPv6, which is not supported yet (partitions are IPv4-only)"
        ));
    }
    let bad = || format!("{s:?} is not an IPv4 address with a prefix (like \"10.77.0.2/24\")");
    let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if !(1..=32).contains(&prefix) {
        return Err(format!("{s:?}: the prefix must be 1 to 32"));
    }
    check_unicast(s, addr)?;
    let cidr = Cidr { addr, prefix };
    if prefix <= 30 {
        if u32::from(addr) & !cidr.mask() == 0 {
            return Err(format!("{s:?} is its subnet's network address"));
        }
        if addr == cidr.broadcast() {
            return Err(format!("{s:?} is its subnet's broadcast address"));
        }
    }
    Ok(cidr)
}

fn check_unicast(s: &str, addr: Ipv4Addr) -> Result<(), String> {
    if addr.is_unspecified()
        || addr.is_loopback()
        || addr.is_multicast()
        || addr.is_broadcast()
        || addr.is_link_local()
    {
        Err(format!(
            "{s:?} is not a usable unicast address (0.0.0.0, loopback, link-local, \
             multicast and broadcast are not)"
        ))
    } else {
        Ok(())
    }
}

fn valid_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        return Err(format!(
            "{name:?}: an interface name has 1 to {IFNAME_MAX} bytes"
        ));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!(
            "{name:?} is not a valid interface name (no '/', ':' or spaces)"
        ));
    }
    Ok(())
}

impl NetworkConfig {
    /// Checks everything that can be checked without the host, naming the bad key.
    pub fn validate(&self) -> Result<(), NetworkError> {
        self.cidrs().map(|_| ())
    }

    /// The parsed addresses, after validating the whole table.
    fn cidrs(&self) -> Result<Vec<Cidr>, NetworkError> {
        let mode = self.mode;
        let mut cidrs: Vec<Cidr> = Vec::with_capacity(self.addresses.len());
        for (i, s) in self.addresses.iter().enumerate() {
            let key = format!("network.addresses[{i}]");
            let cidr = parse_cidr(s).map_err(|r| invalid(&key, r))?;
            if mode == NetworkMode::Routed && cidr.prefix != 32 {
                return Err(invalid(
                    key,
                    format!(
                        "{s:?}: routed mode takes /32 addresses only (the link is \
                         point-to-point; write \"{}/32\")",
                        cidr.addr
                    ),
                ));
            }
            if cidrs.iter().any(|c| c.addr == cidr.addr) {
                return Err(invalid(key, format!("{s:?}: the address is listed twice")));
            }
            cidrs.push(cidr);
        }
        match mode {
            NetworkMode::None => {
                if !cidrs.is_empty() {
                    return Err(invalid(
                        "network.addresses",
                        "mode \"none\" has loopback only; set mode = \"bridge\" or \
                         \"routed\" to give the partition addresses",
                    ));
                }
            }
            NetworkMode::Bridge | NetworkMode::Routed => {
                if cidrs.is_empty() {
                    return Err(invalid(
                        "network.addresses",
                        format!("mode \"{mode}\" needs at least one address"),
                    ));
                }
            }
        }
        match (&self.bridge, mode) {
            (None, NetworkMode::Bridge) => {
                return Err(invalid(
                    "network.bridge",
                    "mode \"bridge\" needs the name of an existing host bridge",
                ))
            }
            (Some(b), NetworkMode::Bridge) => {
                valid_ifname(b).map_err(|r| invalid("network.bridge", r))?
            }
            (Some(_), _) => {
                return Err(invalid(
                    "network.bridge",
                    format!("is for mode \"bridge\" only (mode is \"{mode}\")"),
                ))
            }
            (None, _) => {}
        }
        if let Some(gw) = &self.gateway {
            let key = "network.gateway";
            if mode != NetworkMode::Bridge {
                let why = if mode == NetworkMode::Routed {
                    " (routed mode always routes via the host)"
                } else {
                    ""
                };
                return Err(invalid(
                    key,
                    format!("is for mode \"bridge\" only (mode is \"{mode}\"){why}"),
                ));
            }
            if gw.contains(':') {
                return Err(invalid(
                    key,
                    format!(
                        "{gw:?} is IPv6, which is not supported yet (partitions are IPv4-only)"
                    ),
                ));
            }
            let ip: Ipv4Addr = gw
                .parse()
                .map_err(|_| invalid(key, format!("{gw:?} is not an IPv4 address")))?;
            check_unicast(gw, ip).map_err(|r| invalid(key, r))?;
            if cidrs.iter().any(|c| c.addr == ip) {
                return Err(invalid(
                    key,
                    format!("{gw:?} is one of the partition's own addresses"),
                ));
            }
            if !cidrs.iter().any(|c| c.contains(ip)) {
                return Err(invalid(
                    key,
                    format!("{gw:?} is in none of the subnets of network.addresses"),
                ));
            }
        }
        if self.egress_mbit == Some(0) {
            return Err(invalid(
                "network.egress_mbit",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        Ok(cidrs)
    }
}

/// The host-side veth name of a partition: `hv` and the 32-bit FNV-1a hash of its name in
/// hex, 10 bytes (partition names can be longer than an interface name). Hand-written so
/// it is stable across builds and Rust versions (std's hashers promise no such thing).
pub fn host_veth_name(partition: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for b in partition.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("hv{hash:08x}")
}

/// Gives the partition whose init has host pid `init_pid` its network as `cfg` says, from
/// the host's netns (the caller's thread's). On failure, nothing is left on the host (the
/// veth, with its routes and filters, is deleted). Routed partitions reach beyond the host
/// only if it forwards (`net.ipv4.ip_forward=1`), which is the hoster's choice.
pub fn setup(partition: &str, cfg: &NetworkConfig, init_pid: i32) -> Result<(), NetworkError> {
    let cidrs = cfg.cidrs()?;
    let netns = Netns::of(init_pid)?;
    if cfg.mode == NetworkMode::None {
        return netns.run(|rtnl| rtnl.set_up("lo"));
    }

    let host = host_veth_name(partition);
    let mut rtnl = Rtnl::open().map_err(netlink("netlink socket on the host"))?;
    // Check the bridge before creating anything.
    let bridge = match (cfg.mode, &cfg.bridge) {
        (NetworkMode::Bridge, Some(name)) => Some(rtnl.bridge_index(name)?),
        _ => None,
    };
    rtnl.create_veth(partition, &host, &netns)?;
    let guard = VethGuard { name: &host };
    tracing::debug!(partition, host_veth = %host, mode = %cfg.mode, "veth created");

    let link = rtnl
        .link(&host)
        .map_err(netlink(format!("looking up {host}")))?
        .ok_or_else(|| NetworkError::Netlink {
            what: format!("looking up {host}"),
            source: io::Error::from_raw_os_error(libc::ENODEV),
        })?;
    let index = link.header.index;
    // Anti-spoofing (and policing) before any packet can flow: both ends are still down.
    install_filters(&host, &cidrs, cfg.egress_mbit)?;

    match cfg.mode {
        NetworkMode::Bridge => {
            let name = cfg.bridge.as_deref().unwrap_or_default();
            rtnl.set_link(index, bridge, true)
                .map_err(netlink(format!("attaching {host} to bridge {name:?}")))?;
        }
        NetworkMode::Routed => {
            // rp_filter=1 (strict): packets whose source is not routed back through this
            // veth are dropped: the kernel's own anti-spoofing, on top of the nftables filter
            // (which also covers ARP, and IPv6 that rp_filter does not).
            // proxy_arp=1: the host answers the partition's ARP for 169.254.1.1 (when the
            // host forwards), as in Calico.
            write_sysctl(&format!("/proc/sys/net/ipv4/conf/{host}/rp_filter"), "1")?;
            write_sysctl(&format!("/proc/sys/net/ipv4/conf/{host}/proxy_arp"), "1")?;
            rtnl.set_link(index, None, true)
                .map_err(netlink(format!("bringing {host} up")))?;
            for c in &cidrs {
                rtnl.add_route(index, Some(*c), None, RouteScope::Link, false)
                    .map_err(|e| {
                        let what = if e.raw_os_error() == Some(libc::EEXIST) {
                            format!(
                                "host route {}/32 dev {host}: the host routes that address \
                                 elsewhere already (another partition?)",
                                c.addr
                            )
                        } else {
                            format!("host route {}/32 dev {host}", c.addr)
                        };
                        NetworkError::Netlink { what, source: e }
                    })?;
            }
        }
        NetworkMode::None => {}
    }

    let gateway = match cfg.mode {
        NetworkMode::Bridge => cfg.gateway.as_deref().and_then(|g| g.parse().ok()),
        _ => None,
    };
    let host_mac = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => Some(mac.clone()),
        _ => None,
    });
    let mode = cfg.mode;
    netns.run(|rtnl| {
        rtnl.set_up("lo")?;
        let eth0 = rtnl.index_of(INSIDE_IF)?;
        for c in &cidrs {
            rtnl.add_address(eth0, *c).map_err(netlink(format!(
                "adding {}/{} to {INSIDE_IF}",
                c.addr, c.prefix
            )))?;
        }
        rtnl.set_link(eth0, None, true)
            .map_err(netlink(format!("bringing {INSIDE_IF} up")))?;
        if let Some(gw) = gateway {
            rtnl.add_route(eth0, None, Some(gw), RouteScope::Universe, false)
                .map_err(netlink(format!("default route via {gw}")))?;
        }
        if mode == NetworkMode::Routed {
            let gw = Cidr {
                addr: ROUTED_GW,
                prefix: 32,
            };
            rtnl.add_route(eth0, Some(gw), None, RouteScope::Link, false)
                .map_err(netlink(format!("route {ROUTED_GW} dev {INSIDE_IF}")))?;
            // Proxy ARP answers only while the host forwards (ip_forward, per interface);
            // a permanent neighbour keeps the partition reaching the host itself without.
            if let Some(mac) = &host_mac {
                rtnl.add_neighbour(eth0, ROUTED_GW, mac)
                    .map_err(netlink(format!("neighbour {ROUTED_GW} on {INSIDE_IF}")))?;
            }
            rtnl.add_route(eth0, None, Some(ROUTED_GW), RouteScope::Universe, true)
                .map_err(netlink(format!("default route via {ROUTED_GW} onlink")))?;
        }
        Ok(())
    })?;
    // Set up: keep the veth.
    std::mem::forget(guard);
    tracing::info!(partition, host_veth = %host, mode = %cfg.mode, "network set up");
    Ok(())
}

/// Removes what `setup` left on the host: the host veth (which takes its peer and its
/// routes along; it also goes by itself when the partition's netns dies, so a missing veth
/// is fine) and its nftables filter table (which does not go by itself).
pub fn teardown(partition: &str) -> Result<(), NetworkError> {
    let host = host_veth_name(partition);
    let mut rtnl = Rtnl::open().map_err(netlink("netlink socket on the host"))?;
    rtnl.delete_link(&host)
        .map_err(netlink(format!("deleting {host}")))?;
    remove_filters(&host)
}

/// The partition's IPv4 addresses (without prefix, loopback left out), read from its netns;
/// empty when they cannot be read (the partition stopped, say).
pub fn addresses(init_pid: i32) -> Vec<String> {
    let read = || -> Result<Vec<Ipv4Addr>, NetworkError> {
        Netns::of(init_pid)?.run(|rtnl| rtnl.ipv4_addresses().map_err(netlink("listing addresses")))
    };
    match read() {
        Ok(v) => v.into_iter().map(|a| a.to_string()).collect(),
        Err(e) => {
            tracing::debug!(init_pid, error = %e, "partition addresses");
            Vec::new()
        }
    }
}

/// Deletes the host veth and its filters unless forgotten: `setup`'s cleanup on partial
/// failure.
struct VethGuard<'a> {
    name: &'a str,
}

impl Drop for VethGuard<'_> {
    fn drop(&mut self) {
        let res = Rtnl::open().and_then(|mut r| r.delete_link(self.name));
        if let Err(e) = res {
            tracing::warn!(veth = self.name, error = %e, "cleaning up after a failed setup");
        }
        if let Err(e) = remove_filters(self.name) {
            tracing::warn!(veth = self.name, error = %e, "cleaning up after a failed setup");
        }
    }
}

fn write_sysctl(path: &str, value: &str) -> Result<(), NetworkError> {
    std::fs::write(path, value).map_err(|source| NetworkError::Sysctl {
        path: path.to_string(),
        source,
    })
}

/// The nftables table holding a partition's ingress filter (in the host's netns).
fn nft_table(dev: &str) -> String {
    format!("hull_{dev}")
}

/// The nftables script for the host veth's ingress hook, i.e. for what the partition sends:
/// police first, then accept only the partition's own IPv4 sources and ARP sender
/// addresses; the policy drops everything else (other sources, IPv6, other ethertypes: the
/// partition is IPv4-only). It replaces a stale table of the same name in one transaction
/// (on recent kernels, 6.18 here, a netdev chain outlives its device, and would re-attach
/// to a new device of the same name).
fn nft_script(dev: &str, cidrs: &[Cidr], egress_mbit: Option<u32>) -> String {
    let table = nft_table(dev);
    let addrs = cidrs
        .iter()
        .map(|c| c.addr.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = format!(
        "table netdev {table}\n\
         delete table netdev {table}\n\
         table netdev {table} {{\n\
         chain ingress {{\n\
         type filter hook ingress device \"{dev}\" priority -500; policy drop;\n"
    );
    if let Some(mbit) = egress_mbit {
        // Policing, not shaping: packets over the rate are dropped (TCP backs off). The
        // burst is 10 ms at the rate, at least 64 KiB (less hurts TCP at low rates).
        let rate = u64::from(mbit) * 1_000_000 / 8;
        let burst = (rate / 100).max(64 * 1024);
        s += &format!("limit rate over {rate} bytes/second burst {burst} bytes drop\n");
    }
    s += &format!("ip saddr {{ {addrs} }} accept\n");
    s += &format!("arp saddr ip {{ {addrs} }} accept\n");
    s += "}\n}\n";
    s
}

/// Runs `nft -f -` with `script` on stdin, in the calling thread's netns.
fn run_nft(script: &str) -> Result<(), NetworkError> {
    let tool = |detail: String| NetworkError::Tool {
        program: "nft".into(),
        detail,
    };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                tool("not found (install nftables: it filters what partitions send)".into())
            } else {
                tool(format!("starting it: {e}"))
            }
        })?;
    // A write error (nft quit early) is reported after its own message, which says why.
    let written = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(script.as_bytes()),
        None => Ok(()),
    };
    let out = child
        .wait_with_output()
        .map_err(|e| tool(format!("waiting for it: {e}")))?;
    if !out.status.success() {
        return Err(tool(format!(
            "{} ({})",
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status
        )));
    }
    written.map_err(|e| tool(format!("writing its commands: {e}")))
}

fn install_filters(
    dev: &str,
    cidrs: &[Cidr],
    egress_mbit: Option<u32>,
) -> Result<(), NetworkError> {
    run_nft(&nft_script(dev, cidrs, egress_mbit)).map_err(|e| match e {
        NetworkError::Tool { program, detail } => NetworkError::Tool {
            program,
            detail: format!("ingress filter of {dev}: {detail}"),
        },
        e => e,
    })
}

/// Deletes the filter table of `dev` if there is one.
fn remove_filters(dev: &str) -> Result<(), NetworkError> {
    let table = nft_table(dev);
    match run_nft(&format!(
        "table netdev {table}\ndelete table netdev {table}\n"
    )) {
        // Without nft no filter was ever installed.
        Err(NetworkError::Tool { detail, .. }) if detail.starts_with("not found") => Ok(()),
        other => other,
    }
}

/// A partition's network namespace, held open.
struct Netns {
    pid: i32,
    file: File,
}

impl Netns {
    /// Opens the netns of `pid`, refusing the caller's own: configuring that would put
    /// the partition's addresses and routes on the host.
    fn of(pid: i32) -> Result<Self, NetworkError> {
        let err = |source| NetworkError::Netns { pid, source };
        let file = File::open(format!("/proc/{pid}/ns/net")).map_err(err)?;
        let theirs = file.metadata().map_err(err)?;
        let ours = std::fs::metadata("/proc/thread-self/ns/net").map_err(err)?;
        if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
            return Err(err(io::Error::other(
                "it is the host's own network namespace (the partition has none of its own)",
            )));
        }
        Ok(Netns { pid, file })
    }

    /// Runs `f` with a netlink socket in this netns, on a thread of its own that enters the
    /// netns and ends with `f` (a thread in another netns must not serve anything else).
    fn run<T: Send>(
        &self,
        f: impl FnOnce(&mut Rtnl) -> Result<T, NetworkError> + Send,
    ) -> Result<T, NetworkError> {
        let pid = self.pid;
        std::thread::scope(|s| {
            let thread = std::thread::Builder::new()
                .name("hull-vps-netns".into())
                .spawn_scoped(s, || {
                    nix::sched::setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(|e| {
                        NetworkError::Netns {
                            pid,
                            source: e.into(),
                        }
                    })?;
                    let mut rtnl = Rtnl::open()
                        .map_err(netlink(format!("netlink socket in the netns of pid {pid}")))?;
                    f(&mut rtnl)
                })
                .map_err(|source| NetworkError::Netns { pid, source })?;
            thread.join().unwrap_or_else(|_| {
                Err(NetworkError::Netns {
                    pid,
                    source: io::Error::other("the thread in the netns panicked"),
                })
            })
        })
    }
}

/// A route netlink socket in the netns of the thread that opened it.
struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// Sends one request and gathers the answers up to its ACK (or a dump's DONE); an
    /// error answer becomes the `io::Error` of its errno.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.header.flags = NLM_F_REQUEST | flags;
        packet.header.sequence_number = self.seq;
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;

        let mut answers = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset < data.len() {
                let reply: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&data[offset..]).map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("netlink answer: {e}"))
                    })?;
                let len = reply.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(e) if e.code.is_none() => return Ok(answers),
                    NetlinkPayload::Error(e) => return Err(e.to_io()),
                    NetlinkPayload::InnerMessage(m) => answers.push(m),
                    _ => {}
                }
            }
        }
    }

    /// A link by name, `None` if there is none.
    fn link(&mut self, name: &str) -> io::Result<Option<LinkMessage>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(msg), NLM_F_ACK) {
            Ok(answers) => Ok(answers.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn index_of(&mut self, name: &str) -> Result<u32, NetworkError> {
        let what = || format!("looking up interface {name}");
        match self.link(name).map_err(netlink(what()))? {
            Some(l) => Ok(l.header.index),
            None => Err(NetworkError::Netlink {
                what: what(),
                source: io::Error::from_raw_os_error(libc::ENODEV),
            }),
        }
    }

    fn bridge_index(&mut self, name: &str) -> Result<u32, NetworkError> {
        let link = self
            .link(name)
            .map_err(netlink(format!("looking up bridge {name:?}")))?
            .ok_or_else(|| NetworkError::NoBridge(name.to_string()))?;
        let is_bridge = link.attributes.iter().any(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos
                .iter()
                .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))),
            _ => false,
        });
        if !is_bridge {
            return Err(NetworkError::NotABridge(name.to_string()));
        }
        Ok(link.header.index)
    }

    fn set_up(&mut self, name: &str) -> Result<(), NetworkError> {
        let index = self.index_of(name)?;
        self.set_link(index, None, true)
            .map_err(netlink(format!("bringing {name} up")))
    }

    /// Sets a link up (or down), and its bridge if given.
    fn set_link(&mut self, index: u32, controller: Option<u32>, up: bool) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.change_mask = LinkFlags::Up;
        if up {
            msg.header.flags = LinkFlags::Up;
        }
        if let Some(c) = controller {
            msg.attributes.push(LinkAttribute::Controller(c));
        }
        self.request(RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// The veth pair: `host` here, its peer `eth0` created right in the partition's netns.
    fn create_veth(
        &mut self,
        partition: &str,
        host: &str,
        netns: &Netns,
    ) -> Result<(), NetworkError> {
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(INSIDE_IF.into()));
        peer.attributes
            .push(LinkAttribute::NetNsFd(netns.file.as_raw_fd()));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(host.into()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        match self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => Ok(()),
            // EEXIST can also be the peer's name inside: tell which.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                if self.link(host).ok().flatten().is_some() {
                    Err(NetworkError::VethExists {
                        partition: partition.into(),
                        name: host.into(),
                    })
                } else {
                    Err(NetworkError::Netlink {
                        what: format!(
                            "creating veth {host} with peer {INSIDE_IF} in the partition \
                             (the partition has an {INSIDE_IF} already)"
                        ),
                        source: e,
                    })
                }
            }
            Err(e) => Err(NetworkError::Netlink {
                what: format!("creating veth {host} with peer {INSIDE_IF} in the partition"),
                source: e,
            }),
        }
    }

    /// Deletes a link by name; a missing one is fine.
    fn delete_link(&mut self, name: &str) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::DelLink(msg), NLM_F_ACK) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            other => other.map(drop),
        }
    }

    fn add_address(&mut self, index: u32, c: Cidr) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = c.prefix;
        msg.header.scope = AddressScope::Universe;
        msg.header.index = index;
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(c.addr)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(c.addr)));
        if c.prefix <= 30 {
            msg.attributes
                .push(AddressAttribute::Broadcast(c.broadcast()));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// A route out of link `index`: to `dst` (default route if `None`), via `gateway`.
    fn add_route(
        &mut self,
        index: u32,
        dst: Option<Cidr>,
        gateway: Option<Ipv4Addr>,
        scope: RouteScope,
        onlink: bool,
    ) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = scope;
        msg.header.kind = RouteType::Unicast;
        if onlink {
            msg.header.flags = RouteFlags::Onlink;
        }
        if let Some(d) = dst {
            msg.header.destination_prefix_length = d.prefix;
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(d.addr)));
        }
        if let Some(gw) = gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        msg.attributes.push(RouteAttribute::Oif(index));
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    fn add_neighbour(&mut self, index: u32, ip: Ipv4Addr, mac: &[u8]) -> io::Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.request(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// The IPv4 addresses of this netns but loopback's.
    fn ipv4_addresses(&mut self) -> io::Result<Vec<Ipv4Addr>> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        let answers = self.request(RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for a in answers {
            let RouteNetlinkMessage::NewAddress(a) = a else {
                continue;
            };
            if a.header.family != AddressFamily::Inet || a.header.scope == AddressScope::Host {
                continue;
            }
            let ip = a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = ip.filter(|ip| !ip.is_loopback()) {
                out.push(ip);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Output};
    use std::sync::{Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    fn config(mode: NetworkMode, addresses: &[&str]) -> NetworkConfig {
        NetworkConfig {
            mode,
            bridge: (mode == NetworkMode::Bridge).then(|| "hullbr0".to_string()),
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
            gateway: None,
            egress_mbit: None,
        }
    }

    fn refusal(cfg: &NetworkConfig) -> String {
        match cfg.validate() {
            Ok(()) => panic!("{cfg:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn validate_accepts_good_configs() {
        NetworkConfig::default().validate().unwrap();
        let mut c = config(NetworkMode::Bridge, &["10.77.0.2/24", "192.168.5.9/16"]);
        c.gateway = Some("192.168.0.1".into());
        c.egress_mbit = Some(100);
        c.validate().unwrap();
        config(NetworkMode::Routed, &["203.0.113.7/32", "203.0.113.8/32"])
            .validate()
            .unwrap();
    }

    #[test]
    fn validate_refusals_name_the_key() {
        let c = config(NetworkMode::Bridge, &["10.0.0.2/24", "10.0.0.300/24"]);
        assert_eq!(
            refusal(&c),
            "network.addresses[1]: \"10.0.0.300/24\" is not an IPv4 address with a prefix \
             (like \"10.77.0.2/24\")"
        );
        let c = config(NetworkMode::Bridge, &["10.0.0.2"]);
        assert!(refusal(&c).starts_with("network.addresses[0]: \"10.0.0.2\" is not an IPv4"));
        let c = config(NetworkMode::Bridge, &["fd00::2/64"]);
        assert!(refusal(&c).contains("network.addresses[0]: \"fd00::2/64\" is IPv6"));

        let mut c = config(NetworkMode::Bridge, &["10.0.0.2/24"]);
        c.bridge = None;
        assert!(refusal(&c).starts_with("network.bridge: mode \"bridge\" needs"));
        c.bridge = Some("a-very-long-bridge".into());
        assert!(refusal(&c).starts_with("network.bridge: \"a-very-long-bridge\""));
        c.bridge = Some("br/0".into());
        assert!(refusal(&c).starts_with("network.bridge:"));

        let c = config(NetworkMode::Routed, &["10.0.0.2/32", "10.0.0.3/24"]);
        let r = refusal(&c);
        assert!(r.starts_with("network.addresses[1]: \"10.0.0.3/24\": routed mode takes /32"));

        let mut c = config(NetworkMode::Bridge, &["10.0.0.2/24"]);
        c.gateway = Some("10.0.1.1".into());
        assert!(refusal(&c).starts_with("network.gateway: \"10.0.1.1\" is in none of"));
        c.gateway = Some("10.0.0.2".into());
        assert!(refusal(&c).starts_with("network.gateway: \"10.0.0.2\" is one of"));
        c.gateway = Some("fe80::1".into());
        assert!(refusal(&c).contains("IPv6"));
        c.gateway = Some("gateway".into());
        assert!(refusal(&c).starts_with("network.gateway: \"gateway\" is not an IPv4"));

        let c = config(NetworkMode::None, &["10.0.0.2/24"]);
        assert!(refusal(&c).starts_with("network.addresses: mode \"none\""));
        let c = config(NetworkMode::Routed, &[]);
        assert!(refusal(&c).starts_with("network.addresses: mode \"routed\" needs"));

        let mut c = config(NetworkMode::Bridge, &["10.0.0.2/24"]);
        c.egress_mbit = Some(0);
        assert!(refusal(&c).starts_with("network.egress_mbit: must be at least 1"));

        let mut c = config(NetworkMode::Routed, &["10.0.0.2/32"]);
        c.gateway = Some("10.0.0.1".into());
        assert!(refusal(&c).starts_with("network.gateway: is for mode \"bridge\" only"));
        let mut c = config(NetworkMode::Routed, &["10.0.0.2/32"]);
        c.bridge = Some("hullbr0".into());
        assert!(refusal(&c).starts_with("network.bridge: is for mode \"bridge\" only"));

        for bad in [
            "10.0.0.0/24",
            "10.0.0.255/24",
            "127.0.0.2/8",
            "169.254.1.1/32",
            "0.0.0.0/8",
        ] {
            let c = config(NetworkMode::Bridge, &[bad]);
            assert!(refusal(&c).starts_with("network.addresses[0]:"), "{bad}");
        }
        let c = config(NetworkMode::Bridge, &["10.0.0.2/24", "10.0.0.2/16"]);
        assert!(refusal(&c).contains("listed twice"));
    }

    #[test]
    fn toml_table() {
        #[derive(Deserialize)]
        struct File {
            network: NetworkConfig,
        }
        let f: File = toml::from_str(
            "[network]\nmode = \"bridge\"\nbridge = \"hullbr0\"\n\
             addresses = [\"10.77.0.2/24\"]\ngateway = \"10.77.0.1\"\negress_mbit = 100\n",
        )
        .unwrap();
        assert_eq!(f.network.mode, NetworkMode::Bridge);
        assert_eq!(f.network.egress_mbit, Some(100));
        f.network.validate().unwrap();
        let f: File = toml::from_str("[network]\n").unwrap();
        assert_eq!(f.network, NetworkConfig::default());
        assert_eq!(f.network.mode, NetworkMode::None);
        assert!(toml::from_str::<File>("[network]\nmode = \"routed\"\nbogus = 1\n").is_err());
        assert!(toml::from_str::<File>("[network]\nmode = \"Routed\"\n").is_err());
        let back = toml::to_string(&config(NetworkMode::Routed, &["10.0.0.2/32"])).unwrap();
        assert_eq!(back, "mode = \"routed\"\naddresses = [\"10.0.0.2/32\"]\n");
    }

    #[test]
    fn the_callers_own_netns_is_refused() {
        let pid = std::process::id() as i32;
        let e = setup("x", &NetworkConfig::default(), pid).unwrap_err();
        assert!(
            e.to_string().contains("host's own network namespace"),
            "{e}"
        );
        assert!(addresses(pid).is_empty());
    }

    #[test]
    fn host_veth_names_are_stable_and_short() {
        // FNV-1a 32 of "" is its offset basis; of "a" a published test vector.
        assert_eq!(host_veth_name(""), "hv811c9dc5");
        assert_eq!(host_veth_name("a"), "hve40c292c");
        let long = host_veth_name(&"x".repeat(200));
        assert!(long.len() <= IFNAME_MAX);
        assert_ne!(host_veth_name("web1"), host_veth_name("web2"));
    }

    #[test]
    fn nft_script_polices_then_filters() {
        let cidrs = [
            parse_cidr("10.0.0.2/24").unwrap(),
            parse_cidr("10.0.0.3/24").unwrap(),
        ];
        let s = nft_script("hv00000001", &cidrs, Some(100));
        assert!(s.contains("device \"hv00000001\" priority -500; policy drop;"));
        let limit = s
            .find("limit rate over 12500000 bytes/second burst 125000 bytes drop")
            .unwrap();
        let ip = s.find("ip saddr { 10.0.0.2, 10.0.0.3 } accept").unwrap();
        assert!(limit < ip);
        assert!(s.contains("arp saddr ip { 10.0.0.2, 10.0.0.3 } accept"));
        // Low rates get the 64 KiB minimum burst.
        assert!(nft_script("hv1", &cidrs, Some(1)).contains("burst 65536 bytes"));
        assert!(!nft_script("hv1", &cidrs, None).contains("limit"));
    }

    // --- Root tests: everything in private network namespaces. ---

    /// Root tests run one at a time: they share `ip netns` and the machine's 2 cores.
    static NET_TESTS: Mutex<()> = Mutex::new(());

    /// The lock, or `None` (after printing why) when the tests cannot run here.
    fn root_test(tools: &[(&str, &str)]) -> Option<MutexGuard<'static, ()>> {
        let lock = NET_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let reason = if !nix::unistd::geteuid().is_root() {
            Some("not root".to_string())
        } else if let Some(t) = [("ip", "-V"), ("nft", "--version"), ("nsenter", "-V")]
            .iter()
            .chain(tools)
            .find(|(t, flag)| Command::new(t).arg(flag).output().is_err())
        {
            Some(format!("{} is not installed", t.0))
        } else {
            let probe = format!("hulltprobe{}", std::process::id());
            let ok = cmd(&["ip", "netns", "add", &probe]).status.success();
            cmd(&["ip", "netns", "del", &probe]);
            (!ok).then(|| "cannot create network namespaces (ip netns add)".to_string())
        };
        match reason {
            Some(r) => {
                println!("skipped: {r}");
                None
            }
            None => Some(lock),
        }
    }

    fn cmd(args: &[&str]) -> Output {
        Command::new(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn run(args: &[&str]) -> String {
        let out = cmd(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `args` in `ns` by `nsenter --net`: unlike `ip netns exec` and `ip -n`, it makes no
    /// copy of the mount namespace, which would keep other tests' mounts busy.
    fn nsenter<'a>(ns: &'a Ns, args: &[&'a str]) -> Vec<String> {
        let mut all = vec!["nsenter".to_string(), format!("--net={}", ns.path())];
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    fn cmd_in(ns: &Ns, args: &[&str]) -> Output {
        let all = nsenter(ns, args);
        cmd(&all.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn run_in(ns: &Ns, args: &[&str]) -> String {
        let all = nsenter(ns, args);
        run(&all.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// One ping from inside `ns`: did it get its answer?
    fn ping(ns: &Ns, args: &[&str]) -> bool {
        let mut all = vec!["ping", "-n", "-c1", "-W1"];
        all.extend_from_slice(args);
        cmd_in(ns, &all).status.success()
    }

    /// A named network namespace, deleted on drop.
    struct Ns(String);

    impl Ns {
        fn new(tag: &str) -> Ns {
            let name = format!("hullt{}{tag}", std::process::id());
            // A leftover of a killed run of this test.
            cmd(&["ip", "netns", "del", &name]);
            run(&["ip", "netns", "add", &name]);
            Ns(name)
        }

        fn path(&self) -> String {
            format!("/run/netns/{}", self.0)
        }
    }

    impl Drop for Ns {
        fn drop(&mut self) {
            cmd(&["ip", "netns", "del", &self.0]);
        }
    }

    /// A process sleeping in a netns: a partition's init. Killed on drop.
    struct Init(Child);

    impl Init {
        fn new(ns: &Ns) -> Init {
            let child = Command::new("nsenter")
                .args([&format!("--net={}", ns.path()), "sleep", "60"])
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            let init = Init(child);
            // nsenter enters the netns and then execs sleep in the same process: wait
            // until it is in there, or setup would act on the test's own netns.
            let want = std::fs::metadata(ns.path()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Ok(m) = std::fs::metadata(format!("/proc/{}/ns/net", init.pid())) {
                    if (m.dev(), m.ino()) == (want.dev(), want.ino()) {
                        return init;
                    }
                }
                assert!(Instant::now() < deadline, "init did not enter {}", ns.0);
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        fn pid(&self) -> i32 {
            self.0.id() as i32
        }
    }

    impl Drop for Init {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Runs `f` on a thread inside `ns`: the tests' stand-in for the host.
    fn on_host<T: Send>(ns: &Ns, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                let file = File::open(ns.path()).unwrap();
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
                let (want, got) = (
                    std::fs::metadata(ns.path()).unwrap(),
                    std::fs::metadata("/proc/thread-self/ns/net").unwrap(),
                );
                assert_eq!((want.dev(), want.ino()), (got.dev(), got.ino()));
                f()
            });
            t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    fn has_link(ns: &Ns, name: &str) -> bool {
        cmd_in(ns, &["ip", "link", "show", name]).status.success()
    }

    fn nft_tables(ns: &Ns) -> String {
        run_in(ns, &["nft", "list", "tables"])
    }

    #[test]
    fn mode_none_brings_up_loopback() {
        let Some(_lock) = root_test(&[]) else { return };
        let part = Ns::new("n");
        let init = Init::new(&part);
        assert!(!run_in(&part, &["ip", "link", "show", "lo"]).contains(",UP"));
        setup("hullt-none", &NetworkConfig::default(), init.pid()).unwrap();
        assert!(run_in(&part, &["ip", "link", "show", "lo"]).contains(",UP"));
        assert!(addresses(init.pid()).is_empty());
    }

    #[test]
    fn bridge_mode() {
        let Some(_lock) = root_test(&[("ping", "-V")]) else {
            return;
        };
        let host = Ns::new("bh");
        let (pa, pb) = (Ns::new("ba"), Ns::new("bb"));
        let (ia, ib) = (Init::new(&pa), Init::new(&pb));
        run_in(&host, &["ip", "link", "add", "hullbr0", "type", "bridge"]);
        run_in(
            &host,
            &["ip", "addr", "add", "10.77.0.1/24", "dev", "hullbr0"],
        );
        run_in(&host, &["ip", "link", "set", "hullbr0", "up"]);

        let pid = std::process::id();
        let (na, nb) = (format!("hullt-a-{pid}"), format!("hullt-b-{pid}"));
        let mut ca = config(NetworkMode::Bridge, &["10.77.0.2/24"]);
        ca.gateway = Some("10.77.0.1".into());
        ca.egress_mbit = Some(100);
        let cb = config(NetworkMode::Bridge, &["10.77.0.3/24"]);
        let (va, vb) = (host_veth_name(&na), host_veth_name(&nb));

        on_host(&host, || {
            let mut missing = cb.clone();
            missing.bridge = Some("nosuchbr".into());
            let e = setup(&nb, &missing, ib.pid()).unwrap_err();
            assert!(
                matches!(e, NetworkError::NoBridge(ref b) if b == "nosuchbr"),
                "{e}"
            );
            setup(&na, &ca, ia.pid()).unwrap();
            setup(&nb, &cb, ib.pid()).unwrap();
        });
        assert!(ping(&pa, &["10.77.0.3"]), "a -> b");
        assert!(ping(&pb, &["10.77.0.2"]), "b -> a");
        assert!(ping(&pa, &["10.77.0.1"]), "a -> bridge");
        assert_eq!(addresses(ia.pid()), ["10.77.0.2"]);
        let route = run_in(&pa, &["ip", "route", "show", "default"]);
        assert!(route.contains("via 10.77.0.1 dev eth0"), "{route}");
        assert!(run_in(&host, &["ip", "link", "show", &va]).contains("master hullbr0"));

        // The policer, ahead of the address filter.
        let table = nft_table(&va);
        let rules = run_in(&host, &["nft", "list", "table", "netdev", &table]);
        assert!(
            rules.contains("limit rate over 12500000 bytes/second"),
            "{rules}"
        );
        let rules_b = run_in(&host, &["nft", "list", "table", "netdev", &nft_table(&vb)]);
        assert!(!rules_b.contains("limit"), "{rules_b}");

        // A spoofed source address goes nowhere (neither its ARP nor its IP)...
        run_in(&pa, &["ip", "addr", "add", "10.77.0.99/24", "dev", "eth0"]);
        assert!(!ping(&pa, &["-I", "10.77.0.99", "10.77.0.1"]), "spoofed");
        // ... because of the filter: without it, it does.
        run_in(&host, &["nft", "delete", "table", "netdev", &table]);
        assert!(
            ping(&pa, &["-W2", "-I", "10.77.0.99", "10.77.0.1"]),
            "unfiltered"
        );

        on_host(&host, || {
            teardown(&na).unwrap();
            teardown(&na).unwrap();
            teardown(&nb).unwrap();
        });
        assert!(!has_link(&host, &va) && !has_link(&host, &vb));
        assert!(!has_link(&pa, "eth0"));
        assert!(!nft_tables(&host).contains("hull_"));
    }

    #[test]
    fn routed_mode() {
        let Some(_lock) = root_test(&[("ping", "-V")]) else {
            return;
        };
        let host = Ns::new("rh");
        let part = Ns::new("rp");
        let init = Init::new(&part);
        run_in(&host, &["ip", "link", "set", "lo", "up"]);
        run_in(&host, &["ip", "addr", "add", "10.99.0.1/32", "dev", "lo"]);

        let name = format!("hullt-r-{}", std::process::id());
        let v = host_veth_name(&name);
        let cfg = config(NetworkMode::Routed, &["10.88.0.5/32", "10.88.0.6/32"]);
        on_host(&host, || setup(&name, &cfg, init.pid()).unwrap());
        assert!(ping(&host, &["10.88.0.5"]), "host -> partition");
        assert!(
            ping(&host, &["10.88.0.6"]),
            "host -> partition, 2nd address"
        );
        assert!(ping(&part, &["10.99.0.1"]), "partition -> host");
        assert_eq!(addresses(init.pid()), ["10.88.0.5", "10.88.0.6"]);

        for (key, want) in [("rp_filter", "1"), ("proxy_arp", "1")] {
            let path = format!("/proc/sys/net/ipv4/conf/{v}/{key}");
            assert_eq!(run_in(&host, &["cat", &path]).trim(), want, "{key}");
        }
        let route = run_in(&host, &["ip", "route", "show", "10.88.0.5"]);
        assert!(route.contains(&format!("dev {v}")), "{route}");
        let inside = run_in(&part, &["ip", "route", "show"]);
        assert!(
            inside.contains("default via 169.254.1.1 dev eth0 proto static onlink"),
            "{inside}"
        );
        assert!(
            inside.contains("169.254.1.1 dev eth0 proto static scope link"),
            "{inside}"
        );

        // Setting up again is refused and leaves the working network alone.
        let e = on_host(&host, || setup(&name, &cfg, init.pid()).unwrap_err());
        assert!(matches!(e, NetworkError::VethExists { .. }), "{e}");
        assert!(ping(&host, &["10.88.0.5"]));

        // A spoofed source is dropped even with a route back to it (so not by rp_filter)...
        run_in(&part, &["ip", "addr", "add", "10.88.0.9/32", "dev", "eth0"]);
        run_in(&host, &["ip", "route", "add", "10.88.0.9/32", "dev", &v]);
        assert!(!ping(&part, &["-I", "10.88.0.9", "10.99.0.1"]), "spoofed");
        // ... by the filter: without it, it passes.
        let table = nft_table(&v);
        run_in(&host, &["nft", "delete", "table", "netdev", &table]);
        assert!(ping(&part, &["-I", "10.88.0.9", "10.99.0.1"]), "unfiltered");

        on_host(&host, || teardown(&name).unwrap());
        assert!(!has_link(&host, &v));
        let route = run_in(&host, &["ip", "route", "show", "10.88.0.5"]);
        assert!(route.trim().is_empty(), "{route}");
    }

    #[test]
    fn failed_setup_leaves_nothing() {
        let Some(_lock) = root_test(&[]) else { return };
        let host = Ns::new("fh");
        let part = Ns::new("fp");
        let init = Init::new(&part);
        run_in(&host, &["ip", "link", "set", "lo", "up"]);
        // The host routes the address elsewhere already: setup fails after the veth exists.
        run_in(&host, &["ip", "route", "add", "10.88.0.7/32", "dev", "lo"]);
        let name = format!("hullt-f-{}", std::process::id());
        let mut cfg = config(NetworkMode::Routed, &["10.88.0.7/32"]);
        cfg.egress_mbit = Some(10);
        let e = on_host(&host, || setup(&name, &cfg, init.pid()).unwrap_err());
        assert!(
            e.to_string()
                .contains("routes that address elsewhere already"),
            "{e}"
        );
        assert!(!has_link(&host, &host_veth_name(&name)));
        assert!(!has_link(&part, "eth0"));
        assert!(!nft_tables(&host).contains("hull_"));
    }
}
