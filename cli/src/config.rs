//! Where the CLI finds the server and its credentials.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// What `pinacle login` stores.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CliConfig {
    pub api: String,
    pub token: String,
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

/// Writes the config with mode 0600 (it holds a token).
pub fn save(cfg: &CliConfig) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = config_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(cfg)?.as_bytes())?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `PINACLE_API` and `PINACLE_TOKEN` if set, else the saved config.
pub fn load() -> Result<CliConfig> {
    let saved = || -> Option<CliConfig> {
        let raw = std::fs::read(config_path()).ok()?;
        serde_json::from_slice(&raw).ok()
    };
    let env_api = std::env::var("PINACLE_API").ok().filter(|s| !s.is_empty());
    let env_token = std::env::var("PINACLE_TOKEN").ok().filter(|s| !s.is_empty());
    let file = saved();
    let api = env_api.or_else(|| file.as_ref().map(|c| c.api.clone()));
    let token = env_token.or_else(|| file.as_ref().map(|c| c.token.clone()));
    match (api, token) {
        (Some(api), Some(token)) => Ok(CliConfig { api: api.trim_end_matches('/').to_owned(), token }),
        _ => anyhow::bail!(
            "no Pinacle server configured: set PINACLE_API and PINACLE_TOKEN, or run `pinacle login --api URL --token TOKEN` (looked in {})",
            config_path().display()
        ),
    }
}
