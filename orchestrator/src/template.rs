//! Built-in pod templates. A template names the image a pod starts from.

/// A pod template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Template {
    /// Identifier used in requests (`blank`).
    pub id: &'static str,
    /// The image (in the host's image store) the pod's root filesystem comes from.
    pub image: &'static str,
    /// One line for `pinacle template list`.
    pub description: &'static str,
}

/// The templates every host knows.
pub const TEMPLATES: &[Template] = &[
    Template {
        id: "blank",
        image: "base",
        description: "Debian 12 base: bash, coreutils, git, curl, tmux, procps, python3",
    },
    Template {
        id: "minimal",
        image: "busybox",
        description: "BusyBox only; starts fastest, for tests and quick experiments",
    },
];

impl Template {
    /// Finds a built-in template by id.
    pub fn find(id: &str) -> Option<&'static Template> {
        TEMPLATES.iter().find(|t| t.id == id)
    }

    /// Every built-in template.
    pub fn known() -> &'static [Template] {
        TEMPLATES
    }

    /// The ids of all templates, for error messages.
    pub fn known_ids() -> String {
        TEMPLATES.iter().map(|t| t.id).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_uses_the_debian_base_image() {
        assert_eq!(Template::find("blank").map(|t| t.image), Some("base"));
        assert_eq!(Template::find("nope"), None);
        assert_eq!(Template::known_ids(), "blank, minimal");
    }
}
