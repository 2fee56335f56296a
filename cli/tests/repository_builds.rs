//! Pods whose repository builds their image: a devcontainer's
//! `build.dockerfile` (multi-stage, ARG, ENV, WORKDIR, COPY from the
//! repository, USER) built by the pod's host with buildah, and its
//! devcontainer features pulled as OCI artifacts and installed in
//! dependency order with their options. Everything the pod and its build
//! reach is real and the test's own: a git smart-HTTP server and a
//! `docker-registry` (holding a BusyBox base image and two features) in a
//! network namespace the test creates, reached by the host and by pods
//! through their NAT egress.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/git_server.rs"]
mod git_server;
#[path = "../../oci/tests/common/mod.rs"]
mod registry;

use std::time::{Duration, Instant};

use common::{HostCleanup, Pinacle};
use git_server::{git, GitNet, GitServer};
use reqwest::Method;
use serde_json::{json, Value};

const BRIDGE: &str = "pnctestbd";
const SUBNET: &str = "10.231.79.0/24";
const NET: GitNet = GitNet { ns: "pnctest-bld", host_veth: "pncbldv", peer_veth: "pncbldp", prefix: "198.18.79" };
const REGISTRY: &str = "198.18.79.2:5000";
const FEATURE_MEDIA_TYPE: &str = "application/vnd.devcontainers.layer.v1+tar";

/// A feature's layer: its devcontainer-feature.json and install.sh.
fn feature_layer(metadata: &Value, install: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, mode) in [("./devcontainer-feature.json", metadata.to_string().into_bytes(), 0o644), ("./install.sh", install.as_bytes().to_vec(), 0o755)] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

/// `base-tool` (no options) and `greeter` (option `greeting`, dependsOn
/// base-tool, containerEnv with `${PATH}`), pushed as `features/NAME:1`.
fn push_features(reg: &registry::Registry) {
    let base = json!({ "id": "base-tool", "version": "1.0.0", "name": "Base tool" });
    let install = "#!/bin/sh\nset -e\nmkdir -p /opt/base-tool\ntouch /opt/base-tool/installed\necho base-tool >> /opt/order\n";
    reg.push_artifact("features/base-tool", "1", &feature_layer(&base, install), FEATURE_MEDIA_TYPE).unwrap();
    let greeter = json!({
        "id": "greeter",
        "version": "1.2.0",
        "options": {
            "greeting": { "type": "string", "default": "hello" },
            "shout": { "type": "boolean", "default": false }
        },
        "dependsOn": { format!("{REGISTRY}/features/base-tool:1"): {} },
        "containerEnv": { "GREETER_HOME": "/opt/greeter", "PATH": "/opt/greeter/bin:${PATH}" }
    });
    // the option values reach install.sh as GREETING and SHOUT, quoted
    // as given (spaces, quotes); base-tool is installed already
    let install = "#!/bin/sh\nset -e\ntest -f /opt/base-tool/installed\nmkdir -p /opt/greeter/bin\nprintf '%s\\n' \"$GREETING\" > /opt/greeter/greeting\nprintf '#!/bin/sh\\ncat /opt/greeter/greeting\\n' > /opt/greeter/bin/greet\nchmod +x /opt/greeter/bin/greet\necho \"greeter shout=$SHOUT\" >> /opt/order\n";
    reg.push_artifact("features/greeter", "1", &feature_layer(&greeter, install), FEATURE_MEDIA_TYPE).unwrap();
}

/// `public/built.git`: a devcontainer with a multi-stage Dockerfile and the
/// greeter feature; `public/failing.git`: a Dockerfile whose RUN fails;
/// `public/nofeature.git`: a feature that does not exist.
fn build_repositories(s: &GitServer) {
    let app = s.scratch("built");
    git(&app, &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(app.join(".devcontainer")).unwrap();
    std::fs::create_dir_all(app.join("app")).unwrap();
    std::fs::write(app.join("app/greeting.txt"), "from the repository\n").unwrap();
    std::fs::write(
        app.join(".devcontainer/Dockerfile"),
        format!(
            "FROM {REGISTRY}/busybox:1 AS builder\nARG FLAVOUR=plain\nWORKDIR /src\nCOPY app/ ./\nRUN echo \"flavour=$FLAVOUR\" > built.txt && cat greeting.txt >> built.txt\n\nFROM {REGISTRY}/busybox:1\nENV APP_HOME=/opt/app\nCOPY --from=builder /src/built.txt /opt/app/built.txt\nUSER root\n"
        ),
    )
    .unwrap();
    let devcontainer = json!({
        "build": { "dockerfile": "Dockerfile", "context": "..", "args": { "FLAVOUR": "mint" } },
        "features": { format!("{REGISTRY}/features/greeter:1"): { "greeting": "hey 'there' \"you\"" } },
        "containerEnv": { "FROM_DEVCONTAINER": "yes" }
    });
    std::fs::write(app.join(".devcontainer/devcontainer.json"), format!("// with comments\n{devcontainer}\n")).unwrap();
    git(&app, &["add", "."]);
    git(&app, &["commit", "-q", "-m", "devcontainer with a build"]);
    s.publish(&app, "public/built.git");

    let failing = s.scratch("failing");
    git(&failing, &["init", "-q", "-b", "main"]);
    std::fs::write(failing.join("Dockerfile"), format!("FROM {REGISTRY}/busybox:1\nRUN echo about to fail && exit 3\n")).unwrap();
    std::fs::write(failing.join("pinacle.yaml"), "version: \"1.0\"\nimage:\n  build:\n    dockerfile: Dockerfile\n").unwrap();
    git(&failing, &["add", "."]);
    git(&failing, &["commit", "-q", "-m", "failing"]);
    s.publish(&failing, "public/failing.git");

    let missing = s.scratch("nofeature");
    git(&missing, &["init", "-q", "-b", "main"]);
    std::fs::write(missing.join("pinacle.yaml"), format!("version: \"1.0\"\nfeatures:\n  {REGISTRY}/features/nope:1: {{}}\n")).unwrap();
    git(&missing, &["add", "."]);
    git(&missing, &["commit", "-q", "-m", "missing feature"]);
    s.publish(&missing, "public/nofeature.git");
}

/// The pod's stored events as text (the SSE stream's history, read for at
/// most 3 s).
async fn events_text(p: &Pinacle, pod: &str) -> String {
    let mut resp = p.http.get(format!("{}/api/v1/pods/{pod}/events", p.url)).bearer_auth(common::TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut text = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, resp.chunk()).await {
        text.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// Polls `sh -c script` in the pod until it prints `want` (at most `secs`).
async fn wait_output(p: &Pinacle, pod: &str, script: &str, want: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (out, err, _) = p.exec(pod, &["sh", "-c", script]).await;
        if out.trim() == want {
            return;
        }
        assert!(Instant::now() < deadline, "`{script}` in {pod} printed {out:?} (stderr {err:?}), not {want:?}; events:\n{}", events_text(p, pod).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_repository_dockerfile_and_features_make_the_pods_image() {
    let _cleanup = HostCleanup(BRIDGE);
    let server = GitServer::start(NET, "user", "unused-token");
    let reg = registry::Registry::start_in_netns(NET.ns, &format!("{}.2", NET.prefix)).unwrap();
    reg.push(registry::busybox_image().unwrap(), "busybox:1").unwrap();
    push_features(&reg);
    build_repositories(&server);
    let p = Pinacle::start_with_env(&["--pod-network", "bridge", "--pod-bridge", BRIDGE, "--pod-subnet", SUBNET], &[("PINACLE_INSECURE_REGISTRIES", REGISTRY)]).await;

    // a build needs the repository (its context): refused up front without one
    let (s, b) = p
        .call(Method::POST, "/api/v1/pods", Some(json!({"name": "nocontext", "config": "version: \"1.0\"\nimage:\n  build:\n    dockerfile: Dockerfile\n"})))
        .await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("build_needs_repository")), "{b}");
    // images built for pods are named by the agent only
    let (s, b) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": "stolen", "image": "localhost/pinacle/pods/0123abcd:latest"}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_image")), "{b}");

    // the request's own config builds from the repository too; its steps
    // run only on the built image (never on the image the clone ran in)
    let own = "version: \"1.0\"\nimage:\n  build:\n    dockerfile: .devcontainer/Dockerfile\n    args:\n      FLAVOUR: given\npostCreate: \"test -f /opt/app/built.txt && echo built-image >> /workspace/ran-on || echo placeholder >> /workspace/ran-on\"\n";
    let (s, b) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": "own", "config": own, "repository": {"url": server.url("public/built.git")}}))).await;
    assert_eq!(s, 202, "{b}");
    for (name, repo) in [("built", "public/built.git"), ("failing", "public/failing.git"), ("nofeature", "public/nofeature.git")] {
        let (s, b) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": name, "repository": {"url": server.url(repo)}}))).await;
        assert_eq!(s, 202, "{b}");
    }

    let pod = p.wait_state("built", "running", 420).await;
    let image = pod["image"].as_str().unwrap();
    assert!(image.starts_with("localhost/pinacle/pods/") && image.contains("@sha256:"), "the pod runs the built image, pinned: {pod}");
    // the Dockerfile: multi-stage, ARG from the devcontainer, COPY of the
    // repository's files, ENV of the image
    let (out, err, code) = p.exec("built", &["cat", "/opt/app/built.txt"]).await;
    assert_eq!((code, out.as_str()), (0, "flavour=mint\nfrom the repository\n"), "{err}");
    let (out, _, _) = p.exec("built", &["sh", "-c", "echo $APP_HOME $FROM_DEVCONTAINER"]).await;
    assert_eq!(out.trim(), "/opt/app yes");
    // the features: dependency first, options passed, containerEnv applied
    wait_output(&p, "built", "cat /opt/order 2>/dev/null | tr '\\n' ,", "base-tool,greeter shout=false,", 180).await;
    let (out, err, code) = p.exec("built", &["sh", "-c", "greet && echo $GREETER_HOME"]).await;
    assert_eq!((code, out.as_str()), (0, "hey 'there' \"you\"\n/opt/greeter\n"), "{err}");
    let events = events_text(&p, "built").await;
    for line in events.lines().filter(|l| l.contains(" ms") || l.contains("fetched feature")) {
        eprintln!("built: {line}");
    }
    for needle in [
        "configured from the repository's .devcontainer/devcontainer.json",
        "build: building localhost/pinacle/pods/",
        "image built from .devcontainer/Dockerfile",
        "fetched feature 198.18.79.2:5000/features/greeter:1",
        "fetched feature 198.18.79.2:5000/features/base-tool:1",
    ] {
        assert!(events.contains(needle), "events lack {needle:?}:\n{events}");
    }

    // its digest under another host-built name is not a way to it
    let digest = image.split('@').nth(1).unwrap();
    for stolen in [format!("localhost/pinacle/anything@{digest}"), image.to_owned()] {
        let (s, b) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": "stolen", "image": stolen}))).await;
        assert_eq!(s, 400, "{stolen}: {b}");
        assert!(matches!(b["error"]["code"].as_str(), Some("image_not_found" | "invalid_image")), "{b}");
    }

    p.wait_state("own", "running", 420).await;
    let (out, _, _) = p.exec("own", &["cat", "/opt/app/built.txt"]).await;
    assert_eq!(out, "flavour=given\nfrom the repository\n");
    wait_output(&p, "own", "cat /workspace/ran-on 2>/dev/null", "built-image", 120).await;

    // a restart keeps the image and does not install the features again
    let (s, b) = p.call(Method::POST, "/api/v1/pods/built/stop", None).await;
    assert_eq!(s, 202, "{b}");
    p.wait_state("built", "stopped", 120).await;
    let (s, b) = p.call(Method::POST, "/api/v1/pods/built/start", None).await;
    assert_eq!(s, 202, "{b}");
    let again = p.wait_state("built", "running", 120).await;
    assert_eq!(again["image"], pod["image"], "a restart changed the image");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (out, _, _) = p.exec("built", &["cat", "/opt/order"]).await;
    assert_eq!(out, "base-tool\ngreeter shout=false\n", "features ran again");

    // the built image gone from the host (a wiped store): the pod starts on
    // its template's image and builds again
    let (s, b) = p.call(Method::POST, "/api/v1/pods/built/stop", None).await;
    assert_eq!(s, 202, "{b}");
    p.wait_state("built", "stopped", 120).await;
    let store_dir = p.data.path().join("oci/images").join(format!("sha256-{}", digest.trim_start_matches("sha256:")));
    assert!(store_dir.is_dir(), "{}", store_dir.display());
    std::fs::remove_dir_all(&store_dir).unwrap();
    let (s, b) = p.call(Method::POST, "/api/v1/pods/built/start", None).await;
    assert_eq!(s, 202, "{b}");
    let rebuilt = p.wait_state("built", "running", 300).await;
    assert!(rebuilt["image"].as_str().unwrap().starts_with("localhost/pinacle/pods/"), "{rebuilt}");
    let (out, err, code) = p.exec("built", &["cat", "/opt/app/built.txt"]).await;
    assert_eq!((code, out.as_str()), (0, "flavour=mint\nfrom the repository\n"), "{err}");
    let events = events_text(&p, "built").await;
    assert!(events.contains("not on this host; starting on base to build it again"), "{events}");

    // a second pod of the same commit reuses the built image
    let (s, b) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": "built-two", "repository": {"url": server.url("public/built.git")}}))).await;
    assert_eq!(s, 202, "{b}");
    let two = p.wait_state("built-two", "running", 300).await;
    assert_eq!(two["image"], rebuilt["image"], "{two}");
    let events = events_text(&p, "built-two").await;
    assert!(events.contains("image built before from this commit") && !events.contains("build: building"), "{events}");
    // an image chosen by hand replaces the build for good
    let (s, b) = p.call(Method::POST, "/api/v1/pods/built-two/stop", None).await;
    assert_eq!(s, 202, "{b}");
    p.wait_state("built-two", "stopped", 120).await;
    let (s, b) = p.call(Method::PATCH, "/api/v1/pods/built-two", Some(json!({"image": format!("{REGISTRY}/busybox:1")}))).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = p.call(Method::POST, "/api/v1/pods/built-two/start", None).await;
    assert_eq!(s, 202, "{b}");
    let chosen = p.wait_state("built-two", "running", 120).await;
    let image = chosen["image"].as_str().unwrap();
    assert!(image.starts_with(&format!("{REGISTRY}/busybox")) && image.contains("@sha256:"), "{chosen}");
    assert!(chosen["config"].get("imageBuild").is_none(), "{chosen}");

    // a failing RUN: the pod's error names the step and its exit code
    let failing = p.wait_state("failing", "error", 300).await;
    let events = events_text(&p, "failing").await;
    assert!(events.contains("exit code 3") && events.contains("about to fail"), "{failing}\n{events}");
    // a feature that does not exist: the pod's error names it
    p.wait_state("nofeature", "error", 300).await;
    let events = events_text(&p, "nofeature").await;
    assert!(events.contains("features/nope:1"), "{events}");
}
