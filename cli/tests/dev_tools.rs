//! Everyday developer tools work in a gVisor pod of every template: GNU
//! `ls -la`, `stat` and `find` (they need `statx`, which gVisor before
//! 20240729 lacks), git, a Python venv, `npm ci` from the image's npm cache
//! where the template has Node, and the toolchain versions Debian 13 ships.
//!
//! Each test starts its own `pinacle up` with one pod of its template; the
//! images come from the test image cache (scripts/test.sh builds them).

mod common;

use common::Pinacle;

/// Runs `script` with bash in the pod; panics with its output unless it exits 0.
async fn sh(p: &Pinacle, pod: &str, script: &str) -> String {
    let (out, err, code) = p.exec(pod, &["bash", "-c", script]).await;
    assert_eq!(code, 0, "`{script}` failed in {pod} ({code}):\nstdout: {out}\nstderr: {err}");
    assert!(!err.contains("Invalid argument") && !out.contains("?????????"), "`{script}` in {pod}: {out}{err}");
    out
}

/// The checks every template with Debian's tools passes.
async fn everyday_tools(template: &str) -> (Pinacle, &'static str) {
    let p = Pinacle::start().await;
    let pod = "tools";
    p.create_running(pod, template, "gvisor").await;

    // GNU coreutils and findutils: every entry has its mode, owner and size
    let ls = sh(&p, pod, "ls -la / /etc/hostname /workspace").await;
    assert!(ls.contains("total ") && ls.contains(" etc") && ls.contains("/etc/hostname"), "{ls}");
    let stat = sh(&p, pod, "stat -c '%n %F %a %U' /etc/passwd /workspace /tmp").await;
    assert!(stat.contains("/etc/passwd regular file 644 root"), "{stat}");
    assert!(stat.contains("/workspace directory"), "{stat}");
    let found = sh(&p, pod, "find /etc -maxdepth 1 -name 'host*' -type f -printf '%p %s\\n' | sort").await;
    assert!(found.contains("/etc/hostname "), "{found}");

    // git: a repository, a commit, its status
    let git = sh(
        &p,
        pod,
        "set -e; mkdir -p /tmp/repo && cd /tmp/repo && git init -q -b main && git config user.email t@example.com && git config user.name t \
         && echo one > a.txt && git add a.txt && git commit -qm first && echo two >> a.txt && echo new > b.txt \
         && git status --porcelain && git log --oneline | wc -l && git --version",
    )
    .await;
    assert!(git.contains(" M a.txt") && git.contains("?? b.txt"), "{git}");
    let version = git.lines().last().unwrap_or_default();
    let minor: u32 = version.trim_start_matches("git version 2.").split('.').next().unwrap_or("0").parse().unwrap_or(0);
    assert!(version.starts_with("git version 2.") && minor >= 47, "Debian 13's git is 2.47: {version}");

    // Python 3.13 and a virtual environment with pip
    let venv = sh(&p, pod, "set -e; python3 --version; python3 -m venv /tmp/venv && /tmp/venv/bin/python -c 'import sys; print(sys.prefix)' && /tmp/venv/bin/pip --version").await;
    assert!(venv.contains("Python 3.13"), "{venv}");
    assert!(venv.contains("/tmp/venv\n") && venv.contains("pip "), "{venv}");
    (p, pod)
}

/// `npm ci` of the template's starter, from the image's npm cache only
/// (`--offline`: no request leaves the pod), on Node 20.
async fn npm_ci(p: &Pinacle, pod: &str) {
    let node = sh(p, pod, "node --version && npm --version").await;
    assert!(node.starts_with("v20."), "Debian 13's Node is 20: {node}");
    let out = sh(
        p,
        pod,
        "set -e; rm -rf /tmp/app && mkdir /tmp/app && cp /workspace/package.json /workspace/package-lock.json /tmp/app/ \
         && cd /tmp/app && npm ci --offline --no-audit --no-fund 2>&1 && ls node_modules | wc -l",
    )
    .await;
    let modules: usize = out.lines().last().unwrap_or("0").trim().parse().unwrap_or(0);
    assert!(modules > 5, "npm ci installed nothing: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn blank_template_tools_work_in_gvisor() {
    let (p, pod) = everyday_tools("blank").await;
    let os = sh(&p, pod, "cat /etc/os-release").await;
    assert!(os.contains("VERSION_CODENAME=trixie"), "the base image is Debian 13: {os}");
}

#[tokio::test(flavor = "multi_thread")]
async fn vite_template_tools_and_npm_ci_work_in_gvisor() {
    let (p, pod) = everyday_tools("vite").await;
    npm_ci(&p, pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nextjs_template_tools_and_npm_ci_work_in_gvisor() {
    let (p, pod) = everyday_tools("nextjs").await;
    npm_ci(&p, pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nodejs_template_tools_work_in_gvisor() {
    let (p, pod) = everyday_tools("nodejs-blank").await;
    let node = sh(&p, pod, "node --version && cd /workspace && node -e 'require(\"./package.json\"); console.log(\"ok\")'").await;
    assert!(node.starts_with("v20.") && node.contains("ok"), "{node}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_template_tools_work_in_gvisor() {
    let (p, pod) = everyday_tools("python-blank").await;
    let py = sh(&p, pod, "cd /workspace && python3 -m py_compile app.py && echo compiled").await;
    assert!(py.contains("compiled"), "{py}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_template_tools_and_an_offline_build_work_in_gvisor() {
    let (p, pod) = everyday_tools("rust").await;
    // the starter is std-only: it builds without the network
    let out = sh(&p, pod, "set -e; rm -rf /tmp/rs && cp -r /workspace /tmp/rs && cd /tmp/rs && cargo build --offline -q 2>&1 && ls target/debug").await;
    assert!(!out.trim().is_empty(), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn vscode_template_tools_work_in_gvisor() {
    let (p, pod) = everyday_tools("vscode").await;
    let out = sh(&p, pod, "node --version && code-server --version").await;
    assert!(out.starts_with("v20.") && out.contains("4.100.3"), "{out}");
}
