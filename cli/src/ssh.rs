//! `pinacle ssh`, `pinacle ssh-key` and `pinacle ssh-config`.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::config;

/// `pinacle ssh POD [-- SSH ARGS...]`.
#[derive(Args)]
pub struct SshArgs {
    /// The pod (name, TEAM/name or id).
    pub pod: String,
    /// Print the ssh command instead of running it (the key and
    /// certificate stay in place until they expire).
    #[arg(long)]
    pub print: bool,
    /// More arguments for ssh: options (`-L 8080:localhost:3000`, `-t`...),
    /// then a command to run.
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Subcommand)]
pub enum SshKeyCommand {
    /// Register a public key (such as ~/.ssh/id_ed25519.pub).
    Add {
        file: PathBuf,
        /// A name for it (default: the key's comment, or the file name).
        #[arg(long)]
        name: Option<String>,
    },
    /// List your keys.
    List,
    /// Remove a key (by id or SHA256 fingerprint).
    Remove { key: String },
}

#[derive(Args)]
pub struct SshConfigArgs {
    /// The suffix of the Host names (`POD.SUFFIX`).
    #[arg(long, default_value = "pinacle")]
    pub suffix: String,
}

fn client() -> Result<Client> {
    Client::new(config::load()?)
}

/// Where the CLI keeps SSH files: next to its config.
fn ssh_dir() -> PathBuf {
    config::config_path().parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".")).join("ssh")
}

fn private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| format!("restricting {}", dir.display()))
}

fn write_file(path: &Path, data: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// `[host]:port` as known_hosts writes a host on a port other than 22.
fn known_host(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The known_hosts file that trusts the platform's host CA for the
/// gateway; written next to the CLI's config.
fn write_known_hosts(host: &str, port: u16, host_ca: &str) -> Result<PathBuf> {
    let dir = ssh_dir();
    private_dir(&dir)?;
    let path = dir.join("known_hosts");
    write_file(&path, &format!("@cert-authority {} {host_ca}\n", known_host(host, port)), 0o644)?;
    Ok(path)
}

fn gateway_of(v: &Value) -> Result<(String, u16)> {
    let g = &v["gateway"];
    match (g["host"].as_str(), g["port"].as_u64()) {
        (Some(h), Some(p)) => Ok((h.to_owned(), u16::try_from(p).context("bad gateway port")?)),
        _ => anyhow::bail!("this Pinacle server runs no SSH gateway (start it with `pinacle up --ssh-listen ADDR:PORT`)"),
    }
}

pub async fn ssh(args: SshArgs) -> Result<ExitCode> {
    let c = client()?;
    let key = pinacle_api::ssh::new_ed25519_key("pinacle ssh").context("making a key")?;
    let public = key.public_key().to_openssh().context("encoding the key")?;
    let cert = c
        .json(Method::POST, &format!("/pods/{}/ssh-certificate", form_urlencoded::byte_serialize(args.pod.as_bytes()).collect::<String>()), Some(json!({ "public_key": public })))
        .await?;
    let (host, port) = gateway_of(&cert)?;
    let login = cert["login"].as_str().context("the server sent no login name")?.to_owned();
    let known = write_known_hosts(&host, port, cert["host_ca"].as_str().unwrap_or_default())?;
    let dir = ssh_dir().join("session");
    private_dir(&dir)?;
    let key_path = dir.join(format!("{login}-{}.key", std::process::id()));
    let cert_path = dir.join(format!("{login}-{}.key-cert.pub", std::process::id()));
    let pem = key.to_openssh(ssh_key::LineEnding::LF).context("encoding the key")?;
    write_file(&key_path, &pem, 0o600)?;
    write_file(&cert_path, &format!("{}\n", cert["certificate"].as_str().unwrap_or_default()), 0o644)?;
    let mut cmd_args: Vec<String> = vec![
        "-i".into(),
        key_path.display().to_string(),
        "-o".into(),
        format!("CertificateFile={}", cert_path.display()),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known.display()),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-p".into(),
        port.to_string(),
        "-l".into(),
        login.clone(),
    ];
    // OpenSSH reads options after the host too: the user's arguments
    // (options, then a command) simply follow it
    cmd_args.push(host.clone());
    cmd_args.extend(args.args.iter().cloned());
    if args.print {
        eprintln!("certificate valid until {}", cert["valid_before"].as_str().unwrap_or("?"));
        println!("ssh {}", cmd_args.join(" "));
        return Ok(ExitCode::SUCCESS);
    }
    let status = tokio::process::Command::new("ssh").args(&cmd_args).status().await;
    let _ = std::fs::remove_file(&key_path);
    let _ = std::fs::remove_file(&cert_path);
    let status = status.context("running ssh (install the OpenSSH client: apt-get install openssh-client)")?;
    Ok(ExitCode::from(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(255)))
}

/// The public key file and the file to sign with for `ssh-key add FILE`:
/// FILE may be the `.pub` (ssh-keygen finds the private key in ssh-agent
/// or next to it) or the private key with its `.pub` beside it.
fn key_files(file: &Path) -> (PathBuf, PathBuf) {
    if file.extension().is_some_and(|e| e == "pub") {
        return (file.to_path_buf(), file.to_path_buf());
    }
    let mut public = file.as_os_str().to_owned();
    public.push(".pub");
    let public = PathBuf::from(public);
    if public.is_file() {
        (public, file.to_path_buf())
    } else {
        (file.to_path_buf(), file.to_path_buf())
    }
}

/// Signs `challenge` with `ssh-keygen -Y sign`: the armored signature.
async fn sign_challenge(key: &Path, namespace: &str, challenge: &str) -> Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", namespace, "-f"])
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running ssh-keygen to prove you hold the key (install the OpenSSH client: apt-get install openssh-client)")?;
    let mut stdin = child.stdin.take().context("ssh-keygen's stdin")?;
    // ssh-keygen exits without reading when it cannot use the key: its
    // status and message below say why, not the broken pipe
    let _ = stdin.write_all(challenge.as_bytes()).await;
    drop(stdin);
    let out = child.wait_with_output().await.context("waiting for ssh-keygen")?;
    let signature = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || !signature.contains("BEGIN SSH SIGNATURE") {
        anyhow::bail!(
            "could not sign the challenge with the private key of {} (ssh-keygen -Y sign: {}); \
             load the key into ssh-agent or keep the private key next to the .pub file",
            key.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(signature)
}

pub async fn ssh_key(cmd: SshKeyCommand) -> Result<ExitCode> {
    let c = client()?;
    match cmd {
        SshKeyCommand::Add { file, name } => {
            let (public, signing) = key_files(&file);
            let text = std::fs::read_to_string(&public).with_context(|| format!("reading {}", public.display()))?;
            let name = name
                .or_else(|| text.split_whitespace().nth(2).map(str::to_owned))
                .unwrap_or_else(|| public.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "key".into()));
            // proof of possession: sign the server's challenge with the
            // private key (from ssh-agent, or the file next to the .pub)
            let ch = c.json(Method::POST, "/ssh-keys/challenge", None).await?;
            let challenge = ch["challenge"].as_str().context("the server sent no challenge")?;
            let namespace = ch["namespace"].as_str().context("the server sent no namespace")?;
            let signature = sign_challenge(&signing, namespace, challenge).await?;
            let body = json!({ "name": name, "public_key": text, "challenge": challenge, "signature": signature });
            let k = c.json(Method::POST, "/ssh-keys", Some(body)).await?;
            println!("{}  {}  {}", k["id"].as_str().unwrap_or("-"), k["fingerprint"].as_str().unwrap_or("-"), k["name"].as_str().unwrap_or("-"));
        }
        SshKeyCommand::List => {
            let v = c.json(Method::GET, "/ssh-keys", None).await?;
            println!("{:<38} {:<52} {:<12} {:<22} LAST USED", "ID", "FINGERPRINT", "TYPE", "NAME");
            for k in v["keys"].as_array().into_iter().flatten() {
                let s = |f: &str| k[f].as_str().unwrap_or("-").to_owned();
                println!("{:<38} {:<52} {:<12} {:<22} {}", s("id"), s("fingerprint"), s("algorithm"), s("name"), s("last_used_at"));
            }
        }
        SshKeyCommand::Remove { key } => {
            let id = if key.starts_with("SHA256:") {
                let v = c.json(Method::GET, "/ssh-keys", None).await?;
                v["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|k| k["fingerprint"].as_str() == Some(key.as_str()))
                    .and_then(|k| k["id"].as_str().map(str::to_owned))
                    .with_context(|| format!("no key of yours has fingerprint {key}"))?
            } else {
                key
            };
            c.send(Method::DELETE, &format!("/ssh-keys/{id}"), None).await?;
            eprintln!("removed {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn ssh_config(args: SshConfigArgs) -> Result<ExitCode> {
    let c = client()?;
    let info = c.json(Method::GET, "/ssh", None).await?;
    let (host, port) = gateway_of(&info)?;
    let known = write_known_hosts(&host, port, info["host_ca"].as_str().unwrap_or_default())?;
    let pods = c.json(Method::GET, "/pods", None).await?;
    // team pods are `pod.team`, by the team's name
    let teams = c.json(Method::GET, "/teams", None).await?;
    let team_name = |id: &str| -> String {
        teams["teams"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["id"].as_str() == Some(id))
            .and_then(|t| t["name"].as_str())
            .unwrap_or(id)
            .to_owned()
    };
    println!("# Pinacle pods through the SSH gateway at {}:{port}", host);
    println!("# (register a key first: pinacle ssh-key add ~/.ssh/id_ed25519.pub)");
    println!("# The gateway's host key is trusted through the CA line in {}", known.display());
    for p in pods["pods"].as_array().into_iter().flatten() {
        let Some(name) = p["name"].as_str() else { continue };
        let login = match p["team_id"].as_str() {
            Some(team) => format!("{name}.{}", team_name(team)),
            None => name.to_owned(),
        };
        println!();
        println!("Host {login}.{}", args.suffix);
        println!("    HostName {host}");
        println!("    Port {port}");
        println!("    User {login}");
        println!("    UserKnownHostsFile {}", known.display());
        println!("    StrictHostKeyChecking yes");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_names_a_port_the_way_ssh_does() {
        assert_eq!(known_host("127.0.0.1", 2222), "[127.0.0.1]:2222");
        assert_eq!(known_host("pods.example.com", 22), "pods.example.com");
    }
}
