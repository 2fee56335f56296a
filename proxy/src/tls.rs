//! TLS for the proxy: certificates by server name (SNI), kept in memory and
//! on disk, swapped in place when renewed.
//!
//! A [`CertStore`] answers rustls's certificate lookups. Replacing a
//! certificate only changes what new handshakes get: connections already
//! open keep theirs, so renewal drops nothing. The store also holds the
//! ACME challenge answers ([`crate::acme`] puts them there): the key
//! authorizations for HTTP-01, served by the plain listener, and the
//! self-signed challenge certificates for TLS-ALPN-01, served to
//! handshakes that offer the `acme-tls/1` protocol.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01 challenge handshakes (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Errors of certificate handling.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate {path}: {why}")]
    BadCertificate { path: String, why: String },
    #[error("{0}")]
    Io(String),
}

/// A certificate with what the renewal check needs to know of it.
#[derive(Clone)]
pub struct StoredCert {
    pub key: Arc<CertifiedKey>,
    /// Seconds since the epoch after which the certificate is invalid.
    pub not_after: i64,
    /// Seconds since the epoch from which it is valid.
    pub not_before: i64,
    /// Serial number, hex (to tell a renewed certificate from the old).
    pub serial: String,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Certificates by name (`app.example.com` or `*.example.com`) and the
/// answers to pending ACME challenges.
#[derive(Default)]
pub struct CertStore {
    /// Where certificates are kept (`{name}.crt`, `{name}.key` 0600); none:
    /// memory only.
    dir: Option<PathBuf>,
    certs: RwLock<HashMap<String, StoredCert>>,
    /// HTTP-01: token → key authorization.
    http_challenges: RwLock<HashMap<String, String>>,
    /// TLS-ALPN-01: name → challenge certificate.
    alpn_challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").field("dir", &self.dir).field("names", &self.names()).finish()
    }
}

/// File-name form of a certificate name: `*.` becomes `_wildcard.`.
fn file_stem(name: &str) -> String {
    match name.strip_prefix("*.") {
        Some(rest) => format!("_wildcard.{rest}"),
        None => name.to_owned(),
    }
}

fn name_of_stem(stem: &str) -> String {
    match stem.strip_prefix("_wildcard.") {
        Some(rest) => format!("*.{rest}"),
        None => stem.to_owned(),
    }
}

/// Parses a PEM chain and key into a certificate rustls can serve.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8], what: &str) -> Result<StoredCert, TlsError> {
    parse_certified(chain_pem, key_pem, what, true)
}

/// A TLS-ALPN-01 challenge certificate: its critical `acmeIdentifier`
/// extension is one rustls's own key check refuses to parse.
pub(crate) fn challenge_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    parse_certified(chain_pem, key_pem, "TLS-ALPN-01 challenge", false).map(|c| c.key)
}

fn parse_certified(chain_pem: &[u8], key_pem: &[u8], what: &str, check_key: bool) -> Result<StoredCert, TlsError> {
    let bad = |why: String| TlsError::BadCertificate { path: what.to_owned(), why };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(chain_pem).collect::<Result<_, _>>().map_err(|e| bad(format!("reading PEM: {e}")))?;
    let leaf = chain.first().ok_or_else(|| bad("no certificate in the file".into()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| bad(format!("parsing: {e}")))?;
    let not_after = parsed.validity().not_after.timestamp();
    let not_before = parsed.validity().not_before.timestamp();
    let serial = parsed.raw_serial_as_string();
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad(format!("reading the private key: {e}")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| bad(format!("private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    if check_key {
        certified.keys_match().map_err(|e| bad(format!("the key does not belong to the certificate: {e}")))?;
    }
    Ok(StoredCert { key: Arc::new(certified), not_after, not_before, serial })
}

impl CertStore {
    /// A store kept in memory only.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// A store kept in `dir` (created 0700), loading what is there.
    /// Unreadable files are skipped with a warning: ACME issues anew.
    pub fn open(dir: &Path) -> Result<Self, TlsError> {
        let io = |e: std::io::Error| TlsError::Io(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        let store = Self { dir: Some(dir.to_owned()), ..Self::default() };
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let Some(stem) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".crt")) else {
                continue;
            };
            let key_path = path.with_extension("key");
            let loaded = std::fs::read(&path)
                .and_then(|c| std::fs::read(&key_path).map(|k| (c, k)))
                .map_err(|e| TlsError::Io(e.to_string()))
                .and_then(|(c, k)| certified_key(&c, &k, &path.display().to_string()));
            match loaded {
                Ok(cert) => {
                    write(&store.certs).insert(name_of_stem(stem), cert);
                }
                Err(e) => tracing::warn!(error = %e, "skipping a stored certificate"),
            }
        }
        Ok(store)
    }

    /// Serves `chain_pem`/`key_pem` for `name` from now on, and keeps them
    /// on disk when the store has a directory.
    pub fn install(&self, name: &str, chain_pem: &str, key_pem: &str) -> Result<StoredCert, TlsError> {
        let cert = certified_key(chain_pem.as_bytes(), key_pem.as_bytes(), name)?;
        if let Some(dir) = &self.dir {
            let stem = file_stem(name);
            write_private(&dir.join(format!("{stem}.key")), key_pem.as_bytes())?;
            write_private(&dir.join(format!("{stem}.crt")), chain_pem.as_bytes())?;
        }
        write(&self.certs).insert(name.to_owned(), cert.clone());
        Ok(cert)
    }

    /// The certificate for a server name: an exact one, else a wildcard
    /// one for its parent domain.
    pub fn lookup(&self, server_name: &str) -> Option<StoredCert> {
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        let certs = read(&self.certs);
        if let Some(c) = certs.get(&name) {
            return Some(c.clone());
        }
        let (_, parent) = name.split_once('.')?;
        certs.get(&format!("*.{parent}")).cloned()
    }

    /// Every stored certificate name.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = read(&self.certs).keys().cloned().collect();
        names.sort();
        names
    }

    /// The stored certificate of exactly `name`.
    pub fn get(&self, name: &str) -> Option<StoredCert> {
        read(&self.certs).get(name).cloned()
    }

    pub(crate) fn set_http_challenge(&self, token: &str, key_authorization: &str) {
        write(&self.http_challenges).insert(token.to_owned(), key_authorization.to_owned());
    }

    pub(crate) fn clear_http_challenge(&self, token: &str) {
        write(&self.http_challenges).remove(token);
    }

    /// The answer to an HTTP-01 challenge for `token`, if one is pending.
    pub fn http_challenge(&self, token: &str) -> Option<String> {
        read(&self.http_challenges).get(token).cloned()
    }

    pub(crate) fn set_alpn_challenge(&self, name: &str, cert: Arc<CertifiedKey>) {
        write(&self.alpn_challenges).insert(name.to_ascii_lowercase(), cert);
    }

    pub(crate) fn clear_alpn_challenge(&self, name: &str) {
        write(&self.alpn_challenges).remove(&name.to_ascii_lowercase());
    }
}

/// Writes `bytes` to `path` (mode 0600) through a temporary file and a
/// rename: readers never see half a key.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let io = |e: std::io::Error| TlsError::Io(format!("{}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Certificates for ordinary handshakes.
#[derive(Debug)]
struct ByServerName(Arc<CertStore>);

impl ResolvesServerCert for ByServerName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.lookup(hello.server_name()?).map(|c| c.key)
    }
}

/// Certificates for TLS-ALPN-01 validation handshakes.
#[derive(Debug)]
struct AcmeChallenges(Arc<CertStore>);

impl ResolvesServerCert for AcmeChallenges {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        read(&self.0.alpn_challenges).get(&name).cloned()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server configurations of the TLS listener.
pub struct TlsConfigs {
    /// Ordinary handshakes: h2 and http/1.1 by ALPN.
    pub serve: Arc<rustls::ServerConfig>,
    /// TLS-ALPN-01 validation handshakes.
    pub acme: Arc<rustls::ServerConfig>,
}

impl TlsConfigs {
    /// Configurations backed by `store`.
    pub fn new(store: &Arc<CertStore>) -> Result<Self, TlsError> {
        let builder = || {
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Io(format!("TLS setup: {e}")))
        };
        let mut serve = builder()?.with_no_client_auth().with_cert_resolver(Arc::new(ByServerName(Arc::clone(store))));
        serve.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut acme = builder()?.with_no_client_auth().with_cert_resolver(Arc::new(AcmeChallenges(Arc::clone(store))));
        acme.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        Ok(Self { serve: Arc::new(serve), acme: Arc::new(acme) })
    }
}

/// A self-signed certificate for `names` (for tests and `--tls-self-signed`).
pub fn self_signed(names: &[String]) -> Result<(String, String), TlsError> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| TlsError::Io(format!("self-signed certificate: {e}")))?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_prefers_the_exact_name_then_one_wildcard_level() {
        let store = CertStore::in_memory();
        let (c, k) = self_signed(&["*.pinacle.test".into()]).unwrap();
        store.install("*.pinacle.test", &c, &k).unwrap();
        let wildcard = store.get("*.pinacle.test").unwrap().serial;
        let (c, k) = self_signed(&["8080-web-alice.pinacle.test".into()]).unwrap();
        store.install("8080-web-alice.pinacle.test", &c, &k).unwrap();
        let exact = store.get("8080-web-alice.pinacle.test").unwrap().serial;
        assert_ne!(wildcard, exact);
        assert_eq!(store.lookup("8080-web-alice.pinacle.test").unwrap().serial, exact);
        assert_eq!(store.lookup("8080-WEB-alice.pinacle.test.").unwrap().serial, exact);
        assert_eq!(store.lookup("3000-web-alice.pinacle.test").unwrap().serial, wildcard);
        // a wildcard covers one label only
        assert!(store.lookup("a.b.pinacle.test").is_none());
        assert!(store.lookup("pinacle.test").is_none());
    }

    #[test]
    fn stored_certificates_survive_a_restart_with_private_keys_0600() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = self_signed(&["*.pinacle.test".into()]).unwrap();
        let serial = {
            let store = CertStore::open(dir.path()).unwrap();
            store.install("*.pinacle.test", &c, &k).unwrap().serial
        };
        let again = CertStore::open(dir.path()).unwrap();
        assert_eq!(again.names(), vec!["*.pinacle.test".to_string()]);
        assert_eq!(again.lookup("x.pinacle.test").unwrap().serial, serial);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("_wildcard.pinacle.test.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (c, _) = self_signed(&["a.test".into()]).unwrap();
        let (_, k) = self_signed(&["a.test".into()]).unwrap();
        let err = CertStore::in_memory().install("a.test", &c, &k).err().unwrap();
        assert!(err.to_string().contains("does not belong"), "{err}");
        let err = CertStore::in_memory().install("a.test", "not pem", &k).err().unwrap();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}
