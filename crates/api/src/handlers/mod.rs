//! Endpoint handlers: each extracts its inputs, checks the caller's role and calls one business
//! function of the crates below.

pub mod execute;
pub mod keys;
pub mod licensing;
pub mod openai;
pub mod ops;
pub mod policies;
pub mod routing;
pub mod services;
pub mod traces;
pub mod webhooks;
