//! Walking a YAML tree with positions, collecting located problems.

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use crate::diagnostic::{did_you_mean, Diagnostic, Diagnostics, Severity};

/// Largest file accepted, in bytes: far above any real pod definition, small
/// enough that parsing stays fast.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Deepest nesting accepted (lists and mappings inside each other).
pub const MAX_DEPTH: usize = 64;

/// Collects problems for one file.
pub(crate) struct Ctx<'a> {
    pub file: &'a str,
    pub strict: bool,
    pub diags: Diagnostics,
}

impl<'a> Ctx<'a> {
    pub fn new(file: &'a str, strict: bool) -> Self {
        Self { file, strict, diags: Diagnostics::default() }
    }

    fn push(&mut self, severity: Severity, node: &MarkedYaml<'_>, path: &str, message: String, suggestion: Option<String>) {
        let start = node.span.start;
        self.diags.0.push(Diagnostic {
            severity,
            file: self.file.to_owned(),
            line: start.line().max(1),
            column: start.col() + 1,
            path: path.to_owned(),
            message,
            suggestion,
        });
    }

    /// An error at `node`.
    pub fn error(&mut self, node: &MarkedYaml<'_>, path: &str, message: impl Into<String>, suggestion: Option<String>) {
        self.push(Severity::Error, node, path, message.into(), suggestion);
    }

    /// A warning at `node`.
    pub fn warn(&mut self, node: &MarkedYaml<'_>, path: &str, message: impl Into<String>, suggestion: Option<String>) {
        self.push(Severity::Warning, node, path, message.into(), suggestion);
    }

    /// An error at a line and column (for problems the YAML parser reports).
    pub fn error_at(&mut self, line: usize, column: usize, message: String) {
        self.diags.0.push(Diagnostic {
            severity: Severity::Error,
            file: self.file.to_owned(),
            line: line.max(1),
            column: column.max(1),
            path: String::new(),
            message,
            suggestion: None,
        });
    }

    /// `expected X, found Y` at `node`.
    pub fn expected(&mut self, node: &MarkedYaml<'_>, path: &str, what: &str) {
        let found = describe(node);
        let hint = match (&node.data, what) {
            (YamlData::Value(Scalar::Integer(_) | Scalar::FloatingPoint(_) | Scalar::Boolean(_)), w)
                if w.contains("string") =>
            {
                Some("put the value in quotes".to_owned())
            }
            _ => None,
        };
        self.error(node, path, format!("expected {what}, found {found}"), hint);
    }

    /// The fields of a mapping. Keys that are not in `known` are reported
    /// (errors in strict mode, warnings otherwise) and left out; so are keys
    /// that are not strings. `None` (reported) when `node` is not a mapping.
    pub fn fields<'n, 'i>(
        &mut self,
        node: &'n MarkedYaml<'i>,
        path: &str,
        what: &str,
        known: &[&str],
    ) -> Option<Vec<(&'n str, &'n MarkedYaml<'i>)>> {
        let YamlData::Mapping(map) = &node.data else {
            self.expected(node, path, what);
            return None;
        };
        let mut out = Vec::with_capacity(map.len());
        for (key, value) in map {
            let Some(name) = scalar_str(key) else {
                self.error(key, path, format!("field names must be strings, found {}", describe(key)), None);
                continue;
            };
            if known.contains(&name) {
                out.push((name, value));
                continue;
            }
            let field_path = join(path, name);
            let suggestion = did_you_mean(name, known.iter().copied());
            let message = format!("unknown field {name:?}; {what} has {}", known.join(", "));
            if self.strict {
                self.error(key, &field_path, message, suggestion);
            } else {
                self.warn(key, &field_path, format!("{message} (ignored)"), suggestion);
            }
        }
        Some(out)
    }

    /// A string. Numbers and booleans are refused (quote them).
    pub fn string(&mut self, node: &MarkedYaml<'_>, path: &str) -> Option<String> {
        match scalar_str(node) {
            Some(s) => Some(s.to_owned()),
            None => {
                self.expected(node, path, "a string");
                None
            }
        }
    }

    /// A non-empty string.
    pub fn non_empty(&mut self, node: &MarkedYaml<'_>, path: &str) -> Option<String> {
        let s = self.string(node, path)?;
        if s.trim().is_empty() {
            self.error(node, path, "must not be empty", None);
            return None;
        }
        Some(s)
    }

    /// A scalar written as text: strings as they are, numbers and booleans
    /// as written (for environment values like `PORT: 3000`).
    pub fn scalar_text(&mut self, node: &MarkedYaml<'_>, path: &str) -> Option<String> {
        match &node.data {
            YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
            YamlData::Value(Scalar::Integer(i)) => Some(i.to_string()),
            YamlData::Value(Scalar::FloatingPoint(f)) => Some(f.to_string()),
            YamlData::Value(Scalar::Boolean(b)) => Some(b.to_string()),
            _ => {
                self.expected(node, path, "a string, number or boolean");
                None
            }
        }
    }

    /// One string, or a list of strings (`install: npm ci` or `install: [a, b]`).
    pub fn string_or_list(&mut self, node: &MarkedYaml<'_>, path: &str) -> Option<Vec<String>> {
        match &node.data {
            YamlData::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.non_empty(item, &index(path, i)) {
                        Some(s) => out.push(s),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            _ if scalar_str(node).is_some() => self.non_empty(node, path).map(|s| vec![s]),
            _ => {
                self.expected(node, path, "a string or a list of strings");
                None
            }
        }
    }

    /// A list; `None` (reported) otherwise.
    pub fn list<'n, 'i>(&mut self, node: &'n MarkedYaml<'i>, path: &str, what: &str) -> Option<&'n [MarkedYaml<'i>]> {
        match &node.data {
            YamlData::Sequence(items) => Some(items),
            _ => {
                self.expected(node, path, what);
                None
            }
        }
    }

    /// A boolean.
    pub fn boolean(&mut self, node: &MarkedYaml<'_>, path: &str) -> Option<bool> {
        match &node.data {
            YamlData::Value(Scalar::Boolean(b)) => Some(*b),
            _ => {
                self.expected(node, path, "true or false");
                None
            }
        }
    }

    /// A whole number in `min..=max`.
    pub fn integer(&mut self, node: &MarkedYaml<'_>, path: &str, min: i64, max: i64) -> Option<i64> {
        match &node.data {
            YamlData::Value(Scalar::Integer(i)) if (min..=max).contains(i) => Some(*i),
            YamlData::Value(Scalar::Integer(i)) => {
                self.error(node, path, format!("{i} is out of range; expected {min} to {max}"), None);
                None
            }
            _ => {
                self.expected(node, path, &format!("a whole number from {min} to {max}"));
                None
            }
        }
    }
}

/// Parses `text` into one YAML document. An empty file is an empty mapping's
/// absence: `Ok(None)`. Parse errors are reported on `ctx`.
pub(crate) fn load<'i>(ctx: &mut Ctx<'_>, text: &'i str) -> Option<MarkedYaml<'i>> {
    if text.len() > MAX_FILE_BYTES {
        ctx.error_at(1, 1, format!("the file is {} bytes; at most {MAX_FILE_BYTES} are accepted", text.len()));
        return None;
    }
    if let Some((line, column)) = too_deep(text) {
        ctx.error_at(line, column, format!("nesting deeper than {MAX_DEPTH} levels"));
        return None;
    }
    let loaded = std::panic::catch_unwind(|| MarkedYaml::load_from_str(text));
    let docs = match loaded {
        Ok(Ok(docs)) => docs,
        Ok(Err(e)) => {
            let m = e.marker();
            ctx.error_at(m.line(), m.col() + 1, format!("not valid YAML: {}", e.info()));
            return None;
        }
        Err(_) => {
            ctx.error_at(1, 1, "not valid YAML: the parser could not read this file".into());
            return None;
        }
    };
    let mut docs = docs.into_iter();
    let first = docs.next();
    if let Some(second) = docs.next() {
        ctx.error(&second, "", "a second YAML document; the file must hold exactly one", Some("remove the `---` line and what follows it".into()));
    }
    first
}

/// The position of the first bracket or indentation nested more than
/// [`MAX_DEPTH`] deep, by a cheap scan that over-counts (brackets in strings
/// count too) but never under-counts flow nesting.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    for (line_no, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '-']).len();
        if indent / 2 > MAX_DEPTH * 2 {
            return Some((line_no + 1, 1));
        }
        for (col, ch) in line.chars().enumerate() {
            match ch {
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Some((line_no + 1, col + 1));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

/// The string of a plain or quoted string scalar.
pub(crate) fn scalar_str<'n>(node: &'n MarkedYaml<'_>) -> Option<&'n str> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Some(s),
        _ => None,
    }
}

/// Whether `node` is null (`key:` with nothing after it, or `~`).
pub(crate) fn is_null(node: &MarkedYaml<'_>) -> bool {
    matches!(node.data, YamlData::Value(Scalar::Null))
}

/// What a node is, for messages.
pub(crate) fn describe(node: &MarkedYaml<'_>) -> String {
    match &node.data {
        YamlData::Value(Scalar::Null) => "nothing (null)".into(),
        YamlData::Value(Scalar::Boolean(b)) => format!("the boolean {b}"),
        YamlData::Value(Scalar::Integer(i)) => format!("the number {i}"),
        YamlData::Value(Scalar::FloatingPoint(f)) => format!("the number {f}"),
        YamlData::Value(Scalar::String(s)) => {
            let shown: String = s.chars().take(40).collect();
            if shown.len() < s.len() {
                format!("the string {shown:?}…")
            } else {
                format!("the string {s:?}")
            }
        }
        YamlData::Sequence(_) => "a list".into(),
        YamlData::Mapping(_) => "a mapping".into(),
        YamlData::Tagged(tag, _) => format!("a value tagged {tag}"),
        YamlData::Alias(_) => "an alias".into(),
        YamlData::Representation(s, _, _) => format!("{s:?}"),
        YamlData::BadValue => "an unreadable value".into(),
    }
}

/// `path.field`.
pub(crate) fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// `path[i]`.
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}
