//! Pod networking plan (issue 4): the pure part. Each pod will get its own
//! network namespace with a veth pair to a host bridge, an address from the
//! pod subnet, and nftables rules that keep pods from each other and from the
//! host's own services, with a per-pod egress policy.
//!
//! The first part decides names, addresses and rules and touches nothing;
//! [`NetworkConfig`] applies them with iproute2 and `nft -f`. youki joins the
//! pod's namespace through the OCI spec; runsc is started inside it with
//! `--network=host` (its own netns support fails on this runsc release).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use uuid::Uuid;

pub use pinacle_orchestrator::egress::{Egress, NetworkError, Subnet};

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


/// Destinations no pod reaches, whatever its policy: link-local (cloud
/// metadata services live there), loopback and the multicast range.
pub const ALWAYS_DENIED: &[&str] = &["169.254.0.0/16", "127.0.0.0/8", "224.0.0.0/4"];

/// Destinations no pod reaches unless the operator allows them
/// (`--pod-allow-cidr`): the private networks of the host's own site (RFC
/// 1918 ranges, carrier-grade NAT and tailnets in 100.64/10, "this
/// network") and cloud metadata services outside link-local (Azure's
/// 168.63.129.16; Alibaba's 100.100.100.200 lies in 100.64/10). A pod's own
/// policy cannot reach them either. The host's name servers stay reachable
/// on port 53 (they often live in these ranges).
///
/// IPv6 is not forwarded for pods at all (unique-local fc00::/7 and
/// link-local fe80::/10 included): pods have IPv4 addresses only.
pub const DENIED_BY_DEFAULT: &[&str] =
    &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "0.0.0.0/8", "168.63.129.16/32", "100.100.100.200/32"];

/// The conntrack mark bit of connections that pods started: replies to
/// them are the only traffic the forwarding guard lets through besides
/// the pods' own (see [`HostRules::guard_forwarding`]). Every Pinacle
/// bridge on the host marks its own, so their guards do not drop each
/// other's.
pub const POD_CONNECTION_MARK: u32 = 0x1000_0000;

/// The host-wide parts of the ruleset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostRules {
    /// Networks of [`DENIED_BY_DEFAULT`] the operator lets pods reach.
    pub allow: Vec<Subnet>,
    /// The host's name servers (pods get them in their resolv.conf):
    /// reachable on port 53 even inside [`DENIED_BY_DEFAULT`].
    pub resolvers: Vec<Ipv4Addr>,
    /// Forward nothing but pod traffic: set when the agent turned IPv4
    /// forwarding on itself (the host routed nothing before), so that it
    /// does not become a router between the host's other networks.
    pub guard_forwarding: bool,
}

/// A set of addresses and networks; overlapping entries (100.100.100.200
/// in 100.64/10, an operator's list) are merged.
fn nft_set(name: &str, typ: &str, elements: &[String]) -> String {
    if elements.is_empty() {
        format!("  set {name} {{ type {typ}; flags interval; auto-merge; }}")
    } else {
        format!("  set {name} {{ type {typ}; flags interval; auto-merge; elements = {{ {} }} }}", elements.join(", "))
    }
}

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
pub fn ruleset(bridge: &str, subnet: &Subnet, deny: &[Subnet], pods: &[PodRule], host: &HostRules) -> String {
    let table = format!("pinacle_{}", bridge.replace('-', "_"));
    let mut denied: Vec<String> = ALWAYS_DENIED.iter().map(|s| s.to_string()).collect();
    denied.extend(deny.iter().map(Subnet::to_string));
    let private: Vec<String> = DENIED_BY_DEFAULT.iter().map(|s| s.to_string()).collect();
    let allowed: Vec<String> = host.allow.iter().map(Subnet::to_string).collect();
    let resolvers: Vec<String> = host.resolvers.iter().map(Ipv4Addr::to_string).collect();
    let mut r = String::new();
    let _ = writeln!(r, "table inet {table}");
    let _ = writeln!(r, "delete table inet {table}");
    let _ = writeln!(r, "table inet {table} {{");
    let _ = writeln!(r, "{}", nft_set("denied", "ipv4_addr", &denied));
    let _ = writeln!(r, "{}", nft_set("private", "ipv4_addr", &private));
    let _ = writeln!(r, "{}", nft_set("allowed", "ipv4_addr", &allowed));
    let _ = writeln!(r, "{}", nft_set("resolvers", "ipv4_addr", &resolvers));
    let _ = writeln!(r, "  chain input {{ type filter hook input priority 0; policy accept;");
    let _ = writeln!(r, "    iifname \"{bridge}\" ct state established,related accept");
    // the platform gateway (memory service), on the bridge's address only
    let _ = writeln!(r, "    iifname \"{bridge}\" ip daddr {gw} tcp dport {port} accept", gw = subnet.gateway(), port = crate::platform::GATEWAY_PORT);
    let _ = writeln!(r, "    iifname \"{bridge}\" drop");
    let _ = writeln!(r, "  }}");
    // pods reach it on port 80 too (`http://pinacle.internal`)
    let _ = writeln!(r, "  chain prerouting {{ type nat hook prerouting priority -100; policy accept;");
    let _ = writeln!(r, "    iifname \"{bridge}\" ip daddr {gw} tcp dport 80 redirect to :{port}", gw = subnet.gateway(), port = crate::platform::GATEWAY_PORT);
    let _ = writeln!(r, "  }}");
    // private networks: only the operator's allow list and DNS to the
    // host's name servers pass (back to the forward chain); the rest drops
    let _ = writeln!(r, "  chain private {{");
    let _ = writeln!(r, "    ip daddr @allowed return");
    let _ = writeln!(r, "    ip daddr @resolvers meta l4proto {{ tcp, udp }} th dport 53 return");
    let _ = writeln!(r, "    drop");
    let _ = writeln!(r, "  }}");
    // before the filter: connections from this bridge's pods are marked,
    // so that every Pinacle table's forwarding guard knows them
    let _ = writeln!(r, "  chain mark_pods {{ type filter hook forward priority -1; policy accept;");
    let _ = writeln!(r, "    iifname \"{bridge}\" ct mark set ct mark or {POD_CONNECTION_MARK:#x}");
    let _ = writeln!(r, "  }}");
    let _ = writeln!(r, "  chain forward {{ type filter hook forward priority 0; policy accept;");
    if host.guard_forwarding {
        let _ = writeln!(r, "    ct mark and {POD_CONNECTION_MARK:#x} == 0 drop");
    }
    let _ = writeln!(r, "    iifname \"{bridge}\" oifname \"{bridge}\" drop");
    let _ = writeln!(r, "    oifname \"{bridge}\" ct state established,related accept");
    let _ = writeln!(r, "    oifname \"{bridge}\" drop");
    let _ = writeln!(r, "    iifname \"{bridge}\" meta nfproto ipv6 drop");
    let _ = writeln!(r, "    iifname \"{bridge}\" ip daddr @denied drop");
    let _ = writeln!(r, "    iifname \"{bridge}\" ip daddr @private jump private");
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

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// The file in a pod's directory that records its attachment.
const ATTACHMENT_FILE: &str = "network.json";

/// The host side of pod networking on this agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The bridge the pods' veths join (at most 15 characters).
    pub bridge: String,
    pub subnet: Subnet,
    /// More destinations no pod may reach (besides [`ALWAYS_DENIED`]).
    pub deny: Vec<Subnet>,
    /// Networks of [`DENIED_BY_DEFAULT`] pods may reach after all
    /// (`--pod-allow-cidr`).
    pub allow: Vec<Subnet>,
}

/// The file in the data directory that says the agent turned IPv4
/// forwarding on (it was off): the ruleset then guards forwarding.
const FORWARDING_MARKER: &str = "ip-forward-enabled-by-pinacle";

/// The name servers of the host's resolv.conf that pods get.
fn host_resolvers() -> Vec<Ipv4Addr> {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    pod_resolv_conf(&host).lines().filter_map(|l| l.strip_prefix("nameserver ")?.trim().parse().ok()).collect()
}

/// A pod's network attachment, as recorded in its directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    pub ip: Ipv4Addr,
    pub netns: String,
    /// The pod's egress policy as applied (see [`Egress::parse`]).
    #[serde(default)]
    pub egress: String,
}

impl Attachment {
    /// The namespace's path, for the OCI spec and `setns`.
    pub fn netns_path(&self) -> std::path::PathBuf {
        std::path::Path::new(NETNS_DIR).join(&self.netns)
    }
}

/// The attachment recorded in `pod_dir`, if any.
pub fn recorded(pod_dir: &std::path::Path) -> Option<Attachment> {
    serde_json::from_slice(&std::fs::read(pod_dir.join(ATTACHMENT_FILE)).ok()?).ok()
}

fn write_record(pod_dir: &std::path::Path, a: &Attachment) -> Result<(), crate::AgentError> {
    std::fs::create_dir_all(pod_dir).map_err(crate::AgentError::io("creating", pod_dir))?;
    let json = serde_json::to_vec(a).map_err(|e| crate::AgentError::Network(e.to_string()))?;
    let path = pod_dir.join(ATTACHMENT_FILE);
    let tmp = pod_dir.join(format!("{ATTACHMENT_FILE}.tmp"));
    std::fs::write(&tmp, json).map_err(crate::AgentError::io("writing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(crate::AgentError::io("writing", &path))
}

/// Every attachment recorded under `pods_dir`.
fn all_recorded(pods_dir: &std::path::Path) -> Vec<Attachment> {
    std::fs::read_dir(pods_dir).into_iter().flatten().flatten().filter_map(|e| recorded(&e.path())).collect()
}

/// Addresses recorded by the pods under `pods_dir`.
pub fn used_addresses(pods_dir: &std::path::Path) -> BTreeSet<Ipv4Addr> {
    all_recorded(pods_dir).into_iter().map(|a| a.ip).collect()
}

/// The ruleset's view of the recorded pods. A policy that does not parse
/// (the control plane validates them, so only a damaged record) fails
/// closed: no egress.
fn pod_rules(attachments: &[Attachment]) -> Vec<PodRule> {
    let mut rules: Vec<PodRule> = attachments
        .iter()
        .map(|a| PodRule {
            ip: a.ip,
            egress: Egress::parse(&a.egress).unwrap_or_else(|e| {
                tracing::warn!(ip = %a.ip, error = %e, "unreadable egress policy; denying egress");
                Egress::DenyAll
            }),
        })
        .collect();
    rules.sort_by_key(|r| r.ip);
    rules
}

fn forwarding_marker(pods_dir: &std::path::Path) -> std::path::PathBuf {
    pods_dir.parent().unwrap_or(pods_dir).join(FORWARDING_MARKER)
}

/// One address allocation at a time in this process (see [`NetworkConfig::attach`]).
static ADDRESS_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The lock file that serialises address allocation among the processes
/// sharing a data directory: beside the pods' directories.
fn address_lock_file(pods_dir: &std::path::Path) -> std::path::PathBuf {
    pods_dir.parent().unwrap_or(pods_dir).join("network.lock")
}

/// One ruleset change at a time: each reads every record and replaces the
/// whole table, so the last one applied always reflects all pods.
static RULESET_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<(), crate::AgentError> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = crate::runtime::clean_command(program);
    cmd.args(args)
        .stdin(if input.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| crate::AgentError::Network(format!("running {program}: {e}")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).await.map_err(|e| crate::AgentError::Network(format!("{program}: {e}")))?;
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .map_err(|_| crate::AgentError::Network(format!("{program} {} timed out", args.join(" "))))?
        .map_err(|e| crate::AgentError::Network(format!("{program}: {e}")))?;
    if !out.status.success() {
        return Err(crate::AgentError::Network(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

async fn exists(program: &str, args: &[&str]) -> bool {
    run(program, args, None).await.is_ok()
}

impl NetworkConfig {
    /// Makes the bridge, forwarding and the ruleset ready (idempotent).
    pub async fn ensure_host(&self, pods_dir: &std::path::Path) -> Result<(), crate::AgentError> {
        if self.bridge.is_empty() || self.bridge.len() > 15 {
            return Err(crate::AgentError::Network(format!("bridge name {:?} must have 1 to 15 characters", self.bridge)));
        }
        if !exists("ip", &["link", "show", &self.bridge]).await {
            run("ip", &["link", "add", &self.bridge, "type", "bridge"], None).await?;
        }
        let gw = format!("{}/{}", self.subnet.gateway(), self.subnet.prefix);
        run("ip", &["addr", "replace", &gw, "dev", &self.bridge], None).await?;
        run("ip", &["link", "set", &self.bridge, "up"], None).await?;
        let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
        if forwarding.trim() == "0" {
            // the host routed nothing: the ruleset keeps it that way for
            // everything but pods (remembered: after this, forwarding is on)
            let marker = forwarding_marker(pods_dir);
            std::fs::write(&marker, "IPv4 forwarding was off before Pinacle turned it on for pods\n")
                .map_err(crate::AgentError::io("writing", &marker))?;
        }
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| crate::AgentError::Network(format!("enabling IPv4 forwarding: {e}")))?;
        self.apply_rules(pods_dir).await
    }

    /// Loads the ruleset for the pods recorded under `pods_dir`.
    pub async fn apply_rules(&self, pods_dir: &std::path::Path) -> Result<(), crate::AgentError> {
        let _one = RULESET_LOCK.lock().await;
        let pods = pod_rules(&all_recorded(pods_dir));
        let host = HostRules { allow: self.allow.clone(), resolvers: host_resolvers(), guard_forwarding: forwarding_marker(pods_dir).exists() };
        run("nft", &["-f", "-"], Some(&ruleset(&self.bridge, &self.subnet, &self.deny, &pods, &host))).await
    }

    /// Changes the egress policy of an attached pod, at once. False when
    /// the pod has no attachment here.
    pub async fn set_egress(&self, pod_dir: &std::path::Path, egress: &str) -> Result<bool, crate::AgentError> {
        Egress::parse(egress).map_err(|e| crate::AgentError::Network(e.to_string()))?;
        let Some(mut a) = recorded(pod_dir) else { return Ok(false) };
        if a.egress != egress {
            a.egress = egress.to_owned();
            write_record(pod_dir, &a)?;
        }
        let pods_dir = pod_dir.parent().unwrap_or(pod_dir);
        self.apply_rules(pods_dir).await?;
        Ok(true)
    }

    /// Gives the pod its namespace, veth pair and address (idempotent: an
    /// attachment already recorded and present is returned as it is).
    pub async fn attach(
        &self,
        pod: Uuid,
        pod_dir: &std::path::Path,
        pods_dir: &std::path::Path,
        egress: &str,
    ) -> Result<Attachment, crate::AgentError> {
        Egress::parse(egress).map_err(|e| crate::AgentError::Network(e.to_string()))?;
        let names = pod_names(pod);
        // One attachment at a time on this host, from choosing the address
        // until it is recorded: two pods starting at once (queue workers,
        // or two agent processes on one data directory) would otherwise
        // both take the lowest free address.
        let _one = crate::data_lock::hold(&ADDRESS_LOCK, &address_lock_file(pods_dir)).await?;
        if let Some(mut a) = recorded(pod_dir).filter(|a| a.netns_path().exists()) {
            if a.egress != egress {
                a.egress = egress.to_owned();
                write_record(pod_dir, &a)?;
            }
            self.apply_rules(pods_dir).await?;
            return Ok(a);
        }
        // Whatever a failed attempt left goes first.
        self.detach(pod, pod_dir).await?;
        // The directory first: reconcile takes a veth without one for a leftover.
        std::fs::create_dir_all(pod_dir).map_err(crate::AgentError::io("creating", pod_dir))?;
        // checked against every pod recorded on this host (this pod's own
        // stale record went with the detach above)
        let ip = self.subnet.allocate(&used_addresses(pods_dir))?;
        let attached = self.plumb(&names, ip).await;
        if let Err(e) = attached {
            let _ = self.detach(pod, pod_dir).await;
            return Err(e);
        }
        let a = Attachment { ip, netns: names.netns, egress: egress.to_owned() };
        write_record(pod_dir, &a)?;
        if let Err(e) = self.apply_rules(pods_dir).await {
            let _ = self.detach(pod, pod_dir).await;
            return Err(e);
        }
        Ok(a)
    }

    async fn plumb(&self, n: &PodNames, ip: Ipv4Addr) -> Result<(), crate::AgentError> {
        // Three `ip` processes instead of eleven: each batch is one netlink
        // session (pod start time is mostly process spawns otherwise).
        run("ip", &["netns", "add", &n.netns], None).await?;
        run("ip", &["-batch", "-"], Some(&host_side(n, &self.bridge))).await?;
        run("ip", &["-n", &n.netns, "-batch", "-"], Some(&pod_side(n, ip, &self.subnet))).await
    }

    /// Removes the pod's namespace and interfaces and forgets its address.
    /// Succeeds when there is nothing to remove.
    pub async fn detach(&self, pod: Uuid, pod_dir: &std::path::Path) -> Result<(), crate::AgentError> {
        let names = pod_names(pod);
        if std::path::Path::new(NETNS_DIR).join(&names.netns).exists() {
            run("ip", &["netns", "del", &names.netns], None).await?;
        }
        if exists("ip", &["link", "show", &names.host_veth]).await {
            run("ip", &["link", "del", &names.host_veth], None).await?;
        }
        match std::fs::remove_file(pod_dir.join(ATTACHMENT_FILE)) {
            Ok(()) => {
                // The pod's rule goes with it (its address may be reused).
                if let Some(pods_dir) = pod_dir.parent() {
                    self.apply_rules(pods_dir).await?;
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(crate::AgentError::io("removing", pod_dir.join(ATTACHMENT_FILE))(e)),
        }
    }
}

/// `ip -batch` commands for the host end of a pod's veth: made, its peer
/// moved into the pod's namespace, joined to the bridge as an isolated port
/// (isolated ports talk to the bridge, never to each other), up.
pub fn host_side(n: &PodNames, bridge: &str) -> String {
    format!(
        "link add {h} type veth peer name {p}\n\
         link set {p} netns {ns}\n\
         link set {h} master {bridge}\n\
         link set dev {h} type bridge_slave isolated on\n\
         link set {h} up\n",
        h = n.host_veth,
        p = n.pod_veth,
        ns = n.netns
    )
}

/// `ip -n NETNS -batch` commands inside the pod's namespace: its end is
/// `eth0` with the pod's address and the bridge as default route; loopback up.
pub fn pod_side(n: &PodNames, ip: Ipv4Addr, subnet: &Subnet) -> String {
    format!(
        "link set {p} name eth0\n\
         addr add {ip}/{prefix} dev eth0\n\
         link set eth0 up\n\
         link set lo up\n\
         route add default via {gw}\n",
        p = n.pod_veth,
        prefix = subnet.prefix,
        gw = subnet.gateway()
    )
}

/// Host veth names in `ip -o link show` output (`5: pvab12@if4: <...`).
pub fn veth_names(ip_link_output: &str) -> Vec<String> {
    ip_link_output
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("pv"))
        .collect()
}

impl NetworkConfig {
    /// Removes the veths on this bridge, and their namespaces, that belong
    /// to no pod directory under `pods_dir` (a start that died halfway, or
    /// a pod removed while the agent was down). Returns what it removed.
    pub async fn remove_orphans(&self, pods_dir: &std::path::Path) -> Result<Vec<String>, crate::AgentError> {
        let out = crate::runtime::clean_command("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
            .await
            .map_err(|e| crate::AgentError::Network(format!("running ip: {e}")))?;
        if !out.status.success() {
            return Ok(Vec::new()); // no bridge: nothing of ours
        }
        let dirs: Vec<String> = std::fs::read_dir(pods_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let mut removed = Vec::new();
        for veth in veth_names(&String::from_utf8_lossy(&out.stdout)) {
            let short = &veth[2..];
            if short.len() != 12 || dirs.iter().any(|d| d.starts_with(short)) {
                continue;
            }
            run("ip", &["link", "del", &veth], None).await?;
            let netns = format!("pinacle-{short}");
            if std::path::Path::new(NETNS_DIR).join(&netns).exists() {
                run("ip", &["netns", "del", &netns], None).await?;
            }
            removed.push(veth);
        }
        Ok(removed)
    }
}

/// A network namespace with only loopback, up, for a libcontainer pod
/// without pod networking (a namespace the runtime made would have
/// loopback down, and servers in the pod could not be reached even from
/// inside it). Idempotent.
pub async fn loopback_namespace(pod: Uuid) -> Result<std::path::PathBuf, crate::AgentError> {
    let names = pod_names(pod);
    let path = std::path::Path::new(NETNS_DIR).join(&names.netns);
    if !path.exists() {
        run("ip", &["netns", "add", &names.netns], None).await?;
    }
    run("ip", &["-n", &names.netns, "link", "set", "lo", "up"], None).await?;
    Ok(path)
}

/// Removes the pod's network namespace, if there is one.
pub async fn remove_namespace(pod: Uuid) -> Result<(), crate::AgentError> {
    let names = pod_names(pod);
    if std::path::Path::new(NETNS_DIR).join(&names.netns).exists() {
        run("ip", &["netns", "del", &names.netns], None).await?;
    }
    Ok(())
}

/// `/etc/resolv.conf` for pods: the host's name servers that a pod can
/// reach (not loopback ones, such as a local stub resolver).
pub fn pod_resolv_conf(host_resolv: &str) -> String {
    let servers: Vec<&str> = host_resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(str::trim)
        .filter(|s| s.parse::<Ipv4Addr>().is_ok_and(|ip| !ip.is_loopback()))
        .collect();
    let mut out = String::new();
    for s in servers {
        let _ = writeln!(out, "nameserver {s}");
    }
    out
}

impl From<NetworkError> for crate::AgentError {
    fn from(e: NetworkError) -> Self {
        crate::AgentError::Network(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plumbing_batches_name_every_interface() {
        let n = pod_names(Uuid::nil());
        let subnet: Subnet = "10.209.0.0/16".parse().unwrap();
        let host = host_side(&n, "pnc0");
        assert!(host.contains("link add pv000000000000 type veth peer name pn000000000000"), "{host}");
        assert!(host.contains("link set pn000000000000 netns pinacle-000000000000"), "{host}");
        assert!(host.contains("master pnc0") && host.contains("bridge_slave isolated on"), "{host}");
        let pod = pod_side(&n, Ipv4Addr::new(10, 209, 0, 7), &subnet);
        assert!(pod.contains("addr add 10.209.0.7/16 dev eth0") && pod.contains("route add default via 10.209.0.1"), "{pod}");
        assert_eq!(host.lines().count(), 5);
        assert_eq!(pod.lines().count(), 5);
    }

    #[test]
    fn host_veths_are_read_from_ip_link() {
        let out = "7: pv0123456789ab@if6: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master pnc0 state UP\n\
                   9: pvfedcba987654@if8: <BROADCAST> mtu 1500 master pnc0\n\
                   3: eth0: <BROADCAST> mtu 1500\n";
        assert_eq!(veth_names(out), vec!["pv0123456789ab".to_string(), "pvfedcba987654".to_string()]);
        assert!(veth_names("").is_empty());
    }

    #[test]
    fn a_damaged_egress_record_fails_closed() {
        let a = |ip: [u8; 4], egress: &str| Attachment { ip: Ipv4Addr::from(ip), netns: "n".into(), egress: egress.into() };
        let rules = pod_rules(&[a([10, 88, 0, 3], "garbage!"), a([10, 88, 0, 2], ""), a([10, 88, 0, 4], "192.0.2.0/24")]);
        assert_eq!(rules[0], PodRule { ip: Ipv4Addr::new(10, 88, 0, 2), egress: Egress::AllowAll });
        assert_eq!(rules[1], PodRule { ip: Ipv4Addr::new(10, 88, 0, 3), egress: Egress::DenyAll });
        assert!(matches!(rules[2].egress, Egress::Allow(_)));
    }

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
    fn pods_get_the_hosts_reachable_name_servers() {
        let host = "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch example\nnameserver ::1\n";
        assert_eq!(pod_resolv_conf(host), "nameserver 192.0.2.53\n");
        assert_eq!(pod_resolv_conf(""), "");
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
        let r = ruleset("pnc0", &subnet, &["10.0.0.0/8".parse().unwrap()], &pods, &HostRules::default());
        // replaced atomically: declared, deleted, declared again
        assert!(r.starts_with("table inet pinacle_pnc0\ndelete table inet pinacle_pnc0\n"), "{r}");
        // pods never open connections to the host, but for the platform
        // gateway on the bridge's address (port 80 redirected to it)
        assert!(
            r.contains("iifname \"pnc0\" ct state established,related accept\n    iifname \"pnc0\" ip daddr 10.88.0.1 tcp dport 7079 accept\n    iifname \"pnc0\" drop"),
            "{r}"
        );
        assert!(r.contains("iifname \"pnc0\" ip daddr 10.88.0.1 tcp dport 80 redirect to :7079"), "{r}");
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
        nft_check(&r);
    }

    /// The kernel's own parser accepts `r` (check mode: nothing applied).
    fn nft_check(r: &str) {
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

    #[test]
    fn private_networks_are_denied_unless_the_operator_allows_them() {
        let subnet: Subnet = "10.88.0.0/16".parse().unwrap();
        let pods = [PodRule { ip: Ipv4Addr::new(10, 88, 0, 4), egress: Egress::parse("192.168.1.0/24, 198.51.100.0/24").unwrap() }];
        let host = HostRules {
            allow: vec!["172.20.0.0/16".parse().unwrap()],
            resolvers: vec![Ipv4Addr::new(10, 255, 255, 53)],
            guard_forwarding: false,
        };
        let r = ruleset("pnc0", &subnet, &[], &pods, &host);
        for net in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "168.63.129.16", "100.100.100.200"] {
            let set = r.lines().find(|l| l.contains("set private")).unwrap();
            assert!(set.contains(net), "{net} is not denied by default: {set}");
        }
        assert!(r.lines().any(|l| l.contains("set allowed") && l.contains("172.20.0.0/16")), "{r}");
        assert!(r.lines().any(|l| l.contains("set resolvers") && l.contains("10.255.255.53")), "{r}");
        // the private check comes before any pod's own allow list (a pod
        // cannot allow itself into the site's networks), after the deny list
        let denied = r.find("ip daddr @denied drop").unwrap();
        let private = r.find("ip daddr @private jump private").unwrap();
        let pod_allow = r.find("ip saddr 10.88.0.4 ip daddr").unwrap();
        assert!(denied < private && private < pod_allow, "{r}");
        // inside the private chain: allowed networks and DNS return, the rest drops
        let chain = &r[r.find("chain private").unwrap()..];
        let chain = &chain[..chain.find("\n  }").unwrap()];
        assert!(chain.contains("@allowed return") && chain.contains("th dport 53 return") && chain.trim_end().ends_with("drop"), "{chain}");
        // no IPv6 leaves the bridge; without the guard, other forwarding is left alone
        assert!(r.contains("iifname \"pnc0\" meta nfproto ipv6 drop"));
        assert!(!r.contains("== 0 drop"));
        nft_check(&r);
        // nothing allowed, no resolvers: empty sets still parse
        nft_check(&ruleset("pnc0", &subnet, &[], &[], &HostRules::default()));
        // overlapping operator lists merge instead of failing the load
        let overlapping = HostRules { allow: vec![Subnet::parse_cidr("10.0.0.0/8").unwrap(), Subnet::parse_cidr("10.1.0.0/16").unwrap()], ..Default::default() };
        nft_check(&ruleset("pnc0", &subnet, &[Subnet::parse_cidr("169.254.169.254").unwrap()], &[], &overlapping));
    }

    #[test]
    fn the_forwarding_guard_lets_only_pod_connections_through() {
        let subnet: Subnet = "10.88.0.0/16".parse().unwrap();
        let r = ruleset("pnc0", &subnet, &[], &[], &HostRules { guard_forwarding: true, ..Default::default() });
        // pod connections are marked before the filter runs...
        let mark = r.find("type filter hook forward priority -1").unwrap();
        assert!(r[mark..].contains("iifname \"pnc0\" ct mark set ct mark or 0x10000000"), "{r}");
        // ...and the filter's first rule drops every forwarded packet of
        // another connection
        let filter = r.find("type filter hook forward priority 0").unwrap();
        let first = r[filter..].lines().nth(1).unwrap().trim();
        assert_eq!(first, "ct mark and 0x10000000 == 0 drop", "{r}");
        nft_check(&r);
    }
}
