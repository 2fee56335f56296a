//! Cloning a pod's repository into its `/workspace`, inside the pod.
//!
//! Untrusted repository content never touches the host's git: every git
//! command runs in the pod through its supervisor, as the pod's user. A
//! private repository's token is the user's secret `GIT_TOKEN` (and
//! optionally `GIT_USERNAME`, default `x-access-token`), which the pod has
//! in its environment like every secret; git gets it from a credential
//! helper in the pod user's `~/.gitconfig`, scoped to the repository's
//! `scheme://host[:port]`, which prints it from the environment. The token
//! is never on a command line, in `.git/config` or in a progress line, and
//! pushing from the pod uses the same helper.
//!
//! The pieces here are pure (scripts, the helper, output parsing); the
//! agent ([`crate::HostAgent`]) runs them.

use std::time::{Duration, Instant};

use pinacle_orchestrator::pod::RepositorySource;

/// The secret holding an HTTPS token for the pod's repository.
pub const TOKEN_SECRET: &str = "GIT_TOKEN";

/// The secret holding the user name sent with the token (optional).
pub const USERNAME_SECRET: &str = "GIT_USERNAME";

/// The user name sent with the token when `GIT_USERNAME` is not set (what
/// GitHub, Gitea and others accept with a token).
pub const DEFAULT_USERNAME: &str = "x-access-token";

/// A repository's own configuration files, in the order they are looked for.
pub const CONFIG_FILES: [&str; 4] = ["pinacle.yaml", "pinacle.yml", ".devcontainer/devcontainer.json", ".devcontainer.json"];

/// In the agent's directory of a pod (`pods/{id}`): the repository was
/// cloned (or found a non-empty `/workspace`); it is not cloned again.
pub const CLONED_MARKER: &str = "repository-cloned";

/// The most of a configuration file read from the pod (the parser's own limit).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// How often clone progress becomes a pod event at most.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// The longest progress or error line kept.
const MAX_LINE: usize = 300;

/// Environment of every git command the agent runs in the pod: no prompt
/// (a missing credential fails at once), only http(s) transports (for
/// submodules too: no `file://`, `ext::` or ssh), messages in English.
pub fn git_env() -> Vec<String> {
    vec![
        "GIT_TERMINAL_PROMPT=0".into(),
        "GIT_ALLOW_PROTOCOL=http:https".into(),
        "GCM_INTERACTIVE=never".into(),
        // a stalled transfer (under 1 KB/s for a minute) ends the clone
        "GIT_HTTP_LOW_SPEED_LIMIT=1000".into(),
        "GIT_HTTP_LOW_SPEED_TIME=60".into(),
        "LC_ALL=C".into(),
    ]
}

/// Where a pod finds its GitHub App token for git (kept fresh by the
/// agent; see `crate::platform::GIT_TOKEN_FILE`).
pub const GIT_TOKEN_PATH: &str = "/run/pinacle/platform/git-token";

/// The shell function git runs as the credential helper: for `get`, it
/// prints the user name and token: `GIT_TOKEN` from the environment (the
/// user's own secret), else the pod's GitHub App token from
/// [`GIT_TOKEN_PATH`] (read at each call, so a fetch or push an hour later
/// gets the refreshed one). It holds no secret itself.
pub fn credential_helper() -> String {
    format!(
        "!f() {{ test \"$1\" = get || return 0; t=\"${TOKEN_SECRET}\"; if [ -z \"$t\" ] && [ -r {GIT_TOKEN_PATH} ]; then t=$(cat {GIT_TOKEN_PATH}); fi; test -n \"$t\" || return 0; printf 'username=%s\\npassword=%s\\n' \"${{{USERNAME_SECRET}:-{DEFAULT_USERNAME}}}\" \"$t\"; }}; f"
    )
}

/// Moves a clone to another commit (a pull request's new head): run as
/// `sh -c SCRIPT sh COMMIT HELPER_KEY HELPER` in `/workspace`. Fetches it
/// (shallow, whole history if refused) and checks it out; local changes
/// make the checkout fail (git refuses to overwrite them) and are kept.
pub const UPDATE_SCRIPT: &str = r#"commit=$1
git config --global --replace-all "$2" "$3" || exit $?
cd /workspace || exit 1
{ git fetch --progress --depth 1 origin "$commit" ||
  { echo "pinacle: the server refused a shallow fetch of $commit; fetching the whole history" >&2; git fetch --progress origin; }; } || exit $?
git -c advice.detachedHead=false checkout -q "$commit" || { echo "pinacle: $commit is fetched, but local changes in /workspace keep it from being checked out" >&2; exit 3; }
if [ -f .gitmodules ]; then git submodule update --init --recursive --depth 1 || exit $?; fi
"#;

/// argv of the update to `commit` (see [`UPDATE_SCRIPT`]).
pub fn update_argv(repo: &RepositorySource, commit: &str) -> Result<Vec<String>, pinacle_orchestrator::pod::RepositoryError> {
    Ok(vec!["sh".into(), "-c".into(), UPDATE_SCRIPT.into(), "sh".into(), commit.into(), helper_key(repo)?, credential_helper()])
}

/// `credential.<scheme://host[:port]>.helper`: the `git config` key of
/// [`credential_helper`] for the repository's host.
pub fn helper_key(repo: &RepositorySource) -> Result<String, pinacle_orchestrator::pod::RepositoryError> {
    Ok(format!("credential.{}.helper", repo.credential_scope()?))
}

/// The clone, as a shell script run with `sh -c SCRIPT sh URL BRANCH COMMIT
/// HELPER_KEY HELPER` (arguments, never spliced into the text) as the pod's
/// user: installs the credential helper in `~/.gitconfig` (replacing an
/// earlier one for the same host), then clones into the empty
/// `/workspace`. Shallow: `--depth 1` (with `--branch`), or for a commit
/// `init`, a shallow fetch of that commit (a full fetch if the server
/// refuses) and a checkout; submodules (only when there is a
/// `.gitmodules`: each git process is dear under gVisor) shallow too;
/// `git lfs pull` when git-lfs is installed.
pub const CLONE_SCRIPT: &str = r#"url=$1 branch=$2 commit=$3
git config --global --replace-all "$4" "$5" || exit $?
cd /workspace || exit 1
if [ -n "$commit" ]; then
  git init -q . &&
  git remote add origin "$url" &&
  { git fetch --progress --depth 1 origin "$commit" ||
    { echo "pinacle: the server refused a shallow fetch of $commit; fetching the whole history" >&2; git fetch --progress origin; }; } &&
  git -c advice.detachedHead=false checkout -q "$commit" || exit $?
else
  if [ -n "$branch" ]; then set -- --branch "$branch"; else set --; fi
  git clone --progress --depth 1 "$@" -- "$url" . || exit $?
fi
if [ -f .gitmodules ]; then
  echo "pinacle: cloning submodules" >&2
  git submodule update --init --recursive --depth 1 --progress || exit $?
fi
if command -v git-lfs >/dev/null 2>&1; then
  echo "pinacle: fetching Git LFS objects" >&2
  git lfs pull || exit $?
fi
"#;

/// argv of the clone (see [`CLONE_SCRIPT`]).
pub fn clone_argv(repo: &RepositorySource) -> Result<Vec<String>, pinacle_orchestrator::pod::RepositoryError> {
    Ok(vec![
        "sh".into(),
        "-c".into(),
        CLONE_SCRIPT.into(),
        "sh".into(),
        repo.url.clone(),
        repo.branch.clone().unwrap_or_default(),
        repo.commit.clone().unwrap_or_default(),
        helper_key(repo)?,
        credential_helper(),
    ])
}

/// Empties `/workspace` after a failed clone, so the next start tries
/// again from scratch.
pub fn cleanup_argv() -> Vec<String> {
    ["find", "/workspace", "-mindepth", "1", "-maxdepth", "1", "-exec", "rm", "-rf", "{}", "+"].map(String::from).to_vec()
}

/// Prints the first configuration file of [`CONFIG_FILES`] that is a
/// regular file in `/workspace`: its name on the first line, then at most
/// [`MAX_CONFIG_BYTES`] + 1 bytes of it (so a longer file is seen as such).
pub fn read_config_argv() -> Vec<String> {
    let script = format!(
        "cd /workspace || exit 1\nfor f in {}; do if [ -f \"$f\" ] && [ ! -L \"$f\" ]; then printf '%s\\n' \"$f\"; head -c {} \"$f\"; exit 0; fi; done",
        CONFIG_FILES.join(" "),
        MAX_CONFIG_BYTES + 1
    );
    vec!["sh".into(), "-c".into(), script]
}

/// What [`read_config_argv`] printed: the file and its text, `None` when no
/// file is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigFile {
    None,
    Found { file: String, text: String },
    TooLarge { file: String },
    NotText { file: String },
}

/// Reads the output of [`read_config_argv`].
pub fn parse_config_output(out: &[u8]) -> ConfigFile {
    let Some(nl) = out.iter().position(|&b| b == b'\n') else { return ConfigFile::None };
    let file = String::from_utf8_lossy(&out[..nl]).into_owned();
    if !CONFIG_FILES.contains(&file.as_str()) {
        return ConfigFile::None;
    }
    let body = &out[nl + 1..];
    if body.len() > MAX_CONFIG_BYTES {
        return ConfigFile::TooLarge { file };
    }
    match std::str::from_utf8(body) {
        Ok(text) => ConfigFile::Found { file, text: text.to_owned() },
        Err(_) => ConfigFile::NotText { file },
    }
}

/// Lines of [`CLONE_SCRIPT`]'s own that always become notes (prefix removed).
pub const NOTE_PREFIX: &str = "pinacle: ";

/// Turns git's stderr (lines ended by `\n` or `\r`) into progress notes at
/// most every [`PROGRESS_EVERY`] (the script's own [`NOTE_PREFIX`] lines
/// always), and keeps the last line for an error.
#[derive(Debug)]
pub struct Progress {
    partial: Vec<u8>,
    last: String,
    /// Whether `last` was reported already.
    last_reported: bool,
    last_sent: Option<Instant>,
    every: Duration,
    notes: Vec<String>,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new(PROGRESS_EVERY)
    }
}

impl Progress {
    /// Notes at most once per `every`.
    pub fn new(every: Duration) -> Self {
        Self { partial: Vec::new(), last: String::new(), last_reported: true, last_sent: None, every, notes: Vec::new() }
    }

    /// Takes more output; returns the notes to record now: the script's own
    /// lines, then git's latest line if one is due.
    pub fn feed(&mut self, data: &[u8], now: Instant) -> Vec<String> {
        for &b in data {
            if b == b'\n' || b == b'\r' {
                self.finish_line();
            } else if self.partial.len() < MAX_LINE * 4 {
                self.partial.push(b);
            }
        }
        let mut out = std::mem::take(&mut self.notes);
        let due = self.last_sent.is_none_or(|t| now.duration_since(t) >= self.every);
        if !self.last_reported && due {
            self.last_sent = Some(now);
            self.last_reported = true;
            out.push(self.last.clone());
        }
        out
    }

    fn finish_line(&mut self) {
        let line = String::from_utf8_lossy(&self.partial).trim().to_owned();
        self.partial.clear();
        if line.is_empty() {
            return;
        }
        let line: String = line.chars().take(MAX_LINE).collect();
        match line.strip_prefix(NOTE_PREFIX) {
            Some(note) if self.notes.len() < 16 => self.notes.push(note.to_owned()),
            Some(_) => {}
            None => {
                self.last = line;
                self.last_reported = false;
            }
        }
    }

    /// The last non-empty line seen (an unfinished one included).
    pub fn last_line(&mut self) -> &str {
        if !self.partial.is_empty() {
            self.finish_line();
        }
        &self.last
    }
}

/// Why a repository could not be set up in a pod: recorded as the pod's
/// failure reason.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryFailure {
    #[error("cloning {url} failed: {message}")]
    Clone { url: String, message: String },
    #[error("the repository's {file} was not applied: {message}")]
    Config { file: String, message: String },
    #[error(transparent)]
    Agent(#[from] crate::AgentError),
    #[error(transparent)]
    Url(#[from] pinacle_orchestrator::pod::RepositoryError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(url: &str) -> RepositorySource {
        RepositorySource { url: url.into(), branch: None, commit: None, use_repository_config: false }
    }

    #[test]
    fn the_helper_is_scoped_to_the_host_and_holds_no_secret() {
        let argv = clone_argv(&repo("https://Git.Example:8443/team/app.git")).unwrap();
        assert_eq!(argv[7], "credential.https://git.example:8443.helper");
        let helper = &argv[8];
        assert_eq!(
            helper,
            r#"!f() { test "$1" = get || return 0; t="$GIT_TOKEN"; if [ -z "$t" ] && [ -r /run/pinacle/platform/git-token ]; then t=$(cat /run/pinacle/platform/git-token); fi; test -n "$t" || return 0; printf 'username=%s\npassword=%s\n' "${GIT_USERNAME:-x-access-token}" "$t"; }; f"#
        );
        assert!(clone_argv(&repo("file:///x")).is_err());
    }

    #[test]
    fn the_helper_prints_the_token_from_the_environment_for_get_only() {
        let run = |op: &str, env: &[(&str, &str)]| {
            let script = format!("{} \"$@\"", credential_helper().trim_start_matches('!'));
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .arg("helper")
                .arg(op)
                .env_clear()
                .envs(env.iter().copied())
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(run("get", &[("GIT_TOKEN", "t0k 'x")]), "username=x-access-token\npassword=t0k 'x\n");
        assert_eq!(run("get", &[("GIT_TOKEN", "t"), ("GIT_USERNAME", "me")]), "username=me\npassword=t\n");
        assert_eq!(run("store", &[("GIT_TOKEN", "t")]), "");
        assert_eq!(run("get", &[]), "");
    }

    #[test]
    fn clone_arguments_stay_arguments() {
        let mut r = repo("https://h/a.git");
        r.branch = Some("dev".into());
        let argv = clone_argv(&r).unwrap();
        assert_eq!(argv[..2], ["sh", "-c"]);
        assert_eq!(argv[3..8], ["sh", "https://h/a.git", "dev", "", "credential.https://h.helper"]);
        assert!(!argv[2].contains("https://h"));
    }

    #[test]
    fn config_output_is_bounded_and_named() {
        assert_eq!(parse_config_output(b""), ConfigFile::None);
        assert_eq!(parse_config_output(b"other.yaml\nx"), ConfigFile::None);
        assert_eq!(
            parse_config_output(b"pinacle.yaml\nimage: base\n"),
            ConfigFile::Found { file: "pinacle.yaml".into(), text: "image: base\n".into() }
        );
        let mut big = b".devcontainer.json\n".to_vec();
        big.resize(big.len() + MAX_CONFIG_BYTES + 1, b' ');
        assert_eq!(parse_config_output(&big), ConfigFile::TooLarge { file: ".devcontainer.json".into() });
        assert_eq!(parse_config_output(b"pinacle.yml\n\xff"), ConfigFile::NotText { file: "pinacle.yml".into() });
    }

    #[test]
    fn progress_is_rate_limited_and_keeps_the_last_line() {
        let t0 = Instant::now();
        let mut p = Progress::new(Duration::from_secs(2));
        assert_eq!(p.feed(b"Cloning into '.'...\n", t0), ["Cloning into '.'..."]);
        assert!(p.feed(b"Receiving objects:  10% (1/10)\r", t0 + Duration::from_secs(1)).is_empty());
        // the script's own lines come at once, git's latest when due
        assert_eq!(
            p.feed(b"pinacle: fetching Git LFS objects\nReceiving objects: 100% (10/10)\r\n", t0 + Duration::from_secs(3)),
            ["fetching Git LFS objects", "Receiving objects: 100% (10/10)"]
        );
        // nothing new: nothing again
        assert!(p.feed(b"", t0 + Duration::from_secs(9)).is_empty());
        p.feed(b"fatal: Authentication failed for 'https://h/a.git/'", t0 + Duration::from_secs(4));
        assert_eq!(p.last_line(), "fatal: Authentication failed for 'https://h/a.git/'");
        let mut long = Progress::default();
        long.feed(&vec![b'x'; 10_000], t0);
        assert_eq!(long.last_line().len(), MAX_LINE);
    }
}
