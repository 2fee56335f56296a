//! Images from registries: which credentials a pull uses, and how a pod's
//! image reference becomes a root filesystem (through [`pinacle_oci`]).
//!
//! Credentials are the pod owner's secrets, in the convention GitHub
//! Codespaces uses: three secrets sharing a prefix,
//! `{P}_CONTAINER_REGISTRY_SERVER` (`ghcr.io`, `registry.example.com:5000`),
//! `{P}_CONTAINER_REGISTRY_USER` and `{P}_CONTAINER_REGISTRY_PASSWORD` (a
//! password or token). A registry with no such triple is pulled anonymously.

use pinacle_oci::Credentials;

const SERVER: &str = "_CONTAINER_REGISTRY_SERVER";
const USER: &str = "_CONTAINER_REGISTRY_USER";
const PASSWORD: &str = "_CONTAINER_REGISTRY_PASSWORD";

/// The credentials in `env` (`NAME=value` strings, a pod's secrets) for
/// `registry` (`host[:port]`, as [`pinacle_oci::Reference::registry`] gives
/// it). Docker Hub is matched by any of its names.
pub fn credentials_for(env: &[String], registry: &str) -> Credentials {
    let get = |name: &str| env.iter().find_map(|kv| kv.strip_prefix(name).and_then(|r| r.strip_prefix('=')));
    let canonical = |s: &str| {
        let s = s.trim().trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/').to_ascii_lowercase();
        match s.as_str() {
            "docker.io" | "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
            _ => s,
        }
    };
    let wanted = canonical(registry);
    for kv in env {
        let Some((name, server)) = kv.split_once('=') else { continue };
        let Some(prefix) = name.strip_suffix(SERVER) else { continue };
        if prefix.is_empty() || canonical(server) != wanted {
            continue;
        }
        if let (Some(username), Some(password)) = (get(&format!("{prefix}{USER}")), get(&format!("{prefix}{PASSWORD}"))) {
            return Credentials::Basic { username: username.to_owned(), password: password.to_owned() };
        }
    }
    Credentials::Anonymous
}

/// Every registry `env` holds credentials for, with them (for builds,
/// whose base images may come from several registries).
pub fn all_credentials(env: &[String]) -> Vec<(String, Credentials)> {
    let mut out: Vec<(String, Credentials)> = Vec::new();
    for kv in env {
        let Some((name, server)) = kv.split_once('=') else { continue };
        if !name.ends_with(SERVER) {
            continue;
        }
        let server = server.trim().trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/').to_ascii_lowercase();
        if server.is_empty() || out.iter().any(|(s, _)| *s == server) {
            continue;
        }
        if let c @ Credentials::Basic { .. } = credentials_for(env, &server) {
            out.push((server, c));
        }
    }
    out
}

/// A one-line account of a pull's progress for the pod's events, or `None`
/// for reports not worth an event (intermediate download chunks).
pub fn progress_line(p: &pinacle_oci::PullProgress) -> Option<String> {
    use pinacle_oci::PullPhase;
    let layer = p.layer.as_ref();
    let of = |l: &pinacle_oci::LayerProgress| format!("layer {}/{} ({})", l.index + 1, l.count, human_bytes(l.total));
    match (p.phase, layer) {
        (PullPhase::Resolving, _) => Some(format!("pulling {}", p.reference)),
        (PullPhase::Downloading, Some(l)) if l.done == 0 => Some(format!("downloading {}", of(l))),
        (PullPhase::Downloading, _) => None,
        (PullPhase::Cached, Some(l)) => Some(format!("{} already on this host", of(l))),
        (PullPhase::Cached, None) => Some(format!("image {} already on this host", p.reference)),
        (PullPhase::Unpacking, Some(l)) => Some(format!("unpacking {}", of(l))),
        (PullPhase::Unpacking, None) => None,
        (PullPhase::Done, _) => Some(format!("pulled {}", p.reference)),
    }
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<String> {
        pairs.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    #[test]
    fn the_triple_for_the_registry_is_used_and_others_are_not() {
        let e = env(&[
            ("GHCR_CONTAINER_REGISTRY_SERVER", "ghcr.io"),
            ("GHCR_CONTAINER_REGISTRY_USER", "octo"),
            ("GHCR_CONTAINER_REGISTRY_PASSWORD", "ghp_secret"),
            ("LOCAL_CONTAINER_REGISTRY_SERVER", "https://127.0.0.1:5000/"),
            ("LOCAL_CONTAINER_REGISTRY_USER", "u"),
            ("LOCAL_CONTAINER_REGISTRY_PASSWORD", "p=with=equals"),
            ("HUB_CONTAINER_REGISTRY_SERVER", "index.docker.io"),
            ("HUB_CONTAINER_REGISTRY_USER", "me"),
            ("HUB_CONTAINER_REGISTRY_PASSWORD", "dckr_pat"),
        ]);
        assert_eq!(credentials_for(&e, "ghcr.io"), Credentials::Basic { username: "octo".into(), password: "ghp_secret".into() });
        assert_eq!(credentials_for(&e, "GHCR.IO"), Credentials::Basic { username: "octo".into(), password: "ghp_secret".into() });
        assert_eq!(credentials_for(&e, "127.0.0.1:5000"), Credentials::Basic { username: "u".into(), password: "p=with=equals".into() });
        assert_eq!(credentials_for(&e, "docker.io"), Credentials::Basic { username: "me".into(), password: "dckr_pat".into() });
        assert_eq!(credentials_for(&e, "quay.io"), Credentials::Anonymous);
        assert_eq!(credentials_for(&e, "127.0.0.1:5001"), Credentials::Anonymous);
    }

    #[test]
    fn an_incomplete_triple_or_an_empty_prefix_gives_no_credentials() {
        let e = env(&[("X_CONTAINER_REGISTRY_SERVER", "ghcr.io"), ("X_CONTAINER_REGISTRY_USER", "octo"), ("_CONTAINER_REGISTRY_SERVER", "quay.io"), ("_CONTAINER_REGISTRY_USER", "a"), ("_CONTAINER_REGISTRY_PASSWORD", "b")]);
        assert_eq!(credentials_for(&e, "ghcr.io"), Credentials::Anonymous);
        assert_eq!(credentials_for(&e, "quay.io"), Credentials::Anonymous);
    }

    #[test]
    fn progress_lines_name_layers_and_skip_chunks() {
        use pinacle_oci::{LayerProgress, PullPhase, PullProgress};
        let digest = pinacle_oci::Digest::of(b"x");
        let at = |phase, done| PullProgress {
            reference: "r".into(),
            phase,
            layer: Some(LayerProgress { index: 1, count: 3, digest: digest.clone(), done, total: 5 << 20 }),
        };
        assert_eq!(progress_line(&at(PullPhase::Downloading, 0)).as_deref(), Some("downloading layer 2/3 (5.0 MiB)"));
        assert_eq!(progress_line(&at(PullPhase::Downloading, 100)), None);
        assert_eq!(progress_line(&at(PullPhase::Cached, 5 << 20)).as_deref(), Some("layer 2/3 (5.0 MiB) already on this host"));
    }
}
