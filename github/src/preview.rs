//! What a pull request's preview says on GitHub: one sticky comment,
//! edited in place as the pod changes, and a check run on the head commit.

use crate::app::{CheckRun, CheckState};

/// Marks Pinacle's comment (an HTML comment: invisible on GitHub).
pub const COMMENT_MARKER: &str = "<!-- pinacle-preview -->";

/// The check run's name.
pub const CHECK_NAME: &str = "Pinacle preview";

/// Where the preview pod is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviewState {
    /// Being created or started.
    Starting,
    /// Running the head commit.
    Running,
    /// A new head is being fetched and the processes restarted.
    Updating,
    /// Could not be created or started (the reason).
    Failed(String),
    /// Stopped after the pull request went quiet.
    Stale,
    /// The pull request was closed; the pod is gone (or kept stopped for
    /// the retention period).
    Closed { merged: bool },
}

/// Everything the comment and check run show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub pod: String,
    pub state: PreviewState,
    pub head_sha: String,
    /// (name, URL) of each service the pod serves.
    pub urls: Vec<(String, String)>,
    pub ide_url: Option<String>,
    pub ssh_command: Option<String>,
    /// The head is from a fork: the pod runs without the repository's
    /// secrets.
    pub fork: bool,
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

/// Keeps user-controlled text (branch and pod names, error messages) from
/// turning into markdown or HTML in the comment.
fn plain(s: &str) -> String {
    s.chars()
        .take(500)
        .map(|c| match c {
            '<' | '>' | '`' | '|' | '[' | ']' | '*' | '_' | '\\' => ' ',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
}

/// The comment's markdown.
pub fn comment(p: &Preview) -> String {
    let mut s = format!("{COMMENT_MARKER}\n### Pinacle preview\n\n");
    let head = short(&p.head_sha);
    let status = match &p.state {
        PreviewState::Starting => format!("⏳ Starting pod `{}` at {head}…", plain(&p.pod)),
        PreviewState::Running => format!("✅ Pod `{}` is running {head}.", plain(&p.pod)),
        PreviewState::Updating => format!("🔄 Pod `{}` is moving to {head}…", plain(&p.pod)),
        PreviewState::Failed(why) => format!("❌ Pod `{}` could not start {head}: {}", plain(&p.pod), plain(why)),
        PreviewState::Stale => format!("💤 Pod `{}` was stopped: the pull request went quiet. Start it again from Pinacle.", plain(&p.pod)),
        PreviewState::Closed { merged: true } => "🏁 The pull request was merged; its preview pod is removed.".to_owned(),
        PreviewState::Closed { merged: false } => "🏁 The pull request was closed; its preview pod is removed.".to_owned(),
    };
    s.push_str(&status);
    s.push('\n');
    let live = matches!(p.state, PreviewState::Running | PreviewState::Updating | PreviewState::Starting);
    if live {
        if !p.urls.is_empty() || p.ide_url.is_some() || p.ssh_command.is_some() {
            s.push_str("\n| | |\n|---|---|\n");
        }
        for (name, url) in &p.urls {
            s.push_str(&format!("| {} | {} |\n", plain(name), plain(url)));
        }
        if let Some(ide) = &p.ide_url {
            s.push_str(&format!("| IDE | {} |\n", plain(ide)));
        }
        if let Some(ssh) = &p.ssh_command {
            s.push_str(&format!("| SSH | `{}` |\n", plain(ssh)));
        }
    }
    if p.fork {
        s.push_str("\nThis pull request comes from a fork: its pod runs without the repository's secrets.\n");
    }
    s
}

/// The check run on the head commit.
pub fn check_run(p: &Preview) -> CheckRun {
    let (state, title) = match &p.state {
        PreviewState::Starting | PreviewState::Updating => (CheckState::InProgress, "Starting the preview pod".to_owned()),
        PreviewState::Running => (CheckState::Success, "The preview pod is running".to_owned()),
        PreviewState::Failed(_) => (CheckState::Failure, "The preview pod did not start".to_owned()),
        PreviewState::Stale => (CheckState::Neutral, "The preview pod was stopped".to_owned()),
        PreviewState::Closed { .. } => (CheckState::Neutral, "The preview pod is removed".to_owned()),
    };
    CheckRun {
        name: CHECK_NAME.to_owned(),
        head_sha: p.head_sha.clone(),
        state,
        details_url: p.ide_url.clone().or_else(|| p.urls.first().map(|(_, u)| u.clone())),
        title,
        summary: comment(p).replace(COMMENT_MARKER, "").trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preview(state: PreviewState) -> Preview {
        Preview {
            pod: "pr-7-app".into(),
            state,
            head_sha: "0123456789abcdef".into(),
            urls: vec![("web".into(), "https://web-pr-7-app-octo.pinacle.test".into())],
            ide_url: Some("https://pinacle.test/pods/pr-7-app".into()),
            ssh_command: Some("ssh pr-7-app@pinacle.test -p 2222".into()),
            fork: false,
        }
    }

    #[test]
    fn the_comment_carries_the_marker_urls_ide_and_ssh() {
        let c = comment(&preview(PreviewState::Running));
        assert!(c.starts_with(COMMENT_MARKER));
        assert!(c.contains("running 0123456"));
        for want in ["https://web-pr-7-app-octo.pinacle.test", "https://pinacle.test/pods/pr-7-app", "`ssh pr-7-app@pinacle.test -p 2222`"] {
            assert!(c.contains(want), "{want} in {c}");
        }
        let closed = comment(&preview(PreviewState::Closed { merged: true }));
        assert!(closed.contains("merged") && !closed.contains("ssh "));
    }

    #[test]
    fn user_text_cannot_inject_markdown() {
        let mut p = preview(PreviewState::Failed("<img src=x onerror=alert(1)> [click](http://evil) `x`".into()));
        p.fork = true;
        let c = comment(&p);
        assert!(!c.contains("<img") && !c.contains("](http") && c.contains("without the repository's secrets"));
    }

    #[test]
    fn the_check_run_follows_the_state() {
        assert_eq!(check_run(&preview(PreviewState::Starting)).state, CheckState::InProgress);
        assert_eq!(check_run(&preview(PreviewState::Running)).state, CheckState::Success);
        assert_eq!(check_run(&preview(PreviewState::Failed("x".into()))).state, CheckState::Failure);
        let r = check_run(&preview(PreviewState::Running));
        assert_eq!((r.name.as_str(), r.details_url.as_deref()), (CHECK_NAME, Some("https://pinacle.test/pods/pr-7-app")));
    }
}
