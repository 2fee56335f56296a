//! `pinacle host …`: the hosts that run pods (administrator).

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use crate::client::Client;
use crate::config;

#[derive(Subcommand)]
pub enum HostCommand {
    /// Add a host and print the one-time token its agent joins with
    /// (valid for an hour).
    Add { host: String },
    /// Print a reusable join token: every agent joining with it names its
    /// own host (`pinacle agent --host-name`), such as a DaemonSet's nodes.
    Token {
        /// Seconds it stays valid (60 to 31536000).
        #[arg(long, default_value_t = 30 * 86_400)]
        expires_in: i64,
    },
    /// List hosts: status (ready, cordoned, unreachable, lost), capacity,
    /// what their pods use, last heartbeat.
    List {
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Keep new pods off a host.
    Cordon { host: String },
    /// Let new pods onto a host again.
    Uncordon { host: String },
    /// Cordon a host and stop the pods running on it.
    Drain { host: String },
    /// Forget a host that holds no pods.
    Remove { host: String },
}

fn client() -> Result<Client> {
    Client::new(config::load()?)
}

fn path(host: &str, what: &str) -> String {
    let id: String = form_urlencoded::byte_serialize(host.as_bytes()).collect();
    format!("/admin/hosts/{id}{what}")
}

/// One line of `host list`.
fn line(h: &Value) -> String {
    let gib = |b: &Value| b.as_u64().unwrap_or(0) as f64 / f64::from(1u32 << 30);
    format!(
        "{:<16} {:<12} {:>3}/{:<3} {:>6.1}/{:<6.1} {:>4}  {:<14} {}{}",
        h["id"].as_str().unwrap_or("?"),
        h["status"].as_str().unwrap_or("?"),
        h["vcpus_used"],
        h["vcpus"],
        gib(&h["memory_used"]),
        gib(&h["memory_bytes"]),
        h["pods"],
        h["runtimes"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")).unwrap_or_default(),
        h["last_seen_at"].as_str().unwrap_or("?"),
        if h["connected"].as_bool() == Some(true) { "" } else { "  (not connected to this server)" },
    )
}

pub async fn run(cmd: HostCommand) -> Result<ExitCode> {
    let c = client()?;
    match cmd {
        HostCommand::List { json } => {
            let v = c.json(Method::GET, "/admin/hosts", None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<16} {:<12} {:>7} {:>13} {:>4}  {:<14} LAST SEEN", "HOST", "STATUS", "VCPUS", "MEMORY GiB", "PODS", "RUNTIMES");
            for h in v.as_array().into_iter().flatten() {
                println!("{}", line(h));
            }
        }
        HostCommand::Token { expires_in } => {
            let v = c.json(Method::POST, "/admin/host-tokens", Some(serde_json::json!({ "expires_in_seconds": expires_in }))).await?;
            eprintln!("reusable join token (shown once, valid until {}); agents join with --host-name NAME:", v["expires_at"].as_str().unwrap_or("?"));
            println!("{}", v["join_token"].as_str().unwrap_or(""));
        }
        HostCommand::Add { host } => {
            let v = c.json(Method::POST, "/admin/hosts", Some(serde_json::json!({ "name": host }))).await?;
            eprintln!("host {host} added; its join token (shown once, valid until {}):", v["expires_at"].as_str().unwrap_or("?"));
            println!("{}", v["join_token"].as_str().unwrap_or(""));
        }
        HostCommand::Cordon { host } => {
            let v = c.json(Method::POST, &path(&host, "/cordon"), None).await?;
            println!("host {host} is {}: no new pods", v["status"].as_str().unwrap_or("?"));
        }
        HostCommand::Uncordon { host } => {
            let v = c.json(Method::POST, &path(&host, "/uncordon"), None).await?;
            println!("host {host} is {}", v["status"].as_str().unwrap_or("?"));
        }
        HostCommand::Drain { host } => {
            let v = c.json(Method::POST, &path(&host, "/drain"), None).await?;
            let names = |key: &str| v[key].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect::<Vec<_>>();
            let (pods, waiting) = (names("stopping"), names("not_stopped"));
            println!("host {host} is cordoned; stopping {} pod(s){}{}", pods.len(), if pods.is_empty() { "" } else { ": " }, pods.join(", "));
            if !waiting.is_empty() {
                println!("not stopped yet (still starting; drain again once they run): {}", waiting.join(", "));
            }
        }
        HostCommand::Remove { host } => {
            c.send(Method::DELETE, &path(&host, ""), None).await?;
            println!("host {host} removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}
