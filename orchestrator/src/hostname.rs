//! Pod host names: `{service}-{pod}-{owner}.{domain}` and
//! `{port}-{pod}-{owner}.{domain}`, where the owner is a user or team name.
//!
//! Pod, owner and service names may all contain dashes, so the first label
//! alone can split several ways (`web-a-b-c` is `web` on pod `a-b` of `c`,
//! or `web` on pod `a` of `b-c`, or `web-a` on pod `b` of `c`). The parse is
//! made unambiguous in two steps:
//!
//! 1. [`parse`] tries every split and keeps those whose (pod, owner) pair
//!    exists; exactly one must remain.
//! 2. The control plane never lets two live pods take *conflicting* route
//!    keys (see [`keys_conflict`]): `{pod}-{owner}` of one must not equal
//!    another's or end with `-` + another's. With that rule, at most one
//!    split of any host name names an existing pod, so step 1 cannot find
//!    two.
//!
//! The whole first label must fit DNS's 63 characters ([`host_for`]).

use std::fmt;

/// Longest DNS label.
pub const MAX_LABEL: usize = 63;

/// Longest route key (`{pod}-{owner}`) a pod may have: leaves room for a
/// port (up to 5 digits) or a service name of up to 12 characters and a dash.
pub const MAX_ROUTE_KEY: usize = MAX_LABEL - 13;

/// What a host name points at inside the pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A port number (`8080-web-alice`).
    Port(u16),
    /// A named service or process of the pod (`code-server-web-alice`).
    Service(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Port(p) => write!(f, "{p}"),
            Target::Service(s) => f.write_str(s),
        }
    }
}

/// A parsed pod host name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodHost {
    pub target: Target,
    pub pod: String,
    /// User or team name.
    pub owner: String,
}

/// Why a host name does not name a pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host {0:?} is not under the pod domain {1:?}")]
    NotUnderDomain(String, String),
    #[error("host label {0:?} is not `{{service or port}}-{{pod}}-{{owner}}`")]
    Malformed(String),
    #[error("no pod matches host label {0:?}")]
    NoSuchPod(String),
    /// Cannot happen while [`keys_conflict`] is enforced; reported, never guessed.
    #[error("host label {0:?} matches more than one pod")]
    Ambiguous(String),
    #[error("host label {0:?} is {1} characters; DNS allows {MAX_LABEL}")]
    TooLong(String, usize),
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Longest service name in a host name (`{service}-{pod}-{owner}`).
pub const MAX_SERVICE: usize = 12;

/// Whether `s` can name a service in host names: lower-case letters,
/// digits and inner dashes, at most [`MAX_SERVICE`] characters, not all
/// digits (that would be a port).
pub fn valid_service_name(s: &str) -> bool {
    s.len() <= MAX_SERVICE && valid_name(s) && !s.bytes().all(|b| b.is_ascii_digit())
}

fn target_of(s: &str) -> Option<Target> {
    if !valid_name(s) {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u16>().ok().filter(|p| *p > 0).map(Target::Port);
    }
    Some(Target::Service(s.to_owned()))
}

/// The first label of `host` if it is directly under `domain`: lower-cased,
/// without a port or a trailing dot.
pub fn pod_label(host: &str, domain: &str) -> Result<String, HostError> {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h.to_owned(),
        _ => host,
    };
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let label = host
        .strip_suffix(&domain)
        .and_then(|rest| rest.strip_suffix('.'))
        .filter(|l| !l.is_empty() && !l.contains('.'))
        .ok_or_else(|| HostError::NotUnderDomain(host.clone(), domain.clone()))?;
    Ok(label.to_owned())
}

/// Every way `label` splits into target, pod and owner (each a valid name).
pub fn splits(label: &str) -> Vec<PodHost> {
    let dashes: Vec<usize> = label.match_indices('-').map(|(i, _)| i).collect();
    let mut out = Vec::new();
    for (a, &i) in dashes.iter().enumerate() {
        for &j in &dashes[a + 1..] {
            let (target, pod, owner) = (&label[..i], &label[i + 1..j], &label[j + 1..]);
            if let (Some(target), true, true) = (target_of(target), valid_name(pod), valid_name(owner)) {
                out.push(PodHost { target, pod: pod.to_owned(), owner: owner.to_owned() });
            }
        }
    }
    out
}

/// Parses `host` under `domain`, keeping the splits whose (pod, owner)
/// `exists`.
pub fn parse(host: &str, domain: &str, exists: impl Fn(&str, &str) -> bool) -> Result<PodHost, HostError> {
    let label = pod_label(host, domain)?;
    let all = splits(&label);
    if all.is_empty() {
        return Err(HostError::Malformed(label));
    }
    let mut found = all.into_iter().filter(|h| exists(&h.pod, &h.owner));
    match (found.next(), found.next()) {
        (Some(h), None) => Ok(h),
        (None, _) => Err(HostError::NoSuchPod(label)),
        (Some(_), Some(_)) => Err(HostError::Ambiguous(label)),
    }
}

/// The part of host names a pod owns: `{pod}-{owner}`.
pub fn route_key(pod: &str, owner: &str) -> String {
    format!("{pod}-{owner}")
}

/// Whether two pods' route keys could make a host name ambiguous: they are
/// equal, or one ends with `-` followed by the other.
pub fn keys_conflict(a: &str, b: &str) -> bool {
    let suffix_of = |long: &str, short: &str| long.len() > short.len() && long.ends_with(short) && long.as_bytes()[long.len() - short.len() - 1] == b'-';
    a == b || suffix_of(a, b) || suffix_of(b, a)
}

/// The host name of `target` on `pod` of `owner` under `domain`.
pub fn host_for(target: &Target, pod: &str, owner: &str, domain: &str) -> Result<String, HostError> {
    let label = format!("{target}-{}", route_key(pod, owner));
    if label.len() > MAX_LABEL {
        let n = label.len();
        return Err(HostError::TooLong(label, n));
    }
    Ok(format!("{label}.{}", domain.trim_end_matches('.')))
}

/// Parses a stored or requested list of public ports (`"8080,3000"`,
/// empty for none): sorted, without duplicates, each 1..=65535.
pub fn parse_ports(list: &str) -> Result<Vec<u16>, String> {
    let mut ports = std::collections::BTreeSet::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u16>() {
            Ok(p) if p > 0 => {
                ports.insert(p);
            }
            _ => return Err(format!("{part:?} is not a port number (1 to 65535)")),
        }
    }
    Ok(ports.into_iter().collect())
}

/// The stored form of a port list.
pub fn format_ports(ports: &[u16]) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists_round_trip_sorted_and_checked() {
        assert_eq!(parse_ports("").unwrap(), Vec::<u16>::new());
        assert_eq!(parse_ports("8080, 3000,8080").unwrap(), vec![3000, 8080]);
        assert_eq!(format_ports(&[3000, 8080]), "3000,8080");
        assert!(parse_ports("0").unwrap_err().contains("1 to 65535"));
        assert!(parse_ports("70000").is_err());
        assert!(parse_ports("http").is_err());
    }

    fn only(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str, &str) -> bool {
        move |p, o| pairs.iter().any(|(pp, oo)| *pp == p && *oo == o)
    }

    #[test]
    fn simple_names_parse() {
        let h = parse("web-demo-alice.pinacle.localhost", "pinacle.localhost", only(&[("demo", "alice")])).unwrap();
        assert_eq!(h, PodHost { target: Target::Service("web".into()), pod: "demo".into(), owner: "alice".into() });
        let h = parse("8080-demo-alice.pinacle.localhost:443", "pinacle.localhost", only(&[("demo", "alice")])).unwrap();
        assert_eq!(h.target, Target::Port(8080));
        // case, trailing dot and port are forgiven
        assert!(parse("WEB-Demo-Alice.Pinacle.Localhost.", "pinacle.localhost", only(&[("demo", "alice")])).is_ok());
    }

    #[test]
    fn dashes_anywhere_resolve_through_existing_pods() {
        let exists = only(&[("my-app", "jo-ann"), ("api", "bob")]);
        let h = parse("code-server-my-app-jo-ann.d", "d", &exists).unwrap();
        assert_eq!((h.target, h.pod.as_str(), h.owner.as_str()), (Target::Service("code-server".into()), "my-app", "jo-ann"));
        let h = parse("3000-api-bob.d", "d", &exists).unwrap();
        assert_eq!(h.target, Target::Port(3000));
        assert_eq!(parse("web-nope-bob.d", "d", &exists), Err(HostError::NoSuchPod("web-nope-bob".into())));
    }

    #[test]
    fn every_split_is_considered() {
        let s = splits("a-b-c-d");
        let got: Vec<String> = s.iter().map(|h| format!("{}|{}|{}", h.target, h.pod, h.owner)).collect();
        assert_eq!(got, vec!["a|b|c-d", "a|b-c|d", "a-b|c|d"]);
        assert!(splits("a-b").is_empty());
        assert!(splits("a--b-c").iter().all(|h| valid_name(&h.pod) && valid_name(&h.owner)));
        // port 0 and ports over 65535 are not ports, nor names
        assert!(splits("0-a-b").is_empty());
        assert!(splits("70000-a-b").is_empty());
    }

    #[test]
    fn conflicting_keys_are_exactly_the_ambiguous_ones() {
        assert!(keys_conflict("b-c-d", "c-d"));
        assert!(keys_conflict("c-d", "b-c-d"));
        assert!(keys_conflict("a-b", "a-b"));
        assert!(!keys_conflict("bc-d", "c-d"), "not at a dash boundary");
        assert!(!keys_conflict("a-b", "a-c"));
        // Exhaustively over small names: if no two existing keys conflict,
        // no host label matches two pods.
        let names = ["a", "b", "a-b", "b-a", "a-a", "b-b"];
        let pairs: Vec<(String, String)> =
            names.iter().flat_map(|p| names.iter().map(move |o| (p.to_string(), o.to_string()))).collect();
        for x in &pairs {
            for y in &pairs {
                if x == y {
                    continue;
                }
                let (kx, ky) = (route_key(&x.0, &x.1), route_key(&y.0, &y.1));
                for target in ["w", "w-a", "a", "1"] {
                    let label = format!("{target}-{kx}");
                    let hits = splits(&label).into_iter().filter(|h| (&h.pod, &h.owner) == (&x.0, &x.1) || (&h.pod, &h.owner) == (&y.0, &y.1)).count();
                    if hits > 1 {
                        assert!(keys_conflict(&kx, &ky), "{label} matches {x:?} and {y:?} but the keys were allowed together");
                    }
                }
            }
        }
    }

    #[test]
    fn hosts_outside_the_domain_or_malformed_are_refused() {
        let any = |_: &str, _: &str| true;
        assert!(matches!(parse("web-a-b.evil.com", "pinacle.localhost", any), Err(HostError::NotUnderDomain(..))));
        assert!(matches!(parse("x.web-a-b.pinacle.localhost", "pinacle.localhost", any), Err(HostError::NotUnderDomain(..))));
        assert!(matches!(parse("pinacle.localhost", "pinacle.localhost", any), Err(HostError::NotUnderDomain(..))));
        assert!(matches!(parse("web.pinacle.localhost", "pinacle.localhost", any), Err(HostError::Malformed(_))));
        assert!(matches!(parse("we_b-a-b.pinacle.localhost", "pinacle.localhost", any), Err(HostError::Malformed(_))));
        // with every pair existing, a many-dash label is reported, not guessed
        assert!(matches!(parse("w-a-b-c.d", "d", any), Err(HostError::Ambiguous(_))));
    }

    #[test]
    fn host_names_fit_dns() {
        assert_eq!(host_for(&Target::Port(8080), "demo", "alice", "pinacle.localhost").unwrap(), "8080-demo-alice.pinacle.localhost");
        let long_pod = "p".repeat(40);
        let long_user = "u".repeat(20);
        assert!(matches!(host_for(&Target::Service("code-server".into()), &long_pod, &long_user, "d"), Err(HostError::TooLong(_, 73))));
    }
}
