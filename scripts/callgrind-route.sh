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
DATA="$(mktemp -d)"
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }

cargo build -q --release -p caio-server
bench_machine
OUT="$DATA/callgrind.out"
SERVER=""
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
bench_start valgrind --tool=callgrind --callgrind-out-file="$OUT"

# route N: N routes of the bench's request over one keep-alive connection.
route() {
  CAIO_KEY="$KEY" python3 - "$PORT" "$1" "$BODY" <<'PY'
import http.client, os, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
body = open(sys.argv[3], "rb").read()
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
