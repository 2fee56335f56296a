//! Pod egress policies and the IPv4 subnets they are made of: pure, so the
//! control plane checks a policy without linking the host agent (which
//! applies it, `host-agent/src/network.rs`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::str::FromStr;

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

impl Subnet {
    /// Any IPv4 CIDR (`/0` to `/32`), for deny and allow lists.
    pub fn parse_cidr(s: &str) -> Result<Subnet, NetworkError> {
        let cidr = if s.contains('/') { s.to_owned() } else { format!("{s}/32") };
        parse_any_prefix(&cidr).ok_or_else(|| NetworkError::BadAllow(s.to_owned()))
    }
}

fn parse_any_prefix(s: &str) -> Option<Subnet> {
    let (addr, prefix) = s.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    (u32::from(addr) & !mask == 0).then_some(Subnet { network: addr, prefix })
}
