//! Built-in templates: a `pinacle.yaml`, an image recipe and starter files
//! each, all from the repository's `templates/` directory and compiled in.

/// A file a template puts into a new pod's `/workspace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StarterFile {
    /// Relative to `/workspace`.
    pub path: &'static str,
    #[serde(skip)]
    pub contents: &'static str,
}

/// A built-in template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Template {
    /// Identifier used in `template:` and requests (`vite`).
    pub id: &'static str,
    /// One line for `pinacle template list`.
    pub description: &'static str,
    /// The image (in the host's image store) pods from it start from.
    pub image: &'static str,
    /// Its `pinacle.yaml`.
    pub pinacle_yaml: &'static str,
    /// The image recipe (a Dockerfile subset, see `crate::dockerfile`); `None`
    /// for images the host builds itself (`base`, `busybox`).
    #[serde(skip)]
    pub recipe: Option<&'static str>,
    /// Copied into `/workspace` when a pod is created from the template.
    pub files: &'static [StarterFile],
}

macro_rules! starter {
    ($dir:literal, [$($path:literal),* $(,)?]) => {
        &[$(StarterFile { path: $path, contents: include_str!(concat!("../../templates/", $dir, "/files/", $path)) }),*]
    };
}

/// Every built-in template.
pub const TEMPLATES: &[Template] = &[
    Template {
        id: "blank",
        description: "Debian 13: bash, git, curl, tmux, python3",
        image: "base",
        pinacle_yaml: include_str!("../../templates/blank/pinacle.yaml"),
        recipe: None,
        files: &[],
    },
    Template {
        id: "minimal",
        description: "BusyBox only; starts fastest, for tests and quick experiments",
        image: "busybox",
        pinacle_yaml: include_str!("../../templates/minimal/pinacle.yaml"),
        recipe: None,
        files: &[],
    },
    Template {
        id: "vscode",
        description: "VS Code in the browser (code-server 4.100.3) on the node image, built in so pods start it without network",
        image: "vscode",
        pinacle_yaml: include_str!("../../templates/vscode/pinacle.yaml"),
        recipe: Some(include_str!("../../templates/vscode/Dockerfile")),
        files: starter!("vscode", ["README.md"]),
    },
    Template {
        id: "nodejs-blank",
        description: "Node.js and npm with a tiny HTTP server on port 3000",
        image: "node",
        pinacle_yaml: include_str!("../../templates/nodejs-blank/pinacle.yaml"),
        recipe: Some(include_str!("../../templates/nodejs-blank/Dockerfile")),
        files: starter!("nodejs-blank", ["package.json", "index.js"]),
    },
    Template {
        id: "vite",
        description: "Vite dev server on port 5173, dependencies cached in the image",
        image: "vite",
        pinacle_yaml: include_str!("../../templates/vite/pinacle.yaml"),
        recipe: Some(include_str!("../../templates/vite/Dockerfile")),
        files: starter!("vite", ["package.json", "package-lock.json", "index.html", "src/main.js"]),
    },
    Template {
        id: "nextjs",
        description: "Next.js dev server on port 3000, dependencies cached in the image",
        image: "nextjs",
        pinacle_yaml: include_str!("../../templates/nextjs/pinacle.yaml"),
        recipe: Some(include_str!("../../templates/nextjs/Dockerfile")),
        files: starter!("nextjs", ["package.json", "package-lock.json", "app/layout.js", "app/page.js"]),
    },
    Template {
        id: "python-blank",
        description: "Python 3 with a virtualenv and a tiny web app on port 8000",
        image: "python",
        pinacle_yaml: include_str!("../../templates/python-blank/pinacle.yaml"),
        recipe: Some(include_str!("../../templates/python-blank/Dockerfile")),
        files: starter!("python-blank", ["app.py", "requirements.txt"]),
    },
    Template {
        id: "rust",
        description: "Rust and Cargo from Debian with a std-only web server on port 8080",
        image: "rust",
        pinacle_yaml: include_str!("../../templates/rust/pinacle.yaml"),
        recipe: Some(include_str!("../../templates/rust/Dockerfile")),
        files: starter!("rust", ["Cargo.toml", "src/main.rs"]),
    },
];

impl Template {
    /// Finds a template by id.
    pub fn find(id: &str) -> Option<&'static Template> {
        TEMPLATES.iter().find(|t| t.id == id)
    }

    /// Every template.
    pub fn known() -> &'static [Template] {
        TEMPLATES
    }

    /// Every template id.
    pub fn ids() -> impl Iterator<Item = &'static str> {
        TEMPLATES.iter().map(|t| t.id)
    }

    /// The ids, comma-separated, for messages.
    pub fn known_ids() -> String {
        Self::ids().collect::<Vec<_>>().join(", ")
    }

    /// The template whose image is `image`, for building it.
    pub fn building(image: &str) -> Option<&'static Template> {
        TEMPLATES.iter().find(|t| t.image == image && t.recipe.is_some())
    }

    /// A starter file by path, for a recipe's `COPY files/...`.
    pub fn file(&self, path: &str) -> Option<&'static StarterFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, ParseOptions};

    #[test]
    fn every_template_file_parses_and_names_its_template() {
        for t in TEMPLATES {
            let (config, warnings) = parse(&format!("templates/{}/pinacle.yaml", t.id), t.pinacle_yaml, ParseOptions { strict: true })
                .unwrap_or_else(|e| panic!("{}: {e}", t.id));
            assert!(warnings.0.is_empty(), "{}: {warnings}", t.id);
            assert_eq!(config.template.as_deref(), Some(t.id));
            if let Some(recipe) = t.recipe {
                let r = crate::dockerfile::parse(&format!("templates/{}/Dockerfile", t.id), recipe)
                    .unwrap_or_else(|e| panic!("{}: {e}", t.id));
                for copy in r.copies() {
                    for src in &copy.sources {
                        let rel = src.strip_prefix("files/").unwrap_or(src);
                        assert!(t.file(rel).is_some(), "{}: COPY {src} is not a starter file", t.id);
                    }
                }
            }
        }
        assert_eq!(Template::find("vite").map(|t| t.image), Some("vite"));
        assert_eq!(Template::building("node").map(|t| t.id), Some("nodejs-blank"));
        assert!(Template::building("base").is_none());
    }
}
