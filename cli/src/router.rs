//! `pinacle router …`: the AI router from a terminal — run a task and watch
//! its tokens arrive, list models with their health, show and reload the
//! policy, see spend against budgets.
//!
//! Inside a pod the commands use the pod's own address and token
//! (`AION_URL`, `AION_TOKEN_FILE`); elsewhere, the saved sign-in.

use std::io::Write;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

#[derive(Subcommand, Debug)]
pub enum RouterCommand {
    /// Run a task and print its answer as it streams; the route, the reason
    /// and what it cost follow on stderr.
    Task {
        /// The prompt.
        input: String,
        /// The intent (default: the policy's default intent).
        #[arg(long)]
        intent: Option<String>,
        /// A model instead of an intent.
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        max_tokens: Option<u64>,
        /// local-only, hybrid or allow-api (only tightens the intent's).
        #[arg(long)]
        privacy: Option<String>,
        /// This task's budget in USD.
        #[arg(long)]
        budget_usd: Option<f64>,
        /// Makes a retry of this command the same task.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Print the result envelope as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Recent tasks, or one task's envelope.
    Tasks {
        id: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Everyone's (instance admins).
        #[arg(long)]
        all: bool,
    },
    /// Models and intents, with prices and provider health.
    Models,
    /// The policy in force; `reload` re-reads its files, `rollback` puts the
    /// previous version back (instance admins).
    Policy {
        #[arg(value_parser = ["show", "reload", "rollback"], default_value = "show")]
        action: String,
    },
    /// Spend against your budgets; with --records, the usage feed (one
    /// CSV line per ended task, for metering and billing).
    Usage {
        #[arg(long)]
        records: bool,
        /// Everyone's records (instance admins).
        #[arg(long, requires = "records")]
        all: bool,
        /// Start after this cursor (printed last, on stderr).
        #[arg(long, requires = "records")]
        after: Option<String>,
    },
    /// Module packages from OCI registries (instance admins).
    Module {
        #[command(subcommand)]
        action: ModuleAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum ModuleAction {
    /// Fetch a package, check its cosign signature against the server's
    /// trusted keys, and install it (or see it quarantined).
    Install {
        /// registry/repository:tag or @sha256:…
        reference: String,
        /// Registry user name (the password is read from
        /// PINACLE_REGISTRY_PASSWORD).
        #[arg(long)]
        username: Option<String>,
    },
    /// Installed and quarantined packages, and every module loaded.
    List,
    /// Remove an installed package, or a quarantined one by its name or digest.
    Remove { name: String },
}

/// Where requests go: the pod's gateway with its token, or the server with
/// the saved sign-in.
enum Target {
    Pod { base: String, token_file: String, http: reqwest::Client },
    User(crate::client::Client),
}

impl Target {
    fn open() -> Result<Self> {
        if let (Ok(base), Ok(file)) = (std::env::var("AION_URL"), std::env::var("AION_TOKEN_FILE")) {
            let http = reqwest::Client::builder().build()?;
            return Ok(Target::Pod { base: base.trim_end_matches('/').to_owned(), token_file: file, http });
        }
        Ok(Target::User(crate::client::Client::new(crate::config::load()?)?))
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>, headers: &[(&str, String)]) -> Result<reqwest::Response> {
        match self {
            Target::User(c) if headers.is_empty() => c.send_root(method, path, body).await,
            Target::User(c) => {
                // headers (Idempotency-Key) need the raw request: sign-in renewal first
                let cfg = crate::config::load()?;
                let http = reqwest::Client::new();
                let mut req = http.request(method, format!("{}{path}", c.api())).bearer_auth(cfg.token);
                for (k, v) in headers {
                    req = req.header(*k, v);
                }
                if let Some(b) = body {
                    req = req.json(&b);
                }
                check(req.send().await.context("cannot reach the Pinacle API")?).await
            }
            Target::Pod { base, token_file, http } => {
                let token = std::fs::read_to_string(token_file).with_context(|| format!("reading the pod's token {token_file}"))?;
                let mut req = http.request(method, format!("{base}{path}")).bearer_auth(token.trim());
                for (k, v) in headers {
                    req = req.header(*k, v);
                }
                if let Some(b) = body {
                    req = req.json(&b);
                }
                check(req.send().await.with_context(|| format!("cannot reach the router at {base}"))?).await
            }
        }
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        self.send(method, path, body, &[]).await?.json().await.context("the router sent invalid JSON")
    }
}

async fn check(resp: reqwest::Response) -> Result<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    let e = &v["error"];
    let mut msg = format!("{} ({}, HTTP {})", e["message"].as_str().unwrap_or("the router refused"), e["code"].as_str().unwrap_or("error"), status.as_u16());
    for d in e["diagnostics"].as_array().into_iter().flatten() {
        msg.push_str(&format!("\n  {}:{}:{}: {}: {}", d["file"].as_str().unwrap_or(""), d["line"], d["column"], d["path"].as_str().unwrap_or(""), d["message"].as_str().unwrap_or("")));
        if let Some(s) = d["suggestion"].as_str() {
            msg.push_str(&format!("; {s}"));
        }
    }
    Err(anyhow!(msg))
}

fn usd(v: &Value) -> String {
    format!("${:.6}", v.as_f64().unwrap_or(0.0))
}

fn summary(env: &Value) -> String {
    let route = &env["engine"]["route"];
    let u = &env["usage"];
    let tokens = &u["tokens"];
    format!(
        "{} on {} ({}: {})\n{} in + {} out tokens{}, {} (reserved {}), {} ms{}",
        route["model"].as_str().unwrap_or("-"),
        route["provider"].as_str().unwrap_or("-"),
        env["engine"]["chosen_by"].as_str().unwrap_or("-"),
        env["engine"]["reason"].as_str().unwrap_or(""),
        tokens["input"],
        tokens["output"],
        if tokens["estimated"].as_bool() == Some(true) { " (estimated)" } else { "" },
        usd(&u["cost_usd"]),
        usd(&u["reserved_usd"]),
        u["latency_ms"],
        u["ttft_ms"].as_u64().map_or(String::new(), |t| format!(", first token {t} ms")),
    )
}

pub async fn run(cmd: RouterCommand) -> Result<()> {
    let target = Target::open()?;
    match cmd {
        RouterCommand::Task { input, intent, model, max_tokens, privacy, budget_usd, idempotency_key, json } => {
            let mut body = json!({"input": input});
            for (k, v) in [("intent", intent.map(Value::from)), ("model", model.map(Value::from)), ("max_tokens", max_tokens.map(Value::from)), ("privacy", privacy.map(Value::from)), ("budget_usd", budget_usd.map(Value::from))] {
                if let Some(v) = v {
                    body[k] = v;
                }
            }
            let headers: Vec<(&str, String)> = idempotency_key.map(|k| ("idempotency-key", k)).into_iter().collect();
            let accepted: Value = target.send(Method::POST, "/v1/tasks", Some(body), &headers).await?.json().await?;
            let id = accepted["id"].as_str().ok_or_else(|| anyhow!("the router sent no task id"))?.to_owned();
            if !json {
                eprintln!("task {id}: {}", accepted["engine"]["reason"].as_str().unwrap_or(""));
            }
            let resp = target.send(Method::GET, &format!("/v1/stream/{id}"), None, &[]).await?;
            let mut body = resp.bytes_stream();
            let mut buf = String::new();
            let mut out = std::io::stdout();
            while let Some(chunk) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk.context("the task's stream broke")?));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    let mut event = "";
                    let mut data = String::new();
                    for line in frame.lines() {
                        if let Some(e) = line.strip_prefix("event:") {
                            event = match e.trim() {
                                "token" => "token",
                                "partial" => "partial",
                                "done" => "done",
                                "error" => "error",
                                _ => "",
                            };
                        } else if let Some(d) = line.strip_prefix("data:") {
                            data.push_str(d.trim_start());
                        }
                    }
                    let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                    match event {
                        "token" if !json => {
                            print!("{}", v["text"].as_str().unwrap_or(""));
                            let _ = out.flush();
                        }
                        "partial" if !json => eprintln!("\n[{} failed mid-answer; continuing on {}]", v["failed"]["model"].as_str().unwrap_or("?"), v["next"]["model"].as_str().unwrap_or("?")),
                        "done" | "error" => {
                            if json {
                                println!("{}", serde_json::to_string_pretty(&v)?);
                            } else {
                                println!();
                                eprintln!("{}", summary(&v));
                            }
                            if event == "error" {
                                let e = if v["error"].is_object() { &v["error"] } else { &v["error"]["error"] };
                                bail!("the task failed: {} ({})", e["message"].as_str().unwrap_or("no answer"), e["code"].as_str().unwrap_or("error"));
                            }
                            return Ok(());
                        }
                        _ => {}
                    }
                }
            }
            bail!("the task's stream ended before the task did; see `pinacle router tasks {id}`")
        }
        RouterCommand::Tasks { id: Some(id), .. } => {
            let env = target.json(Method::GET, &format!("/v1/tasks/{id}"), None).await?;
            println!("{}", serde_json::to_string_pretty(&env)?);
            Ok(())
        }
        RouterCommand::Tasks { id: None, limit, all } => {
            let v = target.json(Method::GET, &format!("/v1/tasks?limit={limit}&all={all}"), None).await?;
            println!("{:<34} {:<10} {:<22} {:>10} {:>8}  REASON", "TASK", "STATUS", "ROUTE", "COST", "MS");
            for t in v["tasks"].as_array().into_iter().flatten() {
                let e = &t["task"];
                println!(
                    "{:<34} {:<10} {:<22} {:>10} {:>8}  {}",
                    e["id"].as_str().unwrap_or(""),
                    e["status"].as_str().unwrap_or(""),
                    e["engine"]["route"]["model"].as_str().unwrap_or("-"),
                    usd(&e["usage"]["cost_usd"]),
                    e["usage"]["latency_ms"],
                    e["engine"]["reason"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        RouterCommand::Models => {
            let v = target.json(Method::GET, "/v1/models", None).await?;
            println!("{:<28} {:<10} {:<8} {:<14} {:>12} {:>12}  HEALTH", "MODEL", "KIND", "TIER", "PROVIDER", "IN $/MTOK", "OUT $/MTOK");
            for m in v["data"].as_array().into_iter().flatten() {
                let a = &m["aion"];
                let health = match a["health"]["availability"].as_str() {
                    Some(h) => format!("{h}{}", a["health"]["p95_ms"].as_u64().map_or(String::new(), |p| format!(", p95 {p} ms"))),
                    None => String::new(),
                };
                println!(
                    "{:<28} {:<10} {:<8} {:<14} {:>12} {:>12}  {}",
                    m["id"].as_str().unwrap_or(""),
                    a["kind"].as_str().unwrap_or(""),
                    a["tier"].as_str().unwrap_or(""),
                    m["owned_by"].as_str().unwrap_or(""),
                    a["price_per_mtok_usd"]["input"].as_f64().map_or(String::new(), |p| format!("{p}")),
                    a["price_per_mtok_usd"]["output"].as_f64().map_or(String::new(), |p| format!("{p}")),
                    health
                );
            }
            Ok(())
        }
        RouterCommand::Policy { action } => {
            let v = match action.as_str() {
                "reload" => target.json(Method::POST, "/router/policy/reload", None).await?,
                "rollback" => target.json(Method::POST, "/router/policy/rollback", None).await?,
                _ => target.json(Method::GET, "/router/policy", None).await?,
            };
            if let Some(c) = v.get("change") {
                if c["unchanged"].as_bool() == Some(true) {
                    println!("the files are unchanged: version {} ({}) stays", c["to_version"], c["to_digest"].as_str().unwrap_or(""));
                } else {
                    println!("version {} ({}) -> {} ({})", c["from_version"], c["from_digest"].as_str().unwrap_or(""), c["to_version"], c["to_digest"].as_str().unwrap_or(""));
                }
            } else {
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            Ok(())
        }
        RouterCommand::Module { action } => module(&target, action).await,
        RouterCommand::Usage { records: true, all, after } => {
            let mut cursor = after.unwrap_or_default();
            println!("task,subject,recorded_at_ms,status,model,provider,tokens_in,tokens_out,estimated,cost_usd");
            // bounded: at most 1,000 pages of 1,000
            for _ in 0..1000 {
                let q: String = form_urlencoded::Serializer::new(String::new()).append_pair("after", &cursor).append_pair("limit", "1000").append_pair("all", if all { "true" } else { "false" }).finish();
                let v = target.json(Method::GET, &format!("/router/usage/records?{q}"), None).await?;
                let rows = v["records"].as_array().cloned().unwrap_or_default();
                for r in &rows {
                    let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
                    println!("{},{},{},{},{},{},{},{},{},{:.6}", s("task"), s("subject"), r["recorded_at"], s("status"), s("model"), s("provider"), r["tokens"]["input"], r["tokens"]["output"], r["tokens"]["estimated"], r["cost_usd"].as_f64().unwrap_or(0.0));
                }
                if let Some(n) = v["next"].as_str() {
                    cursor = n.to_owned();
                }
                if rows.len() < 1000 {
                    break;
                }
            }
            eprintln!("next: --after {cursor}");
            Ok(())
        }
        RouterCommand::Usage { .. } => {
            let v = target.json(Method::GET, "/router/usage", None).await?;
            for b in v["budgets"].as_array().into_iter().flatten() {
                let (spent, reserved, cap) = (b["spent_usd"].as_f64().unwrap_or(0.0), b["reserved_usd"].as_f64().unwrap_or(0.0), b["cap_usd"].as_f64().unwrap_or(0.0));
                let width = 30usize;
                let filled = if cap > 0.0 { (((spent + reserved) / cap) * width as f64).round().clamp(0.0, width as f64) as usize } else { 0 };
                println!("{:<6} {:<40} [{}{}] ${spent:.4} of ${cap:.2}{}", b["kind"].as_str().unwrap_or(""), b["scope"].as_str().unwrap_or(""), "#".repeat(filled), ".".repeat(width - filled), if reserved > 0.0 { format!(" (${reserved:.4} reserved)") } else { String::new() });
            }
            if v["budgets"].as_array().is_none_or(Vec::is_empty) {
                println!("no budget applies to you");
            }
            Ok(())
        }
    }
}

async fn module(target: &Target, action: ModuleAction) -> Result<()> {
    match action {
        ModuleAction::Install { reference, username } => {
            let mut body = serde_json::json!({ "reference": reference });
            if let Some(u) = username {
                let password = std::env::var("PINACLE_REGISTRY_PASSWORD").map_err(|_| anyhow!("--username needs PINACLE_REGISTRY_PASSWORD set"))?;
                body["username"] = u.into();
                body["password"] = password.into();
            }
            eprintln!("fetching {reference} and its signature…");
            let v = target.json(Method::POST, "/router/modules", Some(body)).await?;
            let p = &v["package"];
            println!("installed module {} from {} ({}), signed by key {}", p["name"].as_str().unwrap_or("?"), p["reference"].as_str().unwrap_or(""), p["digest"].as_str().unwrap_or(""), p["signed_by"].as_str().unwrap_or("?"));
            println!("router version {} ({})", v["change"]["to_version"], v["change"]["to_digest"].as_str().unwrap_or(""));
        }
        ModuleAction::List => {
            let v = target.json(Method::GET, "/router/modules", None).await?;
            println!("{:<20} {:<11} {:<10} FROM", "MODULE", "RUNTIME", "STATE");
            for m in v["modules"].as_array().into_iter().flatten() {
                let from = m["package"].as_str().map_or("modules.yml".to_owned(), |p| format!("package {p}"));
                println!("{:<20} {:<11} {:<10} {from}", m["name"].as_str().unwrap_or(""), m["runtime"].as_str().unwrap_or(""), "loaded");
            }
            for p in v["packages"].as_array().into_iter().flatten().filter(|p| p["state"] == "quarantined") {
                println!("{:<20} {:<11} {:<10} {}: {}", p["name"].as_str().unwrap_or(""), "-", "quarantined", p["reference"].as_str().unwrap_or(""), p["reason"].as_str().unwrap_or(""));
            }
            let keys: Vec<&str> = v["trusted_keys"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            println!("trusted keys: {}", if keys.is_empty() { "none (every package is quarantined)".to_owned() } else { keys.join(", ") });
        }
        ModuleAction::Remove { name } => {
            let v = target.json(Method::DELETE, &format!("/router/modules/{name}"), None).await?;
            println!("removed {} ({})", v["removed"]["name"].as_str().unwrap_or(&name), v["removed"]["state"].as_str().unwrap_or(""));
        }
    }
    Ok(())
}
