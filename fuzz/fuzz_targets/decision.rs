//! Any bytes given to `caio verify` as a decision are refused or verified, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = serde_json::from_slice::<caio_contracts::decision::Decision>(data) {
        let _ = caio_gateway::verify(&d, Vec::new(), &caio_contracts::PolicySet::default());
    }
});
