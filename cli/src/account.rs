//! Account commands: `login`, `logout`, `secret`, `team`, `admin`.

use std::io::{BufRead, IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::config::{self, CliConfig};

/// `pinacle login`.
#[derive(clap::Args)]
pub struct LoginArgs {
    /// Server URL, such as http://127.0.0.1:7070.
    #[arg(long, env = "PINACLE_API")]
    pub api: String,
    /// Sign in with an API token.
    #[arg(long, conflicts_with = "user")]
    pub token: Option<String>,
    /// Sign in with a user name and password (asked for, or --password-stdin).
    #[arg(long)]
    pub user: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long, requires = "user")]
    pub password_stdin: bool,
    /// Sign in by approving a code from a device where you are signed in
    /// (`pinacle device approve CODE`), for machines without a browser.
    #[arg(long, conflicts_with_all = ["token", "user"])]
    pub device: bool,
}

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Let the device showing CODE sign in as you.
    Approve {
        code: String,
        /// Deny it instead.
        #[arg(long)]
        deny: bool,
    },
}

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Create or replace a secret; the value is read from standard input.
    Set {
        /// Environment variable name (A-Z, 0-9, _).
        name: String,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// List secret names (never values).
    List {
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Delete a secret.
    Delete {
        name: String,
        #[command(flatten)]
        scope: ScopeArgs,
    },
}

/// Which secrets: yours (default), a team's or a pod's.
#[derive(clap::Args)]
pub struct ScopeArgs {
    #[arg(long, conflicts_with = "pod")]
    pub team: Option<String>,
    #[arg(long)]
    pub pod: Option<String>,
}

impl ScopeArgs {
    fn query(&self) -> String {
        let enc = |s: &str| s.replace('%', "%25").replace('/', "%2F").replace('&', "%26").replace('=', "%3D");
        match (&self.team, &self.pod) {
            (Some(t), _) => format!("?team={}", enc(t)),
            (_, Some(p)) => format!("?pod={}", enc(p)),
            _ => String::new(),
        }
    }
}

#[derive(Subcommand)]
pub enum TeamCommand {
    /// Create a team; you become its owner.
    Create { name: String },
    /// Your teams and your role in each.
    List,
    /// A team's members.
    Show { team: String },
    /// Add an existing user (roles: owner, admin, member, viewer).
    Add {
        team: String,
        user: String,
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// Change a member's role.
    Role { team: String, user: String, role: String },
    /// Remove a member (or yourself: leave).
    Remove { team: String, user: String },
    /// Create an invitation code to join the team.
    Invite {
        team: String,
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// Join a team with an invitation code.
    Join { code: String },
    /// Delete a team (owners; the team must have no pods).
    Delete { team: String },
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Show or change instance settings.
    Settings {
        /// Who may sign up: open, invite or closed.
        #[arg(long)]
        signup: Option<String>,
        /// Let everyone run pods on youki (the host's kernel, behind a
        /// syscall filter and a user namespace); `false` leaves the lists.
        #[arg(long)]
        youki_everyone: Option<bool>,
        /// Teams whose pods may run on youki (comma-separated; "" for none).
        #[arg(long)]
        youki_teams: Option<String>,
        /// Tiers whose pods may run on youki (comma-separated; "" for none).
        #[arg(long)]
        youki_tiers: Option<String>,
    },
    /// Create an invitation code to sign up.
    Invite,
    /// Start signing access tokens with a new key (old tokens stay valid until they expire).
    RotateKeys,
}

fn client() -> Result<Client> {
    Client::new(config::load()?)
}

fn read_password(prompt: &str) -> Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("no terminal to ask for the password; use --password-stdin");
    }
    eprint!("{prompt}");
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let fd = std::io::stdin();
    let old = tcgetattr(&fd).context("reading terminal settings")?;
    let mut quiet = old.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&fd, SetArg::TCSANOW, &quiet).context("turning echo off")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&fd, SetArg::TCSANOW, &old);
    eprintln!();
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

pub async fn login(args: LoginArgs) -> Result<ExitCode> {
    let api = args.api.trim_end_matches('/').to_owned();
    let cfg = match (args.token, args.user) {
        (Some(token), _) => CliConfig { api: api.clone(), token, ..Default::default() },
        (None, Some(user)) => {
            let password = if args.password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line).context("reading the password from stdin")?;
                line.trim_end_matches(['\r', '\n']).to_owned()
            } else {
                read_password(&format!("Password for {user}: "))?
            };
            let resp = reqwest::Client::new()
                .post(format!("{api}/api/v1/auth/login"))
                .json(&json!({"name": user, "password": password}))
                .send()
                .await
                .with_context(|| format!("cannot reach the Pinacle API at {api}"))?;
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("sign-in refused: {}", body["error"]["message"].as_str().unwrap_or(status.as_str()));
            }
            CliConfig {
                api: api.clone(),
                token: body["access_token"].as_str().unwrap_or_default().to_owned(),
                refresh_token: body["refresh_token"].as_str().map(str::to_owned),
                user: Some(user),
                ..Default::default()
            }
        }
        (None, None) if args.device => device_login(&api).await?,
        (None, None) => bail!("give --user NAME (password sign-in), --device (approve from another device) or --token TOKEN (an API token)"),
    };
    let me = Client::new(cfg.clone())?.json(Method::GET, "/me", None).await?;
    let (path, place) = config::save(&cfg)?;
    println!(
        "Logged in to {api} as {} (credentials in {place}; settings in {})",
        me["name"].as_str().unwrap_or("?"),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Polls a device sign-in until approved, denied or expired.
async fn device_login(api: &str) -> Result<CliConfig> {
    let http = reqwest::Client::new();
    let unreachable = || format!("cannot reach the Pinacle API at {api}");
    let start: Value = http
        .post(format!("{api}/api/v1/auth/device"))
        .send()
        .await
        .with_context(unreachable)?
        .json()
        .await
        .context("server sent invalid JSON")?;
    let (Some(device_code), Some(user_code)) = (start["device_code"].as_str(), start["user_code"].as_str()) else {
        bail!("the server did not start a device sign-in: {start}");
    };
    eprintln!("To sign in, run this where you are already signed in to {api}:\n\n    pinacle device approve {user_code}\n");
    let interval = std::time::Duration::from_secs(start["interval"].as_u64().unwrap_or(2).clamp(1, 30));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(start["expires_in"].as_u64().unwrap_or(600).min(3600));
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message(format!("waiting for approval of {user_code}"));
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    loop {
        if std::time::Instant::now() > deadline {
            pb.finish_and_clear();
            bail!("the code expired before it was approved; run `pinacle login --device` again");
        }
        tokio::time::sleep(interval).await;
        let resp = http
            .post(format!("{api}/api/v1/auth/device/token"))
            .json(&json!({ "device_code": device_code }))
            .send()
            .await
            .with_context(unreachable)?;
        let ok = resp.status().is_success();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if ok {
            pb.finish_and_clear();
            return Ok(CliConfig {
                api: api.to_owned(),
                token: body["access_token"].as_str().unwrap_or_default().to_owned(),
                refresh_token: body["refresh_token"].as_str().map(str::to_owned),
                ..Default::default()
            });
        }
        if body["error"]["code"] != "authorization_pending" {
            pb.finish_and_clear();
            bail!("device sign-in failed: {}", body["error"]["message"].as_str().unwrap_or("unknown error"));
        }
    }
}

pub async fn device(cmd: DeviceCommand) -> Result<ExitCode> {
    let c = client()?;
    match cmd {
        DeviceCommand::Approve { code, deny } => {
            c.send(Method::POST, "/auth/device/approve", Some(json!({"user_code": code, "approve": !deny}))).await?;
            println!("device {code} {}", if deny { "denied" } else { "approved: it is now signed in as you" });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn logout() -> Result<ExitCode> {
    if let Some(cfg) = config::saved() {
        if cfg.refresh_token.is_some() {
            // end the session on the server too; a failure still forgets locally
            if let Ok(c) = Client::new(cfg) {
                let _ = c.send(Method::POST, "/auth/logout", None).await;
            }
        }
    }
    config::forget()?;
    println!("Logged out");
    Ok(ExitCode::SUCCESS)
}

pub async fn secret(cmd: SecretCommand) -> Result<ExitCode> {
    let c = client()?;
    match cmd {
        SecretCommand::Set { name, scope } => {
            if std::io::stdin().is_terminal() {
                eprintln!("Enter the value of {name}, then Ctrl-D:");
            }
            let mut value = String::new();
            std::io::stdin().read_to_string(&mut value).context("reading the value from stdin")?;
            // one trailing newline (from `echo` or the terminal) is not part of the value
            let value = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value);
            let path = format!("/secrets/{name}{}", scope.query());
            let v = c.json(Method::PUT, &path, Some(json!({ "value": value }))).await?;
            println!("secret {} set ({} {})", name, v["scope"].as_str().unwrap_or("?"), v["scope_id"].as_str().unwrap_or("?"));
        }
        SecretCommand::List { scope } => {
            let v = c.json(Method::GET, &format!("/secrets{}", scope.query()), None).await?;
            println!("{:<32} {:<6} {:<32} UPDATED", "NAME", "SCOPE", "CREATED");
            for s in v["secrets"].as_array().into_iter().flatten() {
                let f = |k: &str| s[k].as_str().unwrap_or("-").to_owned();
                println!("{:<32} {:<6} {:<32} {}", f("name"), f("scope"), f("created_at"), f("updated_at"));
            }
        }
        SecretCommand::Delete { name, scope } => {
            c.send(Method::DELETE, &format!("/secrets/{name}{}", scope.query()), None).await?;
            println!("secret {name} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn team(cmd: TeamCommand) -> Result<ExitCode> {
    let c = client()?;
    match cmd {
        TeamCommand::Create { name } => {
            c.json(Method::POST, "/teams", Some(json!({ "name": name }))).await?;
            println!("team {name} created; you are its owner");
        }
        TeamCommand::List => {
            let v = c.json(Method::GET, "/teams", None).await?;
            println!("{:<32} ROLE", "TEAM");
            for t in v["teams"].as_array().into_iter().flatten() {
                println!("{:<32} {}", t["name"].as_str().unwrap_or("?"), t["role"].as_str().unwrap_or("?"));
            }
        }
        TeamCommand::Show { team } => {
            let v = c.json(Method::GET, &format!("/teams/{team}"), None).await?;
            println!("{:<32} {:<8} SINCE", "MEMBER", "ROLE");
            for m in v["members"].as_array().into_iter().flatten() {
                let f = |k: &str| m[k].as_str().unwrap_or("-").to_owned();
                println!("{:<32} {:<8} {}", f("name"), f("role"), f("since"));
            }
        }
        TeamCommand::Add { team, user, role } => {
            c.json(Method::POST, &format!("/teams/{team}/members"), Some(json!({"user": user, "role": role}))).await?;
            println!("{user} added to {team} as {role}");
        }
        TeamCommand::Role { team, user, role } => {
            c.json(Method::PATCH, &format!("/teams/{team}/members/{user}"), Some(json!({ "role": role }))).await?;
            println!("{user} is now {role} in {team}");
        }
        TeamCommand::Remove { team, user } => {
            c.send(Method::DELETE, &format!("/teams/{team}/members/{user}"), None).await?;
            println!("{user} removed from {team}");
        }
        TeamCommand::Invite { team, role } => {
            let v = c.json(Method::POST, "/invites", Some(json!({"team": team, "role": role}))).await?;
            eprintln!("invitation to {team} as {role}, valid until {}; share it privately:", v["expires_at"].as_str().unwrap_or("?"));
            println!("{}", v["code"].as_str().unwrap_or(""));
        }
        TeamCommand::Join { code } => {
            let v = c.json(Method::POST, "/invites/accept", Some(json!({ "code": code }))).await?;
            println!("joined {} as {}", v["name"].as_str().unwrap_or("?"), v["role"].as_str().unwrap_or("?"));
        }
        TeamCommand::Delete { team } => {
            c.send(Method::DELETE, &format!("/teams/{team}"), None).await?;
            println!("team {team} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn admin(cmd: AdminCommand) -> Result<ExitCode> {
    let c = client()?;
    match cmd {
        AdminCommand::Settings { signup, youki_everyone, youki_teams, youki_tiers } => {
            let mut change = serde_json::Map::new();
            if let Some(mode) = signup {
                change.insert("signup".into(), json!(mode));
            }
            if youki_everyone.is_some() || youki_teams.is_some() || youki_tiers.is_some() {
                let now = c.json(Method::GET, "/admin/settings", None).await?;
                let list = |arg: Option<String>, key: &str| match arg {
                    Some(s) => json!(s.split(',').map(str::trim).filter(|t| !t.is_empty()).collect::<Vec<_>>()),
                    None => now["youki"][key].clone(),
                };
                change.insert(
                    "youki".into(),
                    json!({
                        "everyone": youki_everyone.unwrap_or_else(|| now["youki"]["everyone"].as_bool().unwrap_or(false)),
                        "teams": list(youki_teams, "teams"),
                        "tiers": list(youki_tiers, "tiers"),
                    }),
                );
            }
            let v = if change.is_empty() {
                c.json(Method::GET, "/admin/settings", None).await?
            } else {
                c.json(Method::PATCH, "/admin/settings", Some(serde_json::Value::Object(change))).await?
            };
            println!("signup: {}", v["signup"].as_str().unwrap_or("?"));
            let youki = &v["youki"];
            let names = |key: &str| {
                youki[key].as_array().map(|a| a.iter().filter_map(|t| t.as_str()).collect::<Vec<_>>().join(",")).unwrap_or_default()
            };
            if youki["everyone"].as_bool() == Some(true) {
                println!("youki: everyone");
            } else {
                println!("youki: teams [{}], tiers [{}] (everyone else: gvisor)", names("teams"), names("tiers"));
            }
        }
        AdminCommand::Invite => {
            let v = c.json(Method::POST, "/invites", Some(json!({}))).await?;
            eprintln!("sign-up invitation, valid until {}:", v["expires_at"].as_str().unwrap_or("?"));
            println!("{}", v["code"].as_str().unwrap_or(""));
        }
        AdminCommand::RotateKeys => {
            let v = c.json(Method::POST, "/admin/signing-keys/rotate", None).await?;
            println!("new signing key {}", v["kid"].as_str().unwrap_or("?"));
        }
    }
    Ok(ExitCode::SUCCESS)
}
