//! SSH access to pods: the platform's two certificate authorities, the
//! short-lived user certificates `pinacle ssh` asks for, and the checks the
//! SSH gateway makes before it lets anyone in.
//!
//! - The **user CA** signs user certificates: one pod as the only principal
//!   (its id), the user in the key id, valid for [`USER_CERT_LIFETIME`].
//! - The **host CA** signs the gateway's host key, so clients can trust
//!   `@cert-authority` lines instead of trusting on first use.
//!
//! Both keys are ed25519, made on first use and kept in the `settings`
//! table sealed by the master key.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde::Serialize;
use ssh_key::certificate::{Builder, CertType};
use ssh_key::private::Ed25519Keypair;
use ssh_key::{Certificate, HashAlg, LineEnding, PrivateKey, PublicKey};

use crate::principal::Principal;
use crate::entities::{setting, ssh_key as ssh_key_row, user};
use crate::policy::Action;
use crate::ApiError;

mod ops;

/// SSH access as a service: the user and host certificate authorities
/// (sealed in the settings, created on first use), user certificates for
/// one pod, the pod's own key through its host, and who a key or login is.
#[derive(Clone)]
pub struct SshAccess {
    db: sea_orm::DatabaseConnection,
    master_key: std::sync::Arc<crate::crypto::MasterKey>,
    pods: crate::service::Pods,
    audit: crate::audit::AuditLog,
    auth: crate::auth::Authenticator,
    ssh_cas: std::sync::Arc<tokio::sync::OnceCell<std::sync::Arc<SshAuthorities>>>,
    /// Where users reach the gateway, once one serves this control plane.
    ssh_site: std::sync::Arc<std::sync::OnceLock<SshSite>>,
    /// How long user certificates are valid (default [`USER_CERT_LIFETIME`]).
    ssh_cert_lifetime: std::sync::Arc<std::sync::OnceLock<Duration>>,
}

impl SshAccess {
    pub fn new(
        db: sea_orm::DatabaseConnection,
        master_key: std::sync::Arc<crate::crypto::MasterKey>,
        pods: crate::service::Pods,
        audit: crate::audit::AuditLog,
        auth: crate::auth::Authenticator,
    ) -> Self {
        Self { db, master_key, pods, audit, auth, ssh_cas: Default::default(), ssh_site: Default::default(), ssh_cert_lifetime: Default::default() }
    }

    /// Where users reach the SSH gateway (set once, when one starts).
    pub fn set_site(&self, site: SshSite, cert_lifetime: Duration) {
        let _ = self.ssh_site.set(site);
        let _ = self.ssh_cert_lifetime.set(cert_lifetime);
    }

    /// Where users reach the SSH gateway, if one serves this control plane.
    pub fn site(&self) -> Option<&SshSite> {
        self.ssh_site.get()
    }
}

/// How long a user certificate from [`SshAccess::issue_ssh_certificate`] is
/// valid unless the server says otherwise (`--ssh-cert-lifetime`).
pub const USER_CERT_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// How far back a certificate's validity starts, for clocks a little behind.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// How long the gateway's host certificate is valid (it is signed anew at
/// every start).
pub const HOST_CERT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// The key id prefix of user certificates; the user id follows.
const KEY_ID_PREFIX: &str = "pinacle-user:";

const USER_CA_SETTING: &str = "ssh.user_ca";
const HOST_CA_SETTING: &str = "ssh.host_ca";

/// The two certificate authorities.
pub struct SshAuthorities {
    pub user_ca: PrivateKey,
    pub host_ca: PrivateKey,
}

/// Where users reach the SSH gateway, when one runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshSite {
    /// Host name or address clients connect to.
    pub host: String,
    pub port: u16,
}

/// A fresh ed25519 key pair.
pub fn new_ed25519_key(comment: &str) -> Result<PrivateKey, ssh_key::Error> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    PrivateKey::new(Ed25519Keypair::from_seed(&seed).into(), comment)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// Signs a user certificate for `key`: principal `pod_id`, key id naming
/// `user_id`, valid from a minute ago until `lifetime` from `now`.
pub fn sign_user_certificate(
    ca: &PrivateKey,
    key: &PublicKey,
    user_id: &str,
    pod_id: &str,
    now: SystemTime,
    lifetime: Duration,
) -> Result<Certificate, ssh_key::Error> {
    let after = unix(now).saturating_sub(CLOCK_SKEW.as_secs());
    let before = unix(now) + lifetime.as_secs();
    let mut b = Builder::new(nonce(), key.key_data().clone(), after, before)?;
    b.cert_type(CertType::User)?
        .key_id(format!("{KEY_ID_PREFIX}{user_id}"))?
        .valid_principal(pod_id)?
        .extension("permit-pty", "")?
        .extension("permit-port-forwarding", "")?;
    b.sign(ca)
}

/// Signs the gateway's host key for `names` (the host names clients use).
pub fn sign_host_certificate(ca: &PrivateKey, key: &PublicKey, names: &[String], now: SystemTime) -> Result<Certificate, ssh_key::Error> {
    let after = unix(now).saturating_sub(CLOCK_SKEW.as_secs());
    let mut b = Builder::new(nonce(), key.key_data().clone(), after, unix(now) + HOST_CERT_LIFETIME.as_secs())?;
    b.cert_type(CertType::Host)?.key_id("pinacle-ssh-gateway")?;
    for n in names {
        b.valid_principal(n.clone())?;
    }
    b.sign(ca)
}

/// Why a user certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateRefusal {
    #[error("not a user certificate")]
    NotUser,
    #[error("not signed by this platform's user CA, or expired or not yet valid")]
    Invalid,
    #[error("the certificate is not for this pod")]
    WrongPrincipal,
    #[error("the certificate has critical options this gateway does not know: {0}")]
    UnknownCriticalOption(String),
    #[error("the certificate names no Pinacle user")]
    NoUser,
}

/// The user a certificate was issued to, once it is checked against the
/// user CA `ca` at `now` (Unix seconds): a user certificate, signed by the
/// CA, inside its validity window. Its principals are not looked at yet:
/// [`check_user_certificate`] does that once the pod is known.
pub fn certificate_user(cert: &Certificate, ca: &PublicKey, now: u64) -> Result<String, CertificateRefusal> {
    if cert.cert_type() != CertType::User {
        return Err(CertificateRefusal::NotUser);
    }
    let ca_fp = ca.fingerprint(HashAlg::Sha256);
    cert.validate_at(now, [&ca_fp]).map_err(|_| CertificateRefusal::Invalid)?;
    cert.key_id()
        .strip_prefix(KEY_ID_PREFIX)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or(CertificateRefusal::NoUser)
}

/// Checks a user certificate presented for pod `pod_id` at `now` (Unix
/// seconds) against the user CA `ca`: everything [`certificate_user`]
/// checks, then the principal and critical options. Returns the user id it
/// was issued to.
pub fn check_user_certificate(cert: &Certificate, ca: &PublicKey, pod_id: &str, now: u64) -> Result<String, CertificateRefusal> {
    let user = certificate_user(cert, ca, now)?;
    if !cert.valid_principals().iter().any(|p| p == pod_id) {
        return Err(CertificateRefusal::WrongPrincipal);
    }
    if let Some((name, _)) = cert.critical_options().iter().next() {
        return Err(CertificateRefusal::UnknownCriticalOption(name.clone()));
    }
    Ok(user)
}

/// The pod an SSH login name means, as a key for
/// [`crate::service::Pods::find_pod`]: `pod` (the caller's own, or their one team pod of
/// that name), `pod.team` (a team's pod) or a pod id.
pub fn pod_key_of_login(login: &str) -> Option<String> {
    let ok = |s: &str| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match login.rsplit_once('.') {
        Some((pod, team)) if ok(pod) && ok(team) => Some(format!("{team}/{pod}")),
        Some(_) => None,
        None if ok(login) => Some(login.to_owned()),
        None => None,
    }
}

/// A user certificate as handed out.
#[derive(Debug, Clone, Serialize)]
pub struct SshCertificateView {
    /// The certificate, one OpenSSH line (`ssh-ed25519-cert-v01@openssh.com ...`).
    pub certificate: String,
    /// The login name to use (`pod` or `pod.team`).
    pub login: String,
    pub pod_id: String,
    pub valid_before: chrono::DateTime<chrono::Utc>,
    /// The gateway, when one runs.
    pub gateway: Option<SshSite>,
    /// The host CA's public key, for a `@cert-authority` line.
    pub host_ca: String,
}

/// A pod's own SSH key, public half.
#[derive(Debug, Clone, Serialize)]
pub struct PodKeyView {
    pub public_key: String,
    pub fingerprint: String,
}

/// What clients need to know to trust and reach the gateway.
#[derive(Debug, Clone, Serialize)]
pub struct SshInfo {
    pub gateway: Option<SshSite>,
    pub host_ca: String,
    pub user_ca: String,
}


#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn key() -> PrivateKey {
        new_ed25519_key("t").unwrap()
    }

    #[test]
    fn a_user_certificate_admits_its_user_to_its_pod_only_while_valid() {
        let (ca, user_key) = (key(), key());
        let now = SystemTime::now();
        let cert = sign_user_certificate(&ca, user_key.public_key(), "u1", "pod-a", now, USER_CERT_LIFETIME).unwrap();
        let t = unix(now);
        assert_eq!(check_user_certificate(&cert, ca.public_key(), "pod-a", t), Ok("u1".to_owned()));
        assert_eq!(check_user_certificate(&cert, ca.public_key(), "pod-b", t), Err(CertificateRefusal::WrongPrincipal));
        let later = t + USER_CERT_LIFETIME.as_secs() + 1;
        assert_eq!(check_user_certificate(&cert, ca.public_key(), "pod-a", later), Err(CertificateRefusal::Invalid), "expired");
        let earlier = t - CLOCK_SKEW.as_secs() - 5;
        assert_eq!(check_user_certificate(&cert, ca.public_key(), "pod-a", earlier), Err(CertificateRefusal::Invalid), "not yet valid");
        let other_ca = key();
        assert_eq!(check_user_certificate(&cert, other_ca.public_key(), "pod-a", t), Err(CertificateRefusal::Invalid), "another CA");
        // the text form survives a round trip (what the CLI writes to disk)
        let back = Certificate::from_openssh(&cert.to_openssh().unwrap()).unwrap();
        assert_eq!(check_user_certificate(&back, ca.public_key(), "pod-a", t), Ok("u1".to_owned()));
    }

    #[test]
    fn host_certificates_are_not_user_certificates() {
        let (ca, host_key) = (key(), key());
        let cert = sign_host_certificate(&ca, host_key.public_key(), &["pod-a".to_owned()], SystemTime::now()).unwrap();
        assert_eq!(check_user_certificate(&cert, ca.public_key(), "pod-a", unix(SystemTime::now())), Err(CertificateRefusal::NotUser));
    }

    #[test]
    fn login_names_map_to_pod_keys() {
        assert_eq!(pod_key_of_login("web").as_deref(), Some("web"));
        assert_eq!(pod_key_of_login("web.acme").as_deref(), Some("acme/web"));
        assert_eq!(pod_key_of_login("01890f3e-1111-7abc-8def-0123456789ab").as_deref(), Some("01890f3e-1111-7abc-8def-0123456789ab"));
        for bad in ["", ".acme", "web.", "a/b", "web..acme", "w eb", "../x"] {
            assert_eq!(pod_key_of_login(bad), None, "{bad:?}");
        }
    }
}
