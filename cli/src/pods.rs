//! `pinacle pod|image|template ...`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use clap::Subcommand;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::config;

#[derive(Subcommand)]
pub enum PodCommand {
    /// Request a new pod.
    Create {
        name: String,
        /// The template (default: the file's, or blank).
        #[arg(long)]
        template: Option<String>,
        /// The tier (default: the file's, or dev.small).
        #[arg(long)]
        tier: Option<String>,
        /// Read the pod's definition from this directory's pinacle.yaml (or
        /// its devcontainer.json).
        #[arg(long, value_name = "DIR")]
        from: Option<std::path::PathBuf>,
        /// Unknown fields in the file are errors, not warnings.
        #[arg(long)]
        strict: bool,
        /// Egress from the start: allow-all, deny-all or IPv4 CIDRs.
        #[arg(long)]
        egress: Option<String>,
        /// gvisor or youki (default: the server's choice).
        #[arg(long)]
        runtime: Option<String>,
        /// Block until the pod is running (or failed).
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        /// A process the pod's supervisor keeps running, NAME=COMMAND
        /// (repeatable).
        #[arg(long = "process", value_name = "NAME=COMMAND")]
        processes: Vec<String>,
        /// A command run once before the processes start (repeatable).
        #[arg(long = "install", value_name = "COMMAND")]
        install: Vec<String>,
        /// Clone this repository (http or https) into /workspace, inside the
        /// pod; `#BRANCH` picks a branch. Without --from and --template, the
        /// repository's own pinacle.yaml (or devcontainer.json) configures
        /// the pod. A private repository's token is your secret GIT_TOKEN
        /// (and GIT_USERNAME, default x-access-token); pushing from the pod
        /// uses it too.
        #[arg(long, value_name = "URL[#BRANCH]")]
        repo: Option<String>,
        /// Check out this commit of --repo.
        #[arg(long, value_name = "SHA", requires = "repo")]
        commit: Option<String>,
        /// The image instead of the configuration's: one of this host's
        /// (`base`, `node`…) or any registry reference (`python:3.13`,
        /// `ghcr.io/owner/image:tag`), pinned to its digest at creation;
        /// --wait shows the pull's progress.
        #[arg(long, value_name = "IMAGE")]
        image: Option<String>,
    },
    /// List your pods.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one pod.
    Show {
        pod: String,
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a running pod; exits with its exit code.
    Exec {
        pod: String,
        /// Send this command's standard input to the command.
        #[arg(short = 'i', long)]
        stdin: bool,
        /// NAME=VALUE, repeatable.
        #[arg(short, long)]
        env: Vec<String>,
        #[arg(short = 'w', long)]
        workdir: Option<String>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print a sign-in link that opens a port of the pod in a browser
    /// (valid for a minute, once).
    Open {
        pod: String,
        #[arg(long)]
        port: u16,
        /// Where to land on the pod's host.
        #[arg(long, default_value = "/")]
        path: String,
        /// For a page shown in an iframe (partitioned cookie).
        #[arg(long)]
        embed: bool,
    },
    /// Change a pod's public ports or egress policy.
    Configure {
        pod: String,
        /// Ports anyone may reach without signing in, comma-separated
        /// (replaces the list; "" for none).
        #[arg(long)]
        public_ports: Option<String>,
        /// allow-all, deny-all, or a comma-separated list of IPv4 CIDRs;
        /// applied when the pod next starts.
        #[arg(long)]
        egress: Option<String>,
        /// Another image (stop the pod first); /workspace and the home
        /// directory are kept.
        #[arg(long)]
        image: Option<String>,
        /// Snapshot the pod's volumes each time it stops.
        #[arg(long)]
        snapshot_on_stop: Option<bool>,
    },
    /// Snapshots of a pod's /workspace and home directory.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Print the output of the pod's main process.
    Logs {
        pod: String,
        #[arg(long, default_value_t = 65536)]
        tail_bytes: u64,
        /// A managed process's log instead (`install` for install steps).
        #[arg(long)]
        process: Option<String>,
    },
    /// An interactive shell in a running pod (or COMMAND on a terminal);
    /// exits with its exit code.
    Shell {
        pod: String,
        /// Run this instead of a login shell.
        #[arg(short, long)]
        command: Option<String>,
    },
    /// Show the pod's install steps and managed processes.
    Ps { pod: String },
    /// Show the TCP ports something listens on in the pod.
    Ports { pod: String },
    /// Print the pod's state changes as they happen.
    Events { pod: String },
    /// Stop a running pod (its workspace is kept); waits until it is
    /// stopped.
    Stop {
        pod: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Start a stopped pod; waits until it is running. A pod that is
    /// stopping starts once the stop is done.
    Start {
        pod: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete a pod with its workspace; waits until it is gone.
    Delete {
        pod: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Replace the pod's own SSH key pair (~/.ssh/id_ed25519 in the pod)
    /// with a new one; prints the new public key.
    RotateKeys { pod: String },
    /// Print the pod's own SSH public key (for a Git host's deploy keys).
    PublicKey { pod: String },
}

/// How `pod stop|start|delete` wait.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct WaitArgs {
    /// Return once the request is accepted instead of waiting until done.
    #[arg(long)]
    no_wait: bool,
    /// Wait until done (the default; kept for older scripts).
    #[arg(long, hide = true, conflicts_with = "no_wait")]
    #[allow(dead_code)]
    wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    timeout: u64,
}


#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once.
    Create {
        name: String,
        /// Lifetime such as 90s, 30m, 12h or 7d (default: until revoked).
        #[arg(long, value_parser = parse_lifetime)]
        exp: Option<i64>,
        /// Allow reads only (GET).
        #[arg(long)]
        read_only: bool,
    },
    /// List your tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

/// `90s`, `30m`, `12h`, `7d` (or plain seconds) to seconds.
fn parse_lifetime(raw: &str) -> Result<i64, String> {
    let (num, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: i64 = num.parse().map_err(|_| format!("{raw:?} is not a lifetime like 30m, 12h or 7d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in {raw:?}; use s, m, h or d")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{raw:?} is too long"))
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// List audit entries (yours; all of them for the administrator),
    /// newest page first (oldest first within it).
    List {
        #[arg(long)]
        json: bool,
        /// Entries per page (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only entries older than this id (the `next_before` of a page).
        #[arg(long)]
        before: Option<i64>,
        /// Every entry, page after page (oldest first).
        #[arg(long)]
        all: bool,
    },
    /// Check the hash chain; exits 1 and names the first broken entry.
    Verify,
}

#[derive(Subcommand)]
pub enum TemplateCommand {
    /// List the templates pods can start from.
    List,
}

fn client() -> Result<Client> {
    Client::new(config::load()?)
}

pub(crate) fn spinner(msg: String) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    pb.enable_steady_tick(Duration::from_millis(120));
    pb.set_message(msg);
    pb
}

/// Follows the events of pod `key` (id or name; `pod` in messages) from
/// `since` on until it reaches `target` (Ok)
/// or `error` (Err, with the pod's reason), showing each state it passes
/// (a spinner on a terminal, a line each otherwise). Gives up after
/// `timeout` seconds with the state it is still in. An event stream that
/// ends early (a credential that expired meanwhile, a restarted server) is
/// followed again after a look at the pod.
async fn wait_for(c: &Client, key: &str, pod: &str, target: &str, since: Option<&str>, timeout: u64) -> Result<()> {
    let since = since.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    let pb = spinner(format!("{pod}: waiting to be {target}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let outcome = tokio::time::timeout_at(deadline, async {
        loop {
            let pb2 = pb.clone();
            let follow = c.follow_events(key, move |ev| {
                let at = ev["at"].as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
                if let (Some(since), Some(at)) = (since, at) {
                    if at < since {
                        return None; // history from before this request
                    }
                }
                let to = ev["to"].as_str().unwrap_or("");
                let message = ev["message"].as_str().unwrap_or("");
                if pb2.is_hidden() {
                    eprintln!("{pod}: {to} ({message})");
                } else {
                    pb2.set_message(format!("{pod}: {to} — {message}"));
                }
                settled(pod, target, to, message)
            });
            match follow.await {
                Ok(done) => return done,
                // the pod itself is gone or ours no more: say so
                Err(e) if e.downcast_ref::<crate::client::ServerError>().is_some() => return Err(e),
                Err(_) => {}
            }
            let p = c.json(Method::GET, &format!("/pods/{key}"), None).await?;
            let state = p["state"].as_str().unwrap_or("");
            if let Some(done) = settled(pod, target, state, p["state_reason"].as_str().unwrap_or("")) {
                return done;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    pb.finish_and_clear();
    match outcome {
        Ok(r) => r,
        Err(_) => {
            let now = match c.json(Method::GET, &format!("/pods/{key}"), None).await {
                Ok(p) => format!("it is {}", p["state"].as_str().unwrap_or("?")),
                Err(e) => format!("{e:#}"),
            };
            bail!(
                "pod {pod} did not become {target} within {timeout} s ({now}); it may still get there: follow it with `pinacle pod events {pod}`, or wait longer with --timeout"
            )
        }
    }
}

/// Whether a pod now in `state` is done being waited for: `Ok` once it is
/// `target`, `Err` with `reason` once it failed.
fn settled(pod: &str, target: &str, state: &str, reason: &str) -> Option<Result<()>> {
    match state {
        t if t == target => Some(Ok(())),
        "error" => Some(Err(anyhow::anyhow!("pod {pod} failed: {}", if reason.is_empty() { "no reason given" } else { reason }))),
        _ => None,
    }
}

/// `--repo URL[#BRANCH]` and `--commit SHA` as the API's `repository`
/// (the server checks them).
fn repository_arg(repo: &str, commit: Option<&str>) -> Result<Value> {
    let (url, branch) = match repo.split_once('#') {
        Some((url, branch)) if !branch.is_empty() => (url, Some(branch)),
        Some(_) => anyhow::bail!("--repo {repo:?}: write URL#BRANCH, or the URL alone for the default branch"),
        None => (repo, None),
    };
    let mut v = json!({"url": url});
    if let Some(b) = branch {
        v["branch"] = json!(b);
    }
    if let Some(c) = commit {
        v["commit"] = json!(c);
    }
    Ok(v)
}

fn human_bytes(b: u64) -> String {
    format!("{} GiB", b >> 30)
}

fn print_pod(p: &Value) {
    let s = |k: &str| p[k].as_str().unwrap_or("-").to_owned();
    println!("name:      {}", s("name"));
    println!("id:        {}", s("id"));
    println!("state:     {}", s("state"));
    if let Some(r) = p["state_reason"].as_str() {
        println!("reason:    {r}");
    }

    println!("template:  {} (image {})", s("template"), s("image"));
    let l = &p["limits"];
    println!(
        "tier:      {} ({} vCPU, {} memory, {} disk, {} processes)",
        s("tier"),
        l["vcpus"],
        human_bytes(l["memory_bytes"].as_u64().unwrap_or(0)),
        human_bytes(l["disk_bytes"].as_u64().unwrap_or(0)),
        l["pids"]
    );
    match p["host_status"].as_str() {
        Some(h) => println!("runtime:   {} on host {} ({h})", s("runtime"), s("host")),
        None => println!("runtime:   {} on host {}", s("runtime"), s("host")),
    }
    if let Some(url) = p["repository"]["url"].as_str() {
        let r = &p["repository"];
        let at = match (r["branch"].as_str(), r["commit"].as_str()) {
            (_, Some(c)) => format!(" at {c}"),
            (Some(b), None) => format!(" (branch {b})"),
            (None, None) => String::new(),
        };
        println!("repository: {url}{at}");
    }
    let ports: Vec<String> = p["public_ports"].as_array().into_iter().flatten().map(|v| v.to_string()).collect();
    println!("public:    {}", if ports.is_empty() { "no ports".to_owned() } else { ports.join(", ") });
    println!("egress:    {}", p["egress"].as_str().unwrap_or("allow-all"));
    println!("created:   {}", s("created_at"));
    println!("updated:   {}", s("updated_at"));
}

pub async fn run(cmd: PodCommand) -> Result<ExitCode> {
    let c = client()?;
    match cmd {
        PodCommand::Create { name, template, tier, from, strict, egress, runtime, wait, timeout, processes, install, repo, commit, image } => {
            let mut body = json!({"name": name, "template": template, "tier": tier, "strict": strict, "egress": egress});
            if let Some(image) = image {
                body["image"] = json!(image);
            }
            if let Some(repo) = repo {
                body["repository"] = repository_arg(&repo, commit.as_deref())?;
            }
            if let Some(dir) = from {
                let found = crate::pod_config::find(&dir)?;
                crate::pod_config::print_diagnostics(&found.report, None);
                if let Err(d) = pinacle_config::parse(&found.file, &found.yaml, pinacle_config::ParseOptions { strict }) {
                    crate::pod_config::print_diagnostics(&d, (!found.imported()).then_some(found.yaml.as_str()));
                    anyhow::bail!("{} has {} error(s)", found.file, d.errors().count());
                }
                body["config"] = json!(found.yaml);
                body["config_file"] = json!(found.file);
            }
            let mut defs = Vec::new();
            for p in &processes {
                let (n, cmd) = p.split_once('=').ok_or_else(|| anyhow::anyhow!("--process {p:?}: write NAME=COMMAND"))?;
                defs.push(json!({"name": n.trim(), "run": cmd}));
            }
            body["processes"] = json!(defs);
            body["install"] = json!(install.iter().enumerate().map(|(i, run)| json!({"name": format!("step{}", i + 1), "run": run})).collect::<Vec<_>>());
            if let Some(r) = runtime {
                body["runtime"] = json!(r);
            }
            let pod = c.json(Method::POST, "/pods", Some(body)).await?;
            if wait {
                wait_for(&c, &name, &name, "running", pod["created_at"].as_str(), timeout).await?;
                println!("pod {name} is running");
            } else {
                println!("pod {name} requested ({}); follow it with `pinacle pod show {name}`", pod["state"].as_str().unwrap_or("?"));
            }
        }
        PodCommand::List { json: as_json } => {
            let v = c.json(Method::GET, "/pods", None).await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{:<24} {:<13} {:<10} {:<10} {:<8} CREATED", "NAME", "STATE", "TEMPLATE", "TIER", "RUNTIME");
                for p in v["pods"].as_array().into_iter().flatten() {
                    let s = |k: &str| p[k].as_str().unwrap_or("-").to_owned();
                    // a pod on a host that is not ready says so beside its state
                    let state = match p["host_status"].as_str() {
                        Some(h) => format!("{} (host {h})", s("state")),
                        None => s("state"),
                    };
                    println!("{:<24} {:<13} {:<10} {:<10} {:<8} {}", s("name"), state, s("template"), s("tier"), s("runtime"), s("created_at"));
                }
            }
        }
        PodCommand::Show { pod, json: as_json } => {
            let p = c.json(Method::GET, &format!("/pods/{pod}"), None).await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                print_pod(&p);
            }
        }
        PodCommand::Exec { pod, stdin, env, workdir, command } => return exec(&c, &pod, stdin, env, workdir, command).await,
        PodCommand::Shell { pod, command } => return crate::shell::run(&c, &pod, command).await,
        PodCommand::Ps { pod } => {
            let v = c.json(Method::GET, &format!("/pods/{pod}/processes"), None).await?;
            for step in v["install"].as_array().into_iter().flatten() {
                println!("install {:<16} {}", step["name"].as_str().unwrap_or("-"), step["state"].as_str().unwrap_or("-"));
            }
            println!("{:<20} {:<9} {:>7} {:>8} {:<9} LAST EXIT", "PROCESS", "STATE", "PID", "RESTARTS", "HEALTH");
            for p in v["processes"].as_array().into_iter().flatten() {
                let health = match p["healthy"].as_bool() {
                    Some(true) => "healthy",
                    Some(false) => "unhealthy",
                    None => "-",
                };
                println!(
                    "{:<20} {:<9} {:>7} {:>8} {:<9} {}",
                    p["name"].as_str().unwrap_or("-"),
                    p["state"].as_str().unwrap_or("-"),
                    p["pid"].as_u64().map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
                    p["restarts"],
                    health,
                    p["last_exit"]["code"].as_i64().map(|x| x.to_string()).unwrap_or_else(|| "-".into())
                );
            }
        }
        PodCommand::Ports { pod } => {
            let v = c.json(Method::GET, &format!("/pods/{pod}/ports"), None).await?;
            println!("{:<7} {:<16} URL", "PORT", "ADDRESS");
            for p in v["ports"].as_array().into_iter().flatten() {
                println!("{:<7} {:<16} {}", p["port"], p["address"].as_str().unwrap_or("-"), p["url"].as_str().unwrap_or("(loopback only)"));
            }
        }
        PodCommand::Open { pod, port, path, embed } => {
            let body = serde_json::json!({ "port": port, "path": path, "embed": embed });
            let answer = c.json(Method::POST, &format!("/pods/{pod}/open"), Some(body)).await?;
            println!("{}", answer["url"].as_str().unwrap_or_default());
        }
        PodCommand::Snapshot(cmd) => return snapshot(&c, cmd).await,
        PodCommand::Configure { pod, public_ports, egress, image, snapshot_on_stop } => {
            let mut body = serde_json::Map::new();
            if let Some(list) = public_ports {
                let ports = pinacle_orchestrator::hostname::parse_ports(&list).map_err(|e| anyhow::anyhow!("--public-ports: {e}"))?;
                body.insert("public_ports".into(), serde_json::json!(ports));
            }
            if let Some(egress) = egress {
                body.insert("egress".into(), serde_json::json!(egress));
            }
            if let Some(image) = image {
                body.insert("image".into(), serde_json::json!(image));
            }
            if let Some(on) = snapshot_on_stop {
                body.insert("snapshot_on_stop".into(), serde_json::json!(on));
            }
            let p = c.json(Method::PATCH, &format!("/pods/{pod}"), Some(Value::Object(body))).await?;
            print_pod(&p);
        }
        PodCommand::Logs { pod, tail_bytes, process } => {
            let path = match process {
                Some(p) => format!("/pods/{pod}/processes/{p}/logs?tail_bytes={tail_bytes}"),
                None => format!("/pods/{pod}/logs?tail_bytes={tail_bytes}"),
            };
            let resp = c.send(Method::GET, &path, None).await?;
            print!("{}", resp.text().await?);
        }
        PodCommand::Events { pod } => {
            c.follow_events(&pod, |ev| {
                println!(
                    "{} {:<12} -> {:<12} {}",
                    ev["at"].as_str().unwrap_or(""),
                    ev["from"].as_str().unwrap_or("-"),
                    ev["to"].as_str().unwrap_or(""),
                    ev["message"].as_str().unwrap_or("")
                );
                (ev["to"] == "deleted").then_some(())
            })
            .await?;
        }
        PodCommand::RotateKeys { pod } => {
            let k = c.json(Method::POST, &format!("/pods/{pod}/rotate-keys"), None).await?;
            eprintln!("new key {} (the old one no longer works)", k["fingerprint"].as_str().unwrap_or_default());
            println!("{}", k["public_key"].as_str().unwrap_or_default());
        }
        PodCommand::PublicKey { pod } => {
            let k = c.json(Method::GET, &format!("/pods/{pod}/ssh-key"), None).await?;
            println!("{}", k["public_key"].as_str().unwrap_or_default());
        }
        PodCommand::Stop { pod, wait } => action(&c, &pod, "stop", "stopped", wait).await?,
        PodCommand::Start { pod, wait } => action(&c, &pod, "start", "running", wait).await?,
        PodCommand::Delete { pod, wait } => {
            let p = c.json(Method::GET, &format!("/pods/{pod}"), None).await?;
            let id = p["id"].as_str().unwrap_or(&pod).to_owned();
            let deleting: Value = c.send(Method::DELETE, &format!("/pods/{id}"), None).await?.json().await?;
            if wait.no_wait {
                println!("pod {pod} is being deleted");
            } else {
                // Follow by id: the name is free again once deleted. A pod
                // that is gone before we look is deleted already.
                match wait_for(&c, &id, &pod, "deleted", deleting["updated_at"].as_str(), wait.timeout).await {
                    Ok(()) => {}
                    Err(e) if e.downcast_ref::<crate::client::ServerError>().is_some_and(|s| s.code == "not_found") => {}
                    Err(e) => return Err(e),
                }
                println!("pod {pod} deleted");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `pod stop|start`: asks for `verb`, then (unless `--no-wait`) waits
/// until the pod is `target`.
async fn action(c: &Client, pod: &str, verb: &str, target: &str, wait: WaitArgs) -> Result<()> {
    let p = c.json(Method::POST, &format!("/pods/{pod}/{verb}"), None).await?;
    let state = p["state"].as_str().unwrap_or("?");
    if wait.no_wait {
        if verb == "start" && state == "stopping" {
            println!("pod {pod} is stopping; it starts once stopped");
        } else {
            println!("pod {pod} is {state}");
        }
        return Ok(());
    }
    // follow by id, as the answer names it
    let key = p["id"].as_str().unwrap_or(pod);
    wait_for(c, key, pod, target, p["updated_at"].as_str(), wait.timeout).await?;
    println!("pod {pod} is {target}");
    Ok(())
}

async fn exec(c: &Client, pod: &str, stdin: bool, env: Vec<String>, workdir: Option<String>, command: Vec<String>) -> Result<ExitCode> {
    let mut env_map = serde_json::Map::new();
    for kv in env {
        let (k, v) = kv.split_once('=').with_context(|| format!("--env {kv:?} must be NAME=VALUE"))?;
        env_map.insert(k.to_owned(), json!(v));
    }
    let mut body = json!({"command": command, "env": env_map});
    if let Some(w) = workdir {
        body["cwd"] = json!(w);
    }
    if stdin {
        let mut input = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut input).context("reading stdin")?;
        body["stdin"] = json!(input);
    }
    let resp = c.send(Method::POST, &format!("/pods/{pod}/exec"), Some(body)).await?;
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    let b64 = base64::engine::general_purpose::STANDARD;
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.context("exec stream broke")?);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let v: Value = serde_json::from_slice(&line).context("unreadable exec output")?;
            if let Some(code) = v.get("exit_code").and_then(Value::as_i64) {
                std::io::stdout().flush()?;
                return Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)));
            }
            let data = b64.decode(v["data"].as_str().unwrap_or("")).context("bad exec output")?;
            if v["stream"] == "stderr" {
                std::io::stderr().write_all(&data)?;
            } else {
                std::io::stdout().write_all(&data)?;
                std::io::stdout().flush()?;
            }
        }
    }
    bail!("the exec stream ended without an exit code")
}


#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Archive a stopped pod's /workspace and home directory.
    Create {
        pod: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List a pod's snapshots.
    List {
        pod: String,
        #[arg(long)]
        json: bool,
    },
    /// Replace a stopped pod's /workspace and home with a snapshot's.
    Restore { pod: String, snapshot: String },
    /// Delete a snapshot.
    Delete { pod: String, snapshot: String },
}

fn print_snapshot(s: &Value) {
    println!(
        "{:<28} {:<16} {:>10} {} {}{}",
        s["id"].as_str().unwrap_or("-"),
        s["name"].as_str().unwrap_or("-"),
        s["size_bytes"].as_u64().unwrap_or(0),
        &s["sha256"].as_str().unwrap_or("-")[..12.min(s["sha256"].as_str().unwrap_or("-").len())],
        s["created_at"].as_str().unwrap_or("-"),
        if s["auto"].as_bool() == Some(true) { " (auto)" } else { "" }
    );
}

async fn snapshot(c: &Client, cmd: SnapshotCommand) -> Result<ExitCode> {
    match cmd {
        SnapshotCommand::Create { pod, name } => {
            let pb = spinner(format!("archiving {pod}"));
            let s = c.json(Method::POST, &format!("/pods/{pod}/snapshots"), Some(json!({ "name": name }))).await;
            pb.finish_and_clear();
            let s = s?;
            println!("snapshot {} of {pod}: {} bytes, sha256 {}", s["id"].as_str().unwrap_or("?"), s["size_bytes"], s["sha256"].as_str().unwrap_or("?"));
        }
        SnapshotCommand::List { pod, json: as_json } => {
            let v = c.json(Method::GET, &format!("/pods/{pod}/snapshots"), None).await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{:<28} {:<16} {:>10} {:<12} CREATED", "ID", "NAME", "BYTES", "SHA256");
                for s in v["snapshots"].as_array().into_iter().flatten() {
                    print_snapshot(s);
                }
            }
        }
        SnapshotCommand::Restore { pod, snapshot } => {
            let pb = spinner(format!("restoring {snapshot} into {pod}"));
            let s = c.json(Method::POST, &format!("/pods/{pod}/snapshots/{snapshot}/restore"), None).await;
            pb.finish_and_clear();
            s?;
            println!("restored snapshot {snapshot} into {pod}; start it with `pinacle pod start {pod}`");
        }
        SnapshotCommand::Delete { pod, snapshot } => {
            c.json(Method::DELETE, &format!("/pods/{pod}/snapshots/{snapshot}"), None).await?;
            println!("deleted snapshot {snapshot} of {pod}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn template(cmd: TemplateCommand) -> Result<ExitCode> {
    match cmd {
        TemplateCommand::List => {
            println!("{:<13} {:<8} DESCRIPTION", "TEMPLATE", "IMAGE");
            for t in pinacle_config::templates::Template::known() {
                println!("{:<13} {:<8} {}", t.id, t.image, t.description);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(cmd: AuditCommand) -> Result<ExitCode> {
    let c = client()?;
    match cmd {
        AuditCommand::List { json: as_json, limit, before, all } => {
            // pages come newest first; each is oldest first within itself
            let mut entries: Vec<serde_json::Value> = Vec::new();
            let mut before = before;
            let next_before = loop {
                let path = match before {
                    Some(b) => format!("/audit?limit={limit}&before={b}"),
                    None => format!("/audit?limit={limit}"),
                };
                let page = c.json(Method::GET, &path, None).await?;
                let mut older: Vec<serde_json::Value> = page["entries"].as_array().cloned().unwrap_or_default();
                older.append(&mut entries);
                entries = older;
                match page["next_before"].as_i64() {
                    Some(b) if all => before = Some(b),
                    _ => break page["next_before"].clone(),
                }
            };
            let v = serde_json::json!({ "entries": entries, "next_before": next_before });
            if as_json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{:>5} {:<32} {:<10} {:<11} {:<15} TARGET", "ID", "AT", "ACTOR", "ACTION", "FROM");
                for e in v["entries"].as_array().into_iter().flatten() {
                    let s = |k: &str| e[k].as_str().unwrap_or("-").to_owned();
                    println!("{:>5} {:<32} {:<10} {:<11} {:<15} {}", e["id"], s("at"), s("actor_name"), s("action"), s("source"), s("target"));
                }
            }
        }
        AuditCommand::Verify => {
            let v = c.json(Method::GET, "/audit/verify", None).await?;
            if v["ok"] == true {
                println!("audit log intact: {} entries, head {}", v["entries"], v["head"].as_str().unwrap_or("?"));
            } else {
                println!(
                    "audit log BROKEN at entry {}: {}",
                    v["first_broken"],
                    v["reason"].as_str().unwrap_or("?")
                );
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn token(cmd: TokenCommand) -> Result<ExitCode> {
    let c = client()?;
    match cmd {
        TokenCommand::Create { name, exp, read_only } => {
            let mut body = json!({"name": name, "scope": if read_only { "read" } else { "full" }});
            if let Some(secs) = exp {
                body["expires_in_seconds"] = json!(secs);
            }
            let t = c.json(Method::POST, "/tokens", Some(body)).await?;
            eprintln!("token {} ({}, expires {}); store it now, it is not shown again:", t["id"].as_str().unwrap_or("?"), t["scope"].as_str().unwrap_or("?"), t["expires_at"].as_str().unwrap_or("never"));
            println!("{}", t["token"].as_str().unwrap_or(""));
        }
        TokenCommand::List => {
            let v = c.json(Method::GET, "/tokens", None).await?;
            println!("{:<36} {:<20} {:<5} {:<32} {:<32} EXPIRES", "ID", "NAME", "SCOPE", "CREATED", "LAST USED");
            for t in v["tokens"].as_array().into_iter().flatten() {
                let s = |k: &str| t[k].as_str().unwrap_or("-").to_owned();
                println!("{:<36} {:<20} {:<5} {:<32} {:<32} {}", s("id"), s("name"), s("scope"), s("created_at"), s("last_used_at"), s("expires_at"));
            }
        }
        TokenCommand::Revoke { id } => {
            c.send(Method::DELETE, &format!("/tokens/{id}"), None).await?;
            println!("token {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::{parse_lifetime, repository_arg, settled, PodCommand};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        pod: PodCommand,
    }

    #[test]
    fn stop_start_delete_wait_unless_told_not_to() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("pod").chain(args.iter().copied())).map(|c| c.pod);
        match parse(&["stop", "p"]).unwrap() {
            PodCommand::Stop { wait, .. } => assert!(!wait.no_wait && wait.timeout == 600),
            _ => panic!("not stop"),
        }
        match parse(&["start", "p", "--no-wait"]).unwrap() {
            PodCommand::Start { wait, .. } => assert!(wait.no_wait),
            _ => panic!("not start"),
        }
        match parse(&["delete", "p", "--wait", "--timeout", "5"]).unwrap() {
            PodCommand::Delete { wait, .. } => assert!(!wait.no_wait && wait.timeout == 5),
            _ => panic!("not delete"),
        }
        assert!(parse(&["stop", "p", "--wait", "--no-wait"]).is_err());
    }

    #[test]
    fn waiting_ends_at_the_target_or_an_error() {
        assert!(settled("p", "running", "starting", "").is_none());
        assert!(settled("p", "running", "stopping", "").is_none(), "a start asked for while stopping goes on waiting");
        assert!(settled("p", "running", "stopped", "").is_none());
        assert!(matches!(settled("p", "running", "running", ""), Some(Ok(()))));
        let err = settled("p", "stopped", "error", "runsc kill: boom").unwrap().unwrap_err().to_string();
        assert_eq!(err, "pod p failed: runsc kill: boom");
        assert!(settled("p", "stopped", "error", "").unwrap().unwrap_err().to_string().contains("no reason given"));
    }

    #[test]
    fn repositories_take_a_branch_after_a_hash_and_a_commit() {
        assert_eq!(repository_arg("https://h/a.git", None).unwrap(), serde_json::json!({"url": "https://h/a.git"}));
        assert_eq!(
            repository_arg("https://h/a.git#feature/x", Some("abc1234")).unwrap(),
            serde_json::json!({"url": "https://h/a.git", "branch": "feature/x", "commit": "abc1234"})
        );
        assert!(repository_arg("https://h/a.git#", None).is_err());
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("pod").chain(args.iter().copied())).map(|c| c.pod);
        assert!(parse(&["create", "p", "--commit", "abc1234"]).is_err(), "--commit needs --repo");
        match parse(&["create", "p", "--repo", "https://h/a#dev"]).unwrap() {
            PodCommand::Create { repo, commit, .. } => assert_eq!((repo.as_deref(), commit), (Some("https://h/a#dev"), None)),
            _ => panic!("not create"),
        }
    }

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("30m"), Ok(1800));
        assert_eq!(parse_lifetime("90"), Ok(90));
        assert_eq!(parse_lifetime("7d"), Ok(604_800));
        assert!(parse_lifetime("5y").is_err());
        assert!(parse_lifetime("m").is_err());
        assert!(parse_lifetime("99999999999999999999d").is_err());
    }
}
