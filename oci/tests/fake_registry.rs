//! Registry behaviours a real docker-registry will not produce on demand
//! (server errors, rate limits, a connection cut mid-blob), from a tiny HTTP
//! server on loopback that answers with canned responses.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use pinacle_oci::{Credentials, Digest, OciError, Reference, Store};

/// What to answer: status, body, and optionally how many body bytes to send
/// before cutting the connection (the `Content-Length` still announces all).
struct Reply {
    status: u16,
    body: Vec<u8>,
    cut_after: Option<usize>,
}

type Handler = dyn Fn(&str, usize) -> Reply + Send + Sync;

/// Serves `handler(path, nth request for that path)` until dropped.
struct FakeServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    fn start(handler: Arc<Handler>) -> Result<FakeServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let counts: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>> =
            Arc::default();
        let thread = std::thread::spawn(move || {
            // At most 60 s of serving, whatever happens.
            for _ in 0..6000 {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = serve(conn, &*handler, &counts);
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

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut conn: TcpStream,
    handler: &Handler,
    counts: &std::sync::Mutex<std::collections::HashMap<String, usize>>,
) -> std::io::Result<()> {
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
    let nth = {
        let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = c.entry(path.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let reply = handler(&path, nth);
    let reason = if reply.status == 200 { "OK" } else { "Error" };
    write!(
        conn,
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.body.len()
    )?;
    let n = reply
        .cut_after
        .unwrap_or(reply.body.len())
        .min(reply.body.len());
    conn.write_all(&reply.body[..n])?;
    conn.flush()
}

fn ok(body: Vec<u8>) -> Reply {
    Reply {
        status: 200,
        body,
        cut_after: None,
    }
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_registry_errors_with_their_message() -> Result<()> {
    let server = FakeServer::start(Arc::new(|path: &str, _| {
        if path.contains("/manifests/") && path.contains("broken") {
            Reply {
                status: 500,
                body: b"storage backend exploded".to_vec(),
                cut_after: None,
            }
        } else if path.contains("/manifests/") {
            Reply {
                status: 429,
                body: br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit reached"}]}"#
                    .to_vec(),
                cut_after: None,
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
    let server = FakeServer::start(Arc::new(move |path: &str, nth| {
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
