//! Field checks shared by API keys and JWT claims, so both credentials obey the same rules as a
//! `Principal` (caio-contracts' schema: tenant pattern, trust 0–10, permission sizes).

/// Longest accepted key name, JWT subject or permission, in characters.
pub(crate) const MAX_TEXT_CHARS: usize = 128;
/// Most permissions a credential may carry.
pub(crate) const MAX_PERMISSIONS: usize = 256;
/// Highest trust level.
pub(crate) const MAX_TRUST: u8 = 10;

/// `^[a-z0-9][a-z0-9_-]{0,62}$` — the id pattern of tenants and services. Written by hand rather
/// than as a regex because it runs on every JWT and every key creation and is trivially simple.
pub(crate) fn is_ident(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// 1..=128 characters, none of them a control character.
pub(crate) fn is_printable_text(s: &str) -> bool {
    let n = s.chars().count();
    (1..=MAX_TEXT_CHARS).contains(&n) && !s.chars().any(char::is_control)
}

/// The checks common to key creation and JWT claims. Every problem is collected with its field
/// name (STYLE.md: validation reports every problem, not the first). Values are not echoed: they
/// come from untrusted input and could be long or contain control characters.
pub(crate) fn principal_fields(
    is_service_role: bool,
    tenant: &str,
    permissions: &[String],
    trust_level: u8,
    service_id: Option<&str>,
    problems: &mut Vec<String>,
) {
    if !is_ident(tenant) {
        problems.push("tenant: must match ^[a-z0-9][a-z0-9_-]{0,62}$".to_owned());
    }
    if trust_level > MAX_TRUST {
        problems.push(format!(
            "trust_level: {trust_level} is outside 0–{MAX_TRUST}"
        ));
    }
    if permissions.len() > MAX_PERMISSIONS {
        problems.push(format!(
            "permissions: {} entries, at most {MAX_PERMISSIONS} allowed",
            permissions.len()
        ));
    }
    if let Some(i) = permissions
        .iter()
        .position(|p| p.is_empty() || p.chars().count() > MAX_TEXT_CHARS)
    {
        problems.push(format!(
            "permissions[{i}]: must be 1–{MAX_TEXT_CHARS} characters"
        ));
    }
    match (is_service_role, service_id) {
        (true, None) => problems.push("service_id: required for role service".to_owned()),
        (true, Some(id)) if !is_ident(id) => {
            problems.push("service_id: must match ^[a-z0-9][a-z0-9_-]{0,62}$".to_owned());
        }
        (false, Some(_)) => {
            problems.push("service_id: only allowed for role service".to_owned());
        }
        _ => {}
    }
}

/// Replaces control characters and truncates, so an attacker-chosen string can go into an error
/// message or a log line without forging lines or growing without bound.
pub(crate) fn sanitize(s: &str, max_chars: usize) -> String {
    s.chars()
        .take(max_chars)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ident_pattern() {
        for ok in ["a", "0", "public", "acme-eu_1", &"a".repeat(63)] {
            assert!(is_ident(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "A",
            "a b",
            "a.b",
            "ä",
            &"a".repeat(64),
            "a\n",
        ] {
            assert!(!is_ident(bad), "{bad:?}");
        }
    }

    #[test]
    fn printable_text() {
        assert!(is_printable_text("Nightly batch key"));
        assert!(is_printable_text(&"é".repeat(128)));
        assert!(!is_printable_text(""));
        assert!(!is_printable_text(&"x".repeat(129)));
        assert!(!is_printable_text("tab\there"));
    }

    #[test]
    fn principal_fields_collects_every_problem() {
        let mut problems = Vec::new();
        let perms = vec![String::new(); 257];
        principal_fields(true, "Bad Tenant", &perms, 11, None, &mut problems);
        assert_eq!(problems.len(), 5, "{problems:?}");
        for field in [
            "tenant",
            "trust_level",
            "permissions:",
            "permissions[0]",
            "service_id",
        ] {
            assert!(problems.iter().any(|p| p.starts_with(field)), "{field}");
        }
    }

    #[test]
    fn service_id_only_for_service_role() {
        let mut problems = Vec::new();
        principal_fields(false, "public", &[], 0, Some("svc"), &mut problems);
        assert_eq!(problems, ["service_id: only allowed for role service"]);
        problems.clear();
        principal_fields(true, "public", &[], 0, Some("Svc!"), &mut problems);
        assert_eq!(problems.len(), 1);
        problems.clear();
        principal_fields(true, "public", &[], 10, Some("svc"), &mut problems);
        assert!(problems.is_empty());
    }

    #[test]
    fn sanitize_truncates_and_masks_controls() {
        assert_eq!(sanitize("ab\ncd", 10), "ab?cd");
        assert_eq!(sanitize(&"x".repeat(100), 32).len(), 32);
    }
}
