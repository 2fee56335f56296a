//! Registry behaviours a real docker-registry will not produce on demand
//! (server errors, rate limits, a connection cut mid-blob), from a tiny HTTP
//! server on loopback that answers with canned responses.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use common::{FakeServer, Reply};
use pinacle_oci::{Credentials, Digest, OciError, Reference, Store};

fn ok(body: Vec<u8>) -> Reply {
    Reply {
        status: 200,
        body,
        cut_after: None,
        headers: Vec::new(),
    }
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_registry_errors_with_their_message() -> Result<()> {
    let server = FakeServer::start(Arc::new(|req: &common::Request| {
        let path = req.path.as_str();
        if path.contains("/manifests/") && path.contains("broken") {
            Reply {
                status: 500,
                body: b"storage backend exploded".to_vec(),
                cut_after: None,
                headers: Vec::new(),
            }
        } else if path.contains("/manifests/") {
            Reply {
                status: 429,
                body: br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit reached"}]}"#
                    .to_vec(),
                cut_after: None,
                headers: Vec::new(),
            }
        } else {
            ok(b"{}".to_vec())
        }
    }))?;
    let tmp = tempfile::tempdir()?;
    let store = Store::new(tmp.path().join("store"), vec![server.host()])?;
    for (name, says) in [
        ("broken:v1", "storage backend exploded"),
        ("limited:v1", "pull rate limit reached"),
    ] {
        let r = Reference::parse(&format!("{}/{name}", server.host()))?;
        let e = store
            .pull(&r, &Credentials::Anonymous, &|_| {})
            .await
            .err()
            .context("pulled from a failing registry")?;
        match &e {
            OciError::Registry { message, .. } => assert!(message.contains(says), "{e}"),
            other => anyhow::bail!("{name}: expected a registry error, got {other:?}"),
        }
        assert!(
            e.to_string()
                .contains(name.split(':').next().unwrap_or(name)),
            "{e}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_blob_download_cut_short_is_retried() -> Result<()> {
    // A one-layer image served by hand.
    let layer = {
        let mut b = tar::Builder::new(Vec::new());
        let data = vec![9u8; 200_000];
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        b.append_data(&mut h, "payload", &data[..])?;
        b.into_inner()?
    };
    let config = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]}}"#.to_vec();
    let ld = Digest::of(&layer);
    let cd = Digest::of(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}],
    }))?;
    let md = Digest::of(&manifest);
    let layer_requests = Arc::new(AtomicUsize::new(0));
    let seen = layer_requests.clone();
    let (l, c, m, lh, ch) = (
        layer.clone(),
        config.clone(),
        manifest.clone(),
        ld.hex().to_string(),
        cd.hex().to_string(),
    );
    let server = FakeServer::start(Arc::new(move |req: &common::Request| {
        let (path, nth) = (req.path.as_str(), req.nth);
        if path.contains("/manifests/") {
            ok(m.clone())
        } else if path.ends_with(&ch) {
            ok(c.clone())
        } else if path.ends_with(&lh) {
            seen.fetch_add(1, Ordering::Relaxed);
            Reply {
                status: 200,
                body: l.clone(),
                // The first two tries are cut in the middle.
                cut_after: (nth <= 2).then_some(l.len() / 2),
                headers: Vec::new(),
            }
        } else {
            ok(b"{}".to_vec())
        }
    }))?;
    let tmp = tempfile::tempdir()?;
    let store = Store::new(tmp.path().join("store"), vec![server.host()])?;
    let r = Reference::parse(&format!("{}/flaky:v1", server.host()))?;
    let img = store.pull(&r, &Credentials::Anonymous, &|_| {}).await?;
    assert_eq!(img.info.manifest_digest, md);
    assert_eq!(
        std::fs::read(img.rootfs.join("payload"))?,
        vec![9u8; 200_000]
    );
    assert_eq!(layer_requests.load(Ordering::Relaxed), 3);
    assert_eq!(std::fs::read_dir(store.dir().join("blobs/tmp"))?.count(), 0);
    Ok(())
}
