//! Pod names: DNS labels, because they become part of host names
//! (`{service}-{pod}-{user}.{domain}`).

use std::fmt;

/// Longest accepted pod name. Shorter than a DNS label's 63 so that the
/// service and user parts still fit in one label.
pub const MAX_POD_NAME_LEN: usize = 40;

/// Why a string is not a valid pod name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty; use 1 to {MAX_POD_NAME_LEN} characters of a-z, 0-9 and '-'")]
    Empty,
    #[error("name is {0} characters long; use at most {MAX_POD_NAME_LEN}")]
    TooLong(usize),
    #[error("name contains {0:?}; use only lowercase letters a-z, digits 0-9 and '-'")]
    BadCharacter(char),
    #[error("name must start and end with a letter or digit, not '-'")]
    EdgeDash,
    #[error("name looks like a pod id (a UUID); choose a name that is not one")]
    LooksLikeId,
}

/// A validated pod name: 1 to 40 characters of `[a-z0-9-]`, not starting or
/// ending with a dash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct PodName(String);

impl PodName {
    /// Validates `raw` as a pod name.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        let len = raw.chars().count();
        if len > MAX_POD_NAME_LEN {
            return Err(NameError::TooLong(len));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadCharacter(bad));
        }
        if raw.starts_with('-') || raw.ends_with('-') {
            return Err(NameError::EdgeDash);
        }
        // Pods are looked up by id or name; a name must never read as an id.
        if uuid::Uuid::parse_str(raw).is_ok() {
            return Err(NameError::LooksLikeId);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for PodName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        PodName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "demo", "my-pod-2", "0", &"x".repeat(40)] {
            assert_eq!(PodName::parse(ok).map(|n| n.to_string()), Ok(ok.to_string()));
        }
    }

    #[test]
    fn rejects_everything_else_with_a_reason() {
        assert_eq!(PodName::parse(""), Err(NameError::Empty));
        assert_eq!(PodName::parse(&"x".repeat(41)), Err(NameError::TooLong(41)));
        assert_eq!(PodName::parse("Demo"), Err(NameError::BadCharacter('D')));
        assert_eq!(PodName::parse("a_b"), Err(NameError::BadCharacter('_')));
        assert_eq!(PodName::parse("a.b"), Err(NameError::BadCharacter('.')));
        assert_eq!(PodName::parse("é"), Err(NameError::BadCharacter('é')));
        assert_eq!(PodName::parse("-a"), Err(NameError::EdgeDash));
        assert_eq!(PodName::parse("a-"), Err(NameError::EdgeDash));
        assert_eq!(PodName::parse("../etc"), Err(NameError::BadCharacter('.')));
        let id = uuid::Uuid::new_v4();
        assert_eq!(PodName::parse(&id.to_string()), Err(NameError::LooksLikeId));
        assert_eq!(PodName::parse(&id.simple().to_string()), Err(NameError::LooksLikeId));
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<PodName>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<PodName>("\"NOT OK\"").is_err());
    }
}
