//! The layers of a project's memory.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a memory lives; each layer has its own rules (see [`Layer::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// Facts and knowledge, vector-indexed.
    Semantic,
    /// What happened, time-stamped.
    Episodic,
    /// How-tos and skills.
    Procedural,
    /// Chunks of ingested documents, with their source and offsets.
    Rag,
    /// The turns of one session.
    Session,
    /// A scratchpad whose entries expire.
    Working,
    /// Every access and action, hash-chained.
    Events,
    /// Every add, update and delete with the hashes before and after,
    /// hash-chained.
    Changelog,
}

/// How a layer's entries behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// Memories that agents add, update (superseding) and delete.
    Memories,
    /// An append-only hash-chained log that the service writes itself.
    Log,
}

impl Layer {
    /// Every layer, in the order they are shown.
    pub const ALL: [Layer; 8] =
        [Layer::Semantic, Layer::Episodic, Layer::Procedural, Layer::Rag, Layer::Session, Layer::Working, Layer::Events, Layer::Changelog];

    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Semantic => "semantic",
            Layer::Episodic => "episodic",
            Layer::Procedural => "procedural",
            Layer::Rag => "rag",
            Layer::Session => "session",
            Layer::Working => "working",
            Layer::Events => "events",
            Layer::Changelog => "changelog",
        }
    }

    pub fn kind(self) -> LayerKind {
        match self {
            Layer::Events | Layer::Changelog => LayerKind::Log,
            _ => LayerKind::Memories,
        }
    }

    /// Whether agents may write to it (the logs are the service's own).
    pub fn is_writable(self) -> bool {
        self.kind() == LayerKind::Memories
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown memory layer {0:?}; use one of semantic, episodic, procedural, rag, session, working, events, changelog")]
pub struct UnknownLayer(pub String);

impl FromStr for Layer {
    type Err = UnknownLayer;
    fn from_str(s: &str) -> Result<Self, UnknownLayer> {
        Layer::ALL.into_iter().find(|l| l.as_str() == s).ok_or_else(|| UnknownLayer(s.chars().take(64).collect()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn layers_round_trip_by_name_and_the_logs_are_not_writable() {
        for l in Layer::ALL {
            assert_eq!(l.as_str().parse::<Layer>(), Ok(l));
            assert_eq!(serde_json::to_string(&l).unwrap(), format!("\"{l}\""));
        }
        assert_eq!(Layer::ALL.iter().filter(|l| !l.is_writable()).count(), 2);
        assert!(!Layer::Changelog.is_writable() && Layer::Working.is_writable());
        let e = "Semantic".parse::<Layer>().unwrap_err();
        assert!(e.to_string().contains("semantic, episodic"), "{e}");
        // a huge unknown name is not echoed whole
        assert!("x".repeat(10_000).parse::<Layer>().unwrap_err().0.len() <= 64);
    }
}
