//! pinacle.yaml and devcontainer.json against the fixture files: every
//! accepted form, every error with its position, and no panic on mangled input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use pinacle_config::devcontainer;
use pinacle_config::pinacle_yaml::{to_canonical_yaml, FIELDS};
use pinacle_config::resolve::{resolve, ResolvedTab};
use pinacle_config::{parse, Diagnostic, ParseOptions, Severity};

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", root.display());
    files
}

fn lenient() -> ParseOptions {
    ParseOptions { strict: false }
}

#[test]
fn every_valid_form_parses_round_trips_and_resolves() {
    for path in fixtures("valid") {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let (config, warnings) = parse(&name, &text, ParseOptions { strict: true }).unwrap_or_else(|e| panic!("{name}:\n{e}"));
        // the only warnings of valid files: services this Pinacle cannot run yet
        assert!(warnings.0.iter().all(|w| w.message.contains("is not available in this Pinacle yet")), "{name}: {warnings}");
        // the canonical writer's output reads back as the same configuration
        let canonical = to_canonical_yaml(&config);
        assert!(canonical.starts_with("# Pinacle Pod Configuration\n"), "{canonical}");
        let (again, _) = parse("canonical.yaml", &canonical, ParseOptions { strict: true }).unwrap_or_else(|e| panic!("{name} canonical:\n{canonical}\n{e}"));
        assert_eq!(again, config, "{name}:\n{canonical}");
        assert_eq!(to_canonical_yaml(&again), canonical, "{name}: canonical form is stable");
        // and what a pod runs from it is valid for the supervisor
        let def = resolve(&config);
        def.processes.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn the_published_format_reads_as_written() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/published.yaml")).unwrap();
    let (c, _) = parse("pinacle.yaml", &text, lenient()).unwrap();
    assert_eq!(c.tier.id(), "dev.medium");
    assert_eq!(c.services, ["claude-code", "code-server", "web-terminal"]);
    assert_eq!(c.install, ["pnpm install"]);
    assert_eq!(c.processes[0].start_command, ["cd apps/web", "pnpm dev"]);
    let def = resolve(&c);
    assert_eq!(def.image, "nextjs");
    let app = def.processes.processes.iter().find(|p| p.name == "app").unwrap();
    assert_eq!(app.run, "cd apps/web && pnpm dev");
    assert_eq!(app.port, Some(3000));
    assert_eq!(app.health.as_ref().unwrap().command.as_deref(), Some("curl -fsS http://localhost:3000"));
    // code-server runs (4.100.x on the images' Node 20): no warning, its process and install steps
    let (_, warnings) = parse("pinacle.yaml", &text, lenient()).unwrap();
    assert!(warnings.0.is_empty(), "{warnings:?}");
    let cs = def.processes.processes.iter().find(|p| p.name == "code-server").unwrap();
    assert_eq!(cs.port, Some(8726));
    assert!(def.processes.install.iter().any(|s| s.name == "code-server-2" && s.run.contains("code-server@4.100.")));
    // the services' install steps come first and run once; the user's install too
    assert!(def.processes.install.first().unwrap().name.starts_with("claude-code"));
    let install = def.processes.install.iter().find(|s| s.name == "install").unwrap();
    assert!(install.once);
    assert_eq!(def.tabs.len(), 4, "{:?}", def.tabs);
    assert_eq!(def.tabs[0], ResolvedTab::Pod { name: "App".into(), service: None, port: 3000, path: "/".into() });
    assert_eq!(def.tabs[1], ResolvedTab::Terminal { name: "Claude Code".into(), service: Some("claude-code".into()), command: Some("claude".into()) });
    assert_eq!(def.tabs[2], ResolvedTab::Pod { name: "VS Code".into(), service: Some("code-server".into()), port: 8726, path: "/".into() });
    assert_eq!(def.tabs[3], ResolvedTab::External { name: "Docs".into(), url: "https://example.com/docs".into() });
}

#[test]
fn missing_tabs_are_generated_processes_then_assistant_then_services() {
    let text = "services: [jupyter, web-terminal, code-server, gemini-cli, postgres]\nprocesses:\n  - name: api\n    displayName: API\n    startCommand: ./serve\n    url: http://localhost:8080/health\n";
    let (c, _) = parse("pinacle.yaml", text, lenient()).unwrap();
    let names: Vec<String> = resolve(&c)
        .tabs
        .iter()
        .map(|t| match t {
            ResolvedTab::Terminal { name, .. } | ResolvedTab::Pod { name, .. } | ResolvedTab::External { name, .. } => name.clone(),
        })
        .collect();
    // postgres has no tab
    assert_eq!(names, ["API", "Gemini CLI", "VS Code", "Terminal", "Jupyter"]);
}

#[test]
fn additions_reach_the_pod_definition() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/additions.yaml")).unwrap();
    let (c, _) = parse("pinacle.yaml", &text, lenient()).unwrap();
    let def = resolve(&c);
    assert_eq!(def.image, "vite");
    assert_eq!(def.tier.id(), "dev.large");
    assert_eq!(def.public_ports, [8080]);
    assert_eq!(def.gpus, 2);
    assert_eq!(def.idle_timeout_secs, Some(5400));
    assert_eq!(def.secrets, ["OPENAI_API_KEY", "DATABASE_URL"]);
    assert_eq!(def.processes.env, ["DEBUG=true", "NODE_ENV=development", "PORT=5173"]);
    let names: Vec<_> = def.processes.install.iter().map(|s| (s.name.as_str(), s.once)).collect();
    let tail = &names[names.len() - 4..];
    assert_eq!(tail, [("onCreate", true), ("postCreate-1", true), ("postCreate-2", true), ("postStart", false)]);
    assert!(def.processes.processes.iter().any(|p| p.name == "jupyter" && p.port == Some(8888)));
}

/// `# expect: LINE:COL PATH MESSAGE` (an error) and `# warn: ...` lines in a
/// fixture; `0:0` matches any position.
fn expectations(text: &str) -> Vec<(Severity, usize, usize, String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let (severity, rest) = if let Some(r) = line.trim().strip_prefix("# expect: ") {
            (Severity::Error, r)
        } else if let Some(r) = line.trim().strip_prefix("# warn: ") {
            (Severity::Warning, r)
        } else {
            continue;
        };
        let (pos, rest) = rest.split_once(' ').unwrap();
        let (l, c) = pos.split_once(':').unwrap();
        let (path, message) = rest.split_once(' ').unwrap();
        out.push((severity, l.parse().unwrap(), c.parse().unwrap(), path.to_owned(), message.to_owned()));
    }
    out
}

fn matches(d: &Diagnostic, e: &(Severity, usize, usize, String, String)) -> bool {
    let text = format!("{} {}", d.message, d.suggestion.clone().unwrap_or_default());
    d.severity == e.0 && (e.1 == 0 || (d.line, d.column) == (e.1, e.2)) && d.path == e.3 && text.contains(&e.4)
}

#[test]
fn every_error_is_reported_at_once_with_position_path_and_suggestion() {
    for path in fixtures("invalid") {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = expectations(&text);
        assert!(!expected.is_empty(), "{name} has no expectations");
        let diags = parse(&name, &text, lenient()).expect_err(&name);
        for e in &expected {
            assert!(diags.0.iter().any(|d| matches(d, e)), "{name}: expected {e:?} among:\n{diags}");
        }
        assert_eq!(diags.0.len(), expected.len(), "{name}: unexpected extra problems:\n{diags}");
        for d in &diags.0 {
            assert_eq!(d.file, name);
            assert!(d.to_string().starts_with(&format!("{name}:{}:{}: ", d.line, d.column)), "{d}");
        }
    }
}

#[test]
fn unknown_fields_warn_by_default_and_fail_in_strict_mode() {
    let text = "services: [web-terminal]\ntabz: []\n";
    let (_, warnings) = parse("pinacle.yaml", text, lenient()).unwrap();
    let w: Vec<_> = warnings.warnings().collect();
    assert_eq!(w.len(), 1);
    assert_eq!((w[0].line, w[0].column, w[0].path.as_str()), (2, 1, "tabz"));
    assert_eq!(w[0].suggestion.as_deref(), Some("did you mean \"tabs\"?"));
    let strict = parse("pinacle.yaml", text, ParseOptions { strict: true }).unwrap_err();
    assert_eq!(strict.errors().count(), 1);
    assert!(strict.to_string().starts_with("pinacle.yaml:2:1: error: tabz: unknown field \"tabz\""), "{strict}");
}

#[test]
fn the_schema_in_the_repository_is_the_generated_one_and_covers_every_field() {
    let generated = pinacle_config::schema::schema_text();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pinacle.schema.json");
    if std::env::var_os("PINACLE_UPDATE_SCHEMA").is_some() {
        std::fs::write(&file, &generated).unwrap();
    }
    let kept = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(kept == generated, "config/pinacle.schema.json is stale: run `PINACLE_UPDATE_SCHEMA=1 cargo test -p pinacle-config --test config`");
    let schema: serde_json::Value = serde_json::from_str(&generated).unwrap();
    let mut props: Vec<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    let mut fields = FIELDS.to_vec();
    props.sort_unstable();
    fields.sort_unstable();
    assert_eq!(props, fields, "the parser and the schema know the same top-level fields");
    assert_eq!(schema["properties"]["tier"]["enum"][0], "dev.small");
    assert!(schema["properties"]["services"]["items"]["enum"].as_array().unwrap().iter().any(|s| s == "code-server"));
    let process = &schema["$defs"]["Process"]["properties"];
    for f in ["name", "displayName", "startCommand", "url", "healthCheck"] {
        assert!(process.get(f).is_some(), "Process.{f} missing from the schema");
    }
}

/// A small deterministic generator (xorshift) so the fuzz test is repeatable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut Rng, base: &str) -> String {
    const PIECES: &[&str] = &[
        ":", "- ", "[", "]", "{", "}", "\"", "'", "\n", "  ", "#", "&a ", "*a", "!!str ", "|", ">", "---\n", "~", "1.0", "-1",
        "99999999999999999999", "name: x", "tier: dev.smal", "\t", "\u{0}", "é", "\\", "? ", "%YAML 1.2\n", "!!binary ", "<<: *a",
    ];
    let mut bytes: Vec<char> = base.chars().collect();
    for _ in 0..1 + rng.below(6) {
        let at = if bytes.is_empty() { 0 } else { rng.below(bytes.len() + 1) };
        match rng.below(4) {
            0 if !bytes.is_empty() && at < bytes.len() => {
                let end = (at + 1 + rng.below(8)).min(bytes.len());
                bytes.drain(at..end);
            }
            1 => {
                let piece = PIECES[rng.below(PIECES.len())];
                for (i, ch) in piece.chars().enumerate() {
                    bytes.insert(at + i, ch);
                }
            }
            2 if !bytes.is_empty() && at < bytes.len() => bytes[at] = char::from_u32(rng.below(0x80) as u32).unwrap_or('x'),
            _ => {
                let lines: Vec<&str> = base.lines().collect();
                if !lines.is_empty() {
                    let line = lines[rng.below(lines.len())];
                    for (i, ch) in format!("{line}\n").chars().enumerate() {
                        bytes.insert(at + i, ch);
                    }
                }
            }
        }
    }
    bytes.into_iter().collect()
}

/// The properties every input must have: no panic; refused with located
/// errors, or accepted, valid for the supervisor and stable through the
/// canonical writer. True when accepted.
fn check_yaml(input: &str) -> bool {
    match parse("fuzz.yaml", input, lenient()) {
        Ok((c, _)) => {
            let def = resolve(&c);
            def.processes.validate().unwrap_or_else(|e| panic!("accepted but invalid ({e}):\n{input}"));
            let canonical = to_canonical_yaml(&c);
            let (again, _) = parse("canonical.yaml", &canonical, lenient()).unwrap_or_else(|e| panic!("canonical form rejected ({e}):\n{canonical}\nfrom:\n{input}"));
            assert_eq!(again, c, "round trip of:\n{input}");
            true
        }
        Err(d) => {
            assert!(d.has_errors());
            for diag in &d.0 {
                assert!(diag.line >= 1 && diag.column >= 1, "{diag}");
            }
            false
        }
    }
}

#[test]
fn mangled_input_never_panics_and_accepted_input_always_resolves() {
    let mut seeds: Vec<String> = fixtures("valid").iter().chain(fixtures("invalid").iter()).map(|p| std::fs::read_to_string(p).unwrap()).collect();
    seeds.push("[".repeat(100_000));
    seeds.push("- ".repeat(50_000));
    seeds.push("a:\n".to_owned() + &"  ".repeat(10_000) + "b: c\n");
    seeds.push("&a [*a, *a]\n".into());
    let iterations: usize = std::env::var("PINACLE_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(4000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut accepted, mut rejected) = (0, 0);
    for i in 0..iterations {
        let base = &seeds[i % seeds.len()];
        let input = if base.len() > 20_000 { base.clone() } else { mutate(&mut rng, base) };
        if check_yaml(&input) {
            accepted += 1;
        } else {
            rejected += 1;
        }
        let _ = devcontainer::import("fuzz.json", &input);
    }
    assert!(accepted > iterations / 50 && rejected > iterations / 50, "accepted {accepted}, rejected {rejected}");
}

fn devcontainer_fixture(rel: &str) -> Result<devcontainer::Imported, pinacle_config::Diagnostics> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/devcontainer").join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    // as the file of a repository's .devcontainer folder
    devcontainer::import(&format!(".devcontainer/{rel}"), &text)
}

#[test]
fn devcontainer_json_with_comments_ports_env_and_lifecycle_imports() {
    let imported = devcontainer_fixture("basic.json").unwrap();
    let c = &imported.config;
    assert_eq!(c.image.as_deref(), Some("mcr.microsoft.com/devcontainers/typescript-node:1-20-bookworm"));
    assert_eq!(c.ports.iter().map(|p| (p.port, p.name.clone(), p.public)).collect::<Vec<_>>(), [(3000, Some("Web".into()), true), (5432, None, false)]);
    assert_eq!(c.env.get("NODE_ENV").map(String::as_str), Some("development"));
    assert_eq!(c.env.get("EDITOR").map(String::as_str), Some("vim"));
    assert!(!c.env.contains_key("TOKEN"), "${{localEnv}} is not carried over");
    assert_eq!(c.post_create, ["npm ci"]);
    let report = imported.report.to_string();
    assert!(report.contains("remoteUser") && report.contains("localEnv"), "{report}");
    assert!(imported.report.0.iter().all(|d| d.severity == Severity::Warning && d.line > 1));
}

#[test]
fn devcontainer_lifecycle_forms_features_tiers_and_extensions_import() {
    let imported = devcontainer_fixture("lifecycle.json").unwrap();
    let c = &imported.config;
    assert_eq!(c.image.as_deref(), Some("mcr.microsoft.com/devcontainers/python:3.12"));
    assert_eq!(c.tier.id(), "dev.large", "3 CPUs and 6 GB need dev.large");
    assert!(c.on_create.iter().any(|s| s == "pip install -r 'requirements dev.txt'"), "{:?}", c.on_create);
    assert!(c.on_create.iter().any(|s| s == "echo update"));
    // features: OCI references with their options (the host orders them by their dependencies)
    let features: Vec<(&str, Vec<(&str, &str)>)> =
        c.features.iter().map(|f| (f.id.as_str(), f.options.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())).collect();
    assert_eq!(
        features,
        [
            ("ghcr.io/devcontainers/features/docker-in-docker:2", vec![]),
            ("ghcr.io/devcontainers/features/git:1", vec![]),
            ("ghcr.io/devcontainers/features/node:1", vec![("version", "lts")]),
        ]
    );
    let step = resolve(c).processes.install;
    assert!(step[0].name == "features" && step[0].run.starts_with("sh /run/pinacle/features/install.sh"), "features install first: {step:?}");
    assert!(c.post_create.starts_with(&["echo db".to_string(), "echo web".to_string()]), "{:?}", c.post_create);
    assert_eq!(c.post_start, ["echo start", "echo attach"]);
    // VS Code extensions: code-server is added and one step installs them, or says they were
    // skipped when the gallery is unreachable (never failing the pod)
    assert!(c.services.contains(&"code-server".to_string()));
    let step = pinacle_config::services::vscode_extensions_step(&["ms-python.python", "esbenp.prettier-vscode"]);
    assert_eq!(c.post_create.iter().filter(|s| s.contains("--install-extension")).collect::<Vec<_>>(), [&step], "{:?}", c.post_create);
    let report = imported.report.to_string();
    assert!(!report.contains("customizations.vscode.extensions"), "{report}");
    assert!(report.contains("initializeCommand") && !report.contains("features"), "{report}");
}

#[test]
fn devcontainer_builds_become_image_builds_relative_to_the_repository() {
    let imported = devcontainer_fixture("with-dockerfile/devcontainer.json").unwrap();
    let c = &imported.config;
    // paths relative to the devcontainer file become relative to the repository's root
    let build = c.image_build.as_ref().expect("a build");
    assert_eq!((build.dockerfile.as_str(), build.context.as_str()), (".devcontainer/with-dockerfile/Dockerfile", ".devcontainer"));
    assert_eq!(c.image, None);
    // COPY is fine now: the build has its context
    let copy = devcontainer_fixture("bad-dockerfile/devcontainer.json").unwrap();
    assert_eq!(copy.config.image_build.unwrap().context, ".devcontainer/bad-dockerfile");
    // the canonical pinacle.yaml of a build reads back the same
    let yaml = to_canonical_yaml(c);
    let (back, _) = parse("pinacle.yaml", &yaml, ParseOptions { strict: true }).unwrap();
    assert_eq!(back.image_build, c.image_build, "{yaml}");

    // args, target, the older top-level form; `..` out of the repository is refused
    let text = r#"{ "build": { "dockerfile": "../docker/Dockerfile", "context": "..", "args": { "NODE": "20", "TOKEN": "${localEnv:TOKEN}" }, "target": "dev" } }"#;
    let c = devcontainer::import(".devcontainer/devcontainer.json", text).unwrap();
    let b = c.config.image_build.unwrap();
    assert_eq!((b.dockerfile.as_str(), b.context.as_str(), b.target.as_deref()), ("docker/Dockerfile", ".", Some("dev")));
    assert_eq!(b.args.into_iter().collect::<Vec<_>>(), [("NODE".to_string(), "20".to_string())]);
    assert!(c.report.to_string().contains("localEnv"), "{}", c.report);
    let old = devcontainer::import(".devcontainer.json", r#"{ "dockerFile": "Dockerfile.dev", "context": "app" }"#).unwrap();
    let b = old.config.image_build.unwrap();
    assert_eq!((b.dockerfile.as_str(), b.context.as_str()), ("Dockerfile.dev", "app"));
    // legacy short feature ids name the official collection, renamed ones by their new name
    let legacy = devcontainer::import(".devcontainer.json", r#"{ "features": { "node": "18", "golang": {}, "docker-from-docker": {} } }"#).unwrap();
    let ids: Vec<&str> = legacy.config.features.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(
        ids,
        ["ghcr.io/devcontainers/features/docker-outside-of-docker:1", "ghcr.io/devcontainers/features/go:1", "ghcr.io/devcontainers/features/node:1"]
    );
    assert_eq!(legacy.config.features[2].options.get("version").map(String::as_str), Some("18"));
    let out = devcontainer::import(".devcontainer/devcontainer.json", r#"{ "build": { "dockerfile": "../../Dockerfile" } }"#).unwrap_err();
    assert!(out.to_string().contains("leaves the repository"), "{out}");
}

#[test]
fn pinacle_yaml_image_builds_and_features_read_back() {
    let text = "version: \"1.0\"\nimage:\n  build:\n    dockerfile: ./docker/../Dockerfile\n    args:\n      PORT: 3000\n    target: dev\nfeatures:\n  ghcr.io/devcontainers/features/node:1:\n    version: \"20\"\n    nodeGypDependencies: false\n  ghcr.io/devcontainers/features/python:1: {}\n  localhost:5000/features/hello:1: \"2\"\n";
    let (c, _) = parse("pinacle.yaml", text, ParseOptions { strict: true }).unwrap();
    let b = c.image_build.as_ref().unwrap();
    assert_eq!((b.dockerfile.as_str(), b.context.as_str(), b.target.as_deref()), ("Dockerfile", ".", Some("dev")));
    assert_eq!(b.args.get("PORT").map(String::as_str), Some("3000"));
    assert_eq!(c.features.len(), 3);
    assert_eq!(c.features[0].options.get("nodeGypDependencies").map(String::as_str), Some("false"));
    assert_eq!(c.features[2].options.get("version").map(String::as_str), Some("2"), "a string is the version");
    let back = to_canonical_yaml(&c);
    assert_eq!(parse("pinacle.yaml", &back, ParseOptions { strict: true }).unwrap().0, c, "{back}");
    // the stored form (JSON) reads back too
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<pinacle_config::PinacleConfig>(&json).unwrap(), c);

    for (bad, needle) in [
        ("image:\n  build:\n    context: .\n", "image.build.dockerfile"),
        ("image:\n  build:\n    dockerfile: /etc/passwd\n", "absolute"),
        ("image:\n  build:\n    dockerfile: ../x/Dockerfile\n", "leaves the repository"),
        ("image:\n  biuld: {}\n", "unknown field \"biuld\""),
        ("features:\n  node: {}\n", "ghcr.io/devcontainers/features/node:1"),
        ("features:\n  ./local-feature: {}\n", "local features"),
        ("features:\n  https://example.com/f.tgz: {}\n", "tarball"),
        ("features:\n  ghcr.io/Acme/F:1: {}\n", "lower-case"),
    ] {
        let text = format!("version: \"1.0\"\n{bad}");
        let err = parse("pinacle.yaml", &text, ParseOptions { strict: true }).unwrap_err().to_string();
        assert!(err.contains(needle) && err.contains("pinacle.yaml:"), "{bad}: {err}");
    }
}

#[test]
fn devcontainer_bad_images_and_json_name_their_line() {
    let image = devcontainer_fixture("bad-image.json").unwrap_err();
    assert!(image.to_string().contains("bad-image.json:2:3: error: image: \"ghcr.io/Acme/Custom-Toolchain:latest\" is not an image reference: repository path components are lower-case"), "{image}");
    let json = devcontainer_fixture("bad-json.json").unwrap_err();
    assert_eq!((json.0[0].line, json.0[0].column), (2, 29), "{json}");
    assert!(json.to_string().contains("Expected comma"), "{json}");
}

// Property-based fuzzing (proptest): generated YAML trees with anchors and
// aliases, mutated fixtures, raw bytes, and generated devcontainer.json.
// Case counts are bounded (PROPTEST_CASES overrides) so each runs in
// seconds under `cargo nextest`. A counting allocator checks that no
// input, however it nests or aliases, makes one parse allocate more than
// a fixed bound.

mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// Counts this thread's live heap bytes and their peak while `TRACK` is on.
    struct Counting;

    thread_local! {
        static TRACK: Cell<bool> = const { Cell::new(false) };
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn count(delta: isize) {
        let _ = TRACK.try_with(|t| {
            if t.get() {
                let _ = LIVE.try_with(|l| {
                    let now = l.get() + delta;
                    l.set(now);
                    let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
                });
            }
        });
    }

    // SAFETY: forwards to the system allocator; the bookkeeping touches
    // only const-initialised thread-locals, which never allocate.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count(layout.size() as isize);
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            count(-(layout.size() as isize));
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count(new_size as isize - layout.size() as isize);
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static ALLOC: Counting = Counting;

    /// The most heap one parse of at most 1 MiB may hold at once: the text's
    /// own copies plus the 4 MiB expansion budget, with room for the
    /// parser's tokens and the diagnostics.
    const PEAK_BOUND: isize = 32 << 20;

    /// Runs `f`, returning the peak of live heap bytes it added.
    fn peak_of(f: impl FnOnce()) -> isize {
        LIVE.with(|l| l.set(0));
        PEAK.with(|p| p.set(0));
        TRACK.with(|t| t.set(true));
        f();
        TRACK.with(|t| t.set(false));
        PEAK.with(Cell::get)
    }

    fn check_bounded(input: &str) {
        let peak = peak_of(|| {
            let _ = check_yaml(input);
        });
        assert!(peak < PEAK_BOUND, "parsing {} bytes held {peak} bytes at once:\n{}", input.len(), &input[..input.len().min(300)]);
    }

    /// A YAML value as generated: rendered in flow style.
    #[derive(Debug, Clone)]
    enum Node {
        Scalar(String),
        Big(usize),
        Seq(Vec<Node>),
        Map(Vec<(String, Node)>),
        Anchor(u8, Box<Node>),
        Alias(u8),
    }

    impl Node {
        fn render(&self, out: &mut String) {
            match self {
                Node::Scalar(s) => out.push_str(s),
                Node::Big(n) => {
                    out.push('"');
                    out.push_str(&"A".repeat(*n));
                    out.push('"');
                }
                Node::Seq(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        item.render(out);
                    }
                    out.push(']');
                }
                Node::Map(entries) => {
                    out.push('{');
                    for (i, (k, v)) in entries.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        out.push_str(k);
                        out.push_str(": ");
                        v.render(out);
                    }
                    out.push('}');
                }
                Node::Anchor(id, node) => {
                    out.push_str(&format!("&a{id} "));
                    node.render(out);
                }
                Node::Alias(id) => out.push_str(&format!("*a{id}")),
            }
        }
    }

    fn scalar() -> impl Strategy<Value = Node> {
        prop_oneof![
            prop::sample::select(vec![
                "x", "\"quoted\"", "'single'", "1", "-1", "3000", "1.0", "true", "null", "~", "dev.small", "dev.medium", "2h",
                "never", "nodejs-blank", "postgres", "web-terminal", "npm ci", "http://localhost:3000", "\"\"", "99999999999999999999",
                "1e999", "!!str 1", "!!binary aGk=", "\"\\u0000\"", "\"é\"",
            ])
            .prop_map(|s| Node::Scalar(s.to_owned())),
            "[a-zA-Z0-9 ./:_-]{0,24}".prop_map(|s| Node::Scalar(format!("{s:?}"))),
            (1usize..200_000).prop_map(Node::Big),
            (0u8..4).prop_map(Node::Alias),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(FIELDS.to_vec()).prop_map(str::to_owned),
            prop::sample::select(vec!["startCommand", "displayName", "url", "healthCheck", "port", "public", "name", "<<", "? x"])
                .prop_map(str::to_owned),
            "[a-z]{1,8}",
        ]
    }

    fn node() -> impl Strategy<Value = Node> {
        scalar().prop_recursive(6, 256, 12, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..12).prop_map(Node::Seq),
                prop::collection::vec((key(), inner.clone()), 0..12).prop_map(Node::Map),
                ((0u8..4), inner.clone()).prop_map(|(id, n)| Node::Anchor(id, Box::new(n))),
                // many references to one anchor: the bomb's shape
                ((0u8..4), 1usize..3000).prop_map(|(id, n)| Node::Seq(vec![Node::Alias(id); n])),
            ]
        })
    }

    fn document() -> impl Strategy<Value = String> {
        prop::collection::vec((key(), node()), 0..10).prop_map(|entries| {
            let mut out = String::new();
            for (k, v) in entries {
                out.push_str(&k);
                out.push_str(": ");
                v.render(&mut out);
                out.push('\n');
            }
            out
        })
    }

    fn seeds() -> Vec<String> {
        fixtures("valid").iter().chain(fixtures("invalid").iter()).map(|p| std::fs::read_to_string(p).unwrap()).collect()
    }

    fn config(cases: u32) -> ProptestConfig {
        ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
    }

    proptest! {
        #![proptest_config(config(256))]

        #[test]
        fn generated_yaml_with_anchors_never_panics_or_allocates_past_the_bound(doc in document()) {
            prop_assume!(doc.len() <= 1 << 20);
            check_bounded(&doc);
        }

        #[test]
        fn mutated_fixtures_keep_every_property(seed in any::<u64>(), which in any::<prop::sample::Index>()) {
            let seeds = seeds();
            let mut rng = Rng(seed | 1);
            let input = mutate(&mut rng, which.get(&seeds).as_str());
            check_bounded(&input);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "(?s).{0,2000}") {
            check_bounded(&text);
            let _ = devcontainer::import("fuzz.json", &text);
        }
    }

    /// A JSON value for devcontainer.json: known keys, any shapes.
    fn json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop::sample::select(vec![
                "mcr.microsoft.com/devcontainers/typescript-node:20", "node:20", "python:3.12", "Dockerfile", "npm ci", "3000",
                "ghcr.io/devcontainers/features/node:1", "8gb", "4", "",
            ])
            .prop_map(Value::from),
            "[ -~]{0,16}".prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 128, 8, |inner| {
            let keys = prop_oneof![
                prop::sample::select(vec![
                    "name", "image", "build", "dockerfile", "dockerFile", "context", "forwardPorts", "portsAttributes", "containerEnv",
                    "remoteEnv", "onCreateCommand", "postCreateCommand", "postStartCommand", "features", "customizations",
                    "hostRequirements", "memory", "cpus", "extensions", "vscode", "label",
                ])
                .prop_map(str::to_owned),
                "[a-z]{1,6}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(keys, inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(config(512))]

        #[test]
        fn generated_devcontainer_json_never_panics(v in json(), comment in any::<bool>(), trailing in any::<bool>()) {
            let mut text = serde_json::to_string_pretty(&v).unwrap();
            if comment {
                text.insert_str(0, "// generated\n/* block */ ");
            }
            if trailing && text.ends_with('}') {
                text.insert(text.len() - 1, ',');
            }
            match devcontainer::import(".devcontainer/devcontainer.json", &text) {
                Ok(imported) => {
                    // what an import produces is a valid pinacle.yaml
                    let canonical = to_canonical_yaml(&imported.config);
                    prop_assert!(check_yaml(&canonical), "import of\n{text}\nwrote\n{canonical}");
                }
                Err(d) => prop_assert!(d.0.iter().all(|x| x.line >= 1 && x.column >= 1), "{d}"),
            }
        }
    }

    #[test]
    fn the_allocation_counter_sees_what_a_parse_holds() {
        assert!(peak_of(|| drop(std::hint::black_box(vec![1u8; 40 << 20]))) >= 40 << 20);
        // an accepted file whose aliases expand to about 2.5 MiB holds that much
        let mut doc = format!("name: &x \"{}\"\nenv:\n  A: [", "A".repeat(128 << 10));
        doc.push_str(&vec!["*x"; 18].join(","));
        doc.push_str("]\n");
        let peak = peak_of(|| drop(std::hint::black_box(parse("x.yaml", &doc, lenient()))));
        assert!(peak > 2 << 20 && peak < PEAK_BOUND, "{peak}");
    }

    #[test]
    fn deep_json_is_refused_without_overflowing_the_stack() {
        // just under jsonc-parser's own limit (512): read, then refused for
        // its shape, on a 1 MiB stack (tokio's workers have 2 MiB)
        let text = format!("{{\"customizations\": {}1{}}}", "[".repeat(500), "]".repeat(500));
        let ok = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || {
                let _ = devcontainer::import("devcontainer.json", &text);
                true
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(ok);
        for depth in [600, 100_000] {
            for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
                let text = format!("{}1{}", open.repeat(depth), close.repeat(depth));
                let text = &text[..text.len().min(1 << 20)];
                let r = std::thread::Builder::new()
                    .stack_size(1 << 20)
                    .spawn({
                        let text = text.to_owned();
                        move || devcontainer::import("devcontainer.json", &text).is_err()
                    })
                    .unwrap()
                    .join()
                    .unwrap();
                assert!(r, "depth {depth} accepted");
            }
        }
    }
}
