//! `pinacle config validate|init|schema`, and reading a repository's pod
//! definition for `pinacle pod create --from DIR`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use pinacle_config::pinacle_yaml::{to_canonical_yaml, FILE_NAME};
use pinacle_config::templates::Template;
use pinacle_config::{devcontainer, Diagnostics, ParseOptions};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check a pinacle.yaml (default: ./pinacle.yaml), or a directory's
    /// pinacle.yaml or devcontainer.json. Exits 1 when it has errors.
    Validate {
        /// A file, or a directory to look in.
        file: Option<PathBuf>,
        /// Unknown fields are errors, not warnings.
        #[arg(long)]
        strict: bool,
        /// Print the problems and the resolved pod as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a pinacle.yaml in the canonical style.
    Init {
        /// The directory to write it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Start from this template's file (see `pinacle template list`).
        #[arg(long)]
        template: Option<String>,
        /// dev.small, dev.medium, dev.large or dev.xlarge.
        #[arg(long)]
        tier: Option<String>,
        /// A service to add (repeatable): claude-code, code-server, postgres...
        #[arg(long = "service")]
        services: Vec<String>,
        /// Convert the directory's devcontainer.json instead.
        #[arg(long)]
        from_devcontainer: bool,
        /// Overwrite an existing pinacle.yaml.
        #[arg(long)]
        force: bool,
        /// Print it instead of writing it.
        #[arg(long)]
        stdout: bool,
    },
    /// Print the JSON Schema of pinacle.yaml.
    Schema,
}

/// A pod definition found in a directory, as pinacle.yaml text.
pub struct Found {
    /// The file it came from (for messages).
    pub file: String,
    /// pinacle.yaml text (converted, for a devcontainer).
    pub yaml: String,
    /// What an import left out.
    pub report: Diagnostics,
}

/// Looks for `pinacle.yaml` (or `.yml`), then a devcontainer file, in `dir`.
pub fn find(dir: &Path) -> Result<Found> {
    find_in(dir, false)
}

fn find_in(dir: &Path, devcontainer_only: bool) -> Result<Found> {
    for name in [FILE_NAME, "pinacle.yml"].into_iter().filter(|_| !devcontainer_only) {
        let path = dir.join(name);
        if path.is_file() {
            let yaml = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            return Ok(Found { file: path.display().to_string(), yaml, report: Diagnostics::default() });
        }
    }
    for rel in devcontainer::PATHS {
        let path = dir.join(rel);
        if path.is_file() {
            return import_devcontainer(&path, dir);
        }
    }
    bail!("no {FILE_NAME} or devcontainer.json in {}; create one with `pinacle config init --dir {}`", dir.display(), dir.display())
}

/// Whether `path` names a devcontainer file rather than a pinacle.yaml:
/// `devcontainer.json`, `.devcontainer.json` or any other `*.json`.
pub fn is_devcontainer_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// The repository a devcontainer file at `path` belongs to: the directory
/// above `.devcontainer/` (`.devcontainer/devcontainer.json`, or a
/// configuration in a subfolder of it), else the file's own directory.
pub fn repository_of(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let abs = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    abs.ancestors()
        .take(3)
        .find(|a| a.file_name().is_some_and(|n| n == ".devcontainer"))
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or(abs)
}

/// Imports the devcontainer file at `path`; a Dockerfile it names must be
/// inside `repo` (the pod's host builds it from the repository's clone).
fn import_devcontainer(path: &Path, repo: &Path) -> Result<Found> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match devcontainer::import(&path.display().to_string(), &text) {
        Ok(mut imported) => {
            if let Some(build) = &imported.config.image_build {
                let repo = repo.canonicalize().unwrap_or_else(|_| repo.to_path_buf());
                let file = repo.join(&build.dockerfile).canonicalize().ok().filter(|f| f.starts_with(&repo) && f.is_file());
                if file.is_none() {
                    imported.report.0.push(pinacle_config::Diagnostic {
                        severity: pinacle_config::Severity::Warning,
                        file: path.display().to_string(),
                        line: 1,
                        column: 1,
                        path: "build.dockerfile".into(),
                        message: format!("{} is not a file of the repository at {}", build.dockerfile, repo.display()),
                        suggestion: None,
                    });
                }
            }
            Ok(Found { file: path.display().to_string(), yaml: to_canonical_yaml(&imported.config), report: imported.report })
        }
        Err(d) => {
            print_diagnostics(&d, Some(&text));
            bail!("{} cannot be imported ({} errors)", path.display(), d.errors().count())
        }
    }
}

/// Prints problems like a compiler: the location, the message, the line
/// and a caret under the column.
pub fn print_diagnostics(d: &Diagnostics, source: Option<&str>) {
    for diag in &d.0 {
        eprintln!("{diag}");
        if let Some(line) = source.and_then(|s| s.lines().nth(diag.line.saturating_sub(1))) {
            eprintln!("  {:>4} | {line}", diag.line);
            eprintln!("       | {}^", " ".repeat(diag.column.saturating_sub(1)));
        }
    }
}

pub fn run(cmd: ConfigCommand) -> Result<ExitCode> {
    match cmd {
        ConfigCommand::Validate { file, strict, json } => validate(file, strict, json),
        ConfigCommand::Init { dir, template, tier, services, from_devcontainer, force, stdout } => {
            init(&dir, template, tier, services, from_devcontainer, force, stdout)
        }
        ConfigCommand::Schema => {
            print!("{}", pinacle_config::schema::schema_text());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn validate(file: Option<PathBuf>, strict: bool, json: bool) -> Result<ExitCode> {
    let path = file.unwrap_or_else(|| PathBuf::from(FILE_NAME));
    let (name, text, report) = if path.is_dir() {
        let found = find(&path)?;
        (found.file, found.yaml, found.report)
    } else if is_devcontainer_file(&path) {
        let found = import_devcontainer(&path, &repository_of(&path))?;
        (found.file, found.yaml, found.report)
    } else {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        (path.display().to_string(), text, Diagnostics::default())
    };
    let result = pinacle_config::parse(&name, &text, ParseOptions { strict });
    if json {
        let v = match &result {
            Ok((c, warnings)) => {
                let def = pinacle_config::resolve::resolve(c);
                serde_json::json!({"valid": true, "warnings": warnings, "imported": report, "config": c,
                    "resolved": {"image": def.image, "tier": def.tier, "install": def.processes.install, "processes": def.processes.processes, "tabs": def.tabs}})
            }
            Err(d) => serde_json::json!({"valid": false, "problems": d}),
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    print_diagnostics(&report, None);
    match result {
        Ok((c, warnings)) => {
            print_diagnostics(&warnings, (!name.ends_with(".json")).then_some(text.as_str()));
            let def = pinacle_config::resolve::resolve(&c);
            println!(
                "{name} is valid: image {}, tier {}, {} install step(s), {} process(es), {} tab(s){}",
                def.image,
                def.tier,
                def.processes.install.len(),
                def.processes.processes.len(),
                def.tabs.len(),
                if warnings.0.is_empty() { String::new() } else { format!(", {} warning(s)", warnings.0.len()) }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(d) => {
            // an imported file's lines are not those of the converted text
            print_diagnostics(&d, (!name.ends_with(".json")).then_some(text.as_str()));
            eprintln!("{name}: {} error(s)", d.errors().count());
            Ok(ExitCode::from(1))
        }
    }
}

fn init(
    dir: &Path,
    template: Option<String>,
    tier: Option<String>,
    services: Vec<String>,
    from_devcontainer: bool,
    force: bool,
    stdout: bool,
) -> Result<ExitCode> {
    let mut config = if from_devcontainer {
        let found = find_in(dir, true)?;
        print_diagnostics(&found.report, None);
        pinacle_config::parse(&found.file, &found.yaml, ParseOptions::default()).map_err(|d| anyhow::anyhow!("{d}"))?.0
    } else {
        let id = template.as_deref().unwrap_or("blank");
        let t = Template::find(id).with_context(|| format!("unknown template {id:?}; choose one of {}", Template::known_ids()))?;
        pinacle_config::parse(id, t.pinacle_yaml, ParseOptions::default()).map_err(|d| anyhow::anyhow!("{d}"))?.0
    };
    if let Some(t) = tier {
        config.tier = t.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    for s in services {
        if !config.services.contains(&s) {
            config.services.push(s);
        }
    }
    let yaml = to_canonical_yaml(&config);
    // what we write must read back
    if let Err(d) = pinacle_config::parse(FILE_NAME, &yaml, ParseOptions { strict: true }) {
        print_diagnostics(&d, Some(&yaml));
        bail!("the requested configuration is not valid");
    }
    if stdout {
        print!("{yaml}");
        return Ok(ExitCode::SUCCESS);
    }
    let path = dir.join(FILE_NAME);
    if path.exists() && !force {
        bail!("{} already exists; pass --force to overwrite it", path.display());
    }
    std::fs::write(&path, &yaml).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

impl Found {
    /// Whether this came from a devcontainer file.
    pub fn imported(&self) -> bool {
        self.file.ends_with(".json")
    }
}
