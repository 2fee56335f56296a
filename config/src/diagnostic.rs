//! Problems found in a configuration file, each with where it is and what to
//! do about it.

use std::fmt;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Reported; the file is still used.
    Warning,
    /// The file cannot be used until it is fixed.
    Error,
}

/// One problem in a file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file as the user named it (`pinacle.yaml`, `.devcontainer/devcontainer.json`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The field, as a path from the top of the file (`processes[0].startCommand`);
    /// empty for the whole file.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
    /// What to change, when there is a likely fix (`did you mean "dev.small"?`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{}:{}:{}: {level}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(s) = &self.suggestion {
            write!(f, "; {s}")?;
        }
        Ok(())
    }
}

/// Every problem found in one file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Warning)
    }

    pub fn sort(&mut self) {
        self.0.sort_by_key(|a| (a.line, a.column));
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The closest of `choices` to `given`, if it is close enough to be a likely
/// typo (`dev.smal` → `dev.small`, `startcommand` → `startCommand`).
pub fn closest<'a>(given: &str, choices: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = given.to_ascii_lowercase();
    choices
        .into_iter()
        .map(|c| {
            let distance = strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase());
            (distance, c)
        })
        .filter(|(d, c)| *d <= (c.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `did you mean "x"?` for the closest choice, if any.
pub fn did_you_mean<'a>(given: &str, choices: impl IntoIterator<Item = &'a str>) -> Option<String> {
    closest(given, choices).map(|c| format!("did you mean {c:?}?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_are_suggested_and_far_ones_are_not() {
        let tiers = ["dev.small", "dev.medium", "dev.large", "dev.xlarge"];
        assert_eq!(closest("dev.smal", tiers), Some("dev.small"));
        assert_eq!(closest("dev.larg", tiers), Some("dev.large"));
        assert_eq!(closest("DEV.MEDIUM", tiers), Some("dev.medium"));
        assert_eq!(closest("huge", tiers), None);
        assert_eq!(closest("startcommand", ["startCommand", "name"]), Some("startCommand"));
        assert_eq!(closest("prots", ["ports", "processes"]), Some("ports"));
        assert_eq!(closest("x", ["ports"]), None);
    }
}
