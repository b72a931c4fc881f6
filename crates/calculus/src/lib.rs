//! caio-calculus: the routing math, pure and free of I/O.
//!
//! Matching and bound satisfaction (DESIGN.md §2 step 1), the budget as a hard constraint, the
//! objective with fixed coefficients and its deterministic tie-break, guarantee composition over
//! chains, trait constraints, and the field terms of the master calculus (intent energy I,
//! attention A, RL, resonance W, field modes through unitary-FFT band projectors, conductivity κ and
//! the bounded control signal u). `docs/math/calculus.md` states every formula implemented here.
//!
//! Nothing in this crate reads a clock, a file, the network or a random source: the same inputs
//! always give bit-identical outputs.

pub mod compose;
pub mod fields;
pub mod matching;
pub mod objective;
pub mod traits;

pub use compose::{compose, compose_chain, compose_one};
pub use objective::{COEFFICIENTS, Coefficients, History, ServiceHistory};
