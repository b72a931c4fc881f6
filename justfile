# Common commands. CI runs .ci/run; these are for people.

# Build everything.
build:
    cargo build --workspace

# The README's test command.
test:
    cargo test --workspace

# Criterion benches (figures go to docs/benchmarks.md).
bench:
    cargo bench -p caio-gateway --bench route

# Formatting, clippy, dependency policy and the layering proof.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo deny check bans licenses sources
    bash scripts/check-layering.sh

# Security advisories (needs the internet: not run in CI).
audit:
    cargo deny check advisories

# Route the fixture request and verify the decision offline.
demo:
    cargo run -q -p caio-cli -- route --services fixtures/services --policies fixtures/policies.yaml --request fixtures/requests/sentiment-de.yaml --principal fixtures/principals/acme-analyst.yaml
    cargo run -q -p caio-cli -- route --services fixtures/services --policies fixtures/policies.yaml --request fixtures/requests/chat-with-pii.yaml --principal fixtures/principals/platform-admin.yaml --json > target/decision.json
    cargo run -q -p caio-cli -- verify target/decision.json --services fixtures/services --policies fixtures/policies.yaml

# Rewrite golden decisions after a reviewed behaviour change.
update-golden:
    CAIO_UPDATE_GOLDEN=1 cargo test -p caio-gateway --test it golden

# Rewrite the committed JSON Schemas after a format change.
update-schema:
    CAIO_UPDATE_SCHEMA=1 cargo test -p caio-contracts --test schema

# Everything CI runs.
ci:
    bash .ci/run

# Fuzz every parser of untrusted input for SECONDS each (needs `cargo install cargo-fuzz`).
fuzz SECONDS="60":
    for t in contract request policies decision license_key; do RUSTC_BOOTSTRAP=1 cargo fuzz run $t -- -max_total_time={{SECONDS}}; done
