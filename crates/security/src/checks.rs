//! The security step: authentication, authorization, privacy, trust and tenant access.

use caio_contracts::model::{DataLocality, ServiceSpec};
use caio_contracts::request::Principal;

/// Why a service was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Stable reason code.
    pub reason: &'static str,
    /// Explanation naming the values compared.
    pub detail: String,
}

/// Checks that a principal is authenticated: a non-empty id of printable characters and a trust
/// level within 0–10. (Credentials are verified before routing, by the server; routing sees the
/// principal they resolved to.)
pub fn authenticate(p: &Principal) -> Result<(), Denial> {
    if p.id.trim().is_empty() || p.id.chars().any(char::is_control) {
        return Err(Denial {
            reason: "unauthenticated",
            detail: "the principal has no valid id".to_owned(),
        });
    }
    if p.trust_level > 10 {
        return Err(Denial {
            reason: "unauthenticated",
            detail: format!("trust level {} is outside 0–10", p.trust_level),
        });
    }
    Ok(())
}

/// The four security predicates: authorization, privacy, trust, tenant access.
fn predicates(principal: &Principal, spec: &ServiceSpec, sensitive: bool) -> [bool; 4] {
    let required = &spec.security.required_permissions;
    let authorized =
        required.is_empty() || required.iter().any(|r| principal.permissions.contains(r));
    let privacy = !sensitive
        || matches!(
            spec.privacy.data_locality,
            DataLocality::Local | DataLocality::OnDevice
        )
        || spec.privacy.encryption;
    let trust = principal.trust_level >= spec.security.min_trust_level;
    let access = spec.tenant == "public" || spec.tenant == principal.tenant;
    [authorized, privacy, trust, access]
}

/// The first check a service fails, without building evidence (the hot path of routing).
pub fn deny(principal: &Principal, spec: &ServiceSpec, sensitive: bool) -> Option<Denial> {
    if predicates(principal, spec, sensitive).iter().all(|ok| *ok) {
        return None;
    }
    check_service(principal, spec, sensitive).1
}

/// The outcome of every security check for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityCheck {
    /// Permissions held that the service requires.
    pub granted_permissions: Vec<String>,
    /// Authorization passed.
    pub authorized: bool,
    /// Privacy passed.
    pub privacy: bool,
    /// Trust passed.
    pub trust: bool,
    /// Tenant access passed.
    pub access: bool,
}

/// Runs every check for one service, in a fixed order (authorization, privacy, trust, access), and
/// returns the evidence with the first failure.
pub fn check_service(
    principal: &Principal,
    spec: &ServiceSpec,
    sensitive: bool,
) -> (SecurityCheck, Option<Denial>) {
    let required = &spec.security.required_permissions;
    let granted: Vec<String> = required
        .iter()
        .filter(|r| principal.permissions.contains(r))
        .cloned()
        .collect();
    let [authorized, privacy, trust, access] = predicates(principal, spec, sensitive);
    let denial = if !authorized {
        Some(Denial {
            reason: "unauthorized",
            detail: format!(
                "principal `{}` holds none of the required permissions [{}]",
                principal.id,
                required.join(", ")
            ),
        })
    } else if !privacy {
        Some(Denial {
            reason: "privacy",
            detail: format!(
                "sensitive data may not go to a `{}` service without encryption",
                spec.privacy.data_locality.as_str()
            ),
        })
    } else if !trust {
        Some(Denial {
            reason: "insufficient_trust",
            detail: format!(
                "principal trust level {} is below the service minimum {}",
                principal.trust_level, spec.security.min_trust_level
            ),
        })
    } else if !access {
        Some(Denial {
            reason: "tenant_boundary",
            detail: format!(
                "service belongs to tenant `{}`, principal to `{}`",
                spec.tenant, principal.tenant
            ),
        })
    } else {
        None
    };
    (
        SecurityCheck {
            granted_permissions: granted,
            authorized,
            privacy,
            trust,
            access,
        },
        denial,
    )
}
