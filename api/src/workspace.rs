//! What the web IDE keeps per user: SSH public keys and, per pod, the
//! workspace layout (its tabs); and a running pod's resource use.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait};
use serde::Serialize;

use crate::principal::Principal;
use crate::entities::{ssh_key, workspace_layout};
use crate::policy::Action;
use crate::ApiError;

/// Longest accepted public key line.
pub const MAX_PUBLIC_KEY_BYTES: usize = 16 * 1024;
/// Most keys one user may register.
pub const MAX_KEYS_PER_USER: usize = 50;
/// Largest saved layout (JSON).
pub const MAX_LAYOUT_BYTES: usize = 64 * 1024;

/// SSHSIG namespace of a proof of possession (`ssh-keygen -Y sign -n`).
pub const PROOF_NAMESPACE: &str = "pinacle-ssh-key";
/// How a registration challenge starts.
pub const CHALLENGE_PREFIX: &str = "pinacle-ssh-key-challenge:";
/// How long a challenge is valid unless asked otherwise.
pub const CHALLENGE_DEFAULT_SECS: i64 = 300;
/// The longest a challenge may be valid.
pub const CHALLENGE_MAX_SECS: i64 = 600;
/// Longest accepted signature (armored SSHSIG; RSA 16384 fits).
pub const MAX_SIGNATURE_BYTES: usize = 16 * 1024;

/// A challenge to sign to prove possession of a private key
/// (`POST /api/v1/ssh-keys/challenge`).
#[derive(Debug, Clone, Serialize)]
pub struct SshKeyChallenge {
    /// The exact text to sign.
    pub challenge: String,
    /// The SSHSIG namespace to sign in.
    pub namespace: &'static str,
    pub expires_at: DateTime<Utc>,
    /// A shell command that signs it (edit the key path).
    pub sign_command: String,
}

/// Why a proof of possession is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the signature is not an SSH signature ({0}); paste the whole output of `ssh-keygen -Y sign`, from -----BEGIN SSH SIGNATURE----- to -----END SSH SIGNATURE-----")]
    Malformed(String),
    #[error("the signature is longer than {MAX_SIGNATURE_BYTES} bytes")]
    TooLong,
    #[error("the signature is for namespace {0:?}; sign with `-n pinacle-ssh-key`")]
    WrongNamespace(String),
    #[error("the signature was made with another key ({0}); sign with the private key of the key you are adding")]
    WrongKey(String),
    #[error("the signature does not verify: sign exactly the challenge text with the key you are adding")]
    BadSignature,
}

impl ProofError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            ProofError::Malformed(_) | ProofError::TooLong => "invalid_signature",
            ProofError::WrongNamespace(_) | ProofError::WrongKey(_) | ProofError::BadSignature => "proof_failed",
        }
    }
}

fn proof_required() -> ApiError {
    ApiError::bad_request(
        "proof_required",
        "prove you hold the private key: get a challenge (POST /api/v1/ssh-keys/challenge), sign it with \
         `ssh-keygen -Y sign -n pinacle-ssh-key -f KEY` and send public_key, challenge and signature \
         (`pinacle ssh-key add KEY.pub` does all this)",
    )
}

/// Checks that `signature` (an armored SSHSIG) signs `challenge` (or the
/// challenge and a newline, as `echo` adds) in [`PROOF_NAMESPACE`] with
/// `key`.
pub fn verify_possession(key: &::ssh_key::PublicKey, challenge: &str, signature: &str) -> Result<(), ProofError> {
    if signature.len() > MAX_SIGNATURE_BYTES {
        return Err(ProofError::TooLong);
    }
    let sig = ::ssh_key::SshSig::from_pem(signature.trim()).map_err(|e| ProofError::Malformed(e.to_string()))?;
    if sig.namespace() != PROOF_NAMESPACE {
        return Err(ProofError::WrongNamespace(sig.namespace().chars().take(64).collect()));
    }
    if sig.public_key() != key.key_data() {
        let other = ::ssh_key::PublicKey::from(sig.public_key().clone()).fingerprint(::ssh_key::HashAlg::Sha256);
        return Err(ProofError::WrongKey(other.to_string()));
    }
    let with_newline = format!("{challenge}\n");
    if key.verify(PROOF_NAMESPACE, challenge.as_bytes(), &sig).is_ok()
        || key.verify(PROOF_NAMESPACE, with_newline.as_bytes(), &sig).is_ok()
    {
        Ok(())
    } else {
        Err(ProofError::BadSignature)
    }
}

/// The sealing context of a challenge issued to `user_id`.
fn challenge_context(user_id: &str) -> String {
    format!("ssh-key-challenge:{user_id}")
}

/// What identifies a challenge once used.
fn challenge_id(challenge: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(challenge.as_bytes()))
}

/// Challenges used in this process, by id, until they expire.
#[derive(Default)]
struct UsedChallenges(std::sync::Mutex<std::collections::HashMap<String, i64>>);

impl UsedChallenges {
    /// Records `id` as used; false if it was already.
    fn take(&self, id: &str, exp: i64, now: i64) -> bool {
        let mut used = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        used.retain(|_, e| *e >= now);
        used.insert(id.to_owned(), exp).is_none()
    }
}

fn used_challenges() -> &'static UsedChallenges {
    static USED: std::sync::OnceLock<UsedChallenges> = std::sync::OnceLock::new();
    USED.get_or_init(UsedChallenges::default)
}

/// A registered SSH key, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct SshKeyView {
    pub id: String,
    pub name: String,
    pub algorithm: String,
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<ssh_key::Model> for SshKeyView {
    fn from(m: ssh_key::Model) -> Self {
        SshKeyView {
            id: m.id,
            name: m.name,
            algorithm: m.algorithm,
            fingerprint: m.fingerprint,
            created_at: m.created_at,
            last_used_at: m.last_used_at,
        }
    }
}

/// A checked OpenSSH public key line: algorithm, `SHA256:` fingerprint and
/// the key without its comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedKey {
    pub algorithm: String,
    pub fingerprint: String,
    pub openssh: String,
}

/// Reads one OpenSSH public key line (`ssh-ed25519 AAAA... comment`).
pub fn check_public_key(text: &str) -> Result<CheckedKey, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("paste a public key, e.g. the contents of ~/.ssh/id_ed25519.pub".into());
    }
    if text.len() > MAX_PUBLIC_KEY_BYTES {
        return Err(format!(
            "a public key is at most {MAX_PUBLIC_KEY_BYTES} bytes"
        ));
    }
    if text.contains("PRIVATE KEY") {
        return Err("this is a private key; paste the public key (the .pub file) and keep the private key secret".into());
    }
    if text.lines().count() > 1 {
        return Err("one key at a time: the text has several lines".into());
    }
    let key = ::ssh_key::PublicKey::from_openssh(text).map_err(|e| {
        format!(
            "not an OpenSSH public key ({e}); expected a line like `ssh-ed25519 AAAA... you@host`"
        )
    })?;
    let openssh = key
        .to_openssh()
        .map_err(|e| format!("cannot encode the key: {e}"))?;
    let openssh = openssh
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    Ok(CheckedKey {
        algorithm: key.algorithm().as_str().to_owned(),
        fingerprint: key.fingerprint(::ssh_key::HashAlg::Sha256).to_string(),
        openssh,
    })
}

/// The user's workspace as a service: SSH public keys (with proof of
/// possession), per-pod layouts of the web IDE, and pods' resource usage.
#[derive(Clone)]
pub struct Workspaces {
    db: sea_orm::DatabaseConnection,
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Seals the key challenges.
    master_key: std::sync::Arc<crate::crypto::MasterKey>,
    pods: crate::service::Pods,
    links: crate::peers::HostLinks,
    audit: crate::audit::AuditLog,
}

impl Workspaces {
    pub fn new(
        db: sea_orm::DatabaseConnection,
        write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
        master_key: std::sync::Arc<crate::crypto::MasterKey>,
        pods: crate::service::Pods,
        links: crate::peers::HostLinks,
        audit: crate::audit::AuditLog,
    ) -> Self {
        Self { db, write_lock, master_key, pods, links, audit }
    }

    /// The caller's SSH keys, oldest first.
    pub async fn list_ssh_keys(&self, who: &Principal) -> Result<Vec<SshKeyView>, ApiError> {
        Ok(ssh_key::Entity::find()
            .filter(ssh_key::Column::UserId.eq(who.user_id.as_str()))
            .order_by_asc(ssh_key::Column::CreatedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// A challenge the caller signs with the private key of a key they want
    /// to register (see [`Workspaces::add_ssh_key_with_proof`]).
    /// `expires_in_seconds`: 1 to [`CHALLENGE_MAX_SECS`] (default
    /// [`CHALLENGE_DEFAULT_SECS`]).
    pub fn ssh_key_challenge(&self, who: &Principal, expires_in_seconds: Option<i64>) -> Result<SshKeyChallenge, ApiError> {
        let secs = expires_in_seconds.unwrap_or(CHALLENGE_DEFAULT_SECS);
        if !(1..=CHALLENGE_MAX_SECS).contains(&secs) {
            return Err(ApiError::bad_request(
                "invalid_expiry",
                format!("expires_in_seconds is {secs}; use 1 to {CHALLENGE_MAX_SECS}"),
            ));
        }
        let expires_at = Utc::now() + chrono::Duration::seconds(secs);
        let payload = serde_json::json!({ "exp": expires_at.timestamp() }).to_string();
        let sealed = self.master_key.seal(&challenge_context(&who.user_id), payload.as_bytes()).map_err(ApiError::internal)?;
        let challenge = format!("{CHALLENGE_PREFIX}{sealed}");
        let sign_command = format!("printf '%s' '{challenge}' | ssh-keygen -Y sign -n {PROOF_NAMESPACE} -f ~/.ssh/id_ed25519.pub");
        Ok(SshKeyChallenge { challenge, namespace: PROOF_NAMESPACE, expires_at, sign_command })
    }

    /// Without proof of possession a key is never registered: this answers
    /// 400 `proof_required` (kept for callers that do not send a proof).
    pub async fn add_ssh_key(&self, _who: &Principal, _name: &str, public_key: &str) -> Result<SshKeyView, ApiError> {
        check_public_key(public_key).map_err(|m| ApiError::bad_request("invalid_public_key", m))?;
        Err(proof_required())
    }

    /// Registers a public key for the caller, who proves they hold its
    /// private key: `signature` is an SSHSIG (`ssh-keygen -Y sign -n
    /// pinacle-ssh-key`) over `challenge`, a challenge issued to the caller
    /// by [`Workspaces::ssh_key_challenge`], unexpired and not used before.
    /// A key belongs to one account: a key already registered to another
    /// account moves to the caller, who just proved they hold it (so a key
    /// registered by someone else without proof, before proofs were
    /// required, can be taken back by its owner).
    pub async fn add_ssh_key_with_proof(
        &self,
        who: &Principal,
        name: &str,
        public_key: &str,
        challenge: &str,
        signature: &str,
    ) -> Result<SshKeyView, ApiError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_name",
                "a key's name is 1 to 100 characters, without control characters",
            ));
        }
        let key = check_public_key(public_key)
            .map_err(|m| ApiError::bad_request("invalid_public_key", m))?;
        let parsed = ::ssh_key::PublicKey::from_openssh(&key.openssh)
            .map_err(|e| ApiError::bad_request("invalid_public_key", e.to_string()))?;
        let expires = self.open_challenge(who, challenge)?;
        verify_possession(&parsed, challenge, signature).map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
        if !used_challenges().take(&challenge_id(challenge), expires, Utc::now().timestamp()) {
            return Err(ApiError::bad_request(
                "challenge_used",
                "this challenge was used already; ask for a new one (POST /api/v1/ssh-keys/challenge) and sign it",
            ));
        }
        if self.list_ssh_keys(who).await?.len() >= MAX_KEYS_PER_USER {
            return Err(ApiError::conflict(
                "too_many_keys",
                format!("at most {MAX_KEYS_PER_USER} keys per account; delete one first"),
            ));
        }
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let existing = ssh_key::Entity::find()
            .filter(ssh_key::Column::Fingerprint.eq(key.fingerprint.as_str()))
            .one(&txn)
            .await?;
        if let Some(old) = existing {
            if old.user_id == who.user_id {
                return Err(ApiError::conflict(
                    "ssh_key_exists",
                    format!("the key {} is already registered to your account", key.fingerprint),
                ));
            }
            ssh_key::Entity::delete_by_id(old.id.clone()).exec(&txn).await?;
            crate::audit::append(
                &txn,
                who,
                "ssh_key.reclaim",
                &format!("{} from user:{} (proof of possession)", old.fingerprint, old.user_id),
            )
            .await?;
        }
        let model = ssh_key::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            user_id: Set(who.user_id.clone()),
            name: Set(name.to_owned()),
            algorithm: Set(key.algorithm),
            fingerprint: Set(key.fingerprint.clone()),
            public_key: Set(key.openssh),
            created_at: Set(Utc::now()),
            last_used_at: Set(None),
        }
        .insert(&txn)
        .await
        .map_err(|e| match e.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => ApiError::conflict(
                "ssh_key_exists",
                format!("the key {} is already registered", key.fingerprint),
            ),
            _ => e.into(),
        })?;
        crate::audit::append(&txn, who, "ssh_key.add", &format!("{} ({})", model.fingerprint, model.name)).await?;
        txn.commit().await?;
        Ok(model.into())
    }

    /// Checks that `challenge` was issued to `who` by this server and has
    /// not expired: its expiry (Unix seconds).
    fn open_challenge(&self, who: &Principal, challenge: &str) -> Result<i64, ApiError> {
        let unknown = || {
            ApiError::bad_request(
                "invalid_challenge",
                "the challenge is not one this server issued to you; ask for one with POST /api/v1/ssh-keys/challenge",
            )
        };
        let sealed = challenge.strip_prefix(CHALLENGE_PREFIX).filter(|c| c.len() <= 1024).ok_or_else(unknown)?;
        let plain = self.master_key.open(&challenge_context(&who.user_id), sealed).map_err(|_| unknown())?;
        let exp = serde_json::from_slice::<serde_json::Value>(&plain)
            .ok()
            .and_then(|v| v["exp"].as_i64())
            .ok_or_else(unknown)?;
        if exp < Utc::now().timestamp() {
            return Err(ApiError::bad_request(
                "challenge_expired",
                "the challenge has expired; ask for a new one (POST /api/v1/ssh-keys/challenge) and sign it",
            ));
        }
        Ok(exp)
    }

    /// Removes one of the caller's keys.
    pub async fn delete_ssh_key(&self, who: &Principal, id: &str) -> Result<(), ApiError> {
        let key = ssh_key::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .filter(|k| k.user_id == who.user_id)
            .ok_or_else(|| ApiError::not_found(format!("SSH key {id} not found")))?;
        ssh_key::Entity::delete_by_id(key.id.clone())
            .exec(&self.db)
            .await?;
        self.audit.record(
            who,
            "ssh_key.delete",
            &format!("{} ({})", key.fingerprint, key.name),
        )
        .await
    }

    /// `who`'s saved layout for `pod`, a pod already found for them (the
    /// policy was asked then).
    pub async fn workspace_layout(&self, who: &Principal, pod: &crate::service::PodView) -> Result<Option<serde_json::Value>, ApiError> {
        let row = workspace_layout::Entity::find_by_id((who.user_id.clone(), pod.id.to_string())).one(&self.db).await?;
        Ok(row.and_then(|r| serde_json::from_str(&r.layout).ok()))
    }

    /// Saves the caller's layout for a pod (any JSON object the web app
    /// writes, 64 KiB at most).
    pub async fn save_workspace_layout(
        &self,
        who: &Principal,
        pod_key: &str,
        layout: &serde_json::Value,
    ) -> Result<(), ApiError> {
        if !layout.is_object() {
            return Err(ApiError::bad_request(
                "invalid_layout",
                "a layout is a JSON object",
            ));
        }
        let text = layout.to_string();
        if text.len() > MAX_LAYOUT_BYTES {
            return Err(ApiError::bad_request(
                "invalid_layout",
                format!("a layout is at most {MAX_LAYOUT_BYTES} bytes of JSON"),
            ));
        }
        let pod = self.pods.find_pod(who, pod_key, Action::Read).await?;
        let row = workspace_layout::ActiveModel {
            user_id: Set(who.user_id.clone()),
            pod_id: Set(pod.id.to_string()),
            layout: Set(text),
            updated_at: Set(Utc::now()),
        };
        workspace_layout::Entity::insert(row)
            .on_conflict(
                sea_orm::sea_query::OnConflict::columns([
                    workspace_layout::Column::UserId,
                    workspace_layout::Column::PodId,
                ])
                .update_columns([
                    workspace_layout::Column::Layout,
                    workspace_layout::Column::UpdatedAt,
                ])
                .to_owned(),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// What `pod` (already found for the caller) uses now; `None` unless it
    /// runs on this server's host.
    pub async fn pod_usage(&self, pod: &crate::service::PodView) -> Option<pinacle_host_api::PodUsage> {
        if pod.state != pinacle_orchestrator::PodState::Running {
            return None;
        }
        self.links.reach(&pod.host)?.usage(pod.id).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_are_checked_and_fingerprinted_like_ssh_keygen() {
        // what `ssh-keygen -lf` printed for this key
        let k = check_public_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAslebIX1AsoKLpkR9B6kXvkJKXv7rNiPDCrRgoZj5b2 alice@laptop\n").unwrap();
        assert_eq!(k.algorithm, "ssh-ed25519");
        assert_eq!(
            k.fingerprint,
            "SHA256:/yZTBcM2GWnpSuguwKMyme8cRmh3n/YIGvTLiW9mEIM"
        );
        assert!(
            !k.openssh.contains("alice"),
            "the comment is dropped: {}",
            k.openssh
        );
        assert!(check_public_key("").unwrap_err().contains("paste"));
        assert!(check_public_key("-----BEGIN OPENSSH PRIVATE KEY-----\nabc")
            .unwrap_err()
            .contains("private key"));
        assert!(check_public_key("ssh-ed25519 notbase64!")
            .unwrap_err()
            .contains("not an OpenSSH public key"));
        assert!(check_public_key("ssh-ed25519 AAAA\nssh-rsa BBBB")
            .unwrap_err()
            .contains("several lines"));
    }

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOPdUYBFm0Ub7rwjV8IOicFLNDegygmhhGNOn/V2coJT t";
    const OTHER: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIaXE60KQm2DcTwYC0fi3hmuSBbc/hDWE1rhMGFgwcyA o";
    // `printf %s hello | ssh-keygen -Y sign -n pinacle-ssh-key -f KEY`
    const SIG_HELLO: &str = "-----BEGIN SSH SIGNATURE-----
U1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAg491RgEWbRRvuvCNXwg6JwUs0N6
DKCaGEY06f9XZyglMAAAAPcGluYWNsZS1zc2gta2V5AAAAAAAAAAZzaGE1MTIAAABTAAAA
C3NzaC1lZDI1NTE5AAAAQMot1MAFM+p2g9YdFmFFA/QUFipaCU/N3odD2/c8K+mSthVwL4
FkLlAykactbjJgw83zlanZracgk/u+4rH/KAA=
-----END SSH SIGNATURE-----
";
    // `printf 'hello\n' | ssh-keygen -Y sign -n pinacle-ssh-key -f KEY`
    const SIG_HELLO_NL: &str = "-----BEGIN SSH SIGNATURE-----
U1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAg491RgEWbRRvuvCNXwg6JwUs0N6
DKCaGEY06f9XZyglMAAAAPcGluYWNsZS1zc2gta2V5AAAAAAAAAAZzaGE1MTIAAABTAAAA
C3NzaC1lZDI1NTE5AAAAQN5ItfLJezSZ3GERPE43btb1tBMsx482aGStbmM1DPMgXU0y7v
bqoRp4n4mw2pK9/F+AwamQdq/WPN8bx35PUAo=
-----END SSH SIGNATURE-----
";
    // `printf %s hello | ssh-keygen -Y sign -n other-namespace -f KEY`
    const SIG_OTHER_NS: &str = "-----BEGIN SSH SIGNATURE-----
U1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAg491RgEWbRRvuvCNXwg6JwUs0N6
DKCaGEY06f9XZyglMAAAAPb3RoZXItbmFtZXNwYWNlAAAAAAAAAAZzaGE1MTIAAABTAAAA
C3NzaC1lZDI1NTE5AAAAQEXhO/CNdoUok3YSxO1342uuaaNo4rGsDrLWe7UYfFLp+tj8EJ
8fZ1n5B2UdcKI4fIR3K/3HtdZIhEx6ysmKNww=
-----END SSH SIGNATURE-----
";

    fn key(text: &str) -> ::ssh_key::PublicKey {
        ::ssh_key::PublicKey::from_openssh(text).unwrap()
    }

    #[test]
    fn possession_is_proven_only_by_a_signature_of_the_key_over_the_challenge() {
        let k = key(KEY);
        assert_eq!(verify_possession(&k, "hello", SIG_HELLO), Ok(()));
        // what `echo` signs (a trailing newline) is accepted too
        assert_eq!(verify_possession(&k, "hello", SIG_HELLO_NL), Ok(()));
        // another message
        assert_eq!(verify_possession(&k, "hello!", SIG_HELLO), Err(ProofError::BadSignature));
        // another key's signature cannot prove this key
        assert!(matches!(verify_possession(&key(OTHER), "hello", SIG_HELLO), Err(ProofError::WrongKey(_))));
        // the namespace is checked
        assert_eq!(
            verify_possession(&k, "hello", SIG_OTHER_NS),
            Err(ProofError::WrongNamespace("other-namespace".into()))
        );
        assert!(matches!(verify_possession(&k, "hello", "not a signature"), Err(ProofError::Malformed(_))));
        assert!(matches!(verify_possession(&k, "hello", ""), Err(ProofError::Malformed(_))));
        assert_eq!(verify_possession(&k, "hello", &"A".repeat(MAX_SIGNATURE_BYTES + 1)), Err(ProofError::TooLong));
        // a tampered signature
        let tampered = SIG_HELLO.replace("FkLlAyka", "FkLlAykb");
        assert!(verify_possession(&k, "hello", &tampered).is_err());
    }

    #[test]
    fn a_challenge_is_used_once() {
        let used = UsedChallenges::default();
        assert!(used.take("a", 100, 50));
        assert!(!used.take("a", 100, 60));
        assert!(used.take("b", 100, 60));
        // expired ones are forgotten (they no longer open anyway)
        assert!(used.take("a", 300, 200));
    }
}
