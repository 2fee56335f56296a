//! Pod networking plan (issue 4): the pure part. Each pod will get its own
//! network namespace with a veth pair to a host bridge, an address from the
//! pod subnet, and nftables rules that keep pods from each other and from the
//! host's own services, with a per-pod egress policy.
//!
//! This module decides names, addresses and rules; applying them (iproute2,
//! `nft -f`) and joining the namespace from both runtimes come next. Nothing
//! here touches the system.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::str::FromStr;

use uuid::Uuid;

/// An IPv4 subnet in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

/// Why a subnet or policy text is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid subnet {0:?}: {1}")]
    BadSubnet(String, &'static str),
    #[error("pod subnet {0} has no free address left")]
    Exhausted(String),
    #[error("invalid egress allowlist entry {0:?}: use an IPv4 address or CIDR")]
    BadAllow(String),
}

impl FromStr for Subnet {
    type Err = NetworkError;
    fn from_str(s: &str) -> Result<Self, NetworkError> {
        let bad = |why| NetworkError::BadSubnet(s.to_owned(), why);
        let (addr, prefix) = s.split_once('/').ok_or_else(|| bad("write it as ADDRESS/PREFIX, like 10.88.0.0/16"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("prefix is not a number"))?;
        if !(8..=28).contains(&prefix) {
            return Err(bad("use a prefix from /8 to /28"));
        }
        let mask = u32::MAX << (32 - prefix);
        if u32::from(addr) & !mask != 0 {
            return Err(bad("host bits are set; give the network address"));
        }
        Ok(Subnet { network: addr, prefix })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Subnet {
    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    /// The host side of the bridge: the first address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Whether `ip` lies in the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & (u32::MAX << (32 - self.prefix)) == u32::from(self.network)
    }

    /// The lowest address not in `used`, skipping the network, gateway and
    /// broadcast addresses.
    pub fn allocate(&self, used: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr, NetworkError> {
        let base = u32::from(self.network);
        (2..self.size() - 1)
            .map(|i| Ipv4Addr::from(base + i))
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| NetworkError::Exhausted(self.to_string()))
    }
}

/// Interface and namespace names of one pod. Linux interface names hold at
/// most 15 bytes; 12 hex digits of the pod id keep them unique in practice
/// and recognisable (`pv` host side, `pn` namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNames {
    pub netns: String,
    pub host_veth: String,
    pub pod_veth: String,
}

/// The names for `pod`.
pub fn pod_names(pod: Uuid) -> PodNames {
    let short: String = pod.simple().to_string().chars().take(12).collect();
    PodNames { netns: format!("pinacle-{short}"), host_veth: format!("pv{short}"), pod_veth: format!("pn{short}") }
}

/// What a pod may reach outside the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Egress {
    /// Anything but the deny list (the default).
    #[default]
    AllowAll,
    /// Nothing.
    DenyAll,
    /// Only these networks (and never the deny list).
    Allow(Vec<Subnet>),
}

impl Egress {
    /// `allow-all`, `deny-all`, or a comma-separated list of IPv4
    /// addresses and CIDRs.
    pub fn parse(s: &str) -> Result<Self, NetworkError> {
        match s.trim() {
            "allow-all" | "" => Ok(Egress::AllowAll),
            "deny-all" => Ok(Egress::DenyAll),
            list => list
                .split(',')
                .map(|e| {
                    let e = e.trim();
                    let cidr = if e.contains('/') { e.to_owned() } else { format!("{e}/32") };
                    // /29 to /32 are fine for allowlists
                    parse_any_prefix(&cidr).ok_or_else(|| NetworkError::BadAllow(e.to_owned()))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Egress::Allow),
        }
    }
}

fn parse_any_prefix(s: &str) -> Option<Subnet> {
    let (addr, prefix) = s.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    (u32::from(addr) & !mask == 0).then_some(Subnet { network: addr, prefix })
}

/// Destinations no pod reaches, whatever its policy: link-local (cloud
/// metadata services live there), loopback and the multicast range.
pub const ALWAYS_DENIED: &[&str] = &["169.254.0.0/16", "127.0.0.0/8", "224.0.0.0/4"];

/// One pod as the ruleset sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRule {
    pub ip: Ipv4Addr,
    pub egress: Egress,
}

/// The whole nftables ruleset for one bridge, to load atomically with
/// `nft -f` (it replaces the previous one). Pods:
/// - cannot open connections to the host (input from the bridge: only
///   replies to connections the host opened, such as the proxy's);
/// - cannot reach each other (forwarding bridge to bridge is dropped; the
///   bridge ports are also isolated at layer 2);
/// - reach outside only within their egress policy, never the deny list,
///   masqueraded behind the host.
pub fn ruleset(bridge: &str, subnet: &Subnet, deny: &[Subnet], pods: &[PodRule]) -> String {
    let table = format!("pinacle_{}", bridge.replace('-', "_"));
    let mut denied: Vec<String> = ALWAYS_DENIED.iter().map(|s| s.to_string()).collect();
    denied.extend(deny.iter().map(Subnet::to_string));
    let mut r = String::new();
    let _ = writeln!(r, "table inet {table}");
    let _ = writeln!(r, "delete table inet {table}");
    let _ = writeln!(r, "table inet {table} {{");
    let _ = writeln!(r, "  set denied {{ type ipv4_addr; flags interval; elements = {{ {} }} }}", denied.join(", "));
    let _ = writeln!(r, "  chain input {{ type filter hook input priority 0; policy accept;");
    let _ = writeln!(r, "    iifname \"{bridge}\" ct state established,related accept");
    let _ = writeln!(r, "    iifname \"{bridge}\" drop");
    let _ = writeln!(r, "  }}");
    let _ = writeln!(r, "  chain forward {{ type filter hook forward priority 0; policy accept;");
    let _ = writeln!(r, "    iifname \"{bridge}\" oifname \"{bridge}\" drop");
    let _ = writeln!(r, "    oifname \"{bridge}\" ct state established,related accept");
    let _ = writeln!(r, "    oifname \"{bridge}\" drop");
    let _ = writeln!(r, "    iifname \"{bridge}\" ip daddr @denied drop");
    for p in pods {
        match &p.egress {
            Egress::AllowAll => {}
            Egress::DenyAll => {
                let _ = writeln!(r, "    iifname \"{bridge}\" ip saddr {} drop", p.ip);
            }
            Egress::Allow(nets) => {
                let list: Vec<String> = nets.iter().map(Subnet::to_string).collect();
                if !list.is_empty() {
                    let _ = writeln!(r, "    iifname \"{bridge}\" ip saddr {} ip daddr {{ {} }} accept", p.ip, list.join(", "));
                }
                let _ = writeln!(r, "    iifname \"{bridge}\" ip saddr {} drop", p.ip);
            }
        }
    }
    let _ = writeln!(r, "    iifname \"{bridge}\" ip saddr {subnet} accept");
    let _ = writeln!(r, "    iifname \"{bridge}\" drop");
    let _ = writeln!(r, "  }}");
    let _ = writeln!(r, "  chain postrouting {{ type nat hook postrouting priority 100; policy accept;");
    let _ = writeln!(r, "    ip saddr {subnet} oifname != \"{bridge}\" masquerade");
    let _ = writeln!(r, "  }}");
    let _ = writeln!(r, "}}");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_with_clear_errors() {
        let s: Subnet = "10.88.0.0/16".parse().unwrap();
        assert_eq!((s.gateway(), s.to_string()), (Ipv4Addr::new(10, 88, 0, 1), "10.88.0.0/16".to_owned()));
        assert!(s.contains(Ipv4Addr::new(10, 88, 255, 254)) && !s.contains(Ipv4Addr::new(10, 89, 0, 1)));
        for (bad, why) in [("10.88.0.0", "ADDRESS/PREFIX"), ("10.88.0.1/16", "host bits"), ("10.88.0.0/30", "/28"), ("x/16", "IPv4")] {
            let e = bad.parse::<Subnet>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn allocation_skips_reserved_and_used_addresses_and_ends() {
        let s: Subnet = "10.0.0.0/28".parse().unwrap();
        let mut used = BTreeSet::new();
        let first = s.allocate(&used).unwrap();
        assert_eq!(first, Ipv4Addr::new(10, 0, 0, 2), "network and gateway are skipped");
        for _ in 0..13 {
            used.insert(s.allocate(&used).unwrap());
        }
        assert!(!used.contains(&Ipv4Addr::new(10, 0, 0, 15)), "broadcast never handed out");
        assert!(matches!(s.allocate(&used), Err(NetworkError::Exhausted(_))));
        used.remove(&Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(s.allocate(&used).unwrap(), Ipv4Addr::new(10, 0, 0, 7), "freed addresses come back");
    }

    #[test]
    fn interface_names_fit_linux_limits() {
        let n = pod_names(Uuid::new_v4());
        assert!(n.host_veth.len() <= 15 && n.pod_veth.len() <= 15, "{n:?}");
        assert_ne!(n.host_veth, n.pod_veth);
        assert!(n.netns.starts_with("pinacle-"));
    }

    #[test]
    fn egress_policies_parse() {
        assert_eq!(Egress::parse("allow-all").unwrap(), Egress::AllowAll);
        assert_eq!(Egress::parse("deny-all").unwrap(), Egress::DenyAll);
        let Egress::Allow(nets) = Egress::parse("192.0.2.10, 198.51.100.0/24").unwrap() else { panic!() };
        assert_eq!(nets.iter().map(Subnet::to_string).collect::<Vec<_>>(), ["192.0.2.10/32", "198.51.100.0/24"]);
        assert!(matches!(Egress::parse("example.com"), Err(NetworkError::BadAllow(_))));
        assert!(matches!(Egress::parse("10.0.0.1/24"), Err(NetworkError::BadAllow(_))));
    }

    #[test]
    fn the_ruleset_isolates_pods_and_applies_each_policy() {
        let subnet: Subnet = "10.88.0.0/16".parse().unwrap();
        let pods = [
            PodRule { ip: Ipv4Addr::new(10, 88, 0, 2), egress: Egress::AllowAll },
            PodRule { ip: Ipv4Addr::new(10, 88, 0, 3), egress: Egress::DenyAll },
            PodRule { ip: Ipv4Addr::new(10, 88, 0, 4), egress: Egress::parse("192.0.2.0/24").unwrap() },
        ];
        let r = ruleset("pnc0", &subnet, &["10.0.0.0/8".parse().unwrap()], &pods);
        // replaced atomically: declared, deleted, declared again
        assert!(r.starts_with("table inet pinacle_pnc0\ndelete table inet pinacle_pnc0\n"), "{r}");
        // pods never open connections to the host
        assert!(r.contains("iifname \"pnc0\" ct state established,related accept\n    iifname \"pnc0\" drop"), "{r}");
        // nor to each other
        assert!(r.contains("iifname \"pnc0\" oifname \"pnc0\" drop"));
        // deny list: metadata range and the configured one
        assert!(r.contains("169.254.0.0/16") && r.contains("10.0.0.0/8"));
        // per-pod policies come before the subnet-wide accept
        let deny = r.find("ip saddr 10.88.0.3 drop").unwrap();
        let allow = r.find("ip saddr 10.88.0.4 ip daddr { 192.0.2.0/24 } accept").unwrap();
        let rest = r.find("ip saddr 10.88.0.4 drop").unwrap();
        let open = r.find("ip saddr 10.88.0.0/16 accept").unwrap();
        assert!(deny < open && allow < rest && rest < open, "{r}");
        assert!(!r.contains("10.88.0.2 drop"));
        assert!(r.contains("masquerade"));
        // and the kernel's own parser accepts it (check mode: nothing applied)
        use std::io::Write;
        let mut nft = std::process::Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("nft (Debian package nftables; scripts/setup.sh --test installs it)");
        nft.stdin.take().unwrap().write_all(r.as_bytes()).unwrap();
        let out = nft.wait_with_output().unwrap();
        assert!(out.status.success(), "nft -c refused the ruleset: {}\n{r}", String::from_utf8_lossy(&out.stderr));
    }
}

