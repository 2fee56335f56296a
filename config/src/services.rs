//! The services registry: what a pod gets when its `pinacle.yaml` lists a
//! service by name.
//!
//! Every install step is idempotent (it does nothing when the program is
//! already there), so an image that has a service baked in starts it without
//! touching the network.

/// What kind of thing a service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    /// An AI coding assistant's CLI; a pod has at most one.
    CodingAssistant,
    /// A browser editor.
    Editor,
    /// The pod's own terminal over the supervisor's pty.
    Terminal,
    /// A database server.
    Database,
    /// A notebook server.
    Notebook,
}

/// How the service is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServiceHealth {
    /// The pod's supervisor answers (built into every pod).
    Supervisor,
    /// Its program is installed (an assistant's CLI, run in a terminal tab).
    Installed { program: &'static str },
    /// A TCP connection to the port succeeds.
    Tcp { port: u16 },
    /// An HTTP GET answers below 400.
    Http { port: u16, path: &'static str },
}

/// How the service appears as a tab in the browser IDE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServiceTab {
    /// No tab (databases).
    None,
    /// A terminal running `command` (a login shell when `None`).
    Terminal { command: Option<&'static str> },
    /// A web page served by the service on `port`.
    Web { port: u16, path: &'static str },
}

/// A service a pod can ask for by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Service {
    /// The name used in `services:` (`code-server`).
    pub id: &'static str,
    /// The tab title (`VS Code`).
    pub display_name: &'static str,
    pub description: &'static str,
    pub kind: ServiceKind,
    /// Shell steps run (in order) before any process starts; each skips
    /// itself when the service is already installed.
    pub install: &'static [&'static str],
    /// The command the supervisor keeps running; `None` when there is no
    /// server process (assistants, the built-in terminal).
    pub start: Option<&'static str>,
    /// The port it listens on inside the pod.
    pub port: Option<u16>,
    pub health: ServiceHealth,
    pub tab: ServiceTab,
    /// Secrets (environment variable names) it needs, like `ANTHROPIC_API_KEY`.
    pub secrets: &'static [&'static str],
    /// Why this Pinacle cannot run it yet, if it cannot: a file that asks
    /// for it gets a warning saying so, and the pod runs without it.
    pub unsupported: Option<&'static str>,
}

impl Service {
    /// Whether this is an AI coding assistant.
    pub fn is_coding_assistant(&self) -> bool {
        self.kind == ServiceKind::CodingAssistant
    }

    /// Finds a service by id.
    pub fn find(id: &str) -> Option<&'static Service> {
        SERVICES.iter().find(|s| s.id == id)
    }

    /// Whether this Pinacle can run it.
    pub fn is_supported(&self) -> bool {
        self.unsupported.is_none()
    }

    /// Every service id, for messages and the schema.
    pub fn ids() -> impl Iterator<Item = &'static str> {
        SERVICES.iter().map(|s| s.id)
    }
}

/// Installs Node.js and npm from Debian when they are missing.
const NODE: &str = "command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }";

/// The order tabs are generated in: assistants, editor, terminal, then the rest.
pub const TAB_ORDER: &[&str] = &["claude-code", "openai-codex", "gemini-cli", "code-server", "web-terminal", "jupyter"];

/// The registry.
pub const SERVICES: &[Service] = &[
    Service {
        id: "claude-code",
        display_name: "Claude Code",
        description: "Anthropic's coding agent CLI (npm @anthropic-ai/claude-code), in a terminal tab",
        kind: ServiceKind::CodingAssistant,
        install: &[NODE, "command -v claude >/dev/null || npm install -g --no-fund --no-audit @anthropic-ai/claude-code"],
        start: None,
        port: None,
        health: ServiceHealth::Installed { program: "claude" },
        tab: ServiceTab::Terminal { command: Some("claude") },
        secrets: &["ANTHROPIC_API_KEY"],
        unsupported: None,
    },
    Service {
        id: "openai-codex",
        display_name: "Codex",
        description: "OpenAI's Codex CLI (npm @openai/codex), in a terminal tab",
        kind: ServiceKind::CodingAssistant,
        install: &[NODE, "command -v codex >/dev/null || npm install -g --no-fund --no-audit @openai/codex"],
        start: None,
        port: None,
        health: ServiceHealth::Installed { program: "codex" },
        tab: ServiceTab::Terminal { command: Some("codex") },
        secrets: &["OPENAI_API_KEY"],
        unsupported: None,
    },
    Service {
        id: "gemini-cli",
        display_name: "Gemini CLI",
        description: "Google's Gemini CLI (npm @google/gemini-cli), in a terminal tab",
        kind: ServiceKind::CodingAssistant,
        install: &[NODE, "command -v gemini >/dev/null || npm install -g --no-fund --no-audit @google/gemini-cli"],
        start: None,
        port: None,
        health: ServiceHealth::Installed { program: "gemini" },
        tab: ServiceTab::Terminal { command: Some("gemini") },
        secrets: &["GEMINI_API_KEY"],
        unsupported: None,
    },
    Service {
        id: "code-server",
        display_name: "VS Code",
        description: "VS Code in the browser (npm code-server 4.89, the last for Node 18), opened on /workspace",
        kind: ServiceKind::Editor,
        install: &[
            NODE,
            "command -v code-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential python3 pkg-config libkrb5-dev && npm install -g --no-fund --no-audit --unsafe-perm code-server@4.89.1; }",
        ],
        start: Some("exec code-server --bind-addr 0.0.0.0:8726 --auth none --disable-telemetry --disable-update-check /workspace"),
        port: Some(8726),
        health: ServiceHealth::Http { port: 8726, path: "/healthz" },
        tab: ServiceTab::Web { port: 8726, path: "/" },
        secrets: &[],
        unsupported: Some(
            "code-server is not available in this Pinacle yet: its npm package needs Node 20+ (Debian 12 has 18), the last Node 18 release fails to build its native modules with Debian's toolchain, and its standalone release is not reachable from here",
        ),
    },
    Service {
        id: "web-terminal",
        display_name: "Terminal",
        description: "A terminal in the browser over the pod supervisor's pty (built in)",
        kind: ServiceKind::Terminal,
        install: &[],
        start: None,
        port: None,
        health: ServiceHealth::Supervisor,
        tab: ServiceTab::Terminal { command: None },
        secrets: &[],
        unsupported: None,
    },
    Service {
        id: "postgres",
        display_name: "PostgreSQL",
        description: "PostgreSQL from Debian on 127.0.0.1:5432 (user postgres, trust on loopback)",
        kind: ServiceKind::Database,
        install: &["command -v pg_ctlcluster >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }"],
        // the newest installed version, found without ls (GNU ls fails
        // under Debian's gVisor: statx with AT_NO_AUTOMOUNT)
        start: Some("v=$(printf '%s\\n' /usr/lib/postgresql/* | sed 's#.*/##' | sort -V | tail -n1); [ -d /etc/postgresql/$v/main ] || pg_createcluster $v main >/dev/null; exec pg_ctlcluster --foreground $v main start"),
        port: Some(5432),
        health: ServiceHealth::Tcp { port: 5432 },
        tab: ServiceTab::None,
        secrets: &[],
        unsupported: None,
    },
    Service {
        id: "redis",
        display_name: "Redis",
        description: "Redis from Debian on 127.0.0.1:6379",
        kind: ServiceKind::Database,
        install: &["command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }"],
        start: Some("mkdir -p /var/lib/redis && exec redis-server --bind 127.0.0.1 --port 6379 --dir /var/lib/redis --daemonize no"),
        port: Some(6379),
        health: ServiceHealth::Tcp { port: 6379 },
        tab: ServiceTab::None,
        secrets: &[],
        unsupported: None,
    },
    Service {
        id: "jupyter",
        display_name: "Jupyter",
        description: "JupyterLab (pip, in /opt/jupyter) on /workspace",
        kind: ServiceKind::Notebook,
        install: &["[ -x /opt/jupyter/bin/jupyter ] || { command -v pip3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip; }; python3 -m venv /opt/jupyter && /opt/jupyter/bin/pip install -q jupyterlab; }"],
        start: Some("exec /opt/jupyter/bin/jupyter lab --ip 0.0.0.0 --port 8888 --no-browser --allow-root --ServerApp.token= --ServerApp.password= --notebook-dir /workspace"),
        port: Some(8888),
        health: ServiceHealth::Http { port: 8888, path: "/api" },
        tab: ServiceTab::Web { port: 8888, path: "/lab" },
        secrets: &[],
        unsupported: None,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_ids_are_unique_short_and_ordered_for_tabs() {
        let mut ids: Vec<_> = Service::ids().collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), SERVICES.len());
        for s in SERVICES {
            // a service with a process is reachable as `{id}-{pod}-{owner}`
            assert!(pinacle_orchestrator::hostname::valid_service_name(s.id), "{}", s.id);
            assert_eq!(s.start.is_some(), s.port.is_some(), "{}", s.id);
            if let ServiceTab::Web { port, .. } = s.tab {
                assert_eq!(Some(port), s.port, "{}", s.id);
            }
        }
        for id in TAB_ORDER {
            assert!(Service::find(id).is_some(), "{id}");
        }
        let assistants: Vec<_> = SERVICES.iter().filter(|s| s.is_coding_assistant()).map(|s| s.id).collect();
        assert_eq!(assistants, ["claude-code", "openai-codex", "gemini-cli"]);
    }
}
