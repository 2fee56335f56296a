//! Dockerfile builds through real buildah: base images from a real registry
//! on loopback (Debian's docker-registry, images pushed with skopeo), RUN
//! steps in gVisor (and runc), results imported into a pinacle-oci store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../oci/tests/common/mod.rs"]
mod registry;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use pinacle_host_agent::dockerfile::{build, BuildError, BuildNetwork, BuildRequest, Isolation};
use pinacle_oci::{Credentials, Reference, Store};
use registry::{busybox_image, Registry};

struct Fixture {
    reg: Registry,
    tmp: tempfile::TempDir,
    store: Store,
}

impl Fixture {
    fn new(auth: Option<(&str, &str)>) -> Result<Fixture> {
        let reg = Registry::start(auth)?;
        reg.push(busybox_image()?, "busybox:1")?;
        let tmp = tempfile::tempdir()?;
        let store = Store::new(tmp.path().join("oci"), vec![reg.host()])?;
        Ok(Fixture { reg, tmp, store })
    }

    fn base(&self) -> String {
        format!("{}/busybox:1", self.reg.host())
    }

    /// A context directory holding `files`.
    fn context(&self, files: &[(&str, &str)]) -> Result<PathBuf> {
        let dir = self.tmp.path().join(format!("ctx-{}", files.len() + self.tmp.path().read_dir()?.count()));
        std::fs::create_dir_all(&dir)?;
        for (name, text) in files {
            let p = dir.join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(p, text)?;
        }
        Ok(dir)
    }

    fn request(&self, context: &Path, name: &str) -> BuildRequest {
        BuildRequest {
            context_dir: context.to_path_buf(),
            dockerfile: PathBuf::from("Dockerfile"),
            name: name.to_string(),
            build_args: vec![("BASE".into(), self.base())],
            insecure_registries: vec![self.reg.host()],
            ..BuildRequest::default()
        }
    }

    /// Nothing of a build is left: no image, no build directory.
    async fn assert_nothing_left(&self) -> Result<()> {
        assert!(self.store.list().await?.is_empty(), "an image was left");
        let builds = self.store.dir().join("builds");
        let left: Vec<_> = std::fs::read_dir(&builds).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "build directories left: {left:?}");
        let images: Vec<_> = std::fs::read_dir(self.store.dir().join("images"))?.flatten().map(|e| e.path()).collect();
        assert!(images.is_empty(), "{images:?}");
        Ok(())
    }
}

/// Collects log lines.
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Log {
    fn sink(&self) -> impl Fn(&str) + Send + Sync + '_ {
        move |l| self.0.lock().unwrap_or_else(|e| e.into_inner()).push(l.to_string())
    }
    fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
    }
}

const MULTI_STAGE: &str = r#"ARG BASE
FROM ${BASE} AS build
ARG GREETING=hello
RUN mkdir -p /out && echo "$GREETING from the build stage" > /out/greeting && id -u > /out/uid

FROM ${BASE}
ARG FLAVOUR=plain
ENV APP_HOME=/srv/app FLAVOUR=${FLAVOUR}
WORKDIR /srv/app
COPY hello.txt ./
COPY conf/ /etc/app/
COPY --from=build /out/greeting ./greeting
RUN echo "dev:x:1001:1001::/home/dev:/bin/sh" >> /etc/passwd \
 && echo "dev:x:1001:" >> /etc/group \
 && mkdir -p /home/dev && chown -R 1001:1001 /srv/app /home/dev
USER dev
RUN whoami > whoami && echo "$APP_HOME $FLAVOUR" > env.txt && cat /proc/version > kernel.txt
"#;

async fn multi_stage(isolation: Isolation) -> Result<()> {
    let fx = Fixture::new(None)?;
    let ctx = fx.context(&[("Dockerfile", MULTI_STAGE), ("hello.txt", "hello from the context\n"), ("conf/app.toml", "x = 1\n")])?;
    let mut req = fx.request(&ctx, "localhost/pinacle/demo:latest");
    req.build_args.push(("GREETING".into(), "hi".into()));
    req.build_args.push(("FLAVOUR".into(), "vanilla".into()));
    req.isolation = isolation;
    let log = Log::default();
    let started = Instant::now();
    let img = build(&fx.store, &req, &log.sink()).await;
    let took = started.elapsed();
    let img = img.with_context(|| log.text())?;
    println!("{isolation:?} multi-stage build took {took:?}");
    let text = log.text();
    assert!(text.contains("STEP") && text.contains("COPY --from=build"), "{text}");

    assert!(img.info.pinned.starts_with("localhost/pinacle/demo@sha256:"), "{}", img.info.pinned);
    assert_eq!(img.info.references, vec!["localhost/pinacle/demo:latest"]);
    let c = &img.info.config;
    assert!(c.env.contains(&"APP_HOME=/srv/app".to_string()), "{:?}", c.env);
    assert!(c.env.contains(&"FLAVOUR=vanilla".to_string()), "{:?}", c.env);
    assert_eq!(c.working_dir.as_deref(), Some("/srv/app"));
    assert_eq!(c.user.as_deref(), Some("dev"));
    let app = img.rootfs.join("srv/app");
    assert_eq!(std::fs::read_to_string(app.join("hello.txt"))?, "hello from the context\n");
    assert_eq!(std::fs::read_to_string(app.join("greeting"))?, "hi from the build stage\n");
    assert_eq!(std::fs::read_to_string(app.join("whoami"))?, "dev\n");
    assert_eq!(std::fs::read_to_string(app.join("env.txt"))?, "/srv/app vanilla\n");
    assert_eq!(std::fs::read_to_string(img.rootfs.join("etc/app/app.toml"))?, "x = 1\n");
    assert_eq!(std::fs::metadata(app.join("whoami"))?.uid(), 1001, "written by USER dev");
    assert!(!img.rootfs.join("out").exists(), "the build stage's files stay in it");
    let kernel = std::fs::read_to_string(app.join("kernel.txt"))?;
    if isolation == Isolation::Gvisor {
        // gVisor's sentry reports its own kernel, not the host's.
        let host = std::fs::read_to_string("/proc/version")?;
        assert_ne!(kernel, host, "RUN did not run in gVisor");
    }

    // Pods use the pinned reference: found in the store without any network.
    drop(fx.reg);
    let pinned = Reference::parse(&img.info.pinned)?;
    let again = fx.store.pull(&pinned, &Credentials::Anonymous, &|_| {}).await?;
    assert!(again.cached);
    assert_eq!(again.rootfs, img.rootfs);
    // The build's private storage is gone.
    let builds: Vec<_> = std::fs::read_dir(fx.store.dir().join("builds"))?.flatten().collect();
    assert!(builds.is_empty(), "{builds:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_stage_dockerfile_builds_in_gvisor_into_the_store() -> Result<()> {
    multi_stage(Isolation::Gvisor).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_stage_dockerfile_builds_with_runc_too() -> Result<()> {
    multi_stage(Isolation::Runc).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_names_the_step_and_its_exit_code_and_leaves_nothing() -> Result<()> {
    let fx = Fixture::new(None)?;
    let ctx = fx.context(&[("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN echo ok > /ok\nRUN echo about to fail && exit 7\nRUN echo never\n")])?;
    let log = Log::default();
    let err = build(&fx.store, &fx.request(&ctx, "localhost/pinacle/fails"), &log.sink()).await.unwrap_err();
    match &err {
        BuildError::RunFailed { step, exit_code, last_lines } => {
            assert_eq!(step, "RUN echo about to fail && exit 7");
            assert_eq!(*exit_code, 7);
            assert!(last_lines.iter().any(|l| l == "about to fail"), "{last_lines:?}");
        }
        other => panic!("{other:?}\n{}", log.text()),
    }
    assert!(err.to_string().contains("exit code 7"), "{err}");
    assert!(!log.text().contains("never"));
    fx.assert_nothing_left().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_steps_have_no_network_unless_asked() -> Result<()> {
    let fx = Fixture::new(None)?;
    let df = format!("ARG BASE\nFROM ${{BASE}}\nRUN wget -q -O /v2.json http://{}/v2/\n", fx.reg.host());
    let ctx = fx.context(&[("Dockerfile", &df)])?;
    let err = build(&fx.store, &fx.request(&ctx, "localhost/pinacle/net"), &|_| {}).await.unwrap_err();
    assert!(matches!(err, BuildError::RunFailed { .. }), "{err:?}");
    fx.assert_nothing_left().await?;
    let mut req = fx.request(&ctx, "localhost/pinacle/net");
    req.network = BuildNetwork::Host;
    let log = Log::default();
    let img = build(&fx.store, &req, &log.sink()).await.with_context(|| log.text())?;
    assert_eq!(std::fs::read_to_string(img.rootfs.join("v2.json"))?.trim(), "{}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dockerfile_outside_the_context_is_refused() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx)?;
    std::fs::write(tmp.path().join("Dockerfile"), "FROM scratch\n")?;
    std::os::unix::fs::symlink("../Dockerfile", ctx.join("Dockerfile"))?;
    let store = Store::new(tmp.path().join("oci"), vec![])?;
    for dockerfile in ["../Dockerfile", "Dockerfile", "/etc/passwd"] {
        let req =
            BuildRequest { context_dir: ctx.clone(), dockerfile: PathBuf::from(dockerfile), name: "localhost/pinacle/x".into(), ..BuildRequest::default() };
        let err = build(&store, &req, &|_| {}).await.unwrap_err();
        assert!(matches!(err, BuildError::DockerfileOutsideContext { .. }), "{dockerfile}: {err:?}");
    }
    assert!(!store.dir().join("builds").exists(), "nothing was started");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_image_errors_are_clear() -> Result<()> {
    let fx = Fixture::new(Some(("builder", "s3cret")))?;
    let ctx = fx.context(&[("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN true\n")])?;
    // Without credentials the registry refuses.
    let err = build(&fx.store, &fx.request(&ctx, "localhost/pinacle/auth"), &|_| {}).await.unwrap_err();
    assert!(matches!(&err, BuildError::BaseImageAuth { image, .. } if image == &fx.base()), "{err:?}");
    // An image that is not there.
    let mut req = fx.request(&ctx, "localhost/pinacle/auth");
    req.credentials = vec![(fx.reg.host(), Credentials::Basic { username: "builder".into(), password: "s3cret".into() })];
    req.build_args = vec![("BASE".into(), format!("{}/nope:1", fx.reg.host()))];
    let err = build(&fx.store, &req, &|_| {}).await.unwrap_err();
    assert!(matches!(&err, BuildError::BaseImageNotFound { image, .. } if image.ends_with("/nope:1")), "{err:?}");
    fx.assert_nothing_left().await?;
    // With them it builds; the password never reaches the log.
    req.build_args = vec![("BASE".into(), fx.base())];
    let log = Log::default();
    build(&fx.store, &req, &log.sink()).await.with_context(|| log.text())?;
    assert!(!log.text().contains("s3cret"));
    // A syntax error names its line.
    let ctx = fx.context(&[("Dockerfile", "ARG BASE\nFROM ${BASE}\n\nFROBNICATE now\n")])?;
    req.context_dir = ctx;
    let err = build(&fx.store, &req, &|_| {}).await.unwrap_err();
    assert!(matches!(&err, BuildError::Syntax { line: Some(4), .. }), "{err:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_builds_that_stage() -> Result<()> {
    let fx = Fixture::new(None)?;
    let ctx = fx.context(&[("Dockerfile", MULTI_STAGE), ("hello.txt", "x"), ("conf/a", "a")])?;
    let mut req = fx.request(&ctx, "localhost/pinacle/stage:build");
    req.target = Some("build".into());
    let log = Log::default();
    let img = build(&fx.store, &req, &log.sink()).await.with_context(|| log.text())?;
    assert_eq!(std::fs::read_to_string(img.rootfs.join("out/greeting"))?, "hello from the build stage\n");
    assert!(!img.rootfs.join("srv").exists());
    Ok(())
}

/// A network namespace with only loopback up; deleted on drop.
struct Netns(String);

impl Netns {
    fn create() -> Result<Netns> {
        let name = format!("pinacle-dfb-{}", std::process::id());
        let ok = std::process::Command::new("ip").args(["netns", "add", &name]).status()?.success();
        anyhow::ensure!(ok, "ip netns add {name} failed");
        let ns = Netns(name);
        let ok = std::process::Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]).status()?.success();
        anyhow::ensure!(ok, "cannot bring lo up in {}", ns.0);
        Ok(ns)
    }
    fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_network_runs_buildah_inside_it() -> Result<()> {
    let fx = Fixture::new(None)?;
    let ns = Netns::create()?;
    // FROM scratch needs no registry.
    let ctx = fx.context(&[("Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n"), ("a.txt", "in a namespace\n")])?;
    let mut req = fx.request(&ctx, "localhost/pinacle/ns");
    req.network = BuildNetwork::Namespace(ns.path());
    let log = Log::default();
    let img = build(&fx.store, &req, &log.sink()).await.with_context(|| log.text())?;
    assert_eq!(std::fs::read_to_string(img.rootfs.join("a.txt"))?, "in a namespace\n");
    // The loopback registry on the host is not in that namespace.
    let ctx = fx.context(&[("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN true\n")])?;
    req.context_dir = ctx;
    let err = build(&fx.store, &req, &|_| {}).await.unwrap_err();
    assert!(matches!(&err, BuildError::BaseImageUnreachable { image, .. } if image == &fx.base()), "{err:?}");
    Ok(())
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(format!("{}: {cmd}", entry.file_name().to_string_lossy()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_build_leaves_no_sandbox_and_no_files() -> Result<()> {
    let fx = Fixture::new(None)?;
    let ctx = fx.context(&[("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN echo step-started && sleep 300\n")])?;
    let req = fx.request(&ctx, "localhost/pinacle/cancelled");
    let started = tokio::sync::Notify::new();
    let log = |line: &str| {
        if line == "step-started" {
            started.notify_one();
        }
    };
    tokio::select! {
        r = build(&fx.store, &req, &log) => panic!("the build ended: {r:?}"),
        // The RUN step is running in its sandbox: cancel the build now.
        _ = started.notified() => {}
    }
    let builds = fx.store.dir().join("builds");
    let left = processes_mentioning(&builds.to_string_lossy());
    assert!(left.is_empty(), "{left:?}");
    fx.assert_nothing_left().await
}
