//! The pieces of Docker's image reference grammar that both the
//! configuration check (`pinacle-config`) and the puller (`pinacle-oci`)
//! apply, so they accept exactly the same repositories and tags.

/// One path component of a repository: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub fn valid_repository_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_components_and_tags_follow_dockers_grammar() {
        for ok in ["a", "python", "my__repo", "x-y.z", "a---b", "a.b_c"] {
            assert!(valid_repository_component(ok), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a..b", "a___b", "a/b", "a b", ".."] {
            assert!(!valid_repository_component(bad), "{bad}");
        }
        for ok in ["latest", "1-3.12-bookworm", "_x", "V1.2"] {
            assert!(valid_tag(ok), "{ok}");
        }
        for bad in ["", "-x", ".x", "a b", &"a".repeat(129)] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }
}
