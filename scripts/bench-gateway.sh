#!/usr/bin/env bash
# Load test of POST /api/v1/execute against the same mock upstream measured directly, in one run:
# what CAIO adds to a call (routing, authentication, rate limiter, trace log, the gateway's
# outbound hop) on loopback. Release build; one http_json contract pointing at
# caio-mock-upstream's echo path; a client API key; file traces (buffered) in a temp data dir.
#
# Four wrk runs (all --latency): direct and through CAIO at 1 connection (-t1 -c1, 10 s), then
# direct and through CAIO at 64 connections (-t2 -c64, duration_s). Prints wrk's reports, then a
# summary: requests/s, p50, p99 per run, the added p50 at 1 connection, the throughput ratio at 64
# connections, the targets beside them, and the CPU per request of the server and of the mock.
# Needs wrk (apt-get install wrk).
#
#   bash scripts/bench-gateway.sh [duration_s]      e.g. bash scripts/bench-gateway.sh 30
#   CAIO_BENCH_PORT=18081 CAIO_BENCH_MOCK_PORT=18091 bash scripts/bench-gateway.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-15}"
PORT="${CAIO_BENCH_PORT:-18081}"
MOCK_PORT="${CAIO_BENCH_MOCK_PORT:-18091}"
MOCK="http://127.0.0.1:$MOCK_PORT"
CAIO="http://127.0.0.1:$PORT"
# Targets (issue 4), on the project's 2-core machine with traces on.
TARGET_ADDED_P50_US=100
TARGET_RATIO_PCT=40
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 is needed for the summary" >&2; exit 2; }

ADMIN="bench-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
DATA="$(mktemp -d)"
SERVER=""
MOCK_PID=""
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null && wait "$MOCK_PID" 2>/dev/null
  rm -rf "$DATA"
}
trap 'cleanup || true' EXIT
trap 'exit 130' INT TERM

cargo build -q --release -p caio-server -p caio-mock-upstream

# The payload the service gets: the direct run posts exactly these bytes, the CAIO run wraps them.
PAYLOAD='{"text":"The quick brown fox jumps over the lazy dog.","lang":"en","options":{"trim":true,"max_items":3}}'
DIRECT_BODY="$DATA/direct.json"
EXECUTE_BODY="$DATA/execute.json"
printf '%s' "$PAYLOAD" > "$DIRECT_BODY"
printf '{"request":{"requirements":{"capabilities":["text_echo"]},"payload":%s}}' "$PAYLOAD" \
  > "$EXECUTE_BODY"

mkdir -p "$DATA/services" "$DATA/data"
# One public http_json service on the mock's echo path; guarantees that load cannot break.
cat > "$DATA/services/echo-bench.yaml" <<YAML
apiVersion: caio/v1
kind: ServiceContract
service:
  id: echo-bench
  name: Echo (caio-mock-upstream)
  version: 1.0.0
  tenant: public
  capabilities: [text_echo]
  guarantees:
    latency_ms: { max: 5000 }
  cost:     { per_request: 0.0, currency: USD }
  privacy:  { data_locality: local, encryption: false, retention_days: 0 }
  security: { required_permissions: [], min_trust_level: 0 }
  api:
    adapter: http_json
    base_url: $MOCK
    endpoints: { execute: { method: POST, path: /echo } }
    timeout_ms: 2000
YAML

target/release/caio-mock-upstream --listen "127.0.0.1:$MOCK_PORT" >/dev/null &
MOCK_PID=$!
for _ in $(seq 100); do
  curl -fs "$MOCK/health" >/dev/null && break
  sleep 0.1
done
curl -fs "$MOCK/health" >/dev/null || { echo "the mock did not start on $MOCK" >&2; exit 1; }

# Development mode: loopback upstreams are allowed (the address guard refuses them in production).
CAIO_MODE=development CAIO_GATEWAY_ALLOW_PRIVATE_ADDRESSES=true \
CAIO_DATA_DIR="$DATA/data" CAIO_BOOTSTRAP_ADMIN_KEY="$ADMIN" CAIO_AUTH_STRICT=true \
CAIO_ACCESS_LOG=false CAIO_LOG=warn \
CAIO_RATE_LIMIT_PER_SECOND=10000000 CAIO_RATE_LIMIT_BURST=10000000 \
  target/release/caio-server --listen "127.0.0.1:$PORT" --services "$DATA/services" &
SERVER=$!
for _ in $(seq 100); do
  curl -fs "$CAIO/health/ready" >/dev/null && break
  sleep 0.1
done
curl -fs "$CAIO/health/ready" >/dev/null || { echo "caio-server did not start on $CAIO" >&2; exit 1; }

KEY=$(curl -fs -X POST "$CAIO/api/v1/keys" -H "Authorization: Bearer $ADMIN" \
  -H 'content-type: application/json' \
  -d '{"name":"bench-gateway","role":"client","tenant":"acme","permissions":[],"trust_level":1}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

STATUS=$(curl -s -o "$DATA/first.json" -w '%{http_code}' -X POST "$CAIO/api/v1/execute" \
  -H "Authorization: Bearer $KEY" -H 'content-type: application/json' --data-binary "@$EXECUTE_BODY")
if [ "$STATUS" != 200 ]; then
  echo "warm-up execute answered $STATUS:" >&2
  cat "$DATA/first.json" >&2
  exit 1
fi
python3 - "$DATA/first.json" "$PAYLOAD" <<'PY'
import json, sys
body = json.load(open(sys.argv[1]))
ex = body["execution"]
want = {"echo": json.loads(sys.argv[2])}
if ex["status"] != "succeeded" or ex["service_id"] != "echo-bench" or ex["output"] != want:
    sys.exit(f"unexpected execution: {json.dumps(ex)[:500]}")
print(f"warm-up execute: 200, {ex['service_id']}, {len(ex['attempts'])} attempt(s), "
      f"{ex['latency_ms']:.2f} ms upstream, output echoes the payload")
PY

# CPU a process spent (utime + stime, clock ticks).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# run NAME URL KEY wrk-args...: one wrk run, its report kept in $DATA/NAME.txt, and the CPU the
# server and the mock spent during it in $DATA/NAME.cpu.
run() {
  local name=$1 url=$2 key=$3; shift 3
  echo "== $name: wrk $* --latency $url"
  local s0 m0
  s0=$(ticks "$SERVER"); m0=$(ticks "$MOCK_PID")
  CAIO_BENCH_KEY="$key" CAIO_BENCH_BODY="$BODY" \
    wrk "$@" --latency -s scripts/wrk-post.lua "$url" | tee "$DATA/$name.txt"
  echo "$(( $(ticks "$SERVER") - s0 )) $(( $(ticks "$MOCK_PID") - m0 ))" > "$DATA/$name.cpu"
}

# Warm both paths (connection pools, allocator, page cache of the trace file); not reported.
CAIO_BENCH_KEY="" CAIO_BENCH_BODY="$DIRECT_BODY" \
  wrk -t2 -c64 -d2s -s scripts/wrk-post.lua "$MOCK/echo" >/dev/null
CAIO_BENCH_KEY="$KEY" CAIO_BENCH_BODY="$EXECUTE_BODY" \
  wrk -t2 -c64 -d2s -s scripts/wrk-post.lua "$CAIO/api/v1/execute" >/dev/null
BODY="$DIRECT_BODY";  run direct-c1   "$MOCK/echo"           ""     -t1 -c1 -d10s
BODY="$EXECUTE_BODY"; run through-c1  "$CAIO/api/v1/execute" "$KEY" -t1 -c1 -d10s
BODY="$DIRECT_BODY";  run direct-c64  "$MOCK/echo"           ""     -t2 -c64 -d"${DURATION}s"
BODY="$EXECUTE_BODY"; run through-c64 "$CAIO/api/v1/execute" "$KEY" -t2 -c64 -d"${DURATION}s"

echo "== gateway metrics"
curl -s "$CAIO/metrics" | grep -E '^caio_(executions_total|upstream_attempts_total|fallbacks_total|guarantee_violations_total|traces_persisted_total|rate_limited_total)' || true
echo "== trace log"
du -sh "$DATA/data/traces" 2>/dev/null || true

python3 - "$DATA" "$(getconf CLK_TCK)" "$TARGET_ADDED_P50_US" "$TARGET_RATIO_PCT" "$DURATION" <<'PY'
import re, sys
data, tck, target_added, target_ratio, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
UNIT = {"us": 1.0, "ms": 1e3, "s": 1e6}

def us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * UNIT[m.group(2)]

def read(name):
    out = open(f"{data}/{name}.txt").read()
    r = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
         "n": int(re.search(r"(\d+) requests in", out).group(1)),
         "p50": us(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
         "p99": us(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))}
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    r["bad"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    r["sock"] = m.group(1) if m else ""
    server, mock = (int(x) for x in open(f"{data}/{name}.cpu").read().split())
    r["server_cpu"] = server / tck / r["n"] * 1e6
    r["mock_cpu"] = mock / tck / r["n"] * 1e6
    return r

def fmt(v):
    return f"{v:.0f} us" if v < 1000 else f"{v / 1000:.2f} ms"

runs = [("direct-c1", "direct, 1 connection (10 s)"),
        ("through-c1", "through CAIO, 1 connection (10 s)"),
        ("direct-c64", f"direct, 64 connections ({duration} s)"),
        ("through-c64", f"through CAIO, 64 connections ({duration} s)")]
r = {name: read(name) for name, _ in runs}
print()
print("== summary")
print(f"| {'run':<40} | {'requests/s':>10} | {'p50':>9} | {'p99':>9} | {'CAIO CPU/req':>12} | {'mock CPU/req':>12} | {'non-2xx':>7} |")
print(f"|{'-' * 42}|{'-' * 11}:|{'-' * 10}:|{'-' * 10}:|{'-' * 13}:|{'-' * 13}:|{'-' * 8}:|")
for name, label in runs:
    x = r[name]
    caio = fmt(x["server_cpu"]) if name.startswith("through") else "-"
    print(f"| {label:<40} | {x['rps']:>10,.0f} | {fmt(x['p50']):>9} | {fmt(x['p99']):>9} | {caio:>12} | {fmt(x['mock_cpu']):>12} | {x['bad']:>7} |")
added = r["through-c1"]["p50"] - r["direct-c1"]["p50"]
ratio = r["through-c64"]["rps"] / r["direct-c64"]["rps"] * 100
verdict = lambda ok: "PASS" if ok else "FAIL"
print()
print(f"added p50 at c=1       = {r['through-c1']['p50']:.0f} - {r['direct-c1']['p50']:.0f} = {added:.0f} us"
      f"   (target <= {target_added:.0f} us: {verdict(added <= target_added)})")
print(f"throughput ratio c=64  = {r['through-c64']['rps']:,.0f} / {r['direct-c64']['rps']:,.0f} = {ratio:.1f} %"
      f"   (target >= {target_ratio:.0f} %: {verdict(ratio >= target_ratio)})")
print("CPU per request: utime + stime of the process over the run / requests; at 1 connection it is "
      "mostly idle wake-ups.")
bad = [name for name, _ in runs if r[name]["bad"] or any(int(v) for v in re.findall(r"\d+", r[name]["sock"]))]
if bad:
    print(f"WARNING: errors during {', '.join(bad)}: see wrk's reports above (Non-2xx, Socket errors)")
PY
