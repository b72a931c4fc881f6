//! Integration tests of the routing pipeline: golden decisions, properties, verification and the
//! invariant catalogue.

mod support;

mod encoding;
mod exec;
mod golden;
mod invariants;
mod pipeline;
mod properties;
mod verification;
