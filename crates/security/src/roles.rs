//! Roles, the actions they allow, and the authenticated `Identity` a request carries into the
//! server's handlers.
//!
//! The role × action table lives in one `match` ([`Role::allows`]) so that the documentation
//! (docs/reference/authentication.md) and a test can both be checked against it.

use std::fmt;
use std::str::FromStr;

use caio_contracts::request::Principal;
use serde::{Deserialize, Serialize};

/// What a credential may do in the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including key management and the audit log.
    Admin,
    /// Runs the orchestrator: services, policies, traces of its tenant, routing.
    Operator,
    /// A registered service: reads the registry and writes its own contract.
    Service,
    /// A caller of services: discovery, routing, its own traces.
    Client,
}

impl Role {
    /// Every role, in documentation order.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Service, Role::Client];

    /// The lowercase name (as in JSON, JWT claims and `Principal::roles`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Service => "service",
            Role::Client => "client",
        }
    }

    /// Whether the role allows the action. A `Service` may write services, but only its own:
    /// callers check [`Identity::may_write_service`] for that.
    pub fn allows(self, a: Action) -> bool {
        use Action::*;
        match self {
            Role::Admin => true,
            Role::Operator => matches!(
                a,
                ServicesRead
                    | ServicesWrite
                    | PoliciesRead
                    | PoliciesWrite
                    | TracesReadAll
                    | TracesReadOwn
                    | Route
                    | Discover
            ),
            Role::Service => matches!(a, ServicesRead | ServicesWrite | Discover),
            Role::Client => matches!(a, Discover | Route | TracesReadOwn),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of `admin`, `operator`, `service`, `client`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`; expected one of: admin, operator, service, client")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    /// Exact lowercase names only, as serde accepts them, so a config file and a JWT agree.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(crate::validate::sanitize(s, 32)))
    }
}

/// Something a handler does on behalf of an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// List and read service contracts.
    ServicesRead,
    /// Register, update or remove service contracts.
    ServicesWrite,
    /// Read policies.
    PoliciesRead,
    /// Replace policies.
    PoliciesWrite,
    /// Read every trace of the identity's tenant.
    TracesReadAll,
    /// Read the traces of one's own requests.
    TracesReadOwn,
    /// Ask for a routing decision (and execution).
    Route,
    /// Discover which services offer a capability.
    Discover,
    /// Create, list and revoke API keys.
    KeysManage,
    /// Read the audit log.
    AuditRead,
    /// Operate the gateway: the emergency stop, circuit breaker state.
    GatewayControl,
}

impl Action {
    /// Every action, in documentation order.
    pub const ALL: [Action; 11] = [
        Action::ServicesRead,
        Action::ServicesWrite,
        Action::PoliciesRead,
        Action::PoliciesWrite,
        Action::TracesReadAll,
        Action::TracesReadOwn,
        Action::Route,
        Action::Discover,
        Action::KeysManage,
        Action::AuditRead,
        Action::GatewayControl,
    ];

    /// A stable snake_case name, for audit records and error details.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ServicesRead => "services_read",
            Action::ServicesWrite => "services_write",
            Action::PoliciesRead => "policies_read",
            Action::PoliciesWrite => "policies_write",
            Action::TracesReadAll => "traces_read_all",
            Action::TracesReadOwn => "traces_read_own",
            Action::Route => "route",
            Action::Discover => "discover",
            Action::KeysManage => "keys_manage",
            Action::AuditRead => "audit_read",
            Action::GatewayControl => "gateway_control",
        }
    }
}

/// How an identity proved itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A stored API key (`caio_<id>_<secret>`).
    ApiKey,
    /// A signed JWT.
    Jwt,
    /// The operator's bootstrap key from the server configuration.
    Bootstrap,
}

impl AuthMethod {
    /// The snake_case name, as serialized.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Jwt => "jwt",
            AuthMethod::Bootstrap => "bootstrap",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The key id or the JWT `sub`.
    pub subject: String,
    /// The role granted by the credential.
    pub role: Role,
    /// The principal routing sees: id = subject, the credential's tenant, permissions and trust,
    /// roles = `[role]`.
    pub principal: Principal,
    /// For role `service`: the one service this identity may write.
    pub service_id: Option<String>,
    /// How the identity authenticated.
    pub method: AuthMethod,
}

impl Identity {
    /// Builds an identity and its principal from a credential's fields (the one place the
    /// credential → principal mapping is written down).
    pub fn new(
        subject: String,
        role: Role,
        tenant: String,
        permissions: Vec<String>,
        trust_level: u8,
        service_id: Option<String>,
        method: AuthMethod,
    ) -> Identity {
        let principal = Principal {
            id: subject.clone(),
            permissions,
            roles: vec![role.as_str().to_owned()],
            tenant,
            trust_level,
        };
        Identity {
            subject,
            role,
            principal,
            service_id,
            method,
        }
    }

    /// Whether the identity's role allows the action.
    pub fn may(&self, a: Action) -> bool {
        self.role.allows(a)
    }

    /// Whether the identity may register or change the service `service_id`: admins and
    /// operators any, a service identity only its own, clients none.
    pub fn may_write_service(&self, service_id: &str) -> bool {
        match self.role {
            Role::Admin | Role::Operator => true,
            Role::Service => self.service_id.as_deref() == Some(service_id),
            Role::Client => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of docs/reference/authentication.md, row by row (A = allowed).
    #[test]
    fn role_action_table() {
        // Columns: ServicesRead, ServicesWrite, PoliciesRead, PoliciesWrite, TracesReadAll,
        // TracesReadOwn, Route, Discover, KeysManage, AuditRead.
        let table: [(Role, &str); 4] = [
            (Role::Admin, "AAAAAAAAAA"),
            (Role::Operator, "AAAAAAAA.."),
            (Role::Service, "AA.....A.."),
            (Role::Client, ".....AAA.."),
        ];
        for (role, row) in table {
            for (action, cell) in Action::ALL.iter().zip(row.chars()) {
                assert_eq!(
                    role.allows(*action),
                    cell == 'A',
                    "{role} × {}",
                    action.as_str()
                );
            }
        }
    }

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), role);
        }
    }

    #[test]
    fn unknown_role_names_the_allowed_values() {
        let err = "Admin".parse::<Role>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`Admin`"), "{msg}");
        assert!(msg.contains("admin, operator, service, client"), "{msg}");
        // Hostile input is truncated and control characters masked.
        let err = format!("root\n{}", "x".repeat(1000))
            .parse::<Role>()
            .unwrap_err();
        assert_eq!(err.0.chars().count(), 32);
        assert!(!err.0.contains('\n'));
        assert!("".parse::<Role>().is_err());
    }

    fn identity(role: Role, service_id: Option<&str>) -> Identity {
        Identity::new(
            "k1".into(),
            role,
            "acme".into(),
            vec!["classify".into()],
            3,
            service_id.map(str::to_owned),
            AuthMethod::ApiKey,
        )
    }

    #[test]
    fn principal_mapping() {
        let id = identity(Role::Operator, None);
        assert_eq!(id.principal.id, "k1");
        assert_eq!(id.principal.tenant, "acme");
        assert_eq!(id.principal.permissions, ["classify"]);
        assert_eq!(id.principal.trust_level, 3);
        assert_eq!(id.principal.roles, ["operator"]);
        assert!(id.may(Action::PoliciesWrite));
        assert!(!id.may(Action::KeysManage));
    }

    #[test]
    fn write_service_rules() {
        assert!(identity(Role::Admin, None).may_write_service("any"));
        assert!(identity(Role::Operator, None).may_write_service("any"));
        let svc = identity(Role::Service, Some("sentiment-eu"));
        assert!(svc.may_write_service("sentiment-eu"));
        assert!(!svc.may_write_service("sentiment-us"));
        assert!(!identity(Role::Service, None).may_write_service("sentiment-eu"));
        assert!(!identity(Role::Client, None).may_write_service("sentiment-eu"));
    }

    #[test]
    fn auth_method_serializes_snake_case() {
        assert_eq!(
            serde_json::to_string(&AuthMethod::ApiKey).unwrap(),
            "\"api_key\""
        );
        assert_eq!(AuthMethod::Bootstrap.as_str(), "bootstrap");
    }
}
