//! Test harness: a real registry on loopback (Debian's `docker-registry`), test
//! images built here as OCI layouts (layers made with the `tar` crate), pushed
//! with Debian's `skopeo`. Self-contained so other crates' tests can copy it.
//!
//! ```ignore
//! let reg = Registry::start(None)?;                       // or Some(("user", "pass"))
//! let img = ImageSpec::new().layer(Layer::new().file("etc/hello", b"hi", 0o644));
//! reg.push(&img, "demo:v1")?;                              // 127.0.0.1:PORT/demo:v1
//! ```
#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::Digest as _;

/// A `docker-registry` process on 127.0.0.1, storing in a temp dir; killed on drop.
pub struct Registry {
    child: Child,
    /// The address it listens on (127.0.0.1, or one in a test's namespace).
    ip: String,
    port: u16,
    dir: tempfile::TempDir,
    creds: Option<(String, String)>,
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Registry {
    /// Starts a registry; with `auth`, it requires that user and password (htpasswd, bcrypt).
    pub fn start(auth: Option<(&str, &str)>) -> Result<Registry> {
        let dir = tempfile::tempdir()?;
        let mut auth_yaml = String::new();
        if let Some((user, pass)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .context("running htpasswd (apache2-utils)")?;
            if !out.status.success() {
                bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, &out.stdout)?;
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: pinacle-test\n    path: {}\n",
                path.display()
            );
        }
        Registry::start_in(dir, &auth_yaml, auth, None)
    }

    /// Starts an anonymous registry inside the network namespace `netns`,
    /// listening on `ip:5000` (an address of that namespace the host
    /// reaches, and pods through their egress).
    pub fn start_in_netns(netns: &str, ip: &str) -> Result<Registry> {
        let dir = tempfile::tempdir()?;
        Registry::start_in(dir, "", None, Some((netns, ip)))
    }

    /// Starts a registry with token (Bearer) auth: clients get tokens from
    /// `realm`, signed by the key of the PEM certificate `cert_pem` (the JWT
    /// carries it in `x5c`). `creds` are what skopeo pushes with.
    pub fn start_with_token_auth(
        realm: &str,
        service: &str,
        issuer: &str,
        cert_pem: &str,
        creds: (&str, &str),
    ) -> Result<Registry> {
        let dir = tempfile::tempdir()?;
        let bundle = dir.path().join("token-ca.pem");
        std::fs::write(&bundle, cert_pem)?;
        let auth_yaml = format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
            bundle.display()
        );
        Registry::start_in(dir, &auth_yaml, Some(creds), None)
    }

    fn start_in(
        dir: tempfile::TempDir,
        auth_yaml: &str,
        creds: Option<(&str, &str)>,
        netns: Option<(&str, &str)>,
    ) -> Result<Registry> {
        let (ip, port) = match netns {
            Some((_, ip)) => (ip.to_string(), 5000),
            None => ("127.0.0.1".to_string(), free_port()?),
        };
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {ip}:{port}\n",
            dir.path().join("data").display()
        );
        config.push_str(auth_yaml);
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let mut cmd = match netns {
            Some((ns, _)) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "docker-registry"]);
                c
            }
            None => Command::new("docker-registry"),
        };
        let child = cmd
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry")?;
        let mut reg = Registry {
            child,
            ip,
            port,
            dir,
            creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        // Up to 10 s for it to listen.
        for _ in 0..200 {
            if TcpStream::connect((reg.ip.as_str(), port)).is_ok() {
                return Ok(reg);
            }
            if let Some(status) = reg.child.try_wait()? {
                bail!("docker-registry exited ({status}): {}", reg.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "docker-registry did not listen on port {port}: {}",
            reg.log()
        )
    }

    /// `127.0.0.1:PORT`: the name to list as an insecure registry.
    pub fn host(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where the registry keeps a blob's bytes (for tampering tests).
    pub fn blob_data_path(&self, digest_hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&digest_hex[..2])
            .join(digest_hex)
            .join("data")
    }

    /// Builds `image` as an OCI layout and pushes it as `name:tag` with skopeo.
    /// Returns what was built (its manifest digest among others).
    pub fn push(&self, image: ImageSpec, name_tag: &str) -> Result<BuiltImage> {
        let layout = tempfile::tempdir()?;
        let built = image.write_layout(layout.path(), "t")?;
        self.push_layout(layout.path(), "t", name_tag)?;
        Ok(built)
    }

    /// Pushes a one-layer OCI artifact (a devcontainer feature: config
    /// `application/vnd.devcontainers`, layer `layer_media_type`) as
    /// `name:tag`, through the registry's HTTP API with curl. Returns the
    /// manifest's digest.
    pub fn push_artifact(&self, name: &str, tag: &str, layer: &[u8], layer_media_type: &str) -> Result<String> {
        self.push_artifact_with(name, tag, layer, layer_media_type, serde_json::json!({ "org.opencontainers.image.title": "devcontainer-feature.tgz" }))
    }

    /// [`Registry::push_artifact`] with the layer's `annotations` (a cosign
    /// signature's `dev.cosignproject.cosign/signature`, say).
    pub fn push_artifact_with(&self, name: &str, tag: &str, layer: &[u8], layer_media_type: &str, annotations: serde_json::Value) -> Result<String> {
        self.push_artifact_layers(name, tag, &[(layer, layer_media_type, annotations)])
    }

    /// An artifact of several layers, each with its media type and
    /// annotations (a cosign signature manifest has one per signature).
    pub fn push_artifact_layers(&self, name: &str, tag: &str, layers: &[(&[u8], &str, serde_json::Value)]) -> Result<String> {
        let config = b"{}".to_vec();
        let upload = |bytes: &[u8]| -> Result<String> {
            let digest = sha256(bytes);
            let dir = tempfile::tempdir()?;
            let file = dir.path().join("blob");
            std::fs::write(&file, bytes)?;
            let out = Command::new("curl")
                .args(["-sS", "-f", "-X", "POST", "-D", "-", "-o", "/dev/null"])
                .arg(format!("http://{}/v2/{name}/blobs/uploads/", self.host()))
                .output()?;
            if !out.status.success() {
                bail!("starting an upload: {}", String::from_utf8_lossy(&out.stderr));
            }
            let headers = String::from_utf8_lossy(&out.stdout).into_owned();
            let location = headers
                .lines()
                .find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: ")))
                .context("no Location in the upload answer")?
                .trim()
                .to_string();
            let location = if location.starts_with("http") { location } else { format!("http://{}{location}", self.host()) };
            let sep = if location.contains('?') { '&' } else { '?' };
            let out = Command::new("curl")
                .args(["-sS", "-f", "-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary"])
                .arg(format!("@{}", file.display()))
                .arg(format!("{location}{sep}digest={digest}"))
                .output()?;
            if !out.status.success() {
                bail!("uploading {digest}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(digest)
        };
        let config_digest = upload(&config)?;
        let mut descriptors = Vec::new();
        for (layer, media_type, annotations) in layers {
            let digest = upload(layer)?;
            descriptors.push(serde_json::json!({ "mediaType": media_type, "digest": digest, "size": layer.len(), "annotations": annotations }));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.devcontainers", "digest": config_digest, "size": config.len() },
            "layers": descriptors
        })
        .to_string();
        let out = Command::new("curl")
            .args(["-sS", "-f", "-X", "PUT", "-H", "Content-Type: application/vnd.oci.image.manifest.v1+json", "--data-binary", &manifest])
            .arg(format!("http://{}/v2/{name}/manifests/{tag}", self.host()))
            .output()?;
        if !out.status.success() {
            bail!("pushing the manifest of {name}:{tag}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(sha256(manifest.as_bytes()))
    }

    /// Pushes the OCI layout at `layout` (tag `tag`) as `name:tag` with skopeo.
    pub fn push_layout(&self, layout: &Path, tag: &str, name_tag: &str) -> Result<()> {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--multi-arch=all",
            "--dest-tls-verify=false",
        ]);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{name_tag}", self.host()));
        let out = cmd.output().context("running skopeo")?;
        if !out.status.success() {
            bail!(
                "skopeo copy failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A BusyBox image: the static busybox binary, a symlink per applet, and
/// `root` in /etc/passwd and /etc/group.
pub fn busybox_image() -> Result<ImageSpec> {
    let candidates = [PathBuf::from("/var/tmp/pinacle-test/images/busybox/rootfs/bin/busybox"), PathBuf::from("/bin/busybox")];
    let bin = candidates.iter().find(|p| p.is_file()).context("no static busybox (run scripts/setup.sh, or apt-get install busybox-static)")?;
    let bytes = std::fs::read(bin)?;
    let out = std::process::Command::new(bin).arg("--list").output()?;
    let mut layer = Layer::new()
        .dir("bin")
        .file("bin/busybox", &bytes, 0o755)
        .dir("etc")
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .file("etc/group", b"root:x:0:\n", 0o644)
        .dir("root")
        .dir("tmp");
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        if !applet.is_empty() && applet != "busybox" {
            layer = layer.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    Ok(ImageSpec::new().layer(layer))
}

/// One layer's tarball, built entry by entry (uid/gid 0, mtime 1_000_000).
#[derive(Default)]
pub struct Layer {
    builder: Option<tar::Builder<Vec<u8>>>,
    gzip: bool,
    zstd: bool,
    error: Option<String>,
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_000_000);
    h
}

impl Layer {
    /// An empty, gzip-compressed layer.
    pub fn new() -> Layer {
        Layer {
            builder: Some(tar::Builder::new(Vec::new())),
            gzip: true,
            zstd: false,
            error: None,
        }
    }

    /// Store it uncompressed instead.
    pub fn uncompressed(mut self) -> Layer {
        self.gzip = false;
        self
    }

    /// Compress it with zstd instead.
    pub fn zstd(mut self) -> Layer {
        self.gzip = false;
        self.zstd = true;
        self
    }

    fn add(mut self, f: impl FnOnce(&mut tar::Builder<Vec<u8>>) -> std::io::Result<()>) -> Layer {
        if let Some(b) = self.builder.as_mut() {
            if let Err(e) = f(b) {
                self.error.get_or_insert(e.to_string());
            }
        }
        self
    }

    /// A regular file.
    pub fn file(self, path: &str, data: &[u8], mode: u32) -> Layer {
        let data = data.to_vec();
        self.add(move |b| {
            let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
            b.append_data(&mut h, path, &data[..])
        })
    }

    /// A directory.
    pub fn dir(self, path: &str) -> Layer {
        self.add(|b| {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            b.append_data(&mut h, path, std::io::empty())
        })
    }

    /// A symlink `path -> target`.
    pub fn symlink(self, path: &str, target: &str) -> Layer {
        self.add(|b| {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, path, target)
        })
    }

    /// A hard link `path` to `target` (an archive path).
    pub fn hardlink(self, path: &str, target: &str) -> Layer {
        self.add(|b| {
            let mut h = header(tar::EntryType::Link, 0o644, 0);
            b.append_link(&mut h, path, target)
        })
    }

    /// A whiteout for `dir/name` (written as `dir/.wh.name`).
    pub fn whiteout(self, dir: &str, name: &str) -> Layer {
        let p = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&p, b"", 0o644)
    }

    /// An opaque marker for `dir`.
    pub fn opaque(self, dir: &str) -> Layer {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }

    /// A regular file whose name is written raw into the header (no checks):
    /// for hostile names such as `../escape` (at most 100 bytes).
    pub fn raw_file(self, name: &[u8], data: &[u8]) -> Layer {
        let name = name.to_vec();
        let data = data.to_vec();
        self.add(move |b| {
            let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
            let gnu = h
                .as_gnu_mut()
                .ok_or_else(|| std::io::Error::other("not a GNU header"))?;
            if name.len() > gnu.name.len() {
                return Err(std::io::Error::other("name too long"));
            }
            gnu.name = [0; 100];
            gnu.name[..name.len()].copy_from_slice(&name);
            h.set_cksum();
            b.append(&h, &data[..])
        })
    }

    /// (blob bytes, media type, diff id).
    fn finish(mut self) -> Result<(Vec<u8>, &'static str, String)> {
        if let Some(e) = self.error {
            bail!("building a layer: {e}");
        }
        let tar = self
            .builder
            .take()
            .context("layer already finished")?
            .into_inner()?;
        let diff_id = sha256(&tar);
        if self.zstd {
            let blob = ruzstd::encoding::compress_to_vec(
                &tar[..],
                ruzstd::encoding::CompressionLevel::Fastest,
            );
            Ok((blob, "application/vnd.oci.image.layer.v1.tar+zstd", diff_id))
        } else if self.gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&tar)?;
            Ok((
                gz.finish()?,
                "application/vnd.oci.image.layer.v1.tar+gzip",
                diff_id,
            ))
        } else {
            Ok((tar, "application/vnd.oci.image.layer.v1.tar", diff_id))
        }
    }
}

/// An image to build: layers bottom first plus a few config fields.
pub struct ImageSpec {
    layers: Vec<Layer>,
    env: Vec<String>,
    cmd: Vec<String>,
    architecture: String,
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageSpec {
    /// A linux/amd64 image with no layers yet, `Env` PATH and `Cmd` ["sh"].
    pub fn new() -> ImageSpec {
        ImageSpec {
            layers: Vec::new(),
            env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".to_string()],
            cmd: vec!["sh".to_string()],
            architecture: "amd64".to_string(),
        }
    }

    /// Adds a layer on top.
    pub fn layer(mut self, l: Layer) -> ImageSpec {
        self.layers.push(l);
        self
    }

    /// Adds an `Env` entry.
    pub fn env(mut self, e: &str) -> ImageSpec {
        self.env.push(e.to_string());
        self
    }

    /// Sets the config's architecture (default `amd64`).
    pub fn architecture(mut self, arch: &str) -> ImageSpec {
        self.architecture = arch.to_string();
        self
    }

    /// Writes an OCI image layout at `dir` whose `index.json` names the image `tag`.
    pub fn write_layout(self, dir: &Path, tag: &str) -> Result<BuiltImage> {
        let (built, size) = self.write_blobs(dir)?;
        write_index_json(
            dir,
            "application/vnd.oci.image.manifest.v1+json",
            &built.manifest_digest,
            size,
            tag,
        )?;
        Ok(built)
    }

    /// Writes the image's blobs (layers, config, manifest) into the layout at
    /// `dir`; returns the digests and the manifest's size.
    fn write_blobs(self, dir: &Path) -> Result<(BuiltImage, usize)> {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs)?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layer_digests = Vec::new();
        for l in self.layers {
            let (bytes, media_type, diff_id) = l.finish()?;
            let d = write_blob(&blobs, &bytes)?;
            layer_descs.push(
                serde_json::json!({"mediaType": media_type, "digest": d, "size": bytes.len()}),
            );
            diff_ids.push(diff_id);
            layer_digests.push(d);
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": self.architecture,
            "os": "linux",
            "config": {"Env": self.env, "Cmd": self.cmd, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))?;
        let config_digest = write_blob(&blobs, &config)?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layer_descs,
        }))?;
        let manifest_digest = write_blob(&blobs, &manifest)?;
        Ok((
            BuiltImage {
                manifest_digest,
                config_digest,
                layer_digests,
            },
            manifest.len(),
        ))
    }
}

/// Writes a multi-platform OCI layout at `dir`: one image per `(image, os,
/// architecture, variant)`, listed in an image index that `index.json` names `tag`.
/// Returns the index's digest and each image's digests, in order.
pub fn write_index_layout(
    dir: &Path,
    tag: &str,
    images: Vec<(ImageSpec, &str, &str, Option<&str>)>,
) -> Result<(String, Vec<BuiltImage>)> {
    let mut entries = Vec::new();
    let mut built = Vec::new();
    for (image, os, arch, variant) in images {
        let (b, size) = image.write_blobs(dir)?;
        let mut platform = serde_json::json!({"os": os, "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = serde_json::json!(v);
        }
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": b.manifest_digest,
            "size": size,
            "platform": platform,
        }));
        built.push(b);
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))?;
    let index_digest = write_blob(&dir.join("blobs/sha256"), &index)?;
    write_index_json(
        dir,
        "application/vnd.oci.image.index.v1+json",
        &index_digest,
        index.len(),
        tag,
    )?;
    Ok((index_digest, built))
}

fn write_index_json(
    dir: &Path,
    media_type: &str,
    digest: &str,
    size: usize,
    tag: &str,
) -> Result<()> {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}

/// Digests of a built image (`sha256:…`).
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> Result<String> {
    let d = sha256(bytes);
    std::fs::write(blobs.join(&d["sha256:".len()..]), bytes)?;
    Ok(d)
}

/// A request as the fake server saw it.
pub struct Request {
    /// Path and query.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// 1 for the first request with this path, 2 for the second, …
    pub nth: usize,
}

/// What to answer: status, body, extra headers, and optionally how many body
/// bytes to send before cutting the connection (`Content-Length` still
/// announces all of them).
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub cut_after: Option<usize>,
    pub headers: Vec<(String, String)>,
}

pub type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// A tiny HTTP/1.1 server on 127.0.0.1 answering each request with
/// `handler(request)`, one connection at a time, until dropped (60 s at most).
pub struct FakeServer {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(handler: std::sync::Arc<Handler>) -> Result<FakeServer> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut counts = std::collections::HashMap::new();
            for _ in 0..6000 {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = serve_one(conn, &*handler, &mut counts);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(FakeServer {
            port,
            stop,
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(
    mut conn: TcpStream,
    handler: &Handler,
    counts: &mut std::collections::HashMap<String, usize>,
) -> std::io::Result<()> {
    use std::io::Read;
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
        if conn.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let authorization = text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("authorization")
            .then(|| v.trim().to_string())
    });
    let nth = {
        let n = counts.entry(path.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let reply = handler(&Request {
        path,
        authorization,
        nth,
    });
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    conn.write_all(out.as_bytes())?;
    let n = reply
        .cut_after
        .unwrap_or(reply.body.len())
        .min(reply.body.len());
    conn.write_all(&reply.body[..n])?;
    conn.flush()
}

/// Collects a pull's progress reports.
#[derive(Default)]
pub struct Events(std::sync::Mutex<Vec<pinacle_oci::PullProgress>>);

impl Events {
    pub fn sink(&self) -> impl Fn(pinacle_oci::PullProgress) + Send + Sync + '_ {
        move |p| self.0.lock().unwrap_or_else(|e| e.into_inner()).push(p)
    }

    pub fn phases(&self) -> Vec<pinacle_oci::PullPhase> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|p| p.phase).collect()
    }
}
