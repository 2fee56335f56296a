//! `pinacle up`, `pinacle server` and `pinacle agent`: the services.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use pinacle_api::{AdminToken, AppState};
use pinacle_host_agent::{AgentConfig, ControlPlane, HostAgent};
use pinacle_orchestrator::RuntimeKind;
use tokio::sync::watch;

use crate::config::{self, CliConfig};

/// Prints a line to stdout, ignoring a closed stdout: the server must keep
/// running when whoever started it stops reading.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// [`say!`] for stderr.
#[macro_export]
macro_rules! esay {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}


/// What runs in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// API and a local agent.
    All,
    /// API only.
    Server,
}

/// Options of `up` and `server`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Where Pinacle keeps its database, images, pods and volumes.
    #[arg(long, env = "PINACLE_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// Address for the API.
    #[arg(long, env = "PINACLE_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Database URL (default: SQLite in the data directory).
    #[arg(long, env = "PINACLE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis for what several API servers share (pod events for their
    /// streams and subscriptions, cache invalidation):
    /// `redis://[:PASSWORD@]HOST:PORT` (or PINACLE_REDIS_URL, which keeps a
    /// password out of the process list).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Load balancers in front of this server (CIDRs, repeatable or
    /// comma-separated): behind them, rate limits key on the client address
    /// they forward (`X-Forwarded-For`) instead of theirs.
    #[arg(long = "trusted-proxy", env = "PINACLE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxy: Vec<pinacle_api::ratelimit::Cidr>,
    /// This server's address for the other API servers of the same
    /// database (`http://10.0.0.5:7070`): with it, a host whose link ends
    /// at another server is reached through that server. Servers reach
    /// each other over plain HTTP on their private network.
    #[arg(long, env = "PINACLE_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// This host's id (its job queue is `host.{id}`).
    #[arg(long, env = "PINACLE_HOST_ID", default_value = "local")]
    pub host_id: String,
    /// Seconds between a host's heartbeats (0.1 to 3600); a host silent for
    /// three is unreachable.
    #[arg(long, env = "PINACLE_HEARTBEAT_INTERVAL", default_value_t = 5.0, value_parser = parse_interval)]
    pub heartbeat_interval: f64,
    /// Seconds a connected host's credential lives before the control plane
    /// renews it over the host's link (1 to 31536000; default one day). The
    /// agent keeps the new one in its data directory; the old one stops
    /// working once the agent has it.
    #[arg(long, env = "PINACLE_HOST_CREDENTIAL_RENEWAL", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub host_credential_renewal: u64,
    /// The memory service's SQLite file (default: `memory.db` in the data
    /// directory). Several API servers each keep their own: run the memory
    /// API behind one of them.
    #[arg(long, env = "PINACLE_MEMORY_DB")]
    pub memory_db: Option<PathBuf>,
    /// Keep the memory service's data in PostgreSQL with pgvector 0.8 or
    /// later instead (`postgres://USER@HOST/DB`; the schema `pinak` is
    /// created there, under row-level security: connect as an ordinary
    /// role, not a superuser, which bypasses it). Every API server given
    /// the same database serves the same memories.
    #[arg(long, env = "PINACLE_MEMORY_DATABASE_URL", conflicts_with = "memory_db")]
    pub memory_database_url: Option<String>,
    /// The AI router's registry: a directory of models.yml, intents.yml,
    /// policies.yml and modules.yml (checked at start; reloaded when they
    /// change, or by POST /router/policy/reload). None: nothing is routed.
    #[arg(long, env = "PINACLE_ROUTER_DIR")]
    pub router_dir: Option<PathBuf>,
    /// Where the router keeps budgets and task records: sqlite://FILE or
    /// postgres://… (default: the platform's PostgreSQL database, which
    /// several servers share, else aion.db in the data directory).
    #[arg(long, env = "PINACLE_ROUTER_DATABASE_URL")]
    pub router_database_url: Option<String>,
    /// A PEM public key (cosign.pub: ECDSA P-256 or Ed25519) whose
    /// signatures the router trusts on module packages; repeat for more.
    /// None: every package installed is quarantined.
    #[arg(long = "router-trusted-key", env = "PINACLE_ROUTER_TRUSTED_KEYS", value_delimiter = ',')]
    pub router_trusted_keys: Vec<PathBuf>,
    /// What embeds memories: `hash` (a deterministic hashing embedder, no
    /// model), `hash:DIM`, or `openai:URL#MODEL:DIM` (an OpenAI-compatible
    /// `/v1/embeddings` endpoint; its key in PINACLE_MEMORY_EMBEDDER_KEY).
    /// Changing it re-embeds nothing yet: memories of another embedder are
    /// found by keywords only.
    #[arg(long, env = "PINACLE_MEMORY_EMBEDDER", default_value = "hash")]
    pub memory_embedder: String,
    #[command(flatten)]
    pub host: HostArgs,
    /// Sustained API requests per minute per client IP and per token
    /// (0: no limit).
    #[arg(long, env = "PINACLE_RATE_LIMIT", default_value_t = 60)]
    pub rate_limit: u32,
    /// Requests allowed in a burst above the sustained rate.
    #[arg(long, env = "PINACLE_RATE_BURST", default_value_t = 120)]
    pub rate_burst: u32,
    /// The job queue's SQLite file (default: queue.db in the data
    /// directory; with a PostgreSQL --database-url, the queue lives in that
    /// database unless this names a file).
    #[arg(long, env = "PINACLE_QUEUE_DB")]
    pub queue_db: Option<PathBuf>,
    /// Lifetime of access tokens (JWTs) in seconds (1 to 86400).
    #[arg(long, env = "PINACLE_ACCESS_TOKEN_TTL", default_value_t = 900, value_parser = clap::value_parser!(i64).range(1..=86_400))]
    pub access_token_ttl: i64,
    /// Address for the pod proxy (plain HTTP); `none`: no plain listener.
    /// Browsers resolve `*.localhost` to this machine, so pods are at
    /// http://{port}-{pod}-{owner}.pinacle.localhost:8080 out of the box.
    #[arg(long, env = "PINACLE_PROXY_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub proxy_listen: ::std::option::Option<SocketAddr>,
    /// Address for the SSH gateway (`ssh POD@HOST -p PORT`, scp, sftp);
    /// `none`: no gateway.
    #[arg(long, env = "PINACLE_SSH_LISTEN", default_value = "127.0.0.1:2222", value_parser = parse_listen)]
    pub ssh_listen: ::std::option::Option<SocketAddr>,
    /// The host name clients use for the SSH gateway (default: its
    /// listening address, or localhost when that is 0.0.0.0 or ::). The
    /// gateway's host certificate names it.
    #[arg(long, env = "PINACLE_SSH_HOST")]
    pub ssh_host: Option<String>,
    /// Seconds an SSH connection may stay silent before it is closed
    /// (clients with ServerAliveInterval stay connected).
    #[arg(long, env = "PINACLE_SSH_IDLE_TIMEOUT", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub ssh_idle_timeout: u64,
    /// Seconds the certificates from `pinacle ssh` are valid.
    #[arg(long, env = "PINACLE_SSH_CERT_LIFETIME", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ssh_cert_lifetime: u64,
    /// Failed SSH sign-ins from one address per minute before the address
    /// is refused for the rest of that minute (0: no limit).
    #[arg(long, env = "PINACLE_SSH_MAX_AUTH_FAILURES", default_value_t = 30)]
    pub ssh_max_auth_failures: u32,
    /// Let SSH clients forward a port of the pod back to themselves
    /// (`ssh -R PORT:HOST:HOSTPORT`). The pod listens on its loopback only;
    /// off, such requests are refused.
    #[arg(long, env = "PINACLE_SSH_ALLOW_REMOTE_FORWARD")]
    pub ssh_allow_remote_forward: bool,
    /// Address for the pod proxy's HTTPS listener, such as 0.0.0.0:443
    /// (needs --acme-directory or --tls-cert/--tls-key). With it, the plain
    /// listener redirects to HTTPS and answers ACME HTTP-01 challenges.
    #[arg(long, env = "PINACLE_PROXY_TLS_LISTEN")]
    pub proxy_tls_listen: Option<SocketAddr>,
    /// Threads serving the proxy, each with its own listening socket
    /// (default: one per CPU).
    #[arg(long, env = "PINACLE_PROXY_THREADS", value_parser = clap::value_parser!(usize))]
    pub proxy_threads: Option<usize>,
    /// Keep serving pods over plain HTTP when HTTPS is on (no redirect).
    #[arg(long, env = "PINACLE_NO_HTTPS_REDIRECT")]
    pub no_https_redirect: bool,
    /// ACME directory URL for certificates, such as
    /// https://acme-v02.api.letsencrypt.org/directory.
    #[arg(long, env = "PINACLE_ACME_DIRECTORY")]
    pub acme_directory: Option<String>,
    /// PEM root certificate of the ACME server's own HTTPS endpoint, when
    /// it is not publicly trusted (a test CA such as Pebble).
    #[arg(long, env = "PINACLE_ACME_CA_ROOT")]
    pub acme_ca_root: Option<PathBuf>,
    /// Contact e-mail for the ACME account.
    #[arg(long, env = "PINACLE_ACME_EMAIL")]
    pub acme_email: Option<String>,
    /// How per-name certificates are validated: tls-alpn-01 (on the HTTPS
    /// port) or http-01 (on the plain port, which must be port 80).
    #[arg(long, env = "PINACLE_ACME_CHALLENGE", default_value = "tls-alpn-01", value_parser = ["tls-alpn-01", "http-01"])]
    pub acme_challenge: String,
    /// DNS-01 hook for one wildcard certificate `*.{domain}`: called as
    /// `HOOK set|clear _acme-challenge.{domain} VALUE`.
    #[arg(long, env = "PINACLE_ACME_DNS_HOOK")]
    pub acme_dns_hook: Option<PathBuf>,
    /// Renew certificates this many seconds before they expire (at most a
    /// third of their lifetime).
    #[arg(long, env = "PINACLE_ACME_RENEW_BEFORE", default_value_t = 30 * 86_400)]
    pub acme_renew_before: u64,
    /// Seconds between renewal checks (1 to 86400).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub acme_check_interval: u64,
    /// A certificate chain (PEM) to serve for `*.{domain}` instead of ACME.
    #[arg(long, env = "PINACLE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "PINACLE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The domain pod host names live under:
    /// `{port}-{pod}-{owner}.{domain}`.
    #[arg(long, env = "PINACLE_DOMAIN", default_value = "pinacle.localhost")]
    pub domain: String,
    /// Client id of the GitHub OAuth app for GitHub sign-in (its secret
    /// comes from PINACLE_GITHUB_CLIENT_SECRET).
    #[arg(long, env = "PINACLE_GITHUB_CLIENT_ID")]
    pub github_client_id: Option<String>,
    /// GitHub's web address (OAuth endpoints).
    #[arg(long, env = "PINACLE_GITHUB_URL", default_value = "https://github.com")]
    pub github_url: String,
    /// The GitHub App's id: private repositories through installation
    /// tokens, deploy keys, webhooks and pull-request pods. Needs
    /// --github-app-key-file and PINACLE_GITHUB_WEBHOOK_SECRET; its
    /// client id and secret (--github-client-id) sign users in.
    #[arg(long, env = "PINACLE_GITHUB_APP_ID")]
    pub github_app_id: Option<u64>,
    /// The GitHub App's private key (the PEM file GitHub hands out).
    #[arg(long, env = "PINACLE_GITHUB_APP_KEY_FILE")]
    pub github_app_key_file: Option<PathBuf>,
    /// The App's public page name (`https://github.com/apps/NAME`), for
    /// the "install" link.
    #[arg(long, env = "PINACLE_GITHUB_APP_SLUG")]
    pub github_app_slug: Option<String>,
    /// Where pods clone GitHub repositories from (default: --github-url).
    #[arg(long, env = "PINACLE_GITHUB_GIT_URL")]
    pub github_git_url: Option<String>,
    /// GitHub's REST API address.
    #[arg(long, env = "PINACLE_GITHUB_API_URL", default_value = "https://api.github.com")]
    pub github_api_url: String,
    /// The address users reach this server at, for OAuth callbacks
    /// (default: http:// and the listen address).
    #[arg(long, env = "PINACLE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Milliseconds a cached read (who a token is, pod lists) may be served
    /// (0 to 60000; 0 turns caching off). Writes through this server clear
    /// the caches at once; this bounds how long a change made by another
    /// process (a separate agent or API server) takes to show.
    #[arg(long, env = "PINACLE_READ_CACHE_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub read_cache_ms: u64,
    /// Seconds between audit-log anchors and signing-key rotation checks
    /// (1 to 86400).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub maintenance_interval: u64,
}


/// How a host runs pods (`pinacle up` and `pinacle agent`).
#[derive(Debug, Clone, clap::Args)]
pub struct HostArgs {
    /// Runtime for pods that name none (default: gvisor where installed).
    #[arg(long, env = "PINACLE_RUNTIME")]
    pub runtime: Option<RuntimeKind>,
    /// Seconds between reconcile passes of the agent (0.1 to 3600).
    #[arg(long, default_value_t = 10.0, value_parser = parse_interval)]
    pub reconcile_interval: f64,
    /// Pod networking: `bridge` (own network namespace, veth to a host
    /// bridge, NAT egress, isolated from other pods and from the host's
    /// services; needs iproute2 and nftables) or `none` (loopback only; the
    /// proxy cannot reach pods).
    #[arg(long, env = "PINACLE_POD_NETWORK", default_value = "bridge", value_parser = ["none", "bridge"])]
    pub pod_network: String,
    /// The host bridge pods join (with --pod-network bridge).
    #[arg(long, env = "PINACLE_POD_BRIDGE", default_value = "pnc0")]
    pub pod_bridge: String,
    /// Addresses for pods; the first is the bridge's.
    #[arg(long, env = "PINACLE_POD_SUBNET", default_value = "10.209.0.0/16")]
    pub pod_subnet: String,
    /// More destinations pods may never reach, comma-separated IPv4 CIDRs
    /// (link-local, loopback and multicast always are).
    #[arg(long, env = "PINACLE_POD_DENY", default_value = "")]
    pub pod_deny: String,
    /// Private networks pods may reach after all (repeatable or
    /// comma-separated IPv4 CIDRs). By default pods reach none of 10/8,
    /// 172.16/12, 192.168/16, 100.64/10 (carrier-grade NAT, tailnets),
    /// 0/8 and the metadata services 168.63.129.16 and 100.100.100.200,
    /// only the host's name servers on port 53. --pod-deny still wins.
    #[arg(long = "pod-allow-cidr", env = "PINACLE_POD_ALLOW_CIDR", value_delimiter = ',')]
    pub pod_allow_cidr: Vec<String>,
    /// How many times its free space the data filesystem may be promised to
    /// pods' disks (sparse images of their tier's size). 1: a pod is refused
    /// when the disks could together outgrow the free space; more
    /// overcommits on purpose (0.1 to 1000).
    #[arg(long, env = "PINACLE_DISK_OVERCOMMIT", default_value_t = 1.0, value_parser = parse_overcommit)]
    pub disk_overcommit: f64,
    /// vCPUs this host offers to placement instead of the ones it counts
    /// (as Nomad's `cpu_total_compute`): fewer keeps room for other work
    /// on the machine; placement still overcommits CPU 16 times.
    #[arg(long = "vcpus", env = "PINACLE_HOST_VCPUS", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub vcpus: Option<u32>,
    /// Memory this host offers to placement instead of its MemTotal, in GiB
    /// (as Nomad's `memory_total_mb`); placement still overcommits it 4 times.
    #[arg(long = "memory-gib", env = "PINACLE_HOST_MEMORY_GIB", value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub memory_gib: Option<u32>,
}

impl HostArgs {
    /// The vCPUs and memory bytes this host offers: what it counts, unless
    /// `--vcpus`/`--memory-gib` say otherwise.
    pub fn capacity(&self) -> (u32, u64) {
        (self.vcpus.unwrap_or_else(cpu_count), self.memory_gib.map_or_else(total_memory, |g| u64::from(g) << 30))
    }
}

/// Environment variables that hold the platform's secrets. They are read
/// once, at the start, and removed from the environment, so that no child
/// process (sandbox runtimes, `ip`, `nft`, `mount`, the DNS hook) inherits
/// them.
pub const SECRET_VARS: [&str; 6] =
    ["PINACLE_MASTER_KEY", "PINACLE_ADMIN_TOKEN", "PINACLE_GITHUB_CLIENT_SECRET", "PINACLE_GITHUB_WEBHOOK_SECRET", "PINACLE_REDIS_URL", "PINACLE_ROUTER_DATABASE_URL"];

static SECRETS: std::sync::OnceLock<Vec<(&'static str, String)>> = std::sync::OnceLock::new();

/// Takes [`SECRET_VARS`] out of the environment, keeping their values for
/// [`secret`]. Call it first thing in `main`, before any thread starts.
pub fn take_secrets_from_env() {
    let mut taken = Vec::new();
    for name in SECRET_VARS {
        if let Some(v) = std::env::var_os(name) {
            if let Ok(v) = v.into_string() {
                taken.push((name, v));
            }
            std::env::remove_var(name);
        }
    }
    let _ = SECRETS.set(taken);
}

/// The value one of [`SECRET_VARS`] had at the start.
fn secret(name: &str) -> Option<String> {
    SECRETS.get()?.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
}

/// The master key: `PINACLE_MASTER_KEY` (base64 of 32 bytes), else
/// `master.key` in the data directory, created on first start (mode 0600).
fn master_key(data_dir: &Path) -> Result<pinacle_api::crypto::MasterKey> {
    use pinacle_api::crypto::MasterKey;
    match secret("PINACLE_MASTER_KEY") {
        Some(v) if !v.trim().is_empty() => Ok(MasterKey::from_base64(&v, "PINACLE_MASTER_KEY")?),
        _ => Ok(MasterKey::load_or_create(&data_dir.join("master.key"))?),
    }
}

fn parse_listen(raw: &str) -> Result<Option<SocketAddr>, String> {
    match raw {
        "none" | "off" | "" => Ok(None),
        _ => raw.parse().map(Some).map_err(|_| format!("{raw:?} is not ADDRESS:PORT (such as 127.0.0.1:8080) or none")),
    }
}

fn parse_overcommit(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(r) if r.is_finite() && (0.1..=1000.0).contains(&r) => Ok(r),
        _ => Err(format!("{raw:?} is not a ratio from 0.1 to 1000")),
    }
}

fn parse_interval(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.1..=3600.0).contains(&s) => Ok(s),
        _ => Err(format!("{raw:?} is not a number of seconds from 0.1 to 3600")),
    }
}

/// `/var/lib/pinacle` for root, else `~/.local/share/pinacle`.
pub fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/pinacle");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/share/pinacle"))
        .unwrap_or_else(|| PathBuf::from(".pinacle"))
}

/// Starts this machine's host agent (its pod network, sandboxes and
/// images) for host `host_id`, answering to `control`.
/// `platform`: the control plane's URL (and a CA for it) where pods'
/// platform requests go (see `pinacle_host_agent::platform`).
pub async fn start_host_agent(
    args: &HostArgs,
    data_dir: &Path,
    host_id: &str,
    control: Arc<dyn ControlPlane>,
    platform: Option<(String, Option<Vec<u8>>)>,
) -> Result<Arc<HostAgent>> {
    let mut cfg = AgentConfig::new(host_id, data_dir);
    if let Some((url, ca)) = platform {
        cfg.platform_upstream = Some(url);
        cfg.platform_ca = ca;
    }
    cfg.reconcile_interval = Duration::from_secs_f64(args.reconcile_interval);
    cfg.disk_overcommit = args.disk_overcommit;
    if args.pod_network == "bridge" {
        use pinacle_host_agent::network::{NetworkConfig, Subnet};
        let subnet: Subnet = args.pod_subnet.parse().context("--pod-subnet")?;
        let deny = args
            .pod_deny
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Subnet::parse_cidr)
            .collect::<Result<Vec<_>, _>>()
            .context("--pod-deny")?;
        let allow = args
            .pod_allow_cidr
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(Subnet::parse_cidr)
            .collect::<Result<Vec<_>, _>>()
            .context("--pod-allow-cidr")?;
        let net = NetworkConfig { bridge: args.pod_bridge.clone(), subnet, deny, allow };
        net.ensure_host(&cfg.data.pods()).await.context("setting up pod networking (needs iproute2 and nftables)")?;
        cfg.network = Some(net);
    }
    match &cfg.supervisor {
        Some(path) => tracing::info!(supervisor = %path.display(), "pods start under the in-pod supervisor"),
        None => esay!(
            "warning: no static pinacle-supervisor found (build it with scripts/build-supervisor.sh, or set \
             PINACLE_SUPERVISOR); pods start without one: no managed processes, no terminals"
        ),
    }
    if args.runtime == Some(RuntimeKind::Youki) && cfg.youki.is_none() {
        anyhow::bail!("--runtime youki needs the pinacle-youki binary next to pinacle or on PATH");
    }
    let agent = Arc::new(HostAgent::new(cfg, control).context("starting the host agent")?);
    if agent.images().rootfs("busybox").is_none() {
        if let Err(e) = agent.images().build("busybox", false, &|_| {}).await {
            tracing::warn!(error = %e, "could not build the busybox image");
        }
    }
    if agent.images().rootfs("base").is_none() {
        esay!("note: image `base` (template blank) is not built yet; run `pinacle image build base`");
    }
    Ok(agent)
}

pub fn cpu_count() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

pub fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

/// Checks a `PINACLE_ADMIN_TOKEN` before anything starts: the API only
/// accepts API tokens in the form it issues them (`pnc_` and then printable
/// characters without spaces, 16 to 4096 in all, surrounding whitespace
/// ignored), so any other value would be stored and never work. The
/// message never repeats the value.
pub fn check_admin_token(raw: &str) -> Result<(), String> {
    let t = raw.trim();
    let why = if t.is_empty() {
        "it is empty"
    } else if !t.starts_with(pinacle_api::principal::TOKEN_PREFIX) {
        "API tokens start with `pnc_`"
    } else if t.len() < 16 {
        "it is too short (use at least 16 characters)"
    } else if t.len() > 4096 {
        "it is longer than the 4096 characters a bearer token may have"
    } else if !t.bytes().all(|b| b.is_ascii_graphic()) {
        "it may hold only printable ASCII characters without spaces"
    } else {
        return Ok(());
    };
    Err(format!(
        "PINACLE_ADMIN_TOKEN is not a token this server would ever accept: {why}. \
         Set it to `pnc_` followed by random characters, such as the output of \
         `echo pnc_$(head -c 32 /dev/urandom | basenc --base64url | tr -d =)`, \
         or unset it to have a token generated and printed on the first start"
    ))
}

/// Runs the services of `role` until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs, role: Role) -> Result<()> {
    if let Some(token) = secret("PINACLE_ADMIN_TOKEN") {
        check_admin_token(&token).map_err(anyhow::Error::msg)?;
    }
    if role != Role::Server && !nix::unistd::geteuid().is_root() {
        anyhow::bail!("the host agent needs root (overlay mounts, cgroups, sandboxes); run `pinacle up` as root, or `pinacle server` for the API alone");
    }
    create_private_dir(&args.data_dir)?;
    let db_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", args.data_dir.join("pinacle.db").display()));
    let queue_db = args.queue_db.clone().unwrap_or_else(|| args.data_dir.join("queue.db"));
    // the queue lives where the database lives (shared by the servers of
    // one PostgreSQL database), unless --queue-db names a file
    let queue_url = (args.queue_db.is_none() && db_url.starts_with("postgres")).then(|| db_url.clone());
    let limits = (args.rate_limit > 0)
        .then(|| pinacle_api::ratelimit::Limits { per_minute: args.rate_limit, burst: args.rate_burst.max(1) });
    let state = AppState::open(pinacle_api::state::ServerConfig {
        database_url: db_url,
        queue_path: queue_db,
        queue_url,
        advertise_url: args.advertise_url.clone(),
        trusted_proxies: args.trusted_proxy.clone(),
        redis_url: secret("PINACLE_REDIS_URL").or_else(|| args.redis_url.clone()).filter(|u| !u.trim().is_empty()),
        default_runtime: args.host.runtime,
        limits,
        master_key: master_key(&args.data_dir)?,
        sessions: pinacle_api::sessions::SessionConfig {
            access_ttl_secs: args.access_token_ttl,
            ..Default::default()
        },
        anchor_file: Some(args.data_dir.join("audit-anchors.jsonl")),
        read_cache_ttl: Duration::from_millis(args.read_cache_ms),
        heartbeat: Duration::from_secs_f64(args.heartbeat_interval),
        host_credential_renewal: Duration::from_secs(args.host_credential_renewal),
        memory: pinacle_api::state::MemoryConfig {
            path: args.memory_db.clone().unwrap_or_else(|| args.data_dir.join("memory.db")),
            database_url: args.memory_database_url.clone(),
            embedder: args.memory_embedder.clone(),
            embedder_key: secret("PINACLE_MEMORY_EMBEDDER_KEY"),
        },
        router: pinacle_api::state::RouterConfig {
            dir: args.router_dir.clone(),
            database_url: secret("PINACLE_ROUTER_DATABASE_URL").or_else(|| args.router_database_url.clone()),
            default_path: args.data_dir.join("aion.db"),
            modules: crate::router_modules::module_env(&args.data_dir, &args.router_trusted_keys)?,
        },
    })
    .await?;
    if args.router_dir.is_some() {
        let audit = state.aion_access.clone();
        state.aion.spawn_watcher(
            Duration::from_secs(2),
            Arc::new(move |change: &pinacle_aion::registries::Change| {
                let (audit, change) = (audit.clone(), change.clone());
                tokio::spawn(async move {
                    let system = pinacle_aion::engine::Caller { subject: "user:system".into(), user_id: "system".into(), team_id: None, key_id: None, admin: true, user_budget: false };
                    pinacle_aion::http::Auditor::registry_changed(&audit, &system, "router.policy.file-reload", &change).await;
                });
            }),
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    // bound first: the host agent's platform gateway forwards to it
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let bound = listener.local_addr()?;

    if role != Role::Server {
        let control: Arc<dyn ControlPlane> = Arc::new(state.control.clone());
        // pods' platform requests come back to this server over loopback
        let local = if bound.ip().is_unspecified() { std::net::SocketAddr::from(([127, 0, 0, 1], bound.port())) } else { bound };
        let platform = Some((format!("http://{local}"), None));
        let agent = start_host_agent(&args.host, &args.data_dir, &args.host_id, control, platform).await?;
        let (runtimes, (cpus, memory)) = (agent.runtimes(), args.host.capacity());
        state.pods.register_host(&args.host_id, &runtimes, cpus, memory).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        // Heartbeat: a host that stops reporting is no longer given new pods.
        let (hb_state, hb_id, mut hb_stop) = (state.clone(), args.host_id.clone(), stop_rx.clone());
        let heartbeat = Duration::from_secs_f64(args.heartbeat_interval);
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(heartbeat) => {}
                    _ = hb_stop.changed() => return,
                }
                match hb_state.pods.heartbeat_host(&hb_id, &runtimes, cpus, memory).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(host = %hb_id, "this host was removed (pinacle host remove); its heartbeats stop until the agent starts again");
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "host heartbeat failed"),
                }
            }
        });
        state.attach_host(agent.clone());
        tracing::info!(host = %args.host_id, runtimes = ?agent.runtimes(), "host agent started");
        tasks.spawn(agent.clone().reconcile_loop(stop_rx.clone()));
        tasks.spawn(agent.clone().serve_platform(stop_rx.clone()));
        let queue = state.queue.clone();
        let rx = stop_rx.clone();
        tasks.spawn(async move {
            if let Err(e) = queue.run_worker(agent, rx).await {
                tracing::error!(error = %e, "job worker stopped");
            }
        });
    }

    {
        let admin = state
            .bootstrap_admin(secret("PINACLE_ADMIN_TOKEN").as_deref())
            .await?;
        let url = format!("http://{bound}");
        if let Some(client_id) = &args.github_client_id {
            let client_secret = secret("PINACLE_GITHUB_CLIENT_SECRET")
                .filter(|s| !s.trim().is_empty())
                .context("--github-client-id needs PINACLE_GITHUB_CLIENT_SECRET (the OAuth app's client secret)")?;
            let public = args.public_url.clone().unwrap_or_else(|| url.clone());
            let _ = state.github.set(pinacle_api::github::GithubConfig {
                client_id: client_id.clone(),
                client_secret,
                oauth_url: args.github_url.trim_end_matches('/').to_owned(),
                api_url: args.github_api_url.trim_end_matches('/').to_owned(),
                redirect_url: format!("{}/api/v1/auth/github/callback", public.trim_end_matches('/')),
            });
            say!("GitHub sign-in: {public}/api/v1/auth/github/start");
        }
        let public = args.public_url.clone().unwrap_or_else(|| url.clone());
        let github_url = args.github_url.trim_end_matches('/').to_owned();
        state.github_apps.set_site(pinacle_api::github::app::AppSite {
            github_url: github_url.clone(),
            api_url: args.github_api_url.trim_end_matches('/').to_owned(),
            git_url: args.github_git_url.clone().unwrap_or_else(|| github_url.clone()),
            public_url: public.clone(),
        });
        if args.github_app_id.is_none() && state.github_apps.load_saved().await.map_err(|e| anyhow::anyhow!("the saved GitHub App: {}", e.message))? {
            say!("GitHub App (made from the admin page): webhook at {}/api/v1/github/webhook", public.trim_end_matches('/'));
        }
        if let Some(app_id) = args.github_app_id {
            let key_file = args.github_app_key_file.as_ref().context("--github-app-id needs --github-app-key-file (the App's private key, PEM)")?;
            let pem = std::fs::read_to_string(key_file).with_context(|| format!("reading the GitHub App's key {}", key_file.display()))?;
            let key = pinacle_github::app::AppKey::from_pem(app_id, &pem).with_context(|| format!("the GitHub App's key {}", key_file.display()))?;
            let webhook_secret = secret("PINACLE_GITHUB_WEBHOOK_SECRET")
                .filter(|s| !s.trim().is_empty())
                .context("--github-app-id needs PINACLE_GITHUB_WEBHOOK_SECRET (the App's webhook secret)")?;
            state.github_apps.configure(pinacle_api::github::app::AppConfig {
                client: std::sync::Arc::new(pinacle_github::app::GithubApp::new(key, &args.github_api_url)),
                webhook_secret,
                git_url: args.github_git_url.clone().unwrap_or_else(|| github_url.clone()),
                install_url: args.github_app_slug.as_ref().map(|slug| format!("{github_url}/apps/{slug}/installations/new")),
                public_url: public.clone(),
            });
            say!("GitHub App {app_id}: webhook at {}/api/v1/github/webhook", public.trim_end_matches('/'));
        }
        say!("Pinacle API listening on {url}");
        if pinacle_api::web_assets::available() {
            say!("Web app: {}", web_app_url(&url, &args.domain));
        } else {
            say!("Web app: not in this build (bash scripts/build-web.sh, then rebuild)");
        }
        match &admin {
            AdminToken::Generated(token) => {
                say!("Admin token (shown once): {token}");
                remember(&url, token);
            }
            AdminToken::FromEnv => {
                if let Some(token) = secret("PINACLE_ADMIN_TOKEN") {
                    remember(&url, token.trim());
                }
            }
            AdminToken::Existing => say!("Admin token: as printed on first start (or set PINACLE_ADMIN_TOKEN)"),
        }
        tasks.spawn({
            let maintenance = state.spawn_maintenance(Duration::from_secs(args.maintenance_interval));
            let bus = state.events.spawn_bus_listener();
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
                maintenance.abort();
                if let Some(bus) = bus {
                    bus.abort();
                }
            }
        });
        crate::proxy_setup::start(&args, &state, &stop_rx, &mut tasks).await?;
        if let Some(listen) = args.ssh_listen {
            let host = args.ssh_host.clone().unwrap_or_else(|| if listen.ip().is_unspecified() { "localhost".to_owned() } else { listen.ip().to_string() });
            let mut names = vec![host.clone()];
            for n in ["localhost", "127.0.0.1"] {
                if !names.iter().any(|x| x == n) {
                    names.push(n.to_owned());
                }
            }
            let gateway = pinacle_ssh_gateway::start(
                state.clone(),
                pinacle_ssh_gateway::GatewayConfig {
                    listen,
                    host_key_file: args.data_dir.join("ssh").join("ssh_host_ed25519_key"),
                    host_names: names,
                    idle_timeout: Duration::from_secs(args.ssh_idle_timeout),
                    max_auth_failures_per_minute: args.ssh_max_auth_failures,
                    allow_remote_forward: args.ssh_allow_remote_forward,
                },
                stop_rx.clone(),
            )
            .await?;
            let port = gateway.local_addr.port();
            state.ssh.set_site(pinacle_api::ssh::SshSite { host: host.clone(), port }, Duration::from_secs(args.ssh_cert_lifetime));
            say!("SSH gateway on {} (ssh POD@{host} -p {port}, or pinacle ssh POD)", gateway.local_addr);
            tasks.spawn(async move {
                let _ = gateway.task.await;
            });
        }
        let app = pinacle_api::router(state.clone());
        let mut rx = stop_rx.clone();
        tasks.spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            // no Nagle: terminals, agents' links and relays carry small
            // writes that must not wait for the peer's delayed ACK (40 ms)
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "API server stopped");
            }
        });
    }

    wait_for_signal().await;
    tracing::info!("shutting down; pods keep running and are adopted on the next start");
    let _ = tokio::time::timeout(Duration::from_secs(2), state.github_apps.release_lease()).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async { while tasks.join_next().await.is_some() {} }).await;
    Ok(())
}

fn remember(url: &str, token: &str) {
    match config::save(&CliConfig { api: url.to_owned(), token: token.to_owned(), ..Default::default() }) {
        Ok((path, place)) => say!("CLI configured in {} (token in {place})", path.display()),
        Err(e) => esay!("note: could not save CLI config: {e:#}"),
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))
}

pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Where to open the web app. On loopback under a `*.localhost` domain,
/// the app is opened at the domain itself, so it is the same site as the
/// pods' hosts and their previews keep their sign-in inside its frames.
fn web_app_url(api_url: &str, domain: &str) -> String {
    let loopback = ["http://127.0.0.1:", "http://localhost:"].iter().find_map(|p| api_url.strip_prefix(p));
    match loopback {
        Some(port) if domain == "localhost" || domain.ends_with(".localhost") => format!("http://{domain}:{port}/"),
        _ => format!("{}/", api_url.trim_end_matches('/')),
    }
}

#[cfg(test)]
mod web_url_tests {
    #[test]
    fn the_app_shares_a_site_with_local_pods() {
        assert_eq!(super::web_app_url("http://127.0.0.1:7070", "pinacle.localhost"), "http://pinacle.localhost:7070/");
        assert_eq!(super::web_app_url("http://10.0.0.5:7070", "pinacle.localhost"), "http://10.0.0.5:7070/");
        assert_eq!(super::web_app_url("http://127.0.0.1:7070", "dev.example.com"), "http://127.0.0.1:7070/");
    }
}

#[cfg(test)]
mod tests {
    use super::check_admin_token;

    #[test]
    fn admin_tokens_the_server_would_refuse_are_refused() {
        assert_eq!(check_admin_token("pnc_test-admin-token-0123456789"), Ok(()));
        assert_eq!(check_admin_token("  pnc_test-admin-token-0123456789\n"), Ok(()), "surrounding whitespace is ignored");
        assert_eq!(check_admin_token(&pinacle_api::principal::generate_token()), Ok(()));
        for (bad, why) in [
            ("bench-admin-token-0123456789", "start with `pnc_`"),
            ("", "empty"),
            ("   ", "empty"),
            ("pnc_short", "too short"),
            ("pnc_two tokens-0123456789", "printable ASCII"),
            ("pnc_tab\tinside-0123456789", "printable ASCII"),
            ("pnc_caf\u{e9}-0123456789abcdef", "printable ASCII"),
        ] {
            let e = check_admin_token(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(e.starts_with("PINACLE_ADMIN_TOKEN is not a token"), "{e}");
            if !bad.trim().is_empty() {
                assert!(!e.contains(bad.trim()), "the value is never repeated: {e}");
            }
        }
        assert!(check_admin_token(&format!("pnc_{}", "a".repeat(4093))).unwrap_err().contains("4096"));
        assert_eq!(check_admin_token(&format!("pnc_{}", "a".repeat(4092))), Ok(()));
    }
}
