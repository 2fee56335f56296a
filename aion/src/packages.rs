//! AgentPackages installed from OCI registries, signed like cosign signs
//! images and verified here against the operator's keys.
//!
//! **A package** is an OCI artifact with one layer of
//! [`LAYER_MEDIA_TYPE`]: a gzipped tarball of `agent.yml` (an AgentPackage
//! manifest: `name:` and the fields of a `modules.yml` entry, its `source`
//! relative to the package) and the files it names. Only regular files and
//! directories are unpacked, below the package's directory, within
//! [`MAX_UNPACKED_BYTES`] and [`MAX_ENTRIES`].
//!
//! **A signature** is what `cosign sign --key` pushes: the tag
//! `sha256-<manifest hex>.sig` in the same repository names a manifest whose
//! layer of [`SIMPLESIGNING_MEDIA_TYPE`] is the signed payload (`critical.image.
//! docker-manifest-digest` and `critical.identity.docker-reference`) and
//! whose [`SIGNATURE_ANNOTATION`] holds the base64 signature. ECDSA P-256
//! (cosign's default keys) and Ed25519 public keys in PEM are accepted.
//! A package is installed only when a trusted key verifies the payload's
//! bytes *and* the payload names this package's digest and repository.
//!
//! **Quarantine.** A package with no signature, a bad one, or one no
//! trusted key made is kept aside (`quarantine/<digest>/`, never unpacked
//! nor loaded) with the reason, for the operator to look at and remove.
//!
//! **Layout** under the packages directory: `installed/<name>/` (the
//! unpacked files and `.package.json`), `quarantine/<hex>/`, and `tmp/`.
//! A package appears in `installed/` whole or not at all (unpacked in
//! `tmp/`, then renamed).

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::registry::PackageText;

/// The package layer's media type.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.pinacle.agentpackage.v1.tar+gzip";
/// cosign's signed payload's media type.
pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation that carries cosign's signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The manifest file at a package's root.
pub const MANIFEST_FILE: &str = "agent.yml";
/// Largest package layer fetched.
pub const MAX_PACKAGE_BYTES: u64 = 32 << 20;
/// Largest unpacked package.
pub const MAX_UNPACKED_BYTES: u64 = 128 << 20;
/// Most entries in a package.
pub const MAX_ENTRIES: usize = 2_000;
/// Largest signature payload fetched.
const MAX_SIGNATURE_BYTES: u64 = 64 << 10;
/// Most signatures of one package looked at.
const MAX_SIGNATURES: usize = 16;

/// Why a package could not be installed, listed or removed.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{0}")]
    Fetch(#[from] pinacle_oci::OciError),
    #[error("{0}")]
    Reference(#[from] pinacle_oci::reference::ReferenceError),
    /// The signature check failed; the package is in quarantine.
    #[error("{reference} was quarantined: {reason}")]
    Quarantined { reference: String, reason: String },
    /// The layer is not a package this router can unpack.
    #[error("the package is malformed: {0}")]
    Malformed(String),
    /// Its manifest does not load (diagnostics name `packages/NAME/agent.yml`).
    #[error("{0}")]
    Invalid(pinacle_config::Diagnostics),
    #[error("no installed or quarantined package is named {0}")]
    NotFound(String),
    #[error("a trusted key file: {0}")]
    Key(String),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackageError + '_ {
    move |e| PackageError::Io { path: path.display().to_string(), message: e.to_string() }
}

/// A public key packages may be signed with.
#[derive(Clone)]
pub struct TrustedKey {
    /// The first 16 hex digits of the SHA-256 of its SubjectPublicKeyInfo.
    pub id: String,
    kind: KeyKind,
    raw: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    EcdsaP256,
    Ed25519,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedKey({})", self.id)
    }
}

/// SubjectPublicKeyInfo's DER before the point: id-ecPublicKey, prime256v1.
const P256_SPKI_PREFIX: [u8; 26] = [0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00];
/// SubjectPublicKeyInfo's DER before the key: id-Ed25519.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

impl TrustedKey {
    /// Every `PUBLIC KEY` block of a PEM text (`cosign.pub` has one).
    pub fn from_pem(text: &str) -> Result<Vec<TrustedKey>, PackageError> {
        let mut keys = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("-----BEGIN PUBLIC KEY-----") {
            let body = &rest[start + "-----BEGIN PUBLIC KEY-----".len()..];
            let end = body.find("-----END PUBLIC KEY-----").ok_or_else(|| PackageError::Key("a BEGIN PUBLIC KEY block has no END".into()))?;
            let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
            let der = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| PackageError::Key(format!("not base64: {e}")))?;
            keys.push(Self::from_spki_der(&der)?);
            rest = &body[end..];
        }
        if keys.is_empty() {
            return Err(PackageError::Key("no -----BEGIN PUBLIC KEY----- block (give the public key, e.g. cosign.pub)".into()));
        }
        Ok(keys)
    }

    /// A key from its SubjectPublicKeyInfo DER.
    pub fn from_spki_der(der: &[u8]) -> Result<TrustedKey, PackageError> {
        let (kind, raw) = if der.len() == P256_SPKI_PREFIX.len() + 65 && der.starts_with(&P256_SPKI_PREFIX) {
            (KeyKind::EcdsaP256, &der[P256_SPKI_PREFIX.len()..])
        } else if der.len() == ED25519_SPKI_PREFIX.len() + 32 && der.starts_with(&ED25519_SPKI_PREFIX) {
            (KeyKind::Ed25519, &der[ED25519_SPKI_PREFIX.len()..])
        } else {
            return Err(PackageError::Key("not an ECDSA P-256 or Ed25519 public key (the kinds cosign makes)".into()));
        };
        let id = hex::encode(sha2::Sha256::digest(der))[..16].to_owned();
        Ok(TrustedKey { id, kind, raw: raw.to_vec() })
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ED25519};
        match self.kind {
            KeyKind::EcdsaP256 => UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.raw).verify(message, signature).is_ok(),
            KeyKind::Ed25519 => UnparsedPublicKey::new(&ED25519, &self.raw).verify(message, signature).is_ok(),
        }
    }
}

/// What a signature must vouch for.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// `registry/repository`, as cosign writes it in `docker-reference`.
    pub repository: &'a str,
    /// `sha256:…` of the package's manifest.
    pub digest: &'a str,
}

/// Checks a cosign signature: some trusted key verifies `payload`, and
/// the payload names `claim`. Returns the id of the key that signed.
pub fn verify_signature(payload: &[u8], signature_b64: &str, claim: &Claim<'_>, keys: &[TrustedKey]) -> Result<String, String> {
    if keys.is_empty() {
        return Err("this server trusts no signing key (--router-trusted-key)".into());
    }
    let signature = base64::engine::general_purpose::STANDARD.decode(signature_b64.trim()).map_err(|e| format!("the signature is not base64: {e}"))?;
    let key = keys.iter().find(|k| k.verifies(payload, &signature)).ok_or_else(|| "no trusted key made this signature".to_owned())?;
    // only a verified payload is read
    #[derive(Deserialize)]
    struct Payload {
        critical: Critical,
    }
    #[derive(Deserialize)]
    struct Critical {
        identity: Identity,
        image: Image,
        #[serde(rename = "type")]
        kind: String,
    }
    #[derive(Deserialize)]
    struct Identity {
        #[serde(rename = "docker-reference")]
        docker_reference: String,
    }
    #[derive(Deserialize)]
    struct Image {
        #[serde(rename = "docker-manifest-digest")]
        digest: String,
    }
    let p: Payload = serde_json::from_slice(payload).map_err(|e| format!("the signed payload is not cosign's: {e}"))?;
    if p.critical.kind != "cosign container image signature" {
        return Err(format!("the signed payload is of type {:?}, not a cosign image signature", p.critical.kind));
    }
    if p.critical.image.digest != claim.digest {
        return Err(format!("the signature is for {}, not this package ({})", p.critical.image.digest, claim.digest));
    }
    if p.critical.identity.docker_reference != claim.repository {
        return Err(format!("the signature is for repository {}, not {}", p.critical.identity.docker_reference, claim.repository));
    }
    Ok(key.id.clone())
}

/// An installed or quarantined package.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PackageRecord {
    /// The module name (quarantined: the digest's first 12 hex digits).
    pub name: String,
    pub state: PackageState,
    /// The reference it was installed from.
    pub reference: String,
    /// The manifest digest (`sha256:…`).
    pub digest: String,
    /// The key that signed it (installed packages).
    pub signed_by: Option<String>,
    /// Why it is in quarantine.
    pub reason: Option<String>,
    pub at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PackageState {
    Installed,
    Quarantined,
}

const RECORD_FILE: &str = ".package.json";

/// The packages directory.
#[derive(Debug)]
pub struct PackageStore {
    dir: PathBuf,
    /// Installs and removals one at a time.
    changes: Mutex<()>,
}

/// Whether `name` may name a module (and a directory).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') && !name.starts_with(['-', '_'])
}

impl PackageStore {
    /// Opens (creating, mode 0700) the packages directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, PackageError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = dir.into();
        for d in [dir.clone(), dir.join("installed"), dir.join("quarantine"), dir.join("tmp")] {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&d).map_err(io(&d))?;
        }
        Ok(Self { dir, changes: Mutex::new(()) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The installed packages' manifests, for the registry.
    pub fn installed_texts(&self) -> Result<Vec<PackageText>, PackageError> {
        let mut out = Vec::new();
        for (record, dir) in self.installed()? {
            let path = dir.join(MANIFEST_FILE);
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            out.push(PackageText { file: format!("packages/{}/{MANIFEST_FILE}", record.name), name: record.name, text, dir, digest: record.digest });
        }
        Ok(out)
    }

    fn installed(&self) -> Result<Vec<(PackageRecord, PathBuf)>, PackageError> {
        let root = self.dir.join("installed");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&root).map_err(io(&root))? {
            let dir = entry.map_err(io(&root))?.path();
            let path = dir.join(RECORD_FILE);
            let Ok(bytes) = std::fs::read(&path) else { continue };
            match serde_json::from_slice::<PackageRecord>(&bytes) {
                Ok(r) => out.push((r, dir)),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "an unreadable package record is skipped"),
            }
        }
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(out)
    }

    /// Installed packages, then quarantined ones.
    pub fn list(&self) -> Result<Vec<PackageRecord>, PackageError> {
        let mut out: Vec<PackageRecord> = self.installed()?.into_iter().map(|(r, _)| r).collect();
        let root = self.dir.join("quarantine");
        let mut quarantined = Vec::new();
        for entry in std::fs::read_dir(&root).map_err(io(&root))? {
            let path = entry.map_err(io(&root))?.path().join(RECORD_FILE);
            if let Some(r) = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<PackageRecord>(&b).ok()) {
                quarantined.push(r);
            }
        }
        quarantined.sort_by_key(|r| r.at);
        out.extend(quarantined);
        Ok(out)
    }

    /// Takes the installed package `name`, or the quarantined one whose
    /// name (digest prefix) or full digest is `name`, out of where the
    /// registry reads: moved aside, to be [`PackageStore::finish`]ed or
    /// [`PackageStore::restore`]d.
    pub fn take(&self, name: &str) -> Result<Taken, PackageError> {
        let _one = self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((r, dir)) = self.installed()?.into_iter().find(|(r, _)| r.name == name) {
            let aside = self.aside(&dir)?;
            return Ok(Taken { record: r, from: dir, aside });
        }
        let root = self.dir.join("quarantine");
        for entry in std::fs::read_dir(&root).map_err(io(&root))? {
            let dir = entry.map_err(io(&root))?.path();
            if let Some(r) = std::fs::read(dir.join(RECORD_FILE)).ok().and_then(|b| serde_json::from_slice::<PackageRecord>(&b).ok()) {
                if r.name == name || r.digest == name {
                    let aside = self.aside(&dir)?;
                    return Ok(Taken { record: r, from: dir, aside });
                }
            }
        }
        Err(PackageError::NotFound(name.to_owned()))
    }

    /// Deletes what was taken (the change stands).
    pub fn finish(&self, taken: Taken) {
        if let Err(e) = std::fs::remove_dir_all(&taken.aside) {
            tracing::warn!(path = %taken.aside.display(), error = %e, "a removed package's files were not deleted");
        }
    }

    /// Puts back what was taken (the change is undone).
    pub fn restore(&self, taken: Taken) -> Result<(), PackageError> {
        let _one = self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        std::fs::rename(&taken.aside, &taken.from).map_err(io(&taken.from))
    }

    /// Moves `dir` into `tmp/` (the registry no longer sees it).
    fn aside(&self, dir: &Path) -> Result<PathBuf, PackageError> {
        let aside = self.dir.join("tmp").join(format!("aside-{}", uuid::Uuid::new_v4().simple()));
        std::fs::rename(dir, &aside).map_err(io(dir))?;
        Ok(aside)
    }

    /// Moves `dir` aside, then removes it (a half-removed package is never
    /// left where the registry reads).
    fn discard(&self, dir: &Path) -> Result<(), PackageError> {
        let gone = self.dir.join("tmp").join(format!("gone-{}", uuid::Uuid::new_v4().simple()));
        std::fs::rename(dir, &gone).map_err(io(dir))?;
        std::fs::remove_dir_all(&gone).map_err(io(&gone))
    }

    /// Keeps a package that failed its signature check aside, with why.
    pub fn quarantine(&self, reference: &str, digest: &str, layer: &[u8], reason: &str) -> Result<PackageRecord, PackageError> {
        let _one = self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let record = PackageRecord { name: hex[..12.min(hex.len())].to_owned(), state: PackageState::Quarantined, reference: reference.to_owned(), digest: digest.to_owned(), signed_by: None, reason: Some(reason.to_owned()), at: chrono::Utc::now() };
        let tmp = self.dir.join("tmp").join(format!("q-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&tmp).map_err(io(&tmp))?;
        let write = || -> Result<(), PackageError> {
            std::fs::write(tmp.join("layer.tar.gz"), layer).map_err(io(&tmp))?;
            std::fs::write(tmp.join(RECORD_FILE), serde_json::to_vec_pretty(&record).unwrap_or_default()).map_err(io(&tmp))?;
            let target = self.dir.join("quarantine").join(hex);
            if target.exists() {
                self.discard(&target)?;
            }
            std::fs::rename(&tmp, &target).map_err(io(&target))
        };
        write().inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&tmp);
        })?;
        Ok(record)
    }

    /// Unpacks a verified package and installs it under its manifest's name
    /// once `check` (the registry with it loaded) accepts it; a package of
    /// that name already installed is replaced. Nothing changes on an error.
    pub fn install(
        &self,
        reference: &str,
        digest: &str,
        signed_by: &str,
        layer: &[u8],
        check: &dyn Fn(&PackageText) -> Result<(), PackageError>,
    ) -> Result<Installed, PackageError> {
        let _one = self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tmp = self.dir.join("tmp").join(format!("p-{}", uuid::Uuid::new_v4().simple()));
        let result = (|| {
            unpack(layer, &tmp)?;
            let path = tmp.join(MANIFEST_FILE);
            let text = std::fs::read_to_string(&path).map_err(|_| PackageError::Malformed(format!("it has no {MANIFEST_FILE} at its root")))?;
            let name = crate::registry::package_name(&text).ok_or_else(|| PackageError::Malformed(format!("its {MANIFEST_FILE} has no name:")))?;
            if !valid_name(&name) {
                return Err(PackageError::Malformed(format!("name {name:?} is not a module name (lower-case letters, digits, - and _, at most 64)")));
            }
            check(&PackageText { file: format!("packages/{name}/{MANIFEST_FILE}"), name: name.clone(), text, dir: tmp.clone(), digest: digest.to_owned() })?;
            let record = PackageRecord { name: name.clone(), state: PackageState::Installed, reference: reference.to_owned(), digest: digest.to_owned(), signed_by: Some(signed_by.to_owned()), reason: None, at: chrono::Utc::now() };
            std::fs::write(tmp.join(RECORD_FILE), serde_json::to_vec_pretty(&record).unwrap_or_default()).map_err(io(&tmp))?;
            let target = self.dir.join("installed").join(&name);
            let previous = if target.exists() { Some(self.aside(&target)?) } else { None };
            if let Err(e) = std::fs::rename(&tmp, &target) {
                if let Some(p) = &previous {
                    let _ = std::fs::rename(p, &target);
                }
                return Err(io(&target)(e));
            }
            Ok(Installed { record, path: target, previous })
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }
}

/// A package just installed: the version it replaced is kept aside until
/// the registry loads the new one.
#[derive(Debug)]
pub struct Installed {
    pub record: PackageRecord,
    path: PathBuf,
    previous: Option<PathBuf>,
}

/// A package taken out of the registry's reach (see [`PackageStore::take`]).
#[derive(Debug)]
pub struct Taken {
    pub record: PackageRecord,
    from: PathBuf,
    aside: PathBuf,
}

impl PackageStore {
    /// The install stands: the version it replaced is deleted.
    pub fn keep(&self, installed: Installed) -> PackageRecord {
        if let Some(p) = installed.previous {
            let _ = std::fs::remove_dir_all(p);
        }
        installed.record
    }

    /// The install is undone: the version it replaced (if any) is back.
    pub fn undo(&self, installed: Installed) -> Result<(), PackageError> {
        let _one = self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let gone = self.aside(&installed.path)?;
        let _ = std::fs::remove_dir_all(gone);
        if let Some(p) = installed.previous {
            std::fs::rename(&p, &installed.path).map_err(io(&installed.path))?;
        }
        Ok(())
    }
}

/// Unpacks a package layer into `dir` (created): regular files and
/// directories only, every path below `dir`, within the size and count bounds.
pub fn unpack(layer: &[u8], dir: &Path) -> Result<(), PackageError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let bad = |m: String| PackageError::Malformed(m);
    std::fs::DirBuilder::new().mode(0o755).create(dir).map_err(io(dir))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer));
    let (mut total, mut count) = (0u64, 0usize);
    for entry in archive.entries().map_err(|e| bad(format!("not a gzipped tarball: {e}")))? {
        let mut entry = entry.map_err(|e| bad(format!("not a gzipped tarball: {e}")))?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(bad(format!("it has more than {MAX_ENTRIES} entries")));
        }
        let raw = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let mut rel = PathBuf::new();
        for c in raw.components() {
            match c {
                Component::Normal(p) => rel.push(p),
                Component::CurDir => {}
                _ => return Err(bad(format!("entry {} leaves the package", raw.display()))),
            }
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dir.join(&rel);
        // parents are made here, never followed: only files and directories exist below `dir`
        if let Some(parent) = target.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o755).create(parent).map_err(io(parent))?;
        }
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                if !target.is_dir() {
                    std::fs::DirBuilder::new().mode(0o755).create(&target).map_err(io(&target))?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(|e| bad(e.to_string()))?;
                total = total.saturating_add(size);
                if total > MAX_UNPACKED_BYTES {
                    return Err(bad(format!("it unpacks to more than {MAX_UNPACKED_BYTES} bytes")));
                }
                let executable = entry.header().mode().map(|m| m & 0o111 != 0).unwrap_or(false);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if executable { 0o755 } else { 0o644 })
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(|e| bad(format!("entry {}: {e}", rel.display())))?;
                let copied = std::io::copy(&mut (&mut entry).take(size), &mut f).map_err(io(&target))?;
                if copied != size {
                    return Err(bad(format!("entry {} is cut short", rel.display())));
                }
            }
            other => return Err(bad(format!("entry {} is a {other:?}; a package holds regular files and directories only", rel.display()))),
        }
    }
    Ok(())
}

/// Where packages come from: an OCI store (its cache of fetched layers)
/// and the keys whose signatures are trusted.
pub struct PackageSource {
    pub oci: pinacle_oci::Store,
    pub keys: Vec<TrustedKey>,
}

impl std::fmt::Debug for PackageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageSource").field("keys", &self.keys).finish_non_exhaustive()
    }
}

/// The OCI tag cosign stores `digest`'s signature under.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// A fetched package whose signature a trusted key made.
#[derive(Debug)]
pub struct Verified {
    pub reference: String,
    pub digest: String,
    /// The id of the key that signed it.
    pub signed_by: String,
    pub layer: Vec<u8>,
}

/// Fetches `reference` and checks its signature against `keys`; a package
/// that fails the check is quarantined ([`PackageError::Quarantined`]).
pub async fn fetch_verified(store: &PackageStore, oci: &pinacle_oci::Store, reference: &str, creds: &pinacle_oci::Credentials, keys: &[TrustedKey]) -> Result<Verified, PackageError> {
    let parsed = pinacle_oci::Reference::parse(reference)?;
    let artifact = oci.fetch_artifact(&parsed, creds, LAYER_MEDIA_TYPE, MAX_PACKAGE_BYTES).await?;
    let digest = artifact.manifest_digest.to_string();
    let repository = format!("{}/{}", parsed.registry(), parsed.repository());
    let sig_ref = pinacle_oci::Reference::parse(&format!("{repository}:{}", signature_tag(&digest)))?;
    let claim = Claim { repository: &repository, digest: &digest };
    let verdict = match oci.fetch_artifact_layers(&sig_ref, creds, SIMPLESIGNING_MEDIA_TYPE, MAX_SIGNATURE_BYTES, MAX_SIGNATURES).await {
        // cosign adds a layer per signature: one a trusted key made is enough
        Ok(sigs) => {
            let mut first_refusal = None;
            let mut found = None;
            for sig in &sigs {
                let verdict = match sig.layer_annotations.get(SIGNATURE_ANNOTATION) {
                    Some(s) => verify_signature(&sig.layer, s, &claim, keys),
                    None => Err(format!("its signature layer has no {SIGNATURE_ANNOTATION} annotation")),
                };
                match verdict {
                    Ok(key) => {
                        found = Some(key);
                        break;
                    }
                    Err(why) => {
                        first_refusal.get_or_insert(why);
                    }
                }
            }
            found.ok_or_else(|| first_refusal.unwrap_or_else(|| "no signature".into()))
        }
        // no signature artifact, or one without a signed payload: unsigned
        Err(pinacle_oci::OciError::NotFound { .. } | pinacle_oci::OciError::BadImage { .. }) => Err(format!("it is unsigned: no signature at {sig_ref}")),
        Err(e) => return Err(e.into()),
    };
    match verdict {
        Ok(key) => Ok(Verified { reference: reference.to_owned(), digest, signed_by: key, layer: artifact.layer }),
        Err(reason) => {
            store.quarantine(reference, &digest, &artifact.layer, &reason)?;
            Err(PackageError::Quarantined { reference: reference.to_owned(), reason })
        }
    }
}

/// Bytes of a package layer: `files` (path, contents, executable) as a
/// gzipped tarball (tests and `pinacle router module pack`).
pub fn pack(files: &[(&str, &[u8], bool)]) -> Result<Vec<u8>, std::io::Error> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
    for (path, data, exec) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(if *exec { 0o755 } else { 0o644 });
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mtime(0);
        builder.append_data(&mut h, path, *data)?;
    }
    builder.into_inner()?.finish()
}

/// The payload cosign signs for `digest` in `repository`.
pub fn cosign_payload(repository: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {"identity": {"docker-reference": repository}, "image": {"docker-manifest-digest": digest}, "type": "cosign container image signature"},
        "optional": null
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use ring::signature::KeyPair as _;

    fn p256() -> (ring::signature::EcdsaKeyPair, TrustedKey) {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(&ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(pair.public_key().as_ref());
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", base64::engine::general_purpose::STANDARD.encode(&der));
        let key = TrustedKey::from_pem(&pem).unwrap().remove(0);
        (pair, key)
    }

    fn sign(pair: &ring::signature::EcdsaKeyPair, payload: &[u8]) -> String {
        let sig = pair.sign(&ring::rand::SystemRandom::new(), payload).unwrap();
        base64::engine::general_purpose::STANDARD.encode(sig.as_ref())
    }

    const REPO: &str = "127.0.0.1:5000/modules/redact";
    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn a_cosign_signature_by_a_trusted_key_for_this_package_verifies() {
        let (pair, key) = p256();
        let payload = cosign_payload(REPO, DIGEST);
        let claim = Claim { repository: REPO, digest: DIGEST };
        assert_eq!(verify_signature(&payload, &sign(&pair, &payload), &claim, std::slice::from_ref(&key)).unwrap(), key.id);
    }

    #[test]
    fn signatures_for_other_packages_keys_or_bytes_are_refused() {
        let (pair, key) = p256();
        let (other_pair, _) = p256();
        let payload = cosign_payload(REPO, DIGEST);
        let claim = Claim { repository: REPO, digest: DIGEST };
        let keys = std::slice::from_ref(&key);
        let e = verify_signature(&payload, &sign(&other_pair, &payload), &claim, keys).unwrap_err();
        assert!(e.contains("no trusted key"), "{e}");
        // a valid signature of another package's payload, replayed
        let other = cosign_payload(REPO, &DIGEST.replace('1', "2"));
        let e = verify_signature(&other, &sign(&pair, &other), &claim, keys).unwrap_err();
        assert!(e.contains("not this package"), "{e}");
        let moved = cosign_payload("127.0.0.1:5000/evil/redact", DIGEST);
        let e = verify_signature(&moved, &sign(&pair, &moved), &claim, keys).unwrap_err();
        assert!(e.contains("repository"), "{e}");
        // the payload changed after signing
        let mut tampered = payload.clone();
        tampered.push(b' ');
        assert!(verify_signature(&tampered, &sign(&pair, &payload), &claim, keys).is_err());
        assert!(verify_signature(&payload, "not base64!", &claim, keys).is_err());
        assert!(verify_signature(&payload, &sign(&pair, &payload), &claim, &[]).unwrap_err().contains("trusts no"));
    }

    #[test]
    fn ed25519_keys_verify_and_other_key_kinds_are_refused() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(pair.public_key().as_ref());
        let key = TrustedKey::from_spki_der(&der).unwrap();
        let payload = cosign_payload(REPO, DIGEST);
        let sig = base64::engine::general_purpose::STANDARD.encode(pair.sign(&payload).as_ref());
        verify_signature(&payload, &sig, &Claim { repository: REPO, digest: DIGEST }, &[key]).unwrap();
        assert!(TrustedKey::from_spki_der(&der[1..]).is_err());
        assert!(TrustedKey::from_pem("no key here").is_err());
    }

    #[test]
    fn unpacking_refuses_escapes_links_and_oversized_packages() {
        let dir = tempfile::tempdir().unwrap();
        let ok = pack(&[("agent.yml", b"name: x\n", false), ("bin/run", b"#!/bin/sh\n", true)]).unwrap();
        unpack(&ok, &dir.path().join("a")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.path().join("a/bin/run")).unwrap().permissions().mode() & 0o777, 0o755);
        // a hand-made tarball with `..` and a symlink
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "link", "/etc/passwd").unwrap();
        let links = b.into_inner().unwrap().finish().unwrap();
        assert!(matches!(unpack(&links, &dir.path().join("b")), Err(PackageError::Malformed(m)) if m.contains("regular files")));
        let mut raw = tar::Header::new_old();
        raw.as_old_mut().name[..9].copy_from_slice(b"../escape");
        raw.set_size(1);
        raw.set_entry_type(tar::EntryType::Regular);
        raw.set_cksum();
        let mut bytes = raw.as_bytes().to_vec();
        bytes.extend_from_slice(&[b'x'; 512]);
        bytes.extend_from_slice(&[0; 1024]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &bytes).unwrap();
        let escape = gz.finish().unwrap();
        assert!(matches!(unpack(&escape, &dir.path().join("c")), Err(PackageError::Malformed(m)) if m.contains("leaves")));
        assert!(!dir.path().join("escape").exists());
        assert!(unpack(b"not gzip", &dir.path().join("d")).is_err());
    }

    #[test]
    fn installs_replace_quarantine_keeps_aside_and_remove_finds_both() {
        let dir = tempfile::tempdir().unwrap();
        let store = PackageStore::open(dir.path().join("p")).unwrap();
        let layer = pack(&[("agent.yml", b"name: redact\nruntime: wasm\nsource: m.wat\n", false), ("m.wat", b"(module)", false)]).unwrap();
        let ok = |_: &PackageText| Ok(());
        let r = store.install("reg/x:1", DIGEST, "k1", &layer, &ok).unwrap();
        let r = store.keep(r);
        assert_eq!((r.name.as_str(), r.state), ("redact", PackageState::Installed));
        // a new version that is undone leaves the old one in place
        let v2 = store.install("reg/x:2", "sha256:33", "k1", &layer, &ok).unwrap();
        assert_eq!(store.installed_texts().unwrap()[0].digest, "sha256:33");
        store.undo(v2).unwrap();
        assert_eq!(store.installed_texts().unwrap()[0].digest, DIGEST);
        let texts = store.installed_texts().unwrap();
        assert_eq!(texts.len(), 1);
        assert!(texts[0].dir.join("m.wat").is_file());
        // a refused check changes nothing
        let refuse = |_: &PackageText| Err(PackageError::Malformed("no".into()));
        assert!(store.install("reg/x:2", "sha256:22", "k1", &layer, &refuse).is_err());
        assert_eq!(store.installed_texts().unwrap()[0].digest, DIGEST);
        assert_eq!(std::fs::read_dir(dir.path().join("p/tmp")).unwrap().count(), 0, "no leftovers");
        let q = store.quarantine("reg/y:1", "sha256:abcdef0123456789", &layer, "unsigned").unwrap();
        assert_eq!(q.name, "abcdef012345");
        let all = store.list().unwrap();
        assert_eq!(all.iter().map(|r| r.state).collect::<Vec<_>>(), [PackageState::Installed, PackageState::Quarantined]);
        assert_eq!(store.installed_texts().unwrap().len(), 1, "quarantined packages are never loaded");
        let q = store.take("abcdef012345").unwrap();
        store.finish(q);
        // a removal that is undone puts the package back
        let t = store.take("redact").unwrap();
        assert!(store.installed_texts().unwrap().is_empty());
        store.restore(t).unwrap();
        assert_eq!(store.installed_texts().unwrap().len(), 1);
        let t = store.take("redact").unwrap();
        store.finish(t);
        assert!(store.list().unwrap().is_empty());
        assert!(matches!(store.take("redact"), Err(PackageError::NotFound(_))));
        assert_eq!(std::fs::read_dir(dir.path().join("p/tmp")).unwrap().count(), 0, "nothing left aside");
    }
}
