//! Pods from registry images: a real registry on loopback (Debian's
//! `docker-registry`, with and without htpasswd auth) holding images these
//! tests build and push with skopeo; pods pull them through `pinacle-oci`.
//! Covered: a pull and its progress events, whiteouts, the digest pinned at
//! creation (a retagged image does not change a pod on restart), layers
//! shared between images, an unknown tag, registry credentials from the
//! owner's secrets (and refused ones), on gVisor and youki.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../oci/tests/common/mod.rs"]
mod registry;

use std::time::Duration;

use common::{Pinacle, TOKEN};
use registry::{ImageSpec, Layer, Registry};
use reqwest::Method;
use serde_json::{json, Value};

/// A BusyBox root filesystem as one layer (the static binary and a link per
/// applet), read from the test image cache.
fn busybox_layer() -> Layer {
    let root = common::image_cache().join("busybox/rootfs");
    let busybox = std::fs::read(root.join("bin/busybox")).expect("busybox image in the test cache (scripts/test.sh builds it)");
    let mut layer = Layer::new().dir("bin").dir("etc").dir("tmp").dir("root").file("bin/busybox", &busybox, 0o755);
    for entry in std::fs::read_dir(root.join("bin")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != "busybox" {
            layer = layer.symlink(&format!("bin/{name}"), "busybox");
        }
    }
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644).file("etc/group", b"root:x:0:\n", 0o644)
}

/// BusyBox, then a layer with `old.txt` and `keep.txt`, then one that
/// greets with `greeting` and deletes `old.txt` (a whiteout).
fn tools_image(greeting: &str) -> ImageSpec {
    ImageSpec::new()
        .env("GREETING_FROM_IMAGE=image-env")
        .layer(busybox_layer())
        .layer(Layer::new().dir("opt").file("opt/old.txt", b"old", 0o644).file("opt/keep.txt", b"kept", 0o644))
        .layer(Layer::new().dir("etc").file("etc/greeting", greeting.as_bytes(), 0o644).whiteout("opt", "old.txt"))
}

async fn start_with_registry(reg: &Registry) -> Pinacle {
    Pinacle::start_with_env(&[], &[("PINACLE_INSECURE_REGISTRIES", &reg.host())]).await
}

async fn create_from(p: &Pinacle, token: &str, name: &str, image: &str, runtime: &str) -> (u16, Value) {
    let config = format!("image: {image}\n");
    p.call_as(token, Method::POST, "/api/v1/pods", Some(json!({"name": name, "config": config, "runtime": runtime}))).await
}

/// The pod's event stream (server-sent events, open while the pod lives)
/// read until it has said every one of `needles`, or 20 s.
async fn events(p: &Pinacle, pod: &str, needles: &[&str]) -> String {
    let mut resp = p.http.get(format!("{}/api/v1/pods/{pod}/events", p.url)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !needles.iter().all(|n| seen.contains(n)) {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            _ => break,
        }
    }
    seen
}

async fn sh(p: &Pinacle, token: &str, pod: &str, script: &str) -> (String, i64) {
    let (out, err, code) = p.exec_as(token, pod, &["sh", "-c", script]).await;
    (format!("{out}{err}"), code)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_image_is_pulled_pinned_and_shared_on_both_runtimes() {
    let reg = Registry::start(None).unwrap();
    let first = reg.push(tools_image("one"), "team/tools:v1").unwrap();
    let p = start_with_registry(&reg).await;
    let image = format!("{}/team/tools:v1", reg.host());

    let (s, pod) = create_from(&p, TOKEN, "from-registry", &image, "gvisor").await;
    assert_eq!(s, 202, "{pod}");
    // pinned at creation to the digest the tag named then
    let pinned = format!("{}/team/tools@{}", reg.host(), first.manifest_digest);
    assert_eq!(pod["image"], pinned, "{pod}");
    p.wait_state("from-registry", "running", 120).await;

    let (out, code) = sh(&p, TOKEN, "from-registry", "cat /etc/greeting; echo; cat /opt/keep.txt; echo; test -e /opt/old.txt && echo old-still-there; echo $GREETING_FROM_IMAGE").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("one") && out.contains("kept"), "{out}");
    assert!(!out.contains("old-still-there"), "the whiteout deleted /opt/old.txt: {out}");
    assert!(out.contains("image-env"), "the image config's Env reaches the pod: {out}");
    let needles = ["pulling ", "downloading layer 1/3", "pulled "];
    let ev = events(&p, "from-registry", &needles).await;
    assert!(needles.iter().all(|n| ev.contains(n)), "pull progress in the pod's events: {ev}");

    // the tag moves to another image; the pod keeps the one it was made with
    let second = reg.push(tools_image("two"), "team/tools:v1").unwrap();
    assert_ne!(first.manifest_digest, second.manifest_digest);
    let (s, b) = p.call(Method::POST, "/api/v1/pods/from-registry/stop", None).await;
    assert!(s == 202 || s == 200, "{b}");
    p.wait_state("from-registry", "stopped", 60).await;
    let (s, b) = p.call(Method::POST, "/api/v1/pods/from-registry/start", None).await;
    assert!(s == 202 || s == 200, "{b}");
    p.wait_state("from-registry", "running", 60).await;
    let (out, _) = sh(&p, TOKEN, "from-registry", "cat /etc/greeting").await;
    assert_eq!(out.trim(), "one", "a restart never changes the image");

    // a new pod gets what the tag names now; the busybox layer is shared
    let (s, pod) = create_from(&p, TOKEN, "retagged", &image, "youki").await;
    assert_eq!(s, 202, "{pod}");
    assert!(pod["image"].as_str().unwrap().ends_with(&second.manifest_digest), "{pod}");
    p.wait_state("retagged", "running", 120).await;
    let (out, _) = sh(&p, TOKEN, "retagged", "cat /etc/greeting; id -u").await;
    assert!(out.starts_with("two"), "{out}");
    let needles = ["layer 1/3", "already on this host"];
    let ev = events(&p, "retagged", &needles).await;
    assert!(needles.iter().all(|n| ev.contains(n)), "the shared layer is not downloaded again: {ev}");

    // the CLI: --image names the reference, --wait follows the pull
    let out = std::process::Command::new(common::pinacle_bin())
        .args(["pod", "create", "by-cli", "--image", &image, "--runtime", "gvisor", "--template", "minimal", "--wait", "--timeout", "120"])
        .env("PINACLE_API", &p.url)
        .env("PINACLE_TOKEN", TOKEN)
        .env("PINACLE_CONFIG", p.data.path().join("none.json"))
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && log.contains("pod by-cli is running"), "{log}");
    assert!(p.pod("by-cli").await["image"].as_str().unwrap().ends_with(&second.manifest_digest));
    let (out, _) = sh(&p, TOKEN, "by-cli", "cat /etc/greeting").await;
    assert_eq!(out.trim(), "two");

    // both images are in the host's store, by digest
    let store = p.data.path().join("oci/images");
    let images: Vec<String> = std::fs::read_dir(&store).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("sha256-")).collect();
    assert_eq!(images.len(), 2, "{images:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_images_and_refused_credentials_fail_clearly_and_create_nothing() {
    let reg = Registry::start(Some(("puller", "s3cret-pass"))).unwrap();
    reg.push(tools_image("private"), "acme/private:1").unwrap();
    let open = Registry::start(None).unwrap();
    let p = Pinacle::start_with_env(&[], &[("PINACLE_INSECURE_REGISTRIES", &format!("{},{}", reg.host(), open.host()))]).await;
    let user = p.signup_and_login("dana").await;

    // a tag that does not exist: 400, and no pod
    let (s, b) = create_from(&p, &user, "missing", &format!("{}/acme/nothing:1", open.host()), "gvisor").await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("image_not_found")), "{b}");
    let (s, _) = p.call_as(&user, Method::GET, "/api/v1/pods/missing", None).await;
    assert_eq!(s, 404);
    // a malformed reference is refused with where it is wrong
    let (s, b) = create_from(&p, &user, "bad", "ghcr.io/Acme/x:1", "gvisor").await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("pinacle.yaml"), "{b}");

    // a private image without credentials: refused, nothing created
    let private = format!("{}/acme/private:1", reg.host());
    let (s, b) = create_from(&p, &user, "private", &private, "gvisor").await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("registry_auth_refused")), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("_CONTAINER_REGISTRY_"), "{b}");

    // wrong password: refused too
    for (name, value) in [("ACME_CONTAINER_REGISTRY_SERVER", reg.host()), ("ACME_CONTAINER_REGISTRY_USER", "puller".into()), ("ACME_CONTAINER_REGISTRY_PASSWORD", "wrong".into())] {
        let (s, b) = p.call_as(&user, Method::PUT, &format!("/api/v1/secrets/{name}"), Some(json!({"value": value}))).await;
        assert!(s == 200 || s == 201 || s == 204, "{b}");
    }
    let (s, b) = create_from(&p, &user, "private", &private, "gvisor").await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("registry_auth_refused")), "{b}");

    // the right one: the pod pulls the private image with the owner's secret
    let (s, b) = p.call_as(&user, Method::PUT, "/api/v1/secrets/ACME_CONTAINER_REGISTRY_PASSWORD", Some(json!({"value": "s3cret-pass"}))).await;
    assert!(s == 200 || s == 201 || s == 204, "{b}");
    let (s, b) = create_from(&p, &user, "private", &private, "gvisor").await;
    assert_eq!(s, 202, "{b}");
    p.wait_state_as(&user, "private", "running", 120).await;
    let (out, code) = sh(&p, &user, "private", "cat /etc/greeting").await;
    assert_eq!((out.trim(), code), ("private", 0));
    // another tenant who learns the pinned digest still needs the
    // registry's permission: the image on this host is not theirs
    let (_, pod) = p.call_as(&user, Method::GET, "/api/v1/pods/private", None).await;
    let pinned = pod["image"].as_str().unwrap().to_owned();
    assert!(pinned.contains("@sha256:"), "{pod}");
    let mallory = p.signup_and_login("mallory").await;
    let (s, b) = create_from(&p, &mallory, "stolen", &pinned, "gvisor").await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("registry_auth_refused")), "{b}");
    // the password is in no log line
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!p.server_log().contains("s3cret-pass"), "a registry password reached the server log");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_pulls_lists_and_removes_images_and_gc_keeps_what_pods_use() {
    let reg = Registry::start(Some(("cli-user", "cli-pass"))).unwrap();
    reg.push(tools_image("cli"), "cli/tools:1").unwrap();
    let data = tempfile::tempdir().unwrap();
    let image = format!("{}/cli/tools:1", reg.host());
    let cli = |args: &[&str], password: Option<&str>| {
        let mut cmd = std::process::Command::new(common::pinacle_bin());
        cmd.args(args).arg("--data-dir").arg(data.path()).env("PINACLE_INSECURE_REGISTRIES", reg.host());
        if let Some(pw) = password {
            cmd.env("PINACLE_REGISTRY_PASSWORD", pw);
        }
        let out = cmd.output().unwrap();
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    // anonymous: refused by this registry, with the reason
    let (ok, out) = cli(&["image", "pull", &image], None);
    assert!(!ok && out.contains("refused access"), "{out}");
    let (ok, out) = cli(&["image", "pull", &image, "--username", "cli-user"], Some("cli-pass"));
    assert!(ok && out.contains("pulled") && out.contains("@sha256:"), "{out}");
    let (ok, out) = cli(&["image", "pull", &image, "--username", "cli-user"], Some("cli-pass"));
    assert!(ok && out.contains("already here"), "{out}");
    let (ok, out) = cli(&["image", "list"], None);
    assert!(ok && out.contains(&image) && out.contains("sha256:"), "{out}");
    let (ok, out) = cli(&["image", "remove", &image], None);
    assert!(ok && out.contains("removed"), "{out}");
    let (ok, out) = cli(&["image", "list"], None);
    assert!(ok && !out.contains(&image), "{out}");
    assert!(!out.contains("cli-pass"));

    // gc through the server: the image a pod uses stays, the other goes
    let open = Registry::start(None).unwrap();
    open.push(tools_image("used"), "gc/used:1").unwrap();
    open.push(tools_image("unused"), "gc/unused:1").unwrap();
    let p = start_with_registry(&open).await;
    let (s, b) = create_from(&p, TOKEN, "keeper", &format!("{}/gc/used:1", open.host()), "gvisor").await;
    assert_eq!(s, 202, "{b}");
    p.wait_state("keeper", "running", 120).await;
    let (s, b) = create_from(&p, TOKEN, "goner", &format!("{}/gc/unused:1", open.host()), "gvisor").await;
    assert_eq!(s, 202, "{b}");
    p.wait_state("goner", "running", 120).await;
    let (s, b) = p.call(Method::DELETE, "/api/v1/pods/goner", None).await;
    assert!(s == 202 || s == 200, "{b}");
    p.wait_state("goner", "deleted", 60).await;
    let (s, list) = p.call(Method::GET, "/api/v1/admin/images", None).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    let (s, gc) = p.call(Method::POST, "/api/v1/admin/images/gc", None).await;
    assert_eq!(s, 200, "{gc}");
    assert_eq!(gc["removed_images"].as_array().map(Vec::len), Some(1), "{gc}");
    let (_, list) = p.call(Method::GET, "/api/v1/admin/images", None).await;
    assert_eq!(list[0]["pods"], 1, "{list}");
    assert!(list[0]["references"].to_string().contains("gc/used"), "{list}");
    // the pod still runs from its image; a user may not collect garbage
    let (out, code) = sh(&p, TOKEN, "keeper", "cat /etc/greeting").await;
    assert_eq!((out.trim(), code), ("used", 0));
    let user = p.signup_and_login("erin").await;
    let (s, _) = p.call_as(&user, Method::POST, "/api/v1/admin/images/gc", None).await;
    assert_eq!(s, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_starts_from_an_image_built_from_a_dockerfile_on_its_host() {
    let reg = Registry::start(None).unwrap();
    reg.push(tools_image("base"), "base/busybox:1").unwrap();
    let p = start_with_registry(&reg).await;
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("hello.txt"), "from the context\n").unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "ARG BASE={}/base/busybox:1\nFROM $BASE AS build\nRUN echo built > /built.txt\nFROM $BASE\nCOPY --from=build /built.txt /opt/built.txt\nCOPY hello.txt /opt/hello.txt\nENV FROM_DOCKERFILE=yes\nWORKDIR /opt\n",
            reg.host()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::pinacle_bin())
        .args(["image", "build", "tools", "--dockerfile"])
        .arg(ctx.path().join("Dockerfile"))
        .arg("--data-dir")
        .arg(p.data.path())
        .env("PINACLE_INSECURE_REGISTRIES", reg.host())
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");
    assert!(log.contains("localhost/pinacle/tools@sha256:"), "the build prints the pinned reference: {log}");

    // a pod names it by name: pinned from the store, no registry asked
    let (s, pod) = create_from(&p, TOKEN, "built", "localhost/pinacle/tools:latest", "gvisor").await;
    assert_eq!(s, 202, "{pod}");
    assert!(pod["image"].as_str().unwrap().starts_with("localhost/pinacle/tools@sha256:"), "{pod}");
    p.wait_state("built", "running", 120).await;
    let (out, code) = sh(&p, TOKEN, "built", "cat /opt/built.txt /opt/hello.txt; echo $FROM_DOCKERFILE").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "built\nfrom the context\nyes\n");
    // a name this host never built is not found, and nothing is created
    let (s, b) = create_from(&p, TOKEN, "nothing", "localhost/pinacle/never-built:latest", "gvisor").await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("image_not_found")), "{b}");
}
