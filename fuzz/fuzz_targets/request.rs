//! Any bytes given to the request and principal parsers give a value or a report.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = caio_contracts::parse_request("fuzz", text, caio_contracts::Format::Auto);
        let _ = caio_contracts::parse_principal("fuzz", text, caio_contracts::Format::Auto);
        let _ = caio_contracts::detect_kind("fuzz", text, caio_contracts::Format::Auto);
    }
});
