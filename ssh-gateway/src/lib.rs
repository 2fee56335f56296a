//! The SSH gateway: lets OpenSSH clients (and editors' remote-SSH, `scp`,
//! `sftp`, `ssh -L`) into pods.
//!
//! The login name picks the pod (`pod`, `pod.team` or the pod id; see
//! [`pinacle_api::ssh::pod_key_of_login`]). A client proves who it is with
//! a public key registered to a Pinacle account, or with a short-lived
//! certificate from the platform's user CA whose principal is the pod. The
//! account must be allowed to run commands in the pod (the same policy as
//! the API's exec). Everything is decided before any channel opens.
//!
//! Inside, every channel becomes one command run by the pod's supervisor:
//! a login shell, `sh -c COMMAND`, the supervisor's own SFTP server, or its
//! TCP relay for a `direct-tcpip` forward. With `allow_remote_forward`, a
//! `tcpip-forward` request (`ssh -R`) makes the supervisor listen on the
//! pod's loopback, and each connection to it comes back to the client as a
//! `forwarded-tcpip` channel ([`remote_forward`]). Each starts and ends
//! with an audit log entry.
//!
//! The gateway's host key is certified by the platform's host CA, so a
//! client with an `@cert-authority` line trusts it without asking.

mod auth_limit;
mod channels;
mod host_key;
mod remote_forward;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use pinacle_api::principal::Principal;
use pinacle_api::policy::Action;
use pinacle_api::AppState;
use russh::server::{Auth, Handler, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use ssh_key::{Certificate, HashAlg};
use tokio::sync::watch;

pub use auth_limit::{AuthLimiter, PreAuthSlots};
pub use host_key::load_or_create_host_key;

/// How the gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// The gateway's ed25519 host key (made on first start, mode 0600).
    pub host_key_file: PathBuf,
    /// The names clients use for this host: the host certificate's
    /// principals.
    pub host_names: Vec<String>,
    /// A connection with no traffic either way for this long is closed
    /// (a client with ServerAliveInterval keeps its connection).
    pub idle_timeout: Duration,
    /// Failed sign-ins from one address within a minute before that
    /// address is refused outright until the minute is over.
    pub max_auth_failures_per_minute: u32,
    /// Whether clients may ask the pod to listen for them (`ssh -R`); off,
    /// such requests are refused.
    pub allow_remote_forward: bool,
}

/// A started gateway.
pub struct RunningGateway {
    pub local_addr: SocketAddr,
    /// The host certificate it presents.
    pub host_certificate: Certificate,
    pub task: tokio::task::JoinHandle<()>,
}

/// How long a connection may take to sign in.
pub const LOGIN_GRACE: Duration = Duration::from_secs(30);
/// Connections not signed in yet, at most, at a time; more are closed at
/// once (like OpenSSH's `MaxStartups`).
pub const MAX_UNAUTHENTICATED: usize = 256;
/// Of those, at most this many from one source (an IPv4 address or an
/// IPv6 /64): one source cannot take every slot.
pub const MAX_UNAUTHENTICATED_PER_SOURCE: usize = 16;
/// How often a signed-in connection checks that its user may still use
/// the pod (team roles, account, key); it is closed once they may not.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(10);
/// How often the host certificate is signed anew (it is valid for
/// [`pinacle_api::ssh::HOST_CERT_LIFETIME`]).
const HOST_CERT_RENEWAL: Duration = Duration::from_secs(24 * 3600);

/// What every connection shares.
struct Shared {
    state: AppState,
    limiter: AuthLimiter,
    allow_remote_forward: bool,
}

fn server_config(cfg: &GatewayConfig, host_key: &ssh_key::PrivateKey, certificate: Certificate) -> russh::server::Config {
    russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-Pinacle".into()),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        keys: vec![host_key.clone()],
        certificates: vec![certificate],
        // a wrong key waits like any other refusal; the client's first
        // "none" probe does not
        auth_rejection_time: Duration::from_millis(500),
        auth_rejection_time_initial: Some(Duration::ZERO),
        max_auth_attempts: 6,
        inactivity_timeout: Some(cfg.idle_timeout),
        keepalive_interval: None,
        nodelay: true,
        window_size: 8 * 1024 * 1024,
        channel_buffer_size: 256,
        ..Default::default()
    }
}

fn certify(cas: &pinacle_api::ssh::SshAuthorities, host_key: &ssh_key::PrivateKey, names: &[String]) -> anyhow::Result<Certificate> {
    pinacle_api::ssh::sign_host_certificate(&cas.host_ca, host_key.public_key(), names, SystemTime::now()).context("certifying the gateway's host key")
}

/// Binds `cfg.listen` and serves until `shutdown` turns true.
pub async fn start(state: AppState, cfg: GatewayConfig, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<RunningGateway> {
    let host_key = load_or_create_host_key(&cfg.host_key_file)?;
    let cas = state.ssh.ssh_authorities().await.map_err(|e| anyhow::anyhow!("loading the SSH certificate authorities: {}", e.message))?;
    let host_certificate = certify(&cas, &host_key, &cfg.host_names)?;
    let config = Arc::new(std::sync::RwLock::new(Arc::new(server_config(&cfg, &host_key, host_certificate.clone()))));
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("listening for SSH on {}", cfg.listen))?;
    let local_addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        state,
        limiter: AuthLimiter::new(cfg.max_auth_failures_per_minute, Duration::from_secs(60)),
        allow_remote_forward: cfg.allow_remote_forward,
    });
    tracing::info!(%local_addr, host_key = %host_certificate.public_key().fingerprint(HashAlg::Sha256), "SSH gateway listening");
    // the host certificate is signed anew well before it expires
    let renewal = {
        let (config, cfg, mut shutdown) = (config.clone(), cfg.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(HOST_CERT_RENEWAL) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                match certify(&cas, &host_key, &cfg.host_names) {
                    Ok(cert) => {
                        let fresh = Arc::new(server_config(&cfg, &host_key, cert));
                        *config.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                        tracing::info!("SSH host certificate renewed");
                    }
                    Err(e) => tracing::warn!(error = %e, "renewing the SSH host certificate failed"),
                }
            }
        })
    };
    let unauthenticated = Arc::new(tokio::sync::Semaphore::new(MAX_UNAUTHENTICATED));
    let per_source = PreAuthSlots::new(MAX_UNAUTHENTICATED_PER_SOURCE);
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.wait_for(|stop| *stop) => {
                    renewal.abort();
                    return;
                }
            };
            let (socket, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "SSH accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = per_source.take(peer.ip()) else {
                tracing::warn!(%peer, "too many SSH connections signing in at once from this address; closing this one");
                continue;
            };
            let Ok(permit) = unauthenticated.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "too many SSH connections signing in at once; closing this one");
                continue;
            };
            let _ = socket.set_nodelay(true);
            let signed_in = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let handler = Connection {
                shared: shared.clone(),
                peer,
                login: None,
                counted_failure: false,
                unauthenticated: Some((permit, slot)),
                watcher: None,
                signed_in: signed_in.clone(),
                started: Default::default(),
                remote_forwards: Default::default(),
            };
            let config = config.read().unwrap_or_else(|p| p.into_inner()).clone();
            let session = tokio::spawn(async move {
                match russh::server::run_stream(config, socket, handler).await {
                    Ok(session) => {
                        if let Err(e) = session.await {
                            tracing::debug!(%peer, error = %e, "SSH connection ended with an error");
                        }
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "SSH handshake failed"),
                }
            });
            // a connection that has not signed in within the grace time goes
            tokio::spawn(async move {
                tokio::time::sleep(LOGIN_GRACE).await;
                if !signed_in.load(std::sync::atomic::Ordering::Acquire) {
                    session.abort();
                }
            });
        }
    });
    Ok(RunningGateway { local_addr, host_certificate, task })
}

/// How a connection proved who it is, checked again for every channel.
#[derive(Clone)]
pub(crate) enum Credential {
    /// A public key registered to the account: it must stay registered to it.
    Key(ssh_key::PublicKey),
    /// A user certificate: new channels only within its validity window
    /// (open ones keep running, as with OpenSSH).
    Certificate { valid_before: u64 },
}

/// Who signed in, to which pod, and how.
#[derive(Clone)]
pub(crate) struct Login {
    /// The user as of the last check (team roles included).
    pub principal: Principal,
    pub credential: Credential,
    /// The key [`AppState::find_pod`] takes (checked again for every channel).
    pub pod_key: String,
    pub pod_name: String,
    pub pod_id: String,
    /// `key SHA256:...` or `certificate SHA256:... serial N`.
    pub via: String,
    pub pty_allowed: bool,
    pub forwarding_allowed: bool,
    pub peer: SocketAddr,
}

/// One client connection.
struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    login: Option<Arc<Login>>,
    /// Whether this connection's refusals were counted against its
    /// address already: a client offering several keys counts once.
    counted_failure: bool,
    /// Its place among the connections still signing in (all, and its
    /// source's).
    unauthenticated: Option<(tokio::sync::OwnedSemaphorePermit, auth_limit::PreAuthSlot)>,
    /// Closes the connection once its user loses access (started with the
    /// first channel; stopped with the connection).
    watcher: Option<AbortOnDrop>,
    signed_in: Arc<std::sync::atomic::AtomicBool>,
    /// Session channels that asked for their command already: a second
    /// shell, exec or subsystem request on one is refused.
    started: std::collections::HashSet<ChannelId>,
    /// Its `ssh -R` forwards (stopped when the connection ends).
    remote_forwards: remote_forward::RemoteForwards,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Login {
    /// The login as its user is now: the same pod still allowed to them
    /// (current team roles, account still there), the key still theirs,
    /// and with `new_channel` the certificate still valid. `Err(None)`: our
    /// own failure (logged; it decides nothing).
    pub(crate) async fn current(&self, state: &AppState, new_channel: bool) -> Result<Login, Option<String>> {
        let user_id = &self.principal.user_id;
        match &self.credential {
            Credential::Key(key) => match state.ssh.ssh_key_owner(key).await {
                Ok(Some(owner)) if owner == *user_id => {}
                Ok(_) => return Err(Some("the key is no longer registered to this account".into())),
                Err(e) => {
                    tracing::warn!(error = %e.message, "re-checking an SSH key failed");
                    return Err(None);
                }
            },
            Credential::Certificate { valid_before } => {
                let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(u64::MAX);
                if new_channel && now >= *valid_before {
                    return Err(Some("the certificate has expired; get a new one".into()));
                }
            }
        }
        let principal = match state.ssh.principal_for_user(user_id, &self.principal.source).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(Some("the account no longer exists".into())),
            Err(e) => {
                tracing::warn!(error = %e.message, "re-checking an SSH user failed");
                return Err(None);
            }
        };
        match state.pods.find_pod(&principal, &self.pod_key, Action::Exec).await {
            Ok(pod) if pod.id.to_string() == self.pod_id => Ok(Login { principal, ..self.clone() }),
            Ok(_) => Err(Some("the pod was replaced".into())),
            Err(e) if e.status.is_server_error() => {
                tracing::warn!(error = %e.message, "re-checking SSH access to a pod failed");
                Err(None)
            }
            Err(e) => Err(Some(e.message)),
        }
    }
}

impl Connection {
    /// The login, checked again for a new channel or forward: `None` when
    /// its user may no longer use the pod (or the check failed).
    async fn fresh_login(&mut self, handle: russh::server::Handle) -> Option<Arc<Login>> {
        let login = self.login.clone()?;
        match login.current(&self.shared.state, true).await {
            Ok(now) => {
                self.watch(Arc::new(now.clone()), handle);
                Some(Arc::new(now))
            }
            Err(why) => {
                if let Some(why) = why {
                    tracing::info!(peer = %self.peer, user = %login.principal.user_name, pod = %login.pod_name, reason = %why, "SSH channel refused: access lost");
                }
                None
            }
        }
    }

    /// Starts (once) the task that closes this connection once its user
    /// loses access to the pod, checking every [`RECHECK_INTERVAL`].
    fn watch(&mut self, login: Arc<Login>, handle: russh::server::Handle) {
        if self.watcher.is_some() {
            return;
        }
        let state = self.shared.state.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RECHECK_INTERVAL).await;
                if let Err(Some(why)) = login.current(&state, false).await {
                    tracing::info!(peer = %login.peer, user = %login.principal.user_name, pod = %login.pod_name, reason = %why, "closing an SSH connection: access lost");
                    let _ = handle.disconnect(russh::Disconnect::ByApplication, format!("access to {} ended: {why}", login.pod_name), "en".into()).await;
                    return;
                }
            }
        });
        self.watcher = Some(AbortOnDrop(task.abort_handle()));
    }

    /// Answers a shell, exec or subsystem request: yes the first time on a
    /// channel (when `ok`), no after.
    fn answer_start(&mut self, channel: ChannelId, ok: bool, session: &mut Session) -> Result<(), russh::Error> {
        if ok && self.started.insert(channel) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }
}

/// Why a sign-in was refused (logged, never shown in detail to the client).
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("too many failed sign-ins from this address")]
    RateLimited,
    #[error("login name {0:?} names no pod")]
    BadLogin(String),
    #[error("unknown key")]
    UnknownKey,
    #[error("the key's account no longer exists")]
    NoUser,
    #[error("certificate refused: {0}")]
    Certificate(pinacle_api::ssh::CertificateRefusal),
    #[error("{0}")]
    NoAccess(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Connection {
    fn refuse(&mut self, login: &str, refusal: Refusal) -> Result<Auth, russh::Error> {
        let outcome = match refusal {
            Refusal::RateLimited => "rate_limited",
            // our own failure is not the client's
            Refusal::Internal(_) => "refused",
            _ => {
                if !self.counted_failure {
                    self.counted_failure = true;
                    self.shared.limiter.failed(self.peer.ip(), std::time::Instant::now());
                }
                "refused"
            }
        };
        self.shared.state.metrics.ssh_sign_ins.get_or_create(&pinacle_api::metrics::OutcomeLabels { outcome: outcome.into() }).inc();
        tracing::warn!(peer = %self.peer, login, reason = %refusal, "SSH sign-in refused");
        Ok(Auth::reject())
    }

    /// The pod `login` names, if user `user_id` may run commands in it.
    async fn admit(&self, login: &str, user_id: &str) -> Result<(Principal, pinacle_api::service::PodView, String), Refusal> {
        let pod_key = pinacle_api::ssh::pod_key_of_login(login).ok_or_else(|| Refusal::BadLogin(login.to_owned()))?;
        let source = format!("ssh {}", self.peer);
        let principal = self.shared.state.ssh.principal_for_user(user_id, &source).await.map_err(|e| Refusal::Internal(e.message))?.ok_or(Refusal::NoUser)?;
        let pod = self.shared.state.pods.find_pod(&principal, &pod_key, Action::Exec).await.map_err(|e| Refusal::NoAccess(e.message))?;
        Ok((principal, pod, pod_key))
    }

    #[allow(clippy::too_many_arguments)]
    fn sign_in(&mut self, principal: Principal, credential: Credential, pod: &pinacle_api::service::PodView, pod_key: String, via: String, pty_allowed: bool, forwarding_allowed: bool) {
        tracing::info!(peer = %self.peer, user = %principal.user_name, pod = %pod.name, via = %via, "SSH sign-in");
        if self.counted_failure {
            // it offered other keys first, then a good one: not an attack
            self.shared.limiter.forgive(self.peer.ip());
            self.counted_failure = false;
        }
        self.unauthenticated = None;
        self.signed_in.store(true, std::sync::atomic::Ordering::Release);
        self.shared.state.metrics.ssh_sign_ins.get_or_create(&pinacle_api::metrics::OutcomeLabels { outcome: "accepted".into() }).inc();
        self.login = Some(Arc::new(Login {
            principal,
            credential,
            pod_key,
            pod_name: pod.name.to_string(),
            pod_id: pod.id.to_string(),
            via,
            pty_allowed,
            forwarding_allowed,
            peer: self.peer,
        }));
    }
}

impl Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(&mut self, login: &str, _offer: russh::server::PublicKeyOffer<'_>) -> Result<Auth, Self::Error> {
        // The real check comes once the client has proved it holds the key
        // (a certificate's key is offered here too, undistinguished).
        if self.shared.limiter.blocked(self.peer.ip(), std::time::Instant::now()) {
            return self.refuse(login, Refusal::RateLimited);
        }
        Ok(Auth::Accept)
    }

    async fn auth_publickey(&mut self, login: &str, key: russh::server::VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        if self.shared.limiter.blocked(self.peer.ip(), std::time::Instant::now()) {
            return self.refuse(login, Refusal::RateLimited);
        }
        let fingerprint = key.public_key.fingerprint(HashAlg::Sha256);
        let owner = match self.shared.state.ssh.ssh_key_owner(key.public_key).await {
            Ok(Some(owner)) => owner,
            Ok(None) => return self.refuse(login, Refusal::UnknownKey),
            Err(e) => return self.refuse(login, Refusal::Internal(e.message)),
        };
        match self.admit(login, &owner).await {
            Ok((principal, pod, pod_key)) => {
                self.sign_in(principal, Credential::Key(key.public_key.clone()), &pod, pod_key, format!("key {fingerprint}"), true, true);
                Ok(Auth::Accept)
            }
            Err(r) => self.refuse(login, r),
        }
    }

    async fn auth_openssh_certificate(&mut self, login: &str, cert: &Certificate) -> Result<Auth, Self::Error> {
        if self.shared.limiter.blocked(self.peer.ip(), std::time::Instant::now()) {
            return self.refuse(login, Refusal::RateLimited);
        }
        let cas = match self.shared.state.ssh.ssh_authorities().await {
            Ok(c) => c,
            Err(e) => return self.refuse(login, Refusal::Internal(e.message)),
        };
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        // Trust the key id only once the CA's signature and the validity
        // window are checked; the pod principal once the pod is known.
        let ca = cas.user_ca.public_key();
        let user_id = match pinacle_api::ssh::certificate_user(cert, ca, now) {
            Ok(u) => u,
            Err(r) => return self.refuse(login, Refusal::Certificate(r)),
        };
        let (principal, pod, pod_key) = match self.admit(login, &user_id).await {
            Ok(a) => a,
            Err(r) => return self.refuse(login, r),
        };
        if let Err(r) = pinacle_api::ssh::check_user_certificate(cert, ca, &pod.id.to_string(), now) {
            return self.refuse(login, Refusal::Certificate(r));
        }
        let via = format!("certificate {} serial {}", cert.public_key().fingerprint(HashAlg::Sha256), cert.serial());
        let pty = cert.extensions().contains_key("permit-pty");
        let forwarding = cert.extensions().contains_key("permit-port-forwarding");
        self.sign_in(principal, Credential::Certificate { valid_before: cert.valid_before() }, &pod, pod_key, via, pty, forwarding);
        Ok(Auth::Accept)
    }

    async fn channel_open_session(&mut self, channel: Channel<Msg>, reply: russh::server::ChannelOpenHandle, session: &mut Session) -> Result<(), Self::Error> {
        let Some(login) = self.fresh_login(session.handle()).await else {
            reply.reject(russh::ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(channels::run_session(self.shared.state.clone(), login, channel));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.login.as_ref().is_some_and(|l| l.forwarding_allowed) {
            reply.reject(russh::ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        }
        let Some(login) = self.fresh_login(session.handle()).await else {
            reply.reject(russh::ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        };
        let Some(port) = u16::try_from(port).ok().filter(|p| *p > 0) else {
            reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        if host.is_empty() || host.len() > 255 || host.chars().any(|c| c.is_control() || c.is_whitespace()) {
            reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        }
        tokio::spawn(channels::run_forward(self.shared.state.clone(), login, channel, reply, host.to_owned(), port));
        Ok(())
    }

    async fn tcpip_forward(&mut self, address: &str, port: &mut u32, session: &mut Session) -> Result<bool, Self::Error> {
        let Some(login) = self.fresh_login(session.handle()).await else {
            return Ok(false);
        };
        if !self.shared.allow_remote_forward {
            tracing::info!(peer = %self.peer, address, port = *port, "remote port forwarding (ssh -R) refused: not enabled on this gateway (pinacle up --ssh-allow-remote-forward)");
            return Ok(false);
        }
        if !login.forwarding_allowed {
            tracing::info!(peer = %self.peer, address, port = *port, "remote port forwarding (ssh -R) refused: the certificate does not permit port forwarding");
            return Ok(false);
        }
        let Ok(requested) = u16::try_from(*port) else {
            return Ok(false);
        };
        if self.remote_forwards.len() >= remote_forward::MAX_FORWARDS_PER_CONNECTION || (requested != 0 && self.remote_forwards.contains(address, *port)) {
            tracing::info!(peer = %self.peer, address, port = *port, "remote port forwarding refused: already forwarded, or too many forwards");
            return Ok(false);
        }
        match remote_forward::start(self.shared.state.clone(), login, session.handle(), address.to_owned(), requested).await {
            Ok((bound, task)) => {
                *port = u32::from(bound);
                self.remote_forwards.insert(address.to_owned(), u32::from(bound), task);
                Ok(true)
            }
            Err(e) => {
                tracing::info!(peer = %self.peer, address, port = requested, error = %e, "remote port forwarding failed");
                Ok(false)
            }
        }
    }

    async fn cancel_tcpip_forward(&mut self, address: &str, port: u32, _session: &mut Session) -> Result<bool, Self::Error> {
        Ok(self.remote_forwards.cancel(address, port))
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.login.as_ref().is_some_and(|l| l.pty_allowed) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn env_request(&mut self, channel: ChannelId, name: &str, _value: &str, session: &mut Session) -> Result<(), Self::Error> {
        if channels::accepted_env(name) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        self.answer_start(channel, true, session)
    }

    async fn exec_request(&mut self, channel: ChannelId, _data: &[u8], session: &mut Session) -> Result<(), Self::Error> {
        self.answer_start(channel, true, session)
    }

    async fn subsystem_request(&mut self, channel: ChannelId, name: &str, session: &mut Session) -> Result<(), Self::Error> {
        self.answer_start(channel, name == "sftp", session)
    }

    async fn channel_close(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        self.started.remove(&channel);
        Ok(())
    }
}
