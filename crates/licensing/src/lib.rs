//! caio-licensing: v2 license keys for on-premises CAIO.
//!
//! Keys are `CAIO-v2-<payload>.<signature>`: a canonical-JSON payload (customer, tier, validity,
//! features and limits) signed with Ed25519 by the vendor, verified offline with the public key
//! only. This crate will hold key parsing and verification (always built), issuing behind a cargo
//! feature that `caio-server` never enables, entitlements and signed revocation lists. Its
//! contents arrive with the licensing issue; until then nothing depends on it.
