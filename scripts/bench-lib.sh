# Shared by scripts/bench-server.sh and scripts/callgrind-route.sh (sourced, not run): the
# machine line, the bench's request, and a caio-server with the fixture registry and policies,
# API-key authentication, a rate limiter the load cannot reach and a file trace log.
#
# Expects PORT and DATA (a scratch directory) to be set. Sets ADMIN, BODY, SERVER (the pid of
# the started process) and KEY (a client key of tenant `acme`).

# The machine: its CPU, and whether it has the SHA extensions (without them SHA-256, about 9.5 KB
# of it per route, costs several times more: docs/benchmarks.md, fifth sitting).
bench_machine() {
  echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores," \
    "SHA extensions: $(grep -q -w sha_ni /proc/cpuinfo && echo yes || echo no)"
}

# bench_start [WRAPPER...]: starts target/release/caio-server (under WRAPPER, e.g. valgrind, when
# given; its stderr goes to $DATA/server.log), waits for readiness (up to 60 s: a server under
# valgrind starts slowly) and creates the client key.
bench_start() {
  ADMIN="bench-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  BODY="$DATA/request.json"
  # fixtures/requests/sentiment-de.yaml as JSON.
  cat > "$BODY" <<'JSON'
{"requirements":{"capabilities":["sentiment_analysis"],"guarantees":{"accuracy":{"min":0.9},"latency_ms":{"max":200}},"constraints":{"language":"de","region":"eu-west-1"}},"budget":{"max_cost":0.001},"context":{"priority":"high"},"data":{"sensitive":false},"payload":{"text":"Das ist gut."},"seed":42}
JSON
  # No active health probes: the fixture contracts' health endpoints do not exist on this
  # machine, and five failed probes in a row (50 s at the default interval) would open the chosen
  # service's circuit, turning every later request into a NO_MATCHING_SERVICE answer.
  printf 'gateway:\n  probe_interval_s: 0\n' > "$DATA/caio.yaml"
  CAIO_DATA_DIR="$DATA/data" CAIO_BOOTSTRAP_ADMIN_KEY="$ADMIN" CAIO_AUTH_STRICT=true \
  CAIO_ACCESS_LOG=false CAIO_LOG=warn \
  CAIO_RATE_LIMIT_PER_SECOND=10000000 CAIO_RATE_LIMIT_BURST=10000000 \
    "$@" ${CAIO_BENCH_BIN:-target/release/caio-server} --config "$DATA/caio.yaml" --listen "127.0.0.1:$PORT" \
    --services fixtures/services --policies fixtures/policies.yaml 2> "$DATA/server.log" &
  SERVER=$!
  local ready=""
  for _ in $(seq 600); do
    curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null && { ready=1; break; }
    kill -0 "$SERVER" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$ready" ] || { echo "the server did not become ready:" >&2; cat "$DATA/server.log" >&2; return 1; }
  KEY=$(curl -fs -X POST "http://127.0.0.1:$PORT/api/v1/keys" -H "Authorization: Bearer $ADMIN" \
    -H 'content-type: application/json' \
    -d '{"name":"bench","role":"client","tenant":"acme","permissions":["classify","search","chat","translate"],"trust_level":2}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
}
