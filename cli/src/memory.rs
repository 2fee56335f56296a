//! `pinacle memory …`: the memory service from a terminal, and its MCP
//! server over stdio for AI tools that spawn their servers.
//!
//! Inside a pod the commands use the pod's own address and token
//! (`PINAK_URL`, `PINAK_TOKEN_FILE`); elsewhere they sign in as the saved
//! user and ask the server for a memory token for `--project` (default:
//! this directory's git remote `origin`).

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use pinacle_memory_service::mcp::{Mint, OpError, Renewed, Rest, TokenSource};
use reqwest::Method;
use serde_json::{json, Value};

#[derive(Args, Debug, Clone, Default)]
pub struct Target {
    /// The project: a repository (`github.com/owner/repo` or its URL) or
    /// another name. Default: in a pod, the pod's; elsewhere, this
    /// directory's git remote `origin`.
    #[arg(long, global = true)]
    pub project: Option<String>,
    /// A team's memory instead of your own.
    #[arg(long, global = true)]
    pub team: Option<String>,
}

#[derive(Args, Debug)]
pub struct MemoryArgs {
    #[command(subcommand)]
    pub command: MemoryCommand,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Subcommand, Debug)]
pub enum MemoryCommand {
    /// Remember something.
    Add {
        content: String,
        /// semantic (default), episodic, procedural, session or working.
        #[arg(long)]
        layer: Option<String>,
        /// KEY=VALUE labels (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
    },
    /// Search by meaning and keywords.
    Search {
        query: String,
        #[arg(long, default_value_t = 10)]
        top_k: usize,
        /// Only these layers (comma-separated).
        #[arg(long, value_delimiter = ',')]
        layer: Vec<String>,
    },
    /// List memories, newest first.
    List {
        #[arg(long, value_delimiter = ',')]
        layer: Vec<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Every version of a memory and each change to it.
    History { id: String },
    /// Check a log's hash chain (changelog or events).
    Verify {
        #[arg(long, default_value = "changelog")]
        log: String,
    },
    /// Write the project's memories as JSON (to a file, or stdout).
    Export {
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Add the memories of an export to the project.
    Import { file: std::path::PathBuf },
    /// Copy another project's memories (as they stood at a changelog
    /// position, default now) into this one.
    Fork {
        /// The project to copy from (yours, or the team's with --team).
        #[arg(long)]
        from: String,
        /// Its changelog position (see `pinacle memory verify`).
        #[arg(long)]
        at: Option<i64>,
    },
    /// Embed again, with the server's embedder, the memories another one
    /// made (after --memory-embedder changed), showing progress.
    Reembed {
        /// Start it and return without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Print a memory token (15 minutes) for the project.
    Token,
    /// Serve the memory tools over MCP on stdin/stdout.
    Mcp,
}

/// The project of this directory's git remote `origin`.
fn project_from_git() -> Option<String> {
    let out = std::process::Command::new("git").args(["config", "--get", "remote.origin.url"]).output().ok()?;
    let url = String::from_utf8(out.stdout).ok()?;
    // git@github.com:owner/repo.git → github.com/owner/repo
    let url = url.trim();
    let url = match url.split_once('@') {
        Some((_, rest)) if !url.contains("://") => rest.replacen(':', "/", 1),
        _ => url.to_owned(),
    };
    pinacle_memory::project::from_repository_url(&url)
}

/// The REST client for `target`: the pod's own, or a token minted for the
/// signed-in user.
async fn connect(target: &Target) -> Result<Rest> {
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(120)).build()?;
    if let (None, None, Ok(url), Ok(file)) = (&target.project, &target.team, std::env::var("PINAK_URL"), std::env::var("PINAK_TOKEN_FILE")) {
        return Ok(Rest { base: url.trim_end_matches('/').to_owned(), token: TokenSource::File(file.into()), client: http });
    }
    let project = match &target.project {
        Some(p) => p.clone(),
        None => project_from_git().context("no --project given and this directory has no git remote `origin` to name one")?,
    };
    let client = crate::client::Client::new(crate::config::load()?)?;
    let mut body = json!({ "project": project });
    if let Some(t) = &target.team {
        body["team"] = json!(t);
    }
    let base = format!("{}/api/v1/memory", client.api());
    let minter = UserTokens { client, body };
    // the first one now: a refusal (no such team, signed out) is reported
    // before anything else runs
    let renewed = Renewed::new(minter);
    renewed.token(pinacle_memory_service::store::now_ms() / 1000).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Rest { base, token: TokenSource::Renewed(Arc::new(renewed)), client: http })
}

/// Memory tokens for the signed-in user, minted by the platform.
struct UserTokens {
    client: crate::client::Client,
    body: Value,
}

#[async_trait::async_trait]
impl Mint for UserTokens {
    async fn mint(&self) -> Result<(String, i64), OpError> {
        let refused = |message: String| OpError { status: 401, code: "unauthorized".into(), message };
        let minted = self.client.json(Method::POST, "/memory/tokens", Some(self.body.clone())).await.map_err(|e| refused(format!("minting a memory token: {e:#}")))?;
        let token = minted["token"].as_str().ok_or_else(|| refused("the server sent no memory token".into()))?;
        // how long it lives, from its own claims (this machine's clock may
        // not be the server's); 15 minutes when they cannot be read
        let lives = token
            .split('.')
            .nth(1)
            .and_then(|p| base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, p).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|c| Some(c["exp"].as_i64()? - c["iat"].as_i64()?))
            .filter(|s| *s > 0)
            .unwrap_or(900);
        Ok((token.to_owned(), lives))
    }
}

fn print(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn short(s: &str, n: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        one_line.chars().take(n.saturating_sub(1)).collect::<String>() + "…"
    }
}

pub async fn run(args: MemoryArgs) -> Result<std::process::ExitCode> {
    let (cmd, target) = (args.command, args.target);
    let rest = connect(&target).await?;
    let call = |m: Method, p: String, b: Option<Value>| {
        let rest = &rest;
        async move { rest.request(m, &p, b).await.map_err(anyhow::Error::from) }
    };
    match cmd {
        MemoryCommand::Add { content, layer, meta } => {
            let mut metadata = serde_json::Map::new();
            for kv in meta {
                let Some((k, v)) = kv.split_once('=') else { bail!("--meta {kv:?}: write KEY=VALUE") };
                metadata.insert(k.to_owned(), json!(v));
            }
            let v = call(Method::POST, "/memories".into(), Some(json!({"content": content, "layer": layer, "metadata": metadata}))).await?;
            let id = v["memory"]["id"].as_str().unwrap_or("?");
            match v["duplicate"].as_str() {
                Some(kind) => println!("{id} (already remembered: {kind} duplicate)"),
                None => println!("{id}"),
            }
        }
        MemoryCommand::Search { query, top_k, layer } => {
            let v = call(Method::POST, "/search".into(), Some(json!({"query": query, "top_k": top_k, "layers": layer}))).await?;
            for h in v["results"].as_array().into_iter().flatten() {
                let m = &h["memory"];
                println!(
                    "{:.3}  {:<10} {}  {}",
                    h["similarity"].as_f64().unwrap_or(0.0),
                    m["layer"].as_str().unwrap_or(""),
                    m["id"].as_str().unwrap_or(""),
                    short(m["content"].as_str().unwrap_or(""), 100)
                );
            }
        }
        MemoryCommand::List { layer, limit } => {
            let v = call(Method::GET, format!("/memories?limit={limit}&layers={}", layer.join(",")), None).await?;
            for m in v["memories"].as_array().into_iter().flatten() {
                println!("{}  {:<10} v{}  {}", m["id"].as_str().unwrap_or(""), m["layer"].as_str().unwrap_or(""), m["version"], short(m["content"].as_str().unwrap_or(""), 100));
            }
        }
        MemoryCommand::History { id } => print(&call(Method::GET, format!("/memories/{id}/history"), None).await?)?,
        MemoryCommand::Verify { log } => {
            let v = call(Method::GET, format!("/logs/{log}/verify"), None).await?;
            if v["ok"] == true {
                println!("{log}: {} entries, chain intact (head {})", v["entries"], v["head"].as_str().unwrap_or(""));
            } else {
                println!("{log}: BROKEN at entry {}: {}", v["broken_at"], v["reason"].as_str().unwrap_or(""));
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        MemoryCommand::Export { output } => {
            let v = call(Method::GET, "/export".into(), None).await?;
            let text = serde_json::to_string_pretty(&v)?;
            match output {
                Some(path) => {
                    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("{} memories written to {}", v["memories"].as_array().map_or(0, Vec::len), path.display());
                }
                None => println!("{text}"),
            }
        }
        MemoryCommand::Import { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let export: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
            let v = call(Method::POST, "/import".into(), Some(export)).await?;
            println!("{} added, {} already there", v["added"], v["duplicates"]);
        }
        MemoryCommand::Fork { from, at } => {
            let v = call(Method::POST, "/fork".into(), Some(serde_json::json!({"from_project": from, "changelog_seq": at}))).await?;
            println!("{} memories copied from {} at changelog entry {} ({} already here)", v["added"], v["from_project"].as_str().unwrap_or("?"), v["changelog_seq"], v["duplicates"]);
        }
        MemoryCommand::Reembed { no_wait } => {
            let mut v = call(Method::POST, "/reembed".into(), None).await?;
            let total = v["total"].as_i64().unwrap_or(0);
            eprintln!("re-embedding {total} memories with {}", v["embedder"].as_str().unwrap_or("?"));
            // polled twice a second; a job runs at the embedder's pace, so
            // this waits as long as it runs (Ctrl-C leaves it running)
            while !no_wait && v["state"] == "running" {
                let done = v["done"].as_i64().unwrap_or(0);
                eprint!("\r  {done}/{total} ({}%)", if total > 0 { done * 100 / total } else { 100 });
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                v = call(Method::GET, "/reembed".into(), None).await?;
            }
            if !no_wait {
                eprintln!();
            }
            match v["state"].as_str() {
                Some("failed") => {
                    println!("failed after {}/{total}: {}", v["done"], v["error"].as_str().unwrap_or(""));
                    return Ok(std::process::ExitCode::FAILURE);
                }
                Some(state) => println!("{state}: {}/{total} memories embedded with {}", v["done"], v["embedder"].as_str().unwrap_or("?")),
                None => println!("{v}"),
            }
        }
        MemoryCommand::Token => {
            match &rest.token {
                TokenSource::Fixed(t) => println!("{t}"),
                TokenSource::File(p) => println!("{}", std::fs::read_to_string(p)?.trim()),
                TokenSource::Renewed(r) => println!("{}", r.token(pinacle_memory_service::store::now_ms() / 1000).await.map_err(|e| anyhow::anyhow!("{e}"))?),
            }
        }
        MemoryCommand::Mcp => {
            pinacle_memory_service::mcp::serve_stdio(Arc::new(rest)).await?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
