//! Documented size limits for untrusted input (docs/reference/contracts.md lists them).

/// Upper bounds applied while parsing. A file or list over a limit is rejected with a problem that
/// names the limit, before any expensive work is done on it.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted document, in bytes.
    pub max_bytes: usize,
    /// Deepest accepted nesting of mappings and sequences.
    pub max_depth: usize,
}

impl Limits {
    /// Limits for one service contract file.
    pub const CONTRACT: Limits = Limits {
        max_bytes: 256 * 1024,
        max_depth: 16,
    };
    /// Limits for one route request (the payload is free-form, so it is larger).
    pub const REQUEST: Limits = Limits {
        max_bytes: 1024 * 1024,
        max_depth: 32,
    };
    /// Limits for a policy set file.
    pub const POLICIES: Limits = Limits {
        max_bytes: 1024 * 1024,
        max_depth: 16,
    };
    /// Limits for a principal file.
    pub const PRINCIPAL: Limits = Limits {
        max_bytes: 64 * 1024,
        max_depth: 8,
    };
}

/// Most capabilities one contract may declare.
pub const MAX_CAPABILITIES: usize = 64;
/// Most guarantees one contract or request may declare.
pub const MAX_GUARANTEES: usize = 64;
/// Most constraints one contract or request may declare.
pub const MAX_CONSTRAINTS: usize = 64;
/// Most entries in one constraint list (`languages: [...]`).
pub const MAX_LIST_ITEMS: usize = 1024;
/// Most permissions a contract requires or a principal holds.
pub const MAX_PERMISSIONS: usize = 256;
/// Most policies in one policy set.
pub const MAX_POLICIES: usize = 4096;
/// Longest CEL expression, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// Deepest CEL expression tree: `1 + 2 > 0` is three levels (`>`, `+`, a literal), and
/// `request.data.sensitive` three (two selects, `request`). CEL's evaluator recurses once per
/// level on the thread that routes, up to about 36 KiB of stack a level in a debug build, so a
/// deep tree would overflow a 2 MiB thread stack; CEL's own parser limits only parentheses, not
/// chains of operators, which are as deep as they are long. `&&` and `||` chains are balanced by
/// the parser and stay shallow at any length.
pub const MAX_EXPRESSION_DEPTH: usize = 32;
/// Most work one evaluation of one CEL expression may do, in cost units: a comprehension (`all`,
/// `exists`, `exists_one`, `map`, `filter`) costs the length of its list times the nodes of its
/// body, an operand that is compared, joined or searched costs one unit per element or entry
/// (all the way down) and one per 16 bytes of string. An evaluation that would pass it stops
/// and counts as one that could not be evaluated (fail closed). A unit is 30 – 270 ns of a
/// release build on a 2-core VM (docs/reference/policies.md, *Evaluation cost*).
pub const MAX_EVALUATION_COST: u64 = 1_000_000;
/// Most work the policy evaluations of one routing decision may do together, in the same units:
/// the request-level expressions and, per service, the expressions that read both the request
/// and the service. (Expressions that read only the service are evaluated once per registry
/// snapshot, each under [`MAX_EVALUATION_COST`] alone.)
pub const MAX_ROUTE_EVALUATION_COST: u64 = 2_000_000;
/// Most elements of one field vector.
pub const MAX_FIELD_LEN: usize = 4096;
