//! The Dockerfile subset Pinacle reads: image recipes for templates, and the
//! `build.dockerfile` of an imported devcontainer.
//!
//! Supported: `FROM`, `RUN` (shell or JSON form), `COPY`/`ADD` of local files,
//! `ENV`, `WORKDIR`, `ARG` (defaults only), and `LABEL`/`EXPOSE`/`USER`/`CMD`/
//! `ENTRYPOINT`/`SHELL`/`HEALTHCHECK`/`VOLUME`/`STOPSIGNAL`/`ONBUILD`,
//! which are recorded as ignored. Multi-stage builds and anything else are
//! errors naming the line.

use crate::diagnostic::{Diagnostic, Diagnostics, Severity};

/// One instruction that does something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// A shell command.
    Run(String),
    /// Files from the build context (`sources`) into the image at `dest`.
    Copy(Copy),
    /// An environment variable for later steps and the pod.
    Env(String, String),
    /// The working directory of later steps.
    Workdir(String),
}

/// `COPY src... dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub sources: Vec<String>,
    pub dest: String,
}

/// A parsed recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The image it starts from, as written (`base`, `debian:bookworm`).
    pub from: String,
    /// Line of the `FROM`.
    pub from_line: usize,
    /// Instructions in order, with their lines.
    pub steps: Vec<(usize, Instruction)>,
    /// Instructions read but without effect, with their lines (`EXPOSE 3000`).
    pub ignored: Vec<(usize, String)>,
}

impl Recipe {
    /// The `COPY` instructions.
    pub fn copies(&self) -> impl Iterator<Item = &Copy> {
        self.steps.iter().filter_map(|(_, i)| match i {
            Instruction::Copy(c) => Some(c),
            _ => None,
        })
    }
}

const IGNORED: &[&str] =
    &["LABEL", "EXPOSE", "USER", "CMD", "ENTRYPOINT", "SHELL", "HEALTHCHECK", "VOLUME", "STOPSIGNAL", "ONBUILD", "MAINTAINER"];

/// Reads a recipe. `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Recipe, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut error = |line: usize, message: String, suggestion: Option<String>| {
        diags.0.push(Diagnostic {
            severity: Severity::Error,
            file: file.to_owned(),
            line,
            column: 1,
            path: String::new(),
            message,
            suggestion,
        })
    };
    let mut from: Option<(usize, String)> = None;
    let mut steps = Vec::new();
    let mut ignored = Vec::new();
    let mut args: Vec<(String, String)> = Vec::new();
    for (line, logical) in logical_lines(text) {
        let (word, rest) = match logical.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (logical.as_str(), ""),
        };
        let keyword = word.to_ascii_uppercase();
        let rest = substitute(rest, &args);
        match keyword.as_str() {
            "FROM" => {
                if from.is_some() {
                    error(line, "a second FROM: multi-stage builds are not supported".into(), Some("keep one FROM".into()));
                    continue;
                }
                let mut parts = rest.split_whitespace().filter(|p| !p.starts_with("--"));
                match parts.next() {
                    Some(image) => from = Some((line, image.to_owned())),
                    None => error(line, "FROM needs an image".into(), None),
                }
            }
            "ARG" => {
                let (name, value) = rest.split_once('=').unwrap_or((rest.as_str(), ""));
                args.push((name.trim().to_owned(), value.trim().trim_matches('"').to_owned()));
            }
            _ if from.is_none() => {
                error(line, format!("{keyword} before FROM"), Some("start the file with FROM".into()));
            }
            "RUN" => {
                let command = if rest.starts_with('[') {
                    match serde_json::from_str::<Vec<String>>(&rest) {
                        Ok(argv) => argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "),
                        Err(e) => {
                            error(line, format!("RUN in JSON form is not a list of strings: {e}"), None);
                            continue;
                        }
                    }
                } else {
                    rest.clone()
                };
                if command.starts_with("--") {
                    error(line, "RUN options (--mount, --network) are not supported".into(), None);
                } else if command.is_empty() {
                    error(line, "RUN needs a command".into(), None);
                } else {
                    steps.push((line, Instruction::Run(command)));
                }
            }
            "COPY" | "ADD" => {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                if parts.iter().any(|p| p.starts_with("--")) {
                    error(line, format!("{keyword} options (--from, --chown) are not supported"), None);
                } else if parts.len() < 2 {
                    error(line, format!("{keyword} needs a source and a destination"), None);
                } else if parts.iter().any(|p| p.contains("://")) {
                    error(line, format!("{keyword} of a URL is not supported"), Some("download it in a RUN step".into()));
                } else {
                    let (dest, sources) = parts.split_last().map(|(d, s)| (d.to_string(), s.iter().map(|s| s.to_string()).collect())).unwrap_or_default();
                    steps.push((line, Instruction::Copy(Copy { sources, dest })));
                }
            }
            "ENV" => match parse_env(&rest) {
                Some(pairs) => steps.extend(pairs.into_iter().map(|(k, v)| (line, Instruction::Env(k, v)))),
                None => error(line, "ENV needs NAME=value".into(), None),
            },
            "WORKDIR" => steps.push((line, Instruction::Workdir(rest.clone()))),
            k if IGNORED.contains(&k) => ignored.push((line, logical.clone())),
            other => error(
                line,
                format!("{other} is not a Dockerfile instruction Pinacle supports"),
                crate::diagnostic::did_you_mean(other, ["FROM", "RUN", "COPY", "ENV", "WORKDIR", "ARG"]),
            ),
        }
    }
    let Some((from_line, from)) = from else {
        error(1, "no FROM line".into(), Some("start the file with `FROM base`".into()));
        return Err(diags);
    };
    if diags.has_errors() {
        return Err(diags);
    }
    Ok(Recipe { from, from_line, steps, ignored })
}

/// Joins continued lines (`\` at the end), drops comments and blank lines;
/// each logical line comes with the line it starts on.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') && current.as_ref().is_none_or(|(_, s)| s.is_empty()) {
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        let (start, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        let (piece, continues) = match trimmed.strip_suffix('\\') {
            Some(p) => (p.trim_end(), true),
            None => (trimmed, false),
        };
        if !acc.is_empty() && !piece.is_empty() {
            acc.push(' ');
        }
        acc.push_str(piece);
        if continues {
            current = Some((start, acc));
        } else if !acc.is_empty() {
            out.push((start, acc));
        }
    }
    if let Some((start, acc)) = current {
        if !acc.is_empty() {
            out.push((start, acc));
        }
    }
    out
}

fn substitute(s: &str, args: &[(String, String)]) -> String {
    let mut out = s.to_owned();
    for (k, v) in args {
        out = out.replace(&format!("${{{k}}}"), v).replace(&format!("${k}"), v);
    }
    out
}

fn parse_env(rest: &str) -> Option<Vec<(String, String)>> {
    if !rest.contains('=') {
        let (k, v) = rest.split_once(char::is_whitespace)?;
        return Some(vec![(k.to_owned(), v.trim().to_owned())]);
    }
    let mut pairs = Vec::new();
    for part in rest.split_whitespace() {
        let (k, v) = part.split_once('=')?;
        pairs.push((k.to_owned(), v.trim_matches('"').to_owned()));
    }
    Some(pairs)
}

/// Quotes `s` for `/bin/sh` when it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:@+,%".contains(&b)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_read_with_continuations_and_json_run() {
        let r = parse(
            "Dockerfile",
            "# comment\nARG V=18\nFROM node:${V}-bookworm AS dev\nRUN apt-get update && \\\n    apt-get install -y jq\nRUN [\"npm\", \"install\", \"-g\", \"a b\"]\nENV A=1 B=\"two\"\nEXPOSE 3000\nCOPY files/x.json /opt/\n",
        )
        .unwrap();
        assert_eq!(r.from, "node:18-bookworm");
        assert_eq!(r.from_line, 3);
        assert_eq!(r.steps[0], (4, Instruction::Run("apt-get update && apt-get install -y jq".into())));
        assert_eq!(r.steps[1], (6, Instruction::Run("npm install -g 'a b'".into())));
        assert_eq!(r.steps[2], (7, Instruction::Env("A".into(), "1".into())));
        assert_eq!(r.steps[3], (7, Instruction::Env("B".into(), "two".into())));
        assert_eq!(r.ignored, vec![(8, "EXPOSE 3000".into())]);
        assert_eq!(r.copies().next().unwrap().dest, "/opt/");
    }

    #[test]
    fn unsupported_lines_are_named() {
        let e = parse("Dockerfile", "FROM a\nFROM b\nRUN --mount=type=cache x\nFRM c\n").unwrap_err();
        let lines: Vec<_> = e.0.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![2, 3, 4]);
        assert!(e.to_string().contains("multi-stage"), "{e}");
        assert!(e.to_string().contains("did you mean \"FROM\"?"), "{e}");
        let none = parse("Dockerfile", "RUN x\n").unwrap_err();
        assert!(none.to_string().contains("before FROM"), "{none}");
    }
}
