//! `pinacle agent`: a host agent on its own machine. It joins the control
//! plane once with a join token (`pinacle host add NAME`), keeps the
//! host's credential in its data directory, and dials out to the control
//! plane, keeping one link (`pinacle_host_link`) through which everything
//! reaches it. It holds no database, queue or master key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pinacle_host_agent::ControlPlane;
use pinacle_host_api::wire::HostReport;
use pinacle_host_api::HostApi;
use pinacle_host_link::agent::{AgentSide, LinkControl, UpgradeError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::up::HostArgs;

/// Options of `pinacle agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// The control plane's address (`https://pinacle.example.com`, or
    /// `http://…` on a private network).
    #[arg(long, env = "PINACLE_SERVER")]
    pub server: String,
    /// The one-time join token from `pinacle host add NAME` (needed only
    /// for the first start: the host's credential is kept in the data
    /// directory).
    #[arg(long, env = "PINACLE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// This host's name, for a reusable join token (`pinacle host token`);
    /// with a one-time token it must be the token's host.
    #[arg(long, env = "PINACLE_HOST_NAME")]
    pub host_name: Option<String>,
    /// A PEM certificate the control plane's HTTPS certificate chains to,
    /// when it is not publicly trusted.
    #[arg(long, env = "PINACLE_SERVER_CA")]
    pub server_ca: Option<PathBuf>,
    /// Labels placement can select on, `KEY=VALUE` (repeatable), such as
    /// `region=eu`.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Where the agent keeps its credential, images, pods and volumes.
    #[arg(long, env = "PINACLE_DATA_DIR", default_value_os_t = crate::up::default_data_dir())]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub host: HostArgs,
}

fn parse_label(raw: &str) -> Result<(String, String), String> {
    let (k, v) = raw.split_once('=').ok_or_else(|| format!("{raw:?} is not KEY=VALUE"))?;
    let ok = |s: &str, max: usize| !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if !ok(k, 63) || !(v.is_empty() || ok(v, 63)) {
        return Err(format!("{raw:?}: keys and values are up to 63 letters, digits, `-`, `_`, `.` or `/`"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// The host's credential, as kept in `{data dir}/host-credential.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Credential {
    server: String,
    host: String,
    secret: String,
}

fn credential_path(data_dir: &Path) -> PathBuf {
    data_dir.join("host-credential.json")
}

/// Where the control plane is: how to dial it and what to call it.
#[derive(Clone)]
struct Server {
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

impl Server {
    fn parse(url: &str, ca: Option<&Path>) -> Result<Self> {
        let (tls, rest) = match url.trim_end_matches('/').split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            _ => bail!("--server {url:?}: use http://HOST[:PORT] or https://HOST[:PORT]"),
        };
        if rest.contains('/') || rest.contains('@') || rest.is_empty() {
            bail!("--server {url:?}: give only the scheme, host and port");
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h.trim_start_matches('[').trim_end_matches(']').to_owned(), p.parse::<u16>().with_context(|| format!("--server {url:?}: bad port"))?)
            }
            _ => (rest.trim_start_matches('[').trim_end_matches(']').to_owned(), if tls { 443 } else { 80 }),
        };
        let tls = if tls { Some(Arc::new(tls_config(ca)?)) } else { None };
        Ok(Self { host, port, authority: rest.to_owned(), tls })
    }

    async fn dial(&self) -> std::io::Result<Box<dyn Io>> {
        let tcp = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting to the control plane timed out"))??;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(config) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let stream = tokio::time::timeout(Duration::from_secs(10), tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the TLS handshake with the control plane timed out"))??;
                Ok(Box::new(stream))
            }
        }
    }

    /// `POST path` with a JSON body over a fresh connection; the answer's
    /// status and JSON.
    async fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<(u16, serde_json::Value)> {
        use http_body_util::BodyExt;
        let io = self.dial().await.context("connecting to the control plane")?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, http_body_util::Full<bytes::Bytes>>(hyper_util::rt::TokioIo::new(io)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::post(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(serde_json::to_vec(body)?)))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = http_body_util::Limited::new(resp.into_body(), 1 << 20).collect().await.map_err(|e| anyhow::anyhow!("{e}"))?.to_bytes();
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)))
    }
}

fn tls_config(ca: Option<&Path>) -> Result<tokio_rustls::rustls::ClientConfig> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading --server-ca {}", path.display()))?;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.with_context(|| format!("--server-ca {}", path.display()))?)?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        bail!("no trusted root certificates for HTTPS to the control plane (install ca-certificates, or give --server-ca)");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}


/// The credential kept in the data directory, if any (checked against
/// the arguments).
fn kept_credential(args: &AgentArgs) -> Result<Option<Credential>> {
    let path = credential_path(&args.data_dir);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let cred: Credential = serde_json::from_slice(&text).with_context(|| format!("{} is not a host credential", path.display()))?;
    if cred.server.trim_end_matches('/') != args.server.trim_end_matches('/') {
        bail!(
            "this data directory joined {} as host {}, not {}: use that --server, or remove {} to join anew",
            cred.server,
            cred.host,
            args.server,
            path.display()
        );
    }
    if let Some(name) = args.host_name.as_deref().filter(|n| *n != cred.host) {
        bail!("this data directory joined as host {}, not {name}: remove {} to join anew", cred.host, path.display());
    }
    Ok(Some(cred))
}

/// Exchanges the join token for the host's credential and keeps it.
async fn join(args: &AgentArgs, server: &Server, token: &str) -> Result<Credential> {
    let (status, body) = server.post_json("/api/v1/agents/join", &serde_json::json!({ "token": token, "host": args.host_name })).await?;
    if status != 200 {
        let message = body["error"]["message"].as_str().unwrap_or("no reason given");
        bail!("the control plane refused the join token ({status}): {message}. Ask for a new one with `pinacle host add NAME`");
    }
    let cred = Credential {
        server: args.server.clone(),
        host: body["host"].as_str().context("the join answer names no host")?.to_owned(),
        secret: body["secret"].as_str().context("the join answer holds no credential")?.to_owned(),
    };
    let path = credential_path(&args.data_dir);
    write_private(&path, &serde_json::to_vec_pretty(&cred)?)?;
    crate::say!("joined as host {} (credential kept in {})", cred.host, path.display());
    Ok(cred)
}

/// The credential: the one kept from an earlier join, else one exchanged
/// for the join token (a join token given again is not used again while
/// the kept credential works).
async fn credential(args: &AgentArgs, server: &Server) -> Result<Credential> {
    if let Some(cred) = kept_credential(args)? {
        return Ok(cred);
    }
    match args.join_token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(token) => join(args, server, token).await,
        None => bail!("this agent has not joined yet: start it once with --join-token (from `pinacle host add NAME` on the control plane)"),
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Runs the agent until SIGINT or SIGTERM (or a refused credential).
pub async fn run(args: AgentArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the host agent needs root (overlay mounts, cgroups, sandboxes); run `pinacle agent` as root");
    }
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&args.data_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let server = Server::parse(&args.server, args.server_ca.as_deref())?;
    let cred = credential(&args, &server).await?;
    let link_control = LinkControl::new(Duration::from_secs(30));
    let control: Arc<dyn ControlPlane> = link_control.clone();
    let ca = match &args.server_ca {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("reading --server-ca {}", path.display()))?),
        None => None,
    };
    let platform = Some((args.server.trim_end_matches('/').to_owned(), ca));
    let agent = crate::up::start_host_agent(&args.host, &args.data_dir, &cred.host, control, platform).await?;
    let labels: BTreeMap<String, String> = args.labels.iter().cloned().collect();
    let (host_id, runtimes, (vcpus, memory)) = (cred.host.clone(), agent.runtimes(), args.host.capacity());
    let reporter = {
        let agent = agent.clone();
        Arc::new(move || HostReport {
            protocol: pinacle_host_api::PROTOCOL_VERSION,
            host: host_id.clone(),
            runtimes: runtimes.clone(),
            vcpus,
            memory_bytes: memory,
            labels: labels.clone(),
            ready: HostApi::is_ready(agent.as_ref()),
        })
    };
    // a renewed credential is kept (0600, written whole) before it is used
    let keep: pinacle_host_link::agent::KeepCredential = {
        let (path, kept) = (credential_path(&args.data_dir), cred.clone());
        Arc::new(move |secret: &str| {
            let renewed = Credential { secret: secret.to_owned(), ..kept.clone() };
            let bytes = serde_json::to_vec_pretty(&renewed).map_err(std::io::Error::other)?;
            write_private(&path, &bytes).map_err(std::io::Error::other)
        })
    };
    let credential = pinacle_host_link::agent::Credential::new(cred.secret.clone(), keep);
    let side = AgentSide { host: agent.clone(), control: link_control, report: reporter, credential };
    let (stop_tx, stop_rx) = watch::channel(false);
    let reconcile = tokio::spawn(agent.clone().reconcile_loop(stop_rx.clone()));
    let platform_gateway = tokio::spawn(agent.clone().serve_platform(stop_rx.clone()));
    crate::say!("host {} connecting to {}", cred.host, args.server);
    let link = {
        let (dialer, authority) = (server.clone(), server.authority.clone());
        let dial = move || {
            let server = dialer.clone();
            async move { server.dial().await }
        };
        tokio::spawn(pinacle_host_link::agent::run(dial, authority, side, stop_rx))
    };
    let refused = tokio::select! {
        _ = crate::up::wait_for_signal() => None,
        r = link => match r {
            Ok(Err(e @ UpgradeError::Refused(_))) => Some(e),
            _ => None,
        },
    };
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), reconcile).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), platform_gateway).await;
    if let Some(e) = refused {
        // not retried with a join token at hand: a removed host stays removed
        bail!("{e} (then remove {} before starting the agent again)", credential_path(&args.data_dir).display());
    }
    tracing::info!("shutting down; pods keep running and are adopted on the next start");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_and_labels_are_checked() {
        let s = Server::parse("http://10.0.0.1:7070", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.host.as_str(), s.port, s.authority.as_str(), s.tls.is_none()), ("10.0.0.1", 7070, "10.0.0.1:7070", true));
        let s = Server::parse("http://[::1]:80/", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.host.as_str(), s.port), ("::1", 80));
        let s = Server::parse("http://cp.internal", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.host.as_str(), s.port), ("cp.internal", 80));
        for bad in ["ftp://x", "x:1", "http://", "http://a/b", "http://u@h:1"] {
            assert!(Server::parse(bad, None).is_err(), "{bad}");
        }
        assert_eq!(parse_label("region=eu"), Ok(("region".into(), "eu".into())));
        assert!(parse_label("noequals").is_err());
        assert!(parse_label("a b=c").is_err());
        assert!(parse_label(&format!("k={}", "v".repeat(64))).is_err());
    }
}
