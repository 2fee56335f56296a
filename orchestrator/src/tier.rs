//! Resource tiers. A pod's tier fixes its CPU quota, memory limit, process
//! limit and disk size.

use std::fmt;
use std::str::FromStr;

const GIB: u64 = 1024 * 1024 * 1024;

/// The tiers a pod can be created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Tier {
    #[serde(rename = "dev.small")]
    DevSmall,
    #[serde(rename = "dev.medium")]
    DevMedium,
    #[serde(rename = "dev.large")]
    DevLarge,
    #[serde(rename = "dev.xlarge")]
    DevXlarge,
}

/// The limits a tier grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TierLimits {
    /// Virtual CPUs, enforced as a CFS quota of `vcpus * period`.
    pub vcpus: u32,
    /// Memory limit in bytes.
    pub memory_bytes: u64,
    /// Disk size in bytes for the pod's writable layer and workspace.
    pub disk_bytes: u64,
    /// Most processes (threads included) the pod may run at once.
    pub pids: u32,
}

impl Tier {
    /// Every tier, smallest first.
    pub const ALL: [Tier; 4] = [Tier::DevSmall, Tier::DevMedium, Tier::DevLarge, Tier::DevXlarge];

    /// The tier's identifier as users write it (`dev.small`).
    pub fn id(self) -> &'static str {
        match self {
            Tier::DevSmall => "dev.small",
            Tier::DevMedium => "dev.medium",
            Tier::DevLarge => "dev.large",
            Tier::DevXlarge => "dev.xlarge",
        }
    }

    /// The limits of this tier.
    pub fn limits(self) -> TierLimits {
        let (vcpus, mem_gib, disk_gib) = match self {
            Tier::DevSmall => (1, 2, 20),
            Tier::DevMedium => (2, 4, 40),
            Tier::DevLarge => (4, 8, 80),
            Tier::DevXlarge => (8, 16, 160),
        };
        TierLimits {
            vcpus,
            memory_bytes: mem_gib * GIB,
            disk_bytes: disk_gib * GIB,
            pids: 1024 * vcpus,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// The tier id is not one of [`Tier::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tier {given:?}; choose one of dev.small, dev.medium, dev.large, dev.xlarge")]
pub struct UnknownTier {
    /// What was asked for.
    pub given: String,
}

impl FromStr for Tier {
    type Err = UnknownTier;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|t| t.id() == s)
            .ok_or_else(|| UnknownTier { given: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_match_the_published_table() {
        let table: Vec<_> = Tier::ALL
            .iter()
            .map(|t| {
                let l = t.limits();
                (t.id(), l.vcpus, l.memory_bytes / GIB, l.disk_bytes / GIB)
            })
            .collect();
        assert_eq!(
            table,
            vec![
                ("dev.small", 1, 2, 20),
                ("dev.medium", 2, 4, 40),
                ("dev.large", 4, 8, 80),
                ("dev.xlarge", 8, 16, 160)
            ]
        );
    }

    #[test]
    fn parses_ids_and_rejects_others() {
        for t in Tier::ALL {
            assert_eq!(t.id().parse::<Tier>(), Ok(t));
        }
        let err = "dev.smal".parse::<Tier>().unwrap_err();
        assert!(err.to_string().contains("dev.small"));
        assert_eq!(serde_json::to_string(&Tier::DevLarge).unwrap(), "\"dev.large\"");
    }
}
