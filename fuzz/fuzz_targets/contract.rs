//! Any bytes given to the contract parser give a contract or a report, never a panic or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for format in [caio_contracts::Format::Yaml, caio_contracts::Format::Json] {
            if let Err(report) = caio_contracts::parse_contract("fuzz", text, format) {
                assert!(!report.problems.is_empty());
            }
        }
    }
});
