//! Any bytes, read as a policy set and compiled as CEL, give compiled policies or located errors.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // As a whole policy file.
    let _ = caio_gateway::documents::validate_document("fuzz.yaml", text);
    // As one CEL expression in both positions.
    let set = caio_contracts::PolicySet {
        policies: vec![caio_contracts::PolicyRule {
            id: "fuzz".into(),
            description: None,
            when: text.into(),
            require: text.into(),
        }],
    };
    if let Err(errors) = caio_rules::compile(&set) {
        assert!(errors.iter().all(|e| e.policy_id == "fuzz"));
    }
});
