//! caio-rules: operator policies in CEL, compiled once and evaluated fail-closed.
//!
//! Each policy has a `when` (does the rule apply to this request?) and a `require` (must hold for
//! the service). Both are CEL over three variables: `request` (every section present, with
//! defaults), `service` (the contract's `service` section) and `principal`. Compilation reports a
//! syntax error or an undeclared name with the policy id, the expression and the line and column.
//! Evaluation fails closed: a `when` that cannot be evaluated applies, a `require` that cannot be
//! evaluated is violated, and the outcome records why together with the value of every
//! `request.*`, `service.*` and `principal.*` path the rule reads.
//! Every evaluation is metered in cost units (comprehensions by the elements they visit, large
//! operands by their size): one past `MAX_EVALUATION_COST`, or a request's evaluations past
//! `MAX_ROUTE_EVALUATION_COST`, stops and counts as one that could not be evaluated.
//!
//! [`store`] keeps the policy sets an operator submits as content-addressed versions with an
//! activation history, diff and rollback, in memory or in a directory.

mod compile;
mod cost;
mod eval;
pub mod store;
mod value;

pub use compile::{CompiledPolicies, CompiledRule, PolicyError, compile, compile_recorded};
pub use eval::{RequestEval, RequestScope, RuleCheck, ServiceScope, ServiceTable, Truth};
pub use store::{
    ChangedRule, FilePolicyStore, MemoryPolicyStore, PolicyAction, PolicyActivation, PolicyDiff,
    PolicyStore, PolicyStoreError, PolicyVersion, diff,
};
pub use value::json_to_cel;
