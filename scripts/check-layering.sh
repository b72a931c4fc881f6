#!/usr/bin/env bash
# Proves that deny.toml enforces the crate layering: in a scratch copy of the workspace, add edges
# the layering forbids and assert that `cargo deny check bans` fails on each, naming the banned
# crate; the unmodified copy must pass. (Edges that would form a cycle are not used: cargo itself
# refuses those before cargo-deny runs, which would prove nothing about deny.toml.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

copy() {
  rm -rf "$scratch/ws" && mkdir -p "$scratch/ws"
  (cd "$root" && tar --exclude=./target --exclude=./.git -cf - .) | (cd "$scratch/ws" && tar -xf -)
}

deny() { (cd "$scratch/ws" && cargo deny --offline check bans 2>&1); }

copy
if ! out=$(deny); then
  echo "FAIL: the unmodified workspace does not pass cargo deny check bans"; echo "$out"; exit 1
fi
echo "PASS: unmodified workspace passes"

# from-crate-dir  dependency  why it is forbidden
edges=(
  "crates/calculus caio-registry L1 may not depend on L2"
  "crates/rules caio-security L2 crates may not depend on each other"
  "crates/sdk caio-gateway the SDK may depend on contracts and calculus only"
  "crates/licensing caio-gateway L2 may not depend on L3"
  "crates/calculus caio-licensing L1 may not depend on L2"
  "crates/gateway caio-sdk nothing inside CAIO may depend on the SDK"
)
for edge in "${edges[@]}"; do
  read -r dir dep why <<<"$edge"
  copy
  # Insert under [dependencies] (appending could land in a [[bench]] or [[test]] table).
  sed -i "/^\[dependencies\]/a $dep.workspace = true" "$scratch/ws/$dir/Cargo.toml"
  grep -q "^$dep.workspace = true" "$scratch/ws/$dir/Cargo.toml" || { echo "FAIL: could not add $dep to $dir"; exit 1; }
  if out=$(deny); then
    echo "FAIL: $dir -> $dep ($why) was not rejected"; exit 1
  fi
  if ! grep -q "crate '$dep = 0.0.0' is explicitly banned" <<<"$out"; then
    echo "FAIL: $dir -> $dep failed, but not because $dep is banned:"; echo "$out" | tail -20; exit 1
  fi
  echo "PASS: $dir -> $dep rejected ($why)"
done
