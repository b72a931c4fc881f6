//! Black-box tests of caio-api: a real server on an ephemeral port, real HTTP.
// Helpers outside #[test] functions unwrap too: a broken harness should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod execute;
mod licensing;
mod openai;
mod ops;
mod policies;
mod robustness;
mod routing;
mod services;
mod support;
mod webhooks;
