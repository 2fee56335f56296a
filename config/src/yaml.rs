//! Walking a YAML tree with positions, collecting located problems.

use saphyr::{MarkedYaml, Marker, Scalar, ScanError, YamlData, YamlLoader};
use saphyr_parser::{Event, Parser, SpannedEventReceiver};

use crate::diagnostic::{did_you_mean, Diagnostic, Diagnostics, Severity};

/// Largest file accepted, in bytes: far above any real pod definition, small
/// enough that parsing stays fast.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Deepest nesting accepted (lists and mappings inside each other).
pub const MAX_DEPTH: usize = 64;

/// Collects problems for one file.
pub struct Ctx<'a> {
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

    /// A number (whole or decimal) in `min..=max`, finite.
    pub fn number(&mut self, node: &MarkedYaml<'_>, path: &str, min: f64, max: f64) -> Option<f64> {
        let value = match &node.data {
            YamlData::Value(Scalar::Integer(i)) => *i as f64,
            YamlData::Value(Scalar::FloatingPoint(f)) => f.into_inner(),
            _ => {
                self.expected(node, path, &format!("a number from {min} to {max}"));
                return None;
            }
        };
        if !value.is_finite() || !(min..=max).contains(&value) {
            self.error(node, path, format!("{value} is out of range; expected {min} to {max}"), None);
            return None;
        }
        Some(value)
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
///
/// The tree is built from the parser's events one at a time, each checked
/// against a [`Budget`] first: nesting deeper than [`MAX_DEPTH`] and files
/// whose aliases would expand past [`MAX_EXPANDED_BYTES`] are refused at
/// the event that crosses the line, before it is built (saphyr clones the
/// anchored subtree for every `*alias`, and its own limit counts nodes, not
/// bytes). The loop is not recursive, unlike saphyr's own `Parser::load`, so
/// no input can overflow the stack.
pub fn load<'i>(ctx: &mut Ctx<'_>, text: &'i str) -> Option<MarkedYaml<'i>> {
    if text.len() > MAX_FILE_BYTES {
        ctx.error_at(1, 1, format!("the file is {} bytes; at most {MAX_FILE_BYTES} are accepted", text.len()));
        return None;
    }
    let loaded = std::panic::catch_unwind(|| load_bounded(text));
    let docs = match loaded {
        Ok(Ok(docs)) => docs,
        Ok(Err(LoadFailure::Syntax(e))) => {
            let m = e.marker();
            ctx.error_at(m.line(), m.col() + 1, format!("not valid YAML: {}", e.info()));
            return None;
        }
        Ok(Err(LoadFailure::Limit { at, path, limit })) => {
            ctx.diags.0.push(Diagnostic {
                severity: Severity::Error,
                file: ctx.file.to_owned(),
                line: at.line().max(1),
                column: at.col() + 1,
                path,
                message: limit.to_string(),
                suggestion: Some(limit.suggestion().to_owned()),
            });
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

/// Most bytes a file may take once its aliases are expanded, estimated as
/// the text of every scalar plus [`NODE_BYTES`] per node, every `*alias`
/// counting its whole anchored value again (and every `&anchor` once more,
/// for the copy the loader keeps). A real pod definition is far below this
/// (the benchmark's 68 KiB file with 200 processes counts 0.7 MiB); an
/// alias bomb (one large anchor referenced thousands of times) crosses it
/// after a few references, with a few MiB allocated.
pub const MAX_EXPANDED_BYTES: u64 = 4 << 20;

/// What one node costs beyond its text, for [`MAX_EXPANDED_BYTES`]: the
/// size of a tree node.
pub const NODE_BYTES: u64 = std::mem::size_of::<MarkedYaml<'static>>() as u64;

/// Why [`load_bounded`] gave up.
#[derive(Debug)]
pub(crate) enum LoadFailure {
    /// The text is not YAML.
    Syntax(ScanError),
    /// A bound of [`Budget`] was crossed at `at`, in the field `path`.
    Limit { at: Marker, path: String, limit: Limit },
}

/// A bound of [`Budget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Limit {
    #[error("nesting deeper than {MAX_DEPTH} levels (aliases included)")]
    Depth,
    #[error("aliases (*name) expand this file to more than {} MiB in memory", MAX_EXPANDED_BYTES >> 20)]
    Expansion,
    /// The bound crossed without any alias: a file of very many values.
    #[error("this file holds too many values: more than {} MiB in memory once read", MAX_EXPANDED_BYTES >> 20)]
    Size,
}

impl Limit {
    fn suggestion(self) -> &'static str {
        match self {
            Limit::Depth => "flatten the structure: a pod definition needs only a few levels",
            Limit::Expansion => "write the values out instead of repeating a large anchor through many aliases",
            Limit::Size => "a pod definition needs far fewer entries; move data into files the pod reads",
        }
    }
}

/// Reads every document of `text`, refusing what [`Budget`] refuses.
pub(crate) fn load_bounded(text: &str) -> Result<Vec<MarkedYaml<'_>>, LoadFailure> {
    let mut parser = Parser::new_from_str(text);
    let mut loader: YamlLoader<'_, MarkedYaml<'_>> = YamlLoader::default();
    let mut budget = Budget::default();
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(LoadFailure::Syntax)?;
        if let Err(limit) = budget.admit(&event) {
            return Err(LoadFailure::Limit { at: span.start, path: budget.path(), limit });
        }
        loader.on_event(event, span);
        if let Some(e) = loader.error() {
            return Err(LoadFailure::Syntax(e.clone()));
        }
    }
    Ok(loader.into_documents())
}

/// What a finished node adds to its parent: its estimated size in bytes and
/// its depth (0 for a scalar, 1 for a collection of scalars).
#[derive(Debug, Clone, Copy, Default)]
struct Subtree {
    bytes: u64,
    depth: usize,
}

/// A collection being read.
#[derive(Debug)]
struct Open {
    anchor: usize,
    mapping: bool,
    /// The finished children so far, and what they add up to.
    children: usize,
    size: Subtree,
    /// The last key read, when this is a mapping.
    key: Option<String>,
}

/// The running cost of a load, fed every event before the loader builds it.
#[derive(Debug, Default)]
struct Budget {
    total: u64,
    /// What aliases added to `total`.
    aliased: u64,
    open: Vec<Open>,
    /// Every anchor's subtree by the parser's anchor id.
    anchors: std::collections::HashMap<usize, Subtree>,
}

impl Budget {
    /// Accounts for `event`, or says which bound it crosses (nothing is
    /// counted then: the load stops).
    fn admit(&mut self, event: &Event<'_>) -> Result<(), Limit> {
        match event {
            Event::Scalar(value, _, anchor, _) => {
                let node = Subtree { bytes: NODE_BYTES.saturating_add(value.len() as u64), depth: 0 };
                self.finish(node, *anchor, Some(value))
            }
            Event::Alias(id) => {
                let node = self.anchors.get(id).copied().unwrap_or(Subtree { bytes: NODE_BYTES, depth: 0 });
                self.aliased = self.aliased.saturating_add(node.bytes);
                self.finish(node, 0, None)
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.open.len() >= MAX_DEPTH {
                    return Err(Limit::Depth);
                }
                self.charge(NODE_BYTES)?;
                let mapping = matches!(event, Event::MappingStart(..));
                self.open.push(Open { anchor: *anchor, mapping, children: 0, size: Subtree { bytes: NODE_BYTES, depth: 1 }, key: None });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(done) = self.open.pop() else { return Ok(()) };
                if done.anchor > 0 {
                    // the loader keeps a copy of every anchored node
                    self.charge(done.size.bytes)?;
                    self.anchors.insert(done.anchor, done.size);
                }
                self.add_to_parent(done.size, None);
                Ok(())
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) | Event::DocumentEnd => Ok(()),
        }
    }

    /// A scalar or an alias (a whole subtree at once) lands in the open
    /// collection.
    fn finish(&mut self, node: Subtree, anchor: usize, text: Option<&str>) -> Result<(), Limit> {
        if self.open.len().saturating_add(node.depth) > MAX_DEPTH {
            return Err(Limit::Depth);
        }
        let anchored = if anchor > 0 { node.bytes } else { 0 };
        self.charge(node.bytes.saturating_add(anchored))?;
        if anchor > 0 {
            self.anchors.insert(anchor, node);
        }
        self.add_to_parent(node, text);
        Ok(())
    }

    fn charge(&mut self, bytes: u64) -> Result<(), Limit> {
        let total = self.total.saturating_add(bytes);
        if total > MAX_EXPANDED_BYTES {
            return Err(if self.aliased > 0 { Limit::Expansion } else { Limit::Size });
        }
        self.total = total;
        Ok(())
    }

    fn add_to_parent(&mut self, node: Subtree, text: Option<&str>) {
        let Some(parent) = self.open.last_mut() else { return };
        if parent.mapping && parent.children % 2 == 0 {
            // a key: remembered (shortened) for the field path
            parent.key = Some(text.map_or_else(|| "?".to_owned(), |t| t.chars().take(64).collect()));
        }
        parent.children += 1;
        parent.size.bytes = parent.size.bytes.saturating_add(node.bytes);
        parent.size.depth = parent.size.depth.max(node.depth.saturating_add(1));
    }

    /// The field path of the node being read (`processes[2].env`).
    fn path(&self) -> String {
        let mut path = String::new();
        for o in &self.open {
            if o.mapping {
                // inside a value: name its key; inside a key: the mapping itself
                if o.children % 2 == 1 {
                    path = join(&path, o.key.as_deref().unwrap_or("?"));
                }
            } else {
                path = index(&path, o.children);
            }
        }
        path
    }
}

/// The string of a plain or quoted string scalar.
pub fn scalar_str<'n>(node: &'n MarkedYaml<'_>) -> Option<&'n str> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Some(s),
        _ => None,
    }
}

/// Whether `node` is null (`key:` with nothing after it, or `~`).
pub fn is_null(node: &MarkedYaml<'_>) -> bool {
    matches!(node.data, YamlData::Value(Scalar::Null))
}

/// What a node is, for messages.
pub fn describe(node: &MarkedYaml<'_>) -> String {
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
pub fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// `path[i]`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> Diagnostic {
        let mut ctx = Ctx::new("pinacle.yaml", false);
        assert!(load(&mut ctx, text).is_none(), "accepted:\n{}", &text[..text.len().min(200)]);
        assert_eq!(ctx.diags.0.len(), 1, "{}", ctx.diags);
        ctx.diags.0.remove(0)
    }

    /// The review's bomb: one 128 KiB anchored string, then `refs` aliases.
    fn bomb(refs: usize) -> String {
        let mut s = format!("name: &x \"{}\"\nenv:\n  A: [", "A".repeat(128 << 10));
        s.push_str(&vec!["*x"; refs].join(","));
        s.push_str("]\n");
        s
    }

    #[test]
    fn an_alias_bomb_is_refused_where_it_crosses_the_bound() {
        let text = bomb(43_000);
        assert!(text.len() < 300 << 10);
        let d = refused(&text);
        assert!(d.message.contains("expand this file to more than 4 MiB"), "{d}");
        assert_eq!((d.line, d.path.as_str()), (3, "env.A[29]"), "{d}");
        assert!(d.suggestion.as_deref().unwrap_or("").contains("anchor"), "{d}");
    }

    #[test]
    fn nested_anchors_cannot_multiply_past_the_bound() {
        // billion laughs: each level doubles ten times
        let mut s = String::from("a: &a [\"lol\"]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h", "i"].iter().zip(["b", "c", "d", "e", "f", "g", "h", "i", "j"]) {
            s.push_str(&format!("{name}: &{name} [{}]\n", vec![format!("*{prev}"); 10].join(",")));
        }
        let d = refused(&s);
        assert!(d.message.contains("expand"), "{d}");
        // aliases as mapping keys count too
        let mut s = String::from("a: &a {k: \"");
        s.push_str(&"v".repeat(64 << 10));
        s.push_str("\"}\nb: {");
        for i in 0..400 {
            s.push_str(&format!("? [*a, {i}] : {i},"));
        }
        s.push_str("}\n");
        let d = refused(&s);
        assert!(d.message.contains("expand"), "{d}");
    }

    #[test]
    fn a_file_of_very_many_values_is_refused_without_blaming_aliases() {
        let text: String = (0..100_000).map(|i| format!("k{i}: v\n")).collect();
        assert!(text.len() <= MAX_FILE_BYTES);
        let d = refused(&text);
        assert!(d.message.contains("too many values"), "{d}");
        // and a 1 MiB flow list of tiny values
        let d = refused(&format!("[{}]", "a,".repeat(MAX_FILE_BYTES / 2 - 2)));
        assert!(d.message.contains("too many values"), "{d}");
    }

    #[test]
    fn reasonable_anchors_still_work() {
        let text = "env: &e\n  A: \"1\"\n  B: two\nprocesses:\n  - name: a\n    env: *e\n  - name: b\n    env: *e\n";
        let mut ctx = Ctx::new("pinacle.yaml", false);
        let doc = load(&mut ctx, text).unwrap();
        assert!(ctx.diags.0.is_empty(), "{}", ctx.diags);
        let YamlData::Mapping(m) = &doc.data else { panic!("{doc:?}") };
        assert_eq!(m.len(), 2);
        // a 128 KiB anchor used 20 times is 2.5 MiB: under the bound
        let text = bomb(20);
        let mut ctx = Ctx::new("pinacle.yaml", false);
        assert!(load(&mut ctx, &text).is_some(), "{}", ctx.diags);
    }

    /// Refused for its depth, by us or by the scanner's own limit.
    fn too_deep(d: &Diagnostic) -> bool {
        d.message.contains("nesting deeper than 64") || d.message.contains("recursion limit")
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        // on a small stack: the loader must not recurse per level
        let run = |text: String| std::thread::Builder::new().stack_size(256 << 10).spawn(move || refused(&text)).unwrap().join().unwrap();
        // (the scanner's own limit may speak first: refused either way)
        let d = run("[".repeat(MAX_FILE_BYTES));
        assert!(too_deep(&d), "{d}");
        assert!(too_deep(&run("- ".repeat(MAX_FILE_BYTES / 2))));
        assert!(too_deep(&run("? ".repeat(MAX_FILE_BYTES / 2))));
        assert!(too_deep(&run("{a: ".repeat(MAX_FILE_BYTES / 4))));
        let mut indented = String::new();
        for i in 0..1000 {
            indented.push_str(&" ".repeat(i));
            indented.push_str("k:\n");
        }
        let d = run(indented);
        assert!(d.message.contains("nesting"), "{d}");
        assert_eq!(d.path.split('.').count(), MAX_DEPTH, "{d}");
        // an alias adds its anchor's depth where it is used
        let mut s = String::from("a: &a ");
        s.push_str(&"[".repeat(40));
        s.push_str(&"]".repeat(40));
        s.push_str("\nb: ");
        s.push_str(&"[".repeat(30));
        s.push_str("*a");
        s.push_str(&"]".repeat(30));
        assert!(run(s).message.contains("aliases included"));
        // 64 levels are fine
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let mut ctx = Ctx::new("x", false);
        assert!(load(&mut ctx, &ok).is_some(), "{}", ctx.diags);
    }

    #[test]
    fn brackets_inside_strings_are_not_nesting() {
        let text = format!("install: \"echo {}\"\n", "[[[[".repeat(100));
        let mut ctx = Ctx::new("x", false);
        assert!(load(&mut ctx, &text).is_some(), "{}", ctx.diags);
    }
}
