//! caio-trace: decision records and their integrity.
//!
//! A decision's id is the SHA-256 of the canonical JSON (RFC 8785) of its hashed core
//! ([`DecisionCore`](caio_contracts::decision::DecisionCore): request digest, registry and policy
//! versions, principal, the choice, the proofs, the composed guarantees), so the same inputs give
//! the same id and any edit to the core of a recorded decision is detected without the contracts.
//!
//! The stores the server writes to live here too: [`store`] (every routing decision, hash-chained,
//! in memory or in a JSON Lines file with an in-memory index) and [`audit`] (every change to
//! services, policies and keys). Both take the time as an argument (unix milliseconds) so tests
//! are deterministic; [`now_ms`] is the clock for callers. docs/reference/stores.md describes the
//! files.

use caio_contracts::canonical::{self, CanonicalError};
use caio_contracts::decision::{CanonicalCore, Decision};

pub mod audit;
mod chain;
mod error;
pub mod store;

pub use audit::{
    AuditEntry, AuditEvent, AuditLog, AuditPage, AuditQuery, FileAuditLog, MemoryAuditLog,
    verify_audit_log,
};
pub use error::StoreError;
pub use store::{
    ChainHead, DiskUsage, Durability, FileOptions, FileTraceStore, MemoryTraceStore, OpenReport,
    Outcome, StoredTrace, TraceBody, TracePage, TraceQuery, TraceRecord, TraceStore, TraceSummary,
    verify_log,
};

/// The current time in unix milliseconds (0 before 1970, saturating far in the future).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The id a decision should carry: `sha256:<hex>` of its canonical core.
pub fn decision_id(d: &Decision) -> Result<String, CanonicalError> {
    d.core().digest()
}

/// Sets a decision's id from its content.
pub fn seal(d: &mut Decision) -> Result<(), CanonicalError> {
    d.decision_id = decision_id(d)?;
    Ok(())
}

/// A decision with its id set, keeping the canonical JSON its id was computed from, so that its
/// own JSON ([`TraceBody::decision`]) quotes those bytes instead of serializing the hashed core a
/// second time. The core cannot be changed through this type (only `recorded_at`, which is
/// outside it), so the bytes kept always match the decision.
#[derive(Debug, Clone)]
pub struct SealedDecision {
    decision: Decision,
    /// `None` when the core needed the generic canonical serializer, or does not read back
    /// exactly ([`CanonicalCore::is_exact`]).
    core: Option<CanonicalCore>,
}

impl SealedDecision {
    /// Seals `decision`: computes its id from its core and keeps the core's canonical JSON.
    pub fn seal(mut decision: Decision) -> Result<SealedDecision, CanonicalError> {
        let core = decision.core().canonical();
        decision.decision_id = match &core {
            Some(c) => canonical::digest_bytes(c.bytes()),
            None => canonical::digest(&decision.core())?,
        };
        Ok(SealedDecision {
            decision,
            core: core.filter(CanonicalCore::is_exact),
        })
    }

    /// The decision.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// Sets when the decision was recorded (outside the hashed core).
    pub fn set_recorded_at(&mut self, at: Option<String>) {
        self.decision.recorded_at = at;
    }

    /// The decision, without the kept bytes.
    pub fn into_decision(self) -> Decision {
        self.decision
    }

    /// The canonical core kept, if any.
    pub(crate) fn core(&self) -> Option<&CanonicalCore> {
        self.core.as_ref()
    }
}

/// A recorded decision whose content does not match its id, or its request digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// The content was changed after the id was computed.
    #[error("decision_id {recorded} does not match its content (recomputed {computed})")]
    IdMismatch {
        /// The id in the record.
        recorded: String,
        /// The id of the content.
        computed: String,
    },
    /// The recorded request was changed.
    #[error(
        "request_digest {recorded} does not match the recorded request (recomputed {computed})"
    )]
    RequestMismatch {
        /// The digest in the record.
        recorded: String,
        /// The digest of the request.
        computed: String,
    },
    /// The record cannot be canonicalized.
    #[error("{0}")]
    Canonical(String),
}

/// Checks that a decision's id and request digest match its content.
pub fn check_integrity(d: &Decision) -> Result<(), IntegrityError> {
    let computed =
        canonical::digest(&d.request).map_err(|e| IntegrityError::Canonical(e.to_string()))?;
    if computed != d.request_digest {
        return Err(IntegrityError::RequestMismatch {
            recorded: d.request_digest.clone(),
            computed,
        });
    }
    let computed = decision_id(d).map_err(|e| IntegrityError::Canonical(e.to_string()))?;
    if computed != d.decision_id {
        return Err(IntegrityError::IdMismatch {
            recorded: d.decision_id.clone(),
            computed,
        });
    }
    Ok(())
}
