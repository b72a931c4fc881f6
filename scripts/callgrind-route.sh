#!/usr/bin/env bash
# Counts the user-space instructions one POST /api/v1/route costs the server, with callgrind:
# repeatable whatever else the machine is doing (wall-clock figures on this shared VM move by a
# factor of 3 between days). The same setup as scripts/bench-server.sh (release build, fixture
# registry and policies, a client API key, file trace log), one keep-alive connection.
# Needs valgrind.
#
#   bash scripts/callgrind-route.sh [routes]        e.g. bash scripts/callgrind-route.sh 300
#
# Prints the instructions per route and the functions with the most instructions of their own;
# the profile stays in the printed file for `callgrind_annotate --inclusive=yes FILE`. Note
# that SHA-256 uses the CPU's SHA extensions where it has them, so its share depends on the CPU
# (the first line says which).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-300}"
PORT="${CAIO_BENCH_PORT:-18081}"
ADMIN="bench-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
DATA="$(mktemp -d)"
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }

cargo build -q --release -p caio-server
echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')," \
  "SHA extensions: $(grep -q -w sha_ni /proc/cpuinfo && echo yes || echo no)"
printf 'gateway:\n  probe_interval_s: 0\n' > "$DATA/caio.yaml"
OUT="$DATA/callgrind.out"
CAIO_DATA_DIR="$DATA/data" CAIO_BOOTSTRAP_ADMIN_KEY="$ADMIN" CAIO_AUTH_STRICT=true \
CAIO_ACCESS_LOG=false CAIO_LOG=warn \
CAIO_RATE_LIMIT_PER_SECOND=10000000 CAIO_RATE_LIMIT_BURST=10000000 \
  valgrind --tool=callgrind --callgrind-out-file="$OUT" \
  target/release/caio-server --config "$DATA/caio.yaml" --listen "127.0.0.1:$PORT" \
  --services fixtures/services --policies fixtures/policies.yaml 2> "$DATA/valgrind.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
for _ in $(seq 600); do
  curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null && break
  sleep 0.1
done
KEY=$(curl -fs -X POST "http://127.0.0.1:$PORT/api/v1/keys" -H "Authorization: Bearer $ADMIN" \
  -H 'content-type: application/json' \
  -d '{"name":"bench","role":"client","tenant":"acme","permissions":["classify","search","chat","translate"],"trust_level":2}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

# route N: N routes of the bench's request over one keep-alive connection.
route() {
  CAIO_KEY="$KEY" python3 - "$PORT" "$1" <<'PY'
import http.client, os, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
body = (b'{"requirements":{"capabilities":["sentiment_analysis"],"guarantees":{"accuracy":{"min":0.9},'
        b'"latency_ms":{"max":200}},"constraints":{"language":"de","region":"eu-west-1"}},'
        b'"budget":{"max_cost":0.001},"context":{"priority":"high"},"data":{"sensitive":false},'
        b'"payload":{"text":"Das ist gut."},"seed":42}')
c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
h = {"Authorization": "Bearer " + os.environ["CAIO_KEY"], "Content-Type": "application/json"}
for _ in range(n):
    c.request("POST", "/api/v1/route", body, h)
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"a route answered {r.status}")
PY
}
route 20                                   # warm-up: caches, the tenant's router
callgrind_control -z "$SERVER" >/dev/null 2>&1  # count from here
route "$N"
callgrind_control -d "$SERVER" >/dev/null 2>&1  # dump: $OUT.1
sleep 1
TOTAL=$(callgrind_annotate "$OUT.1" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "== $N routes: $TOTAL instructions, $((TOTAL / N)) per route"
echo "== functions by instructions of their own (profile: $OUT.1)"
# (callgrind_annotate lists the thread entry frames at about 100 %: the recursion through the
# runtime's poll functions folds into them; they are left out.)
callgrind_annotate --threshold=100 "$OUT.1" | grep -E '^ *[0-9,]+ \( *[0-9.]+%\)' \
  | grep -v 'PROGRAM TOTALS' | awk -F'[(%]' '$2 + 0 < 99' | head -n 25 | cut -c1-150
trap - EXIT
kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true
echo "(kept: $DATA)"
