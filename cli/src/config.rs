//! Where the CLI finds the server and its credentials.
//!
//! `pinacle login` keeps the server URL (and the user name) in a config file
//! and the credentials in the OS keyring (the kernel keyring on Linux) when
//! one works, else in the same file, which is always mode 0600.
//! `PINACLE_KEYRING=off` keeps everything in the file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What `pinacle login` stores.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CliConfig {
    pub api: String,
    /// An API token or a JWT access token. Empty in the file when the
    /// credentials live in the keyring.
    #[serde(default)]
    pub token: String,
    /// Refresh token of a password sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Whether `token` and `refresh_token` are in the keyring.
    #[serde(default)]
    pub in_keyring: bool,
    /// Credentials came from `PINACLE_TOKEN`: never save them.
    #[serde(skip)]
    pub from_env: bool,
}

/// What goes into the keyring.
#[derive(Serialize, Deserialize)]
struct Credentials {
    token: String,
    refresh_token: Option<String>,
}

/// `$PINACLE_CONFIG`, else `$XDG_CONFIG_HOME/pinacle/cli.json`, else
/// `~/.config/pinacle/cli.json`.
pub fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PINACLE_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("pinacle").join("cli.json")
}

/// The keyring entry for one config file (so two configs never collide).
fn keyring_entry() -> Option<keyring::Entry> {
    if std::env::var("PINACLE_KEYRING").is_ok_and(|v| v == "off" || v == "0") {
        return None;
    }
    keyring::Entry::new("pinacle", &config_path().display().to_string()).ok()
}

/// Stores the credentials in the keyring; `false` when there is none that
/// works (checked by reading them back).
fn store_in_keyring(cfg: &CliConfig) -> bool {
    let Some(entry) = keyring_entry() else { return false };
    let creds = Credentials { token: cfg.token.clone(), refresh_token: cfg.refresh_token.clone() };
    let Ok(text) = serde_json::to_string(&creds) else { return false };
    entry.set_password(&text).is_ok() && entry.get_password().is_ok_and(|back| back == text)
}

fn load_from_keyring() -> Option<Credentials> {
    serde_json::from_str(&keyring_entry()?.get_password().ok()?).ok()
}

/// Saves the config: credentials to the keyring if one works, else to the
/// file (mode 0600 either way). Returns the file and where the secrets went.
pub fn save(cfg: &CliConfig) -> Result<(PathBuf, &'static str)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = config_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut on_disk = cfg.clone();
    let place = if store_in_keyring(cfg) {
        on_disk.token = String::new();
        on_disk.refresh_token = None;
        on_disk.in_keyring = true;
        "the OS keyring"
    } else {
        on_disk.in_keyring = false;
        "the config file"
    };
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(&on_disk)?.as_bytes())?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok((path, place))
}

/// Forgets the saved credentials (file and keyring).
pub fn forget() -> Result<()> {
    if let Some(entry) = keyring_entry() {
        let _ = entry.delete_credential();
    }
    match std::fs::remove_file(config_path()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", config_path().display())),
    }
}

/// The saved config with its credentials, if any.
pub fn saved() -> Option<CliConfig> {
    let raw = std::fs::read(config_path()).ok()?;
    let mut cfg: CliConfig = serde_json::from_slice(&raw).ok()?;
    if cfg.in_keyring {
        let creds = load_from_keyring()?;
        cfg.token = creds.token;
        cfg.refresh_token = creds.refresh_token;
    }
    Some(cfg)
}

/// `PINACLE_API` and `PINACLE_TOKEN` if set, else the saved config.
pub fn load() -> Result<CliConfig> {
    let env_api = std::env::var("PINACLE_API").ok().filter(|s| !s.is_empty());
    let env_token = std::env::var("PINACLE_TOKEN").ok().filter(|s| !s.is_empty());
    let file = saved();
    let from_env = env_token.is_some();
    let api = env_api.or_else(|| file.as_ref().map(|c| c.api.clone()));
    let (token, refresh_token, user) = match env_token {
        Some(t) => (Some(t), None, None),
        None => match &file {
            Some(c) if !c.token.is_empty() => (Some(c.token.clone()), c.refresh_token.clone(), c.user.clone()),
            _ => (None, None, None),
        },
    };
    match (api, token) {
        (Some(api), Some(token)) => Ok(CliConfig {
            api: api.trim_end_matches('/').to_owned(),
            token,
            refresh_token,
            user,
            in_keyring: false,
            from_env,
        }),
        _ => anyhow::bail!(
            "not signed in to a Pinacle server: run `pinacle login --api URL --user NAME` (or --token TOKEN), or set PINACLE_API and PINACLE_TOKEN (looked in {})",
            config_path().display()
        ),
    }
}

