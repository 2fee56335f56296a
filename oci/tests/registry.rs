//! Pulls from a real registry (Debian's docker-registry on loopback) holding
//! images these tests build and push with skopeo.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use common::{Events, ImageSpec, Layer, Registry};
use pinacle_oci::{Credentials, Digest, OciError, PullPhase, Reference, Store};

fn store_for(reg: &Registry, dir: &Path) -> Result<Store> {
    Ok(Store::new(dir.join("store"), vec![reg.host()])?)
}

fn reference(reg: &Registry, name_tag: &str) -> Result<Reference> {
    Ok(Reference::parse(&format!("{}/{name_tag}", reg.host()))?)
}


fn base_layer() -> Layer {
    Layer::new()
        .dir("etc")
        .file("etc/hello", b"hello from layer 1\n", 0o644)
        .dir("usr")
        .dir("usr/bin")
        .file("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755)
        .file("usr/bin/suid", b"x", 0o4755)
        .symlink("bin", "usr/bin")
        .dir("lib")
        .file("lib/gone", b"to be whited out", 0o644)
        .file("lib/kept", b"kept", 0o644)
        .dir("opq")
        .file("opq/old", b"old", 0o644)
        .dir("opq/olddir")
        .file("opq/olddir/deep", b"deep", 0o644)
}

fn top_layer() -> Layer {
    Layer::new()
        .uncompressed()
        .whiteout("lib", "gone")
        .opaque("opq")
        .file("opq/new", b"new", 0o644)
        .file("bin/added", b"through the symlink", 0o755)
        .hardlink("etc/hello-link", "etc/hello")
}

#[tokio::test]
async fn pull_unpacks_layers_with_whiteouts_and_second_pull_is_cached() -> Result<()> {
    let reg = Registry::start(None)?;
    let built = reg.push(
        ImageSpec::new()
            .env("GREETING=hi")
            .layer(base_layer())
            .layer(top_layer()),
        "demo/app:v1",
    )?;
    let tmp = tempfile::tempdir()?;
    let store = store_for(&reg, tmp.path())?;
    let r = reference(&reg, "demo/app:v1")?;

    let resolved = store.resolve(&r, &Credentials::Anonymous).await?;
    assert_eq!(resolved.as_str(), built.manifest_digest);

    let events = Events::default();
    let img = store
        .pull(&r, &Credentials::Anonymous, &events.sink())
        .await?;
    assert!(!img.cached);
    assert_eq!(img.info.manifest_digest, resolved);
    assert_eq!(
        img.info.pinned,
        format!("{}/demo/app@{}", reg.host(), resolved)
    );
    assert_eq!(img.info.references, vec![r.to_string()]);
    assert_eq!(img.info.layers.len(), 2);
    assert!(img.info.config.env.contains(&"GREETING=hi".to_string()));
    assert_eq!(img.info.config.cmd, Some(vec!["sh".to_string()]));
    let phases = events.phases();
    assert_eq!(phases.first(), Some(&PullPhase::Resolving));
    assert_eq!(phases.last(), Some(&PullPhase::Done));
    assert!(phases.contains(&PullPhase::Downloading));
    assert_eq!(
        phases
            .iter()
            .filter(|p| **p == PullPhase::Unpacking)
            .count(),
        2
    );

    let root = &img.rootfs;
    assert_eq!(
        std::fs::read(root.join("etc/hello"))?,
        b"hello from layer 1\n"
    );
    assert_eq!(std::fs::read_link(root.join("bin"))?, Path::new("usr/bin"));
    assert_eq!(
        std::fs::read(root.join("usr/bin/added"))?,
        b"through the symlink"
    );
    assert!(!root.join("lib/gone").exists(), "whiteout applied");
    assert!(root.join("lib/kept").exists());
    assert!(!root.join("lib/.wh.gone").exists());
    assert!(
        !root.join("opq/old").exists(),
        "opaque dir hides the lower layer"
    );
    assert!(!root.join("opq/olddir").exists());
    assert_eq!(std::fs::read(root.join("opq/new"))?, b"new");
    let suid = std::fs::metadata(root.join("usr/bin/suid"))?;
    assert_eq!(suid.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(suid.mtime(), 1_000_000);
    assert_eq!(
        std::fs::metadata(root.join("etc/hello-link"))?.ino(),
        std::fs::metadata(root.join("etc/hello"))?.ino()
    );
    assert!(img.dir.join("image.json").exists());
    assert!(
        img.info.disk_usage > 0 && img.info.disk_usage < 10 << 20,
        "{}",
        img.info.disk_usage
    );
    let listed = store.list().await?;
    assert_eq!(listed.len(), 1);

    // Second pull: the whole image is cached, nothing downloaded.
    let events2 = Events::default();
    let again = store
        .pull(&r, &Credentials::Anonymous, &events2.sink())
        .await?;
    assert!(again.cached);
    assert_eq!(again.info.manifest_digest, resolved);
    assert!(
        !events2.phases().contains(&PullPhase::Downloading),
        "{:?}",
        events2.phases()
    );

    // Image removed but blobs kept: every layer is a cache hit, none downloaded.
    assert!(store.remove(&resolved).await?);
    assert!(store.get(&resolved).await?.is_none());
    let events3 = Events::default();
    let third = store
        .pull(&r, &Credentials::Anonymous, &events3.sink())
        .await?;
    assert!(!third.cached);
    let phases3 = events3.phases();
    assert!(!phases3.contains(&PullPhase::Downloading), "{phases3:?}");
    assert_eq!(
        phases3.iter().filter(|p| **p == PullPhase::Cached).count(),
        2
    );
    assert_eq!(std::fs::read(third.rootfs.join("opq/new"))?, b"new");
    Ok(())
}

#[tokio::test]
async fn pinned_reference_keeps_the_first_image_after_a_retag() -> Result<()> {
    let reg = Registry::start(None)?;
    let first = reg.push(
        ImageSpec::new().layer(Layer::new().file("version", b"1", 0o644)),
        "pin/me:latest",
    )?;
    let tmp = tempfile::tempdir()?;
    let store = store_for(&reg, tmp.path())?;
    let tag = reference(&reg, "pin/me:latest")?;
    let img1 = store.pull(&tag, &Credentials::Anonymous, &|_| {}).await?;
    assert_eq!(img1.info.manifest_digest.as_str(), first.manifest_digest);
    let pinned = Reference::parse(&img1.info.pinned)?;

    let second = reg.push(
        ImageSpec::new().layer(Layer::new().file("version", b"2", 0o644)),
        "pin/me:latest",
    )?;
    assert_ne!(first.manifest_digest, second.manifest_digest);
    assert_eq!(
        store.resolve(&tag, &Credentials::Anonymous).await?.as_str(),
        second.manifest_digest
    );

    // A fresh store must fetch the pinned image from the registry by digest.
    let tmp2 = tempfile::tempdir()?;
    let store2 = store_for(&reg, tmp2.path())?;
    let again = store2
        .pull(&pinned, &Credentials::Anonymous, &|_| {})
        .await?;
    assert_eq!(again.info.manifest_digest.as_str(), first.manifest_digest);
    assert_eq!(std::fs::read(again.rootfs.join("version"))?, b"1");
    // While the tag now gives the second image.
    let moved = store2.pull(&tag, &Credentials::Anonymous, &|_| {}).await?;
    assert_eq!(std::fs::read(moved.rootfs.join("version"))?, b"2");
    assert_eq!(store2.list().await?.len(), 2);

    // With the registry gone, the pinned image still comes from the store.
    drop(reg);
    let offline = store2
        .pull(&pinned, &Credentials::Anonymous, &|_| {})
        .await?;
    assert!(offline.cached);
    assert_eq!(std::fs::read(offline.rootfs.join("version"))?, b"1");
    let e = store2
        .pull(&tag, &Credentials::Anonymous, &|_| {})
        .await
        .err()
        .context("a tag resolved without its registry")?;
    assert!(matches!(e, OciError::Unreachable { .. }), "{e:?}");
    Ok(())
}

#[tokio::test]
async fn basic_auth_refused_and_accepted() -> Result<()> {
    let reg = Registry::start(Some(("alice", "s3cret")))?;
    reg.push(
        ImageSpec::new().layer(Layer::new().file("private", b"p", 0o600)),
        "team/private:v1",
    )?;
    let tmp = tempfile::tempdir()?;
    let store = store_for(&reg, tmp.path())?;
    let r = reference(&reg, "team/private:v1")?;
    let wrong = Credentials::Basic {
        username: "alice".into(),
        password: "wrong".into(),
    };
    let e = store
        .pull(&r, &wrong, &|_| {})
        .await
        .err()
        .context("wrong password accepted")?;
    assert!(matches!(e, OciError::AuthRefused { .. }), "{e:?}");
    assert!(e.to_string().contains("team/private"), "{e}");
    let e = store
        .pull(&r, &Credentials::Anonymous, &|_| {})
        .await
        .err()
        .context("anonymous pull accepted")?;
    assert!(matches!(e, OciError::AuthRefused { .. }), "{e:?}");
    assert!(store.list().await?.is_empty());

    let right = Credentials::Basic {
        username: "alice".into(),
        password: "s3cret".into(),
    };
    let img = store.pull(&r, &right, &|_| {}).await?;
    assert_eq!(std::fs::read(img.rootfs.join("private"))?, b"p");

    // Credentials are never remembered between calls: a tag goes to the
    // registry with the caller's own credentials every time.
    let e = store
        .pull(&r, &wrong, &|_| {})
        .await
        .err()
        .context("stale credentials reused")?;
    assert!(matches!(e, OciError::AuthRefused { .. }), "{e:?}");
    let e = store
        .resolve(&r, &Credentials::Anonymous)
        .await
        .err()
        .context("anonymous resolve accepted")?;
    assert!(matches!(e, OciError::AuthRefused { .. }), "{e:?}");
    Ok(())
}

#[tokio::test]
async fn two_stores_on_one_directory_pull_the_same_image_at_once() -> Result<()> {
    let reg = Registry::start(None)?;
    reg.push(
        ImageSpec::new()
            .layer(base_layer())
            .layer(Layer::new().file("big", &[3u8; 1 << 20], 0o644)),
        "race:v1",
    )?;
    let tmp = tempfile::tempdir()?;
    // Two stores model two processes: no shared in-process state.
    let a = store_for(&reg, tmp.path())?;
    let b = store_for(&reg, tmp.path())?;
    let r = reference(&reg, "race:v1")?;
    let (x, y) = tokio::join!(
        a.pull(&r, &Credentials::Anonymous, &|_| {}),
        b.pull(&r, &Credentials::Anonymous, &|_| {})
    );
    let (x, y) = (x?, y?);
    assert_eq!(x.info.manifest_digest, y.info.manifest_digest);
    assert_eq!(std::fs::read(x.rootfs.join("big"))?, vec![3u8; 1 << 20]);
    assert!(x.info.disk_usage >= 1 << 20, "{}", x.info.disk_usage);
    assert_eq!(
        std::fs::read(y.rootfs.join("etc/hello"))?,
        b"hello from layer 1\n"
    );
    let names: Vec<String> = std::fs::read_dir(a.dir().join("images"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    assert_eq!(
        names,
        vec![format!("sha256-{}", x.info.manifest_digest.hex())]
    );
    assert_eq!(std::fs::read_dir(a.dir().join("blobs/tmp"))?.count(), 0);
    Ok(())
}

#[tokio::test]
async fn missing_tag_or_repository_is_not_found_and_closed_port_is_unreachable() -> Result<()> {
    let reg = Registry::start(None)?;
    reg.push(
        ImageSpec::new().layer(Layer::new().file("f", b"f", 0o644)),
        "here:v1",
    )?;
    let tmp = tempfile::tempdir()?;
    let store = store_for(&reg, tmp.path())?;
    for name in ["here:nope", "nowhere:v1"] {
        let e = store
            .pull(&reference(&reg, name)?, &Credentials::Anonymous, &|_| {})
            .await
            .err()
            .context("missing image pulled")?;
        assert!(matches!(e, OciError::NotFound { .. }), "{name}: {e:?}");
    }
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let host = format!("127.0.0.1:{port}");
    let closed = Store::new(tmp.path().join("closed"), vec![host.clone()])?;
    let e = closed
        .pull(
            &Reference::parse(&format!("{host}/x:v1"))?,
            &Credentials::Anonymous,
            &|_| {},
        )
        .await
        .err()
        .context("pulled from a closed port")?;
    assert!(matches!(e, OciError::Unreachable { .. }), "{e:?}");
    Ok(())
}

#[tokio::test]
async fn tampered_blob_is_a_digest_mismatch_and_installs_nothing() -> Result<()> {
    let reg = Registry::start(None)?;
    let built = reg.push(
        ImageSpec::new().layer(
            Layer::new()
                .uncompressed()
                .file("data", &[7u8; 4096], 0o644),
        ),
        "tamper:v1",
    )?;
    let layer = &built.layer_digests[0];
    let on_disk = reg.blob_data_path(&layer["sha256:".len()..]);
    let mut bytes = std::fs::read(&on_disk)?;
    let n = bytes.len();
    bytes[n / 2] ^= 0xff; // same size, different content
    std::fs::write(&on_disk, &bytes)?;

    let tmp = tempfile::tempdir()?;
    let store = store_for(&reg, tmp.path())?;
    let e = store
        .pull(
            &reference(&reg, "tamper:v1")?,
            &Credentials::Anonymous,
            &|_| {},
        )
        .await
        .err()
        .context("tampered image pulled")?;
    match &e {
        OciError::DigestMismatch { expected, .. } => assert_eq!(expected.as_str(), layer),
        other => anyhow::bail!("expected a digest mismatch, got {other:?}"),
    }
    assert!(store.list().await?.is_empty());
    let layer_digest: Digest = layer.parse()?;
    assert!(!store.blob_path(&layer_digest).exists());
    assert_eq!(std::fs::read_dir(store.dir().join("blobs/tmp"))?.count(), 0);
    assert_eq!(std::fs::read_dir(store.dir().join("images"))?.count(), 0);
    Ok(())
}

#[tokio::test]
async fn hostile_layers_are_refused_or_contained() -> Result<()> {
    let reg = Registry::start(None)?;
    let tmp = tempfile::tempdir()?;
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside)?;
    std::fs::write(outside.join("victim"), b"untouched")?;
    let outside_str = outside.to_str().context("utf-8 temp path")?;

    reg.push(
        ImageSpec::new().layer(
            Layer::new()
                .file("ok", b"ok", 0o644)
                .raw_file(b"../escape", b"x"),
        ),
        "evil/dotdot:v1",
    )?;
    reg.push(
        ImageSpec::new()
            .layer(
                Layer::new()
                    .symlink("link", outside_str)
                    .symlink("up", "../../../../../../../..")
                    .file("link/planted", b"x", 0o644)
                    .file("up/tmp/planted-up", b"x", 0o644),
            )
            .layer(Layer::new().whiteout("link", "victim").file(
                "link/victim",
                b"overwritten?",
                0o644,
            )),
        "evil/symlink:v1",
    )?;
    reg.push(
        ImageSpec::new().layer(Layer::new().hardlink("stolen", &format!("{outside_str}/victim"))),
        "evil/hardlink:v1",
    )?;

    let store = store_for(&reg, tmp.path())?;
    let e = store
        .pull(
            &reference(&reg, "evil/dotdot:v1")?,
            &Credentials::Anonymous,
            &|_| {},
        )
        .await
        .err()
        .context("`..` layer accepted")?;
    assert!(matches!(e, OciError::UnsafeLayer { .. }), "{e:?}");
    assert!(!tmp.path().join("store/images/escape").exists());
    assert!(store.list().await?.is_empty());
    assert_eq!(
        std::fs::read_dir(store.dir().join("images"))?.count(),
        0,
        "scratch removed"
    );

    let img = store
        .pull(
            &reference(&reg, "evil/symlink:v1")?,
            &Credentials::Anonymous,
            &|_| {},
        )
        .await?;
    assert_eq!(std::fs::read(outside.join("victim"))?, b"untouched");
    assert!(!outside.join("planted").exists());
    assert!(!Path::new("/tmp/planted-up").exists());
    let inside = img.rootfs.join(outside.strip_prefix("/")?);
    assert!(inside.join("planted").exists(), "contained in the rootfs");
    assert_eq!(std::fs::read(inside.join("victim"))?, b"overwritten?");
    assert!(img.rootfs.join("tmp/planted-up").exists());

    let e = store
        .pull(
            &reference(&reg, "evil/hardlink:v1")?,
            &Credentials::Anonymous,
            &|_| {},
        )
        .await
        .err()
        .context("hard link to the host accepted")?;
    assert!(matches!(e, OciError::UnsafeLayer { .. }), "{e:?}");
    assert_eq!(std::fs::metadata(outside.join("victim"))?.nlink(), 1);
    Ok(())
}

#[tokio::test]
async fn gc_removes_unkept_images_and_unreferenced_blobs() -> Result<()> {
    let reg = Registry::start(None)?;
    let shared = || Layer::new().file("shared", &[1u8; 10_000], 0o644);
    let a = reg.push(
        ImageSpec::new()
            .layer(shared())
            .layer(Layer::new().file("a", b"a", 0o644)),
        "gc/a:v1",
    )?;
    let b = reg.push(
        ImageSpec::new()
            .env("B=1")
            .layer(shared())
            .layer(Layer::new().file("b", b"b", 0o644)),
        "gc/b:v1",
    )?;
    assert_eq!(
        a.layer_digests[0], b.layer_digests[0],
        "the base layer is shared"
    );
    let tmp = tempfile::tempdir()?;
    let store = store_for(&reg, tmp.path())?;
    let ia = store
        .pull(
            &reference(&reg, "gc/a:v1")?,
            &Credentials::Anonymous,
            &|_| {},
        )
        .await?;
    let ib = store
        .pull(
            &reference(&reg, "gc/b:v1")?,
            &Credentials::Anonymous,
            &|_| {},
        )
        .await?;

    // Concurrent pulls of one image agree and leave one copy.
    let rc = reference(&reg, "gc/a:v1")?;
    let (x, y) = tokio::join!(
        store.pull(&rc, &Credentials::Anonymous, &|_| {}),
        store.pull(&rc, &Credentials::Anonymous, &|_| {})
    );
    assert_eq!(x?.info.manifest_digest, y?.info.manifest_digest);

    let report = store
        .gc(std::slice::from_ref(&ia.info.manifest_digest))
        .await?;
    assert_eq!(report.removed_images, vec![ib.info.manifest_digest.clone()]);
    let removed: Vec<String> = report.removed_blobs.iter().map(|d| d.to_string()).collect();
    assert!(removed.contains(&b.layer_digests[1]));
    assert!(removed.contains(&b.config_digest));
    assert!(!removed.contains(&a.layer_digests[0]), "shared layer kept");
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(report.freed_bytes > 0);
    assert!(store.get(&ia.info.manifest_digest).await?.is_some());
    assert!(store.get(&ib.info.manifest_digest).await?.is_none());
    assert!(ia.rootfs.join("shared").exists());

    let all = store.gc(&[]).await?;
    assert_eq!(all.removed_images.len(), 1);
    assert_eq!(all.removed_blobs.len(), 3);
    assert_eq!(
        std::fs::read_dir(store.dir().join("blobs/sha256"))?.count(),
        0
    );
    assert!(store.list().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn an_index_resolves_to_its_linux_amd64_image_or_says_what_it_offers() -> Result<()> {
    let reg = Registry::start(None)?;
    let layout = tempfile::tempdir()?;
    let (index_digest, built) = common::write_index_layout(
        layout.path(),
        "multi",
        vec![
            (
                ImageSpec::new()
                    .architecture("arm64")
                    .layer(Layer::new().file("arch", b"arm64", 0o644)),
                "linux",
                "arm64",
                Some("v8"),
            ),
            (
                ImageSpec::new().layer(Layer::new().file("arch", b"amd64", 0o644)),
                "linux",
                "amd64",
                None,
            ),
        ],
    )?;
    reg.push_layout(layout.path(), "multi", "multi:v1")?;
    let arm_only = tempfile::tempdir()?;
    common::write_index_layout(
        arm_only.path(),
        "arm",
        vec![
            (
                ImageSpec::new()
                    .architecture("arm64")
                    .layer(Layer::new().file("arch", b"arm64", 0o644)),
                "linux",
                "arm64",
                Some("v8"),
            ),
            (
                ImageSpec::new()
                    .architecture("s390x")
                    .layer(Layer::new().file("arch", b"s390x", 0o644)),
                "linux",
                "s390x",
                None,
            ),
        ],
    )?;
    reg.push_layout(arm_only.path(), "arm", "armonly:v1")?;

    let tmp = tempfile::tempdir()?;
    let store = store_for(&reg, tmp.path())?;
    let multi = reference(&reg, "multi:v1")?;
    let amd64 = &built[1].manifest_digest;
    assert_eq!(
        store
            .resolve(&multi, &Credentials::Anonymous)
            .await?
            .as_str(),
        amd64
    );
    let img = store.pull(&multi, &Credentials::Anonymous, &|_| {}).await?;
    assert_eq!(img.info.manifest_digest.as_str(), amd64);
    assert_eq!(std::fs::read(img.rootfs.join("arch"))?, b"amd64");
    assert!(img.info.pinned.ends_with(amd64.as_str()));
    // The index's own digest also works as a pin and gives the same image.
    let by_index = Reference::parse(&format!("{}/multi@{index_digest}", reg.host()))?;
    let again = store
        .pull(&by_index, &Credentials::Anonymous, &|_| {})
        .await?;
    assert!(again.cached);
    assert_eq!(again.info.manifest_digest.as_str(), amd64);

    let e = store
        .pull(
            &reference(&reg, "armonly:v1")?,
            &Credentials::Anonymous,
            &|_| {},
        )
        .await
        .err()
        .context("an image without linux/amd64 pulled")?;
    match &e {
        OciError::UnsupportedPlatform { available, .. } => {
            assert_eq!(
                available,
                &vec!["linux/arm64/v8".to_string(), "linux/s390x".to_string()]
            )
        }
        other => anyhow::bail!("expected UnsupportedPlatform, got {other:?}"),
    }
    assert!(e.to_string().contains("linux/arm64/v8"), "{e}");
    Ok(())
}

#[tokio::test]
async fn zstd_layers_pull_like_gzip_ones() -> Result<()> {
    let reg = Registry::start(None)?;
    reg.push(
        ImageSpec::new()
            .layer(Layer::new().dir("etc").file("etc/os", b"base", 0o644))
            .layer(Layer::new().zstd().whiteout("etc", "os").file(
                "etc/zstd",
                &[42u8; 100_000],
                0o600,
            )),
        "zstd:v1",
    )?;
    let tmp = tempfile::tempdir()?;
    let store = store_for(&reg, tmp.path())?;
    let img = store
        .pull(
            &reference(&reg, "zstd:v1")?,
            &Credentials::Anonymous,
            &|_| {},
        )
        .await?;
    assert!(!img.rootfs.join("etc/os").exists());
    assert_eq!(
        std::fs::read(img.rootfs.join("etc/zstd"))?,
        vec![42u8; 100_000]
    );
    Ok(())
}
