//! `Store::import_layout`: OCI image layouts on this host (what `buildah push
//! oci:DIR` writes) installed exactly as pulls are. The layouts are written by
//! the test harness.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use anyhow::Result;
use common::{write_index_layout, Events, ImageSpec, Layer};
use pinacle_oci::{Credentials, Digest, OciError, PullPhase, Reference, Store};

fn image() -> ImageSpec {
    ImageSpec::new()
        .env("GREETING=hi")
        .layer(
            Layer::new()
                .dir("etc")
                .file("etc/hello", b"hello\n", 0o644)
                .file("etc/gone", b"x", 0o644)
                .dir("bin")
                .file("bin/tool", b"#!/bin/sh\n", 0o4755),
        )
        .layer(
            Layer::new()
                .uncompressed()
                .whiteout("etc", "gone")
                .file("etc/top", b"top\n", 0o600),
        )
}

/// Names under `dir` (files and directories), sorted; empty when it is missing.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}


#[tokio::test]
async fn an_imported_layout_is_an_image_like_a_pulled_one() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir()?;
    let layout = tmp.path().join("layout");
    let built = image().write_layout(&layout, "built")?;
    // No registry is insecure and none is running: nothing may go to a network.
    let store = Store::new(tmp.path().join("store"), vec![])?;
    let events = Events::default();
    let img = store
        .import_layout(
            &layout,
            "built",
            "localhost/pinacle/demo:latest",
            &events.sink(),
        )
        .await?;
    assert!(!img.cached);
    assert_eq!(img.info.manifest_digest.to_string(), built.manifest_digest);
    assert_eq!(img.info.config_digest.to_string(), built.config_digest);
    assert_eq!(
        img.info.pinned,
        format!("localhost/pinacle/demo@{}", built.manifest_digest)
    );
    assert_eq!(img.info.references, vec!["localhost/pinacle/demo:latest"]);
    assert!(img.info.config.env.contains(&"GREETING=hi".to_string()));
    assert_eq!(
        std::fs::read_to_string(img.rootfs.join("etc/hello"))?,
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(img.rootfs.join("etc/top"))?,
        "top\n"
    );
    assert!(!img.rootfs.join("etc/gone").exists(), "whiteout applied");
    let mode = std::fs::metadata(img.rootfs.join("bin/tool"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o4755);
    let phases = events.phases();
    assert_eq!(phases.first(), Some(&PullPhase::Resolving));
    assert_eq!(phases.last(), Some(&PullPhase::Done));
    assert!(phases.contains(&PullPhase::Unpacking));
    // The blobs are in the store, verified, under their digests.
    for d in built.layer_digests.iter().chain([&built.config_digest]) {
        let d: Digest = d.parse()?;
        assert!(store.blob_path(&d).is_file(), "{d}");
    }

    // A pull of the pinned reference finds it without any network.
    let pinned = Reference::parse(&img.info.pinned)?;
    let again = store
        .pull(&pinned, &Credentials::Anonymous, &|_| {})
        .await?;
    assert!(again.cached);
    assert_eq!(again.dir, img.dir);

    // find() resolves the name and the pinned reference offline.
    let found = store
        .find(&Reference::parse("localhost/pinacle/demo:latest")?)
        .await?
        .expect("found by name");
    assert_eq!(found.dir, img.dir);
    assert!(store.find(&pinned).await?.is_some());
    assert!(store
        .find(&Reference::parse("localhost/pinacle/demo:other")?)
        .await?
        .is_none());

    // Importing again is a cache hit that records a second name.
    let second = store
        .import_layout(&layout, "built", "localhost/pinacle/other", &|_| {})
        .await?;
    assert!(second.cached);
    assert!(second
        .info
        .references
        .contains(&"localhost/pinacle/other:latest".to_string()));

    // list sees it; gc without it removes the image and its blobs.
    let listed = store.list().await?;
    assert_eq!(listed.len(), 1);
    let report = store.gc(&[]).await?;
    assert_eq!(
        report.removed_images,
        vec![img.info.manifest_digest.clone()]
    );
    assert_eq!(report.removed_blobs.len(), built.layer_digests.len() + 1);
    assert!(store.list().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_tampered_blob_leaves_nothing() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let layout = tmp.path().join("layout");
    let built = image().write_layout(&layout, "t")?;
    // Same size, other bytes.
    let victim = layout
        .join("blobs/sha256")
        .join(&built.layer_digests[1]["sha256:".len()..]);
    let mut bytes = std::fs::read(&victim)?;
    bytes[0] ^= 0xff;
    std::fs::write(&victim, bytes)?;
    let store = Store::new(tmp.path().join("store"), vec![])?;
    let err = store
        .import_layout(&layout, "t", "localhost/pinacle/bad", &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OciError::DigestMismatch { expected, .. } if expected.to_string() == built.layer_digests[1]),
        "{err:?}"
    );
    assert!(store.list().await?.is_empty());
    assert_eq!(names(&store.dir().join("images")), Vec::<String>::new());
    assert_eq!(names(&store.dir().join("blobs/tmp")), Vec::<String>::new());
    assert!(!store
        .blob_path(&built.layer_digests[1].parse::<Digest>()?)
        .exists());
    Ok(())
}

#[tokio::test]
async fn a_missing_tag_or_layout_is_a_clear_error() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let layout = tmp.path().join("layout");
    image().write_layout(&layout, "t")?;
    let store = Store::new(tmp.path().join("store"), vec![])?;
    let err = store
        .import_layout(&layout, "nope", "localhost/pinacle/x", &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");
    let err = store
        .import_layout(
            &tmp.path().join("absent"),
            "t",
            "localhost/pinacle/x",
            &|_| {},
        )
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::Io { .. }), "{err:?}");
    let err = store
        .import_layout(&layout, "t", "Not A Name", &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::InvalidReference(_)), "{err:?}");
    assert!(store.list().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn an_index_gives_its_linux_amd64_image() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let layout = tmp.path().join("layout");
    let arm = ImageSpec::new()
        .architecture("arm64")
        .layer(Layer::new().file("which", b"arm64", 0o644));
    let amd = ImageSpec::new().layer(Layer::new().file("which", b"amd64", 0o644));
    let (_, built) = write_index_layout(
        &layout,
        "multi",
        vec![
            (arm, "linux", "arm64", Some("v8")),
            (amd, "linux", "amd64", None),
        ],
    )?;
    let store = Store::new(tmp.path().join("store"), vec![])?;
    let img = store
        .import_layout(&layout, "multi", "localhost/pinacle/multi:v1", &|_| {})
        .await?;
    assert_eq!(
        img.info.manifest_digest.to_string(),
        built[1].manifest_digest
    );
    assert_eq!(std::fs::read_to_string(img.rootfs.join("which"))?, "amd64");
    Ok(())
}
