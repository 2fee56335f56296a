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

/// Registers Pinacle's memory MCP server with Claude Code (user scope), in
/// pods that have one (`PINAK_MCP_URL`: the platform gateway adds the
/// pod's token, so no secret is written anywhere).
const CLAUDE_MEMORY_MCP: &str = "[ -z \"$PINAK_MCP_URL\" ] || claude mcp get pinacle-memory >/dev/null 2>&1 || \
     claude mcp add --scope user --transport http pinacle-memory \"$PINAK_MCP_URL\" >/dev/null 2>&1 || true";

/// The same for Codex (`~/.codex/config.toml`, streamable HTTP by `url`).
const CODEX_MEMORY_MCP: &str = "[ -z \"$PINAK_MCP_URL\" ] || grep -qs '^\\[mcp_servers.pinacle-memory\\]' \"$HOME/.codex/config.toml\" || \
     { mkdir -p \"$HOME/.codex\" && printf '\\n[mcp_servers.pinacle-memory]\\nurl = \"%s\"\\n' \"$PINAK_MCP_URL\" >> \"$HOME/.codex/config.toml\"; }";

/// The same for Gemini CLI (`~/.gemini/settings.json`, merged with node).
const GEMINI_MEMORY_MCP: &str = "[ -z \"$PINAK_MCP_URL\" ] || node -e '\
     const fs=require(\"fs\"),p=process.env.HOME+\"/.gemini/settings.json\";let s={};\
     try{s=JSON.parse(fs.readFileSync(p,\"utf8\"))}catch(e){}\
     s.mcpServers=Object.assign({},s.mcpServers,{\"pinacle-memory\":{httpUrl:process.env.PINAK_MCP_URL}});\
     fs.mkdirSync(process.env.HOME+\"/.gemini\",{recursive:true});fs.writeFileSync(p,JSON.stringify(s,null,2))' || true";

/// The code-server release installed: 4.100.x is the newest line whose
/// `engines` accept Node 20 (Debian 13's); 4.103 and later need Node 22.
pub const CODE_SERVER_VERSION: &str = "4.100.3";

/// Installs code-server [`CODE_SERVER_VERSION`] from npm without reaching
/// GitHub or the extension gallery: the package's postinstall script
/// (which downloads ripgrep from GitHub and asks npx for a node-gyp that
/// fetches Node's headers from nodejs.org) is skipped and its useful parts
/// are done here: Debian's `rg` stands in for `@vscode/ripgrep`, the native
/// modules (argon2, spdlog, native-watchdog, node-pty, kerberos) are built
/// with Debian's node-gyp against Debian's Node headers, `@parcel/watcher`
/// comes prebuilt from npm, and the links postinstall makes are made. Done
/// when the marker holds the version (an image with code-server baked in
/// skips it, without network). Measured in a Debian 13 chroot on 2 cores:
/// 50 to 75 s (npm downloads about 45 s of it, the native builds about
/// 25 s); 312 MB in /usr/local/lib/node_modules/code-server plus 87 MB of
/// npm cache in `~/.npm`.
const CODE_SERVER_INSTALL: &str = concat!(
    "d=/usr/local/lib/node_modules/code-server; [ \"$(cat $d/.pinacle-built 2>/dev/null)\" = 4.100.3 ] || {\n",
    "  node -e 'process.exit(+process.versions.node.split(\".\")[0] >= 20 ? 0 : 1)' || { echo \"code-server 4.100 needs Node.js 20 or newer; this image has Node.js $(node --version): use a Debian 13 image\" >&2; exit 1; }\n",
    "  { command -v rg && command -v g++ && command -v make && command -v pkg-config && [ -e /usr/include/krb5.h ] && [ -e /usr/include/node/node_api.h ]; } >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends build-essential python3 pkg-config libkrb5-dev libnode-dev node-gyp ripgrep; } &&\n",
    "  npm install -g --prefix /usr/local --no-fund --no-audit --ignore-scripts code-server@4.100.3 &&\n",
    "  cd $d && (cd node_modules/argon2 && ../.bin/node-pre-gyp rebuild --loglevel=warn) &&\n",
    "  cd lib/vscode && npm install --omit=dev --no-fund --no-audit --ignore-scripts &&\n",
    "  mkdir -p node_modules/@vscode/ripgrep/bin && ln -sf /usr/bin/rg node_modules/@vscode/ripgrep/bin/rg &&\n",
    "  for m in @vscode/spdlog native-watchdog node-pty kerberos; do (cd node_modules/$m && node-gyp rebuild --loglevel=warn) || exit 1; done &&\n",
    "  ln -sfn node_modules node_modules.asar && ln -sf code-linux.sh bin/remote-cli/code-server && ln -sf browser-linux.sh bin/helpers/browser.sh &&\n",
    "  (cd extensions && npm install --omit=dev --no-fund --no-audit --ignore-scripts && node postinstall.mjs >/dev/null) &&\n",
    "  echo 4.100.3 > $d/.pinacle-built\n",
    "}",
);

/// One step installing VS Code extensions into code-server (a
/// devcontainer's `customizations.vscode.extensions`). It never fails the
/// pod: each extension already there is kept, one the gallery (Open VSX)
/// cannot be reached for is reported as `skipped: gallery unreachable`,
/// any other failure as `not installed` with code-server's last line.
/// Each install gives up after 120 s (a gallery that drops packets).
pub fn vscode_extensions_step(ids: &[&str]) -> String {
    let ids: Vec<String> = ids.iter().map(|id| crate::dockerfile::shell_quote(id)).collect();
    format!(
        concat!(
            "have=$(code-server --list-extensions 2>/dev/null); for id in {}; do\n",
            "  if printf '%s\\n' \"$have\" | grep -qixF \"${{id%@*}}\"; then echo \"[pinacle] VS Code extension $id: already installed\"; continue; fi\n",
            "  out=$(timeout 120 code-server --install-extension \"$id\" 2>&1); rc=$?; last=$(printf '%s\\n' \"$out\" | tail -n 1)\n",
            "  if [ $rc = 0 ]; then echo \"[pinacle] VS Code extension $id: installed\"\n",
            "  elif [ $rc = 124 ] || printf '%s' \"$out\" | grep -qE 'ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|getaddrinfo|socket hang up|certificate'; then echo \"[pinacle] VS Code extension $id: skipped: gallery unreachable ($last)\"\n",
            "  else echo \"[pinacle] VS Code extension $id: not installed: $last\"; fi\n",
            "done; true",
        ),
        ids.join(" ")
    )
}

/// The order tabs are generated in: assistants, editor, terminal, then the rest.
pub const TAB_ORDER: &[&str] = &["claude-code", "openai-codex", "gemini-cli", "code-server", "web-terminal", "jupyter"];

/// The registry.
pub const SERVICES: &[Service] = &[
    Service {
        id: "claude-code",
        display_name: "Claude Code",
        description: "Anthropic's coding agent CLI (npm @anthropic-ai/claude-code), in a terminal tab",
        kind: ServiceKind::CodingAssistant,
        install: &[NODE, "command -v claude >/dev/null || npm install -g --no-fund --no-audit @anthropic-ai/claude-code", CLAUDE_MEMORY_MCP],
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
        install: &[NODE, "command -v codex >/dev/null || npm install -g --no-fund --no-audit @openai/codex", CODEX_MEMORY_MCP],
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
        install: &[NODE, "command -v gemini >/dev/null || npm install -g --no-fund --no-audit @google/gemini-cli", GEMINI_MEMORY_MCP],
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
        description: "VS Code in the browser (npm code-server 4.100.3, for Node 20: Debian 13 images), opened on /workspace; built without GitHub (Debian's ripgrep, native modules from source)",
        kind: ServiceKind::Editor,
        install: &[NODE, CODE_SERVER_INSTALL],
        start: Some(
            "exec code-server --bind-addr 0.0.0.0:8726 --auth none --disable-telemetry --disable-update-check --disable-workspace-trust --disable-getting-started-override /workspace",
        ),
        port: Some(8726),
        health: ServiceHealth::Http { port: 8726, path: "/healthz" },
        tab: ServiceTab::Web { port: 8726, path: "/" },
        secrets: &[],
        unsupported: None,
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

    /// Runs an install step as the pod would (sh -c), with `home` and the
    /// memory URL.
    fn run_step(step: &str, home: &std::path::Path, url: Option<&str>) {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg(step).env("HOME", home).env_remove("PINAK_MCP_URL");
        if let Some(u) = url {
            cmd.env("PINAK_MCP_URL", u);
        }
        let out = cmd.output().expect("sh");
        assert!(out.status.success(), "{step}: {}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn coding_assistants_get_the_memory_mcp_server_once_and_only_in_pods_that_have_it() {
        for s in SERVICES.iter().filter(|s| s.is_coding_assistant()) {
            assert!(s.install.iter().any(|step| step.contains("PINAK_MCP_URL")), "{} does not register memory", s.id);
        }
        let url = "http://pinacle.internal/mcp";
        // Codex: one TOML table, appended after what the user had
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".codex")).unwrap();
        std::fs::write(home.path().join(".codex/config.toml"), "model = \"o4\"\n").unwrap();
        run_step(CODEX_MEMORY_MCP, home.path(), Some(url));
        run_step(CODEX_MEMORY_MCP, home.path(), Some(url));
        let toml = std::fs::read_to_string(home.path().join(".codex/config.toml")).unwrap();
        assert_eq!(toml, "model = \"o4\"\n\n[mcp_servers.pinacle-memory]\nurl = \"http://pinacle.internal/mcp\"\n");
        // no memory in the pod: nothing written
        let bare = tempfile::tempdir().unwrap();
        run_step(CODEX_MEMORY_MCP, bare.path(), None);
        run_step(GEMINI_MEMORY_MCP, bare.path(), None);
        assert!(std::fs::read_dir(bare.path()).unwrap().next().is_none());
        // Gemini CLI: merged into existing settings (needs node, as the CLI does)
        if std::process::Command::new("node").arg("--version").output().is_ok() {
            std::fs::create_dir_all(home.path().join(".gemini")).unwrap();
            std::fs::write(home.path().join(".gemini/settings.json"), r#"{"theme":"dark","mcpServers":{"other":{"command":"x"}}}"#).unwrap();
            run_step(GEMINI_MEMORY_MCP, home.path(), Some(url));
            run_step(GEMINI_MEMORY_MCP, home.path(), Some(url));
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(home.path().join(".gemini/settings.json")).unwrap()).unwrap();
            assert_eq!(v["theme"], "dark");
            assert_eq!(v["mcpServers"]["other"]["command"], "x");
            assert_eq!(v["mcpServers"]["pinacle-memory"]["httpUrl"], url);
        }
    }

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

    /// Runs `script` with `sh -c` (dash on Debian), PATH led by `bin`.
    fn sh(script: &str, bin: &std::path::Path) -> std::process::Output {
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        std::process::Command::new("/bin/sh").arg("-c").arg(script).env("PATH", path).output().unwrap()
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pinacle-services-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn code_server_is_supported_and_pins_the_node_20_line() {
        let cs = Service::find("code-server").unwrap();
        assert!(cs.is_supported(), "{:?}", cs.unsupported);
        assert!(CODE_SERVER_VERSION.starts_with("4.100."), "4.100.x is the newest line for Node 20");
        assert_eq!(cs.install, [NODE, CODE_SERVER_INSTALL]);
        let install = cs.install[1];
        // every version named in the step is the pinned one
        assert!(install.contains(&format!("code-server@{CODE_SERVER_VERSION} ")), "{install}");
        assert!(install.contains(&format!("= {CODE_SERVER_VERSION} ]")) && install.contains(&format!("echo {CODE_SERVER_VERSION} >")), "{install}");
        assert_eq!(install.matches("4.100.").count(), 3, "{install}");
        // no postinstall script runs (they fetch from GitHub and nodejs.org)
        assert_eq!(install.matches("npm install").count(), 3);
        assert_eq!(install.matches("--ignore-scripts").count(), 3);
        assert!(install.contains("ln -sf /usr/bin/rg node_modules/@vscode/ripgrep/bin/rg"));
        assert!(cs.description.contains(CODE_SERVER_VERSION));
        let start = cs.start.unwrap();
        assert!(start.starts_with("exec code-server --bind-addr 0.0.0.0:8726 --auth none "), "{start}");
        assert!(start.contains("--disable-workspace-trust") && start.ends_with(" /workspace"), "{start}");
        assert_eq!(cs.health, ServiceHealth::Http { port: 8726, path: "/healthz" });
    }

    #[test]
    fn every_install_step_is_valid_sh() {
        for s in SERVICES {
            for step in s.install {
                let out = std::process::Command::new("/bin/sh").args(["-n", "-c", step]).output().unwrap();
                assert!(out.status.success(), "{}: {}\n{step}", s.id, String::from_utf8_lossy(&out.stderr));
            }
        }
        let out = std::process::Command::new("/bin/sh").args(["-n", "-c", &vscode_extensions_step(&["a.b", "c.d@1.2.3"])]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn code_server_install_skips_itself_when_built_and_refuses_old_node() {
        // the marker with this version: nothing runs (no node, npm or apt needed)
        let step = CODE_SERVER_INSTALL.replace("/usr/local/lib/node_modules/code-server", "$PINACLE_TEST_CS");
        let dir = scratch("cs-install");
        std::fs::write(dir.join(".pinacle-built"), format!("{CODE_SERVER_VERSION}\n")).unwrap();
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for tool in ["node", "npm", "apt-get"] {
            write_script(&bin.join(tool), &format!("echo {tool} called >&2; exit 3"));
        }
        let run = |bin: &std::path::Path| {
            let mut c = std::process::Command::new("/bin/sh");
            c.arg("-c").arg(&step).env("PINACLE_TEST_CS", &dir);
            c.env("PATH", format!("{}:/usr/bin:/bin", bin.display()));
            c.output().unwrap()
        };
        let out = run(&bin);
        assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
        // an older marker (or none) rebuilds, and Node 18 is refused with a clear message
        std::fs::write(dir.join(".pinacle-built"), "4.89.1\n").unwrap();
        write_script(&bin.join("node"), "case \"$1\" in -e) exit 1;; --version) echo v18.19.0;; esac");
        let out = run(&bin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("needs Node.js 20 or newer; this image has Node.js v18.19.0"), "{err}");
        assert!(!err.contains("npm called") && !err.contains("apt-get called"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn write_script(path: &std::path::Path, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn vscode_extensions_are_installed_kept_or_reported_as_skipped() {
        let dir = scratch("cs-ext");
        // a code-server that knows one extension and answers like 4.100.3 does offline
        write_script(
            &dir.join("code-server"),
            r#"case "$1" in
  --list-extensions) echo ms-python.python;;
  --install-extension) case "$2" in
    good.one) echo "Extension 'good.one' was successfully installed.";;
    esbenp.prettier-vscode*) echo 'Installing extensions...'; echo 'Error while installing extensions: getaddrinfo ENOTFOUND open-vsx.org' >&2; exit 1;;
    *) echo "Extension '$2' not found." >&2; exit 1;;
  esac;;
esac"#,
        );
        let step = vscode_extensions_step(&["MS-Python.python", "good.one", "esbenp.prettier-vscode@11.0.0", "no.such"]);
        let out = sh(&step, &dir);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "never fails the pod: {text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "[pinacle] VS Code extension MS-Python.python: already installed",
                "[pinacle] VS Code extension good.one: installed",
                "[pinacle] VS Code extension esbenp.prettier-vscode@11.0.0: skipped: gallery unreachable (Error while installing extensions: getaddrinfo ENOTFOUND open-vsx.org)",
                "[pinacle] VS Code extension no.such: not installed: Extension 'no.such' not found.",
            ],
            "{text}"
        );
        // ids are quoted for the shell
        assert!(vscode_extensions_step(&["a'b"]).contains(r"for id in 'a'\''b'; do"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
