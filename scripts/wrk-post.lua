-- wrk script: POST a JSON body, with an API key when one is given.
-- CAIO_BENCH_BODY: a file holding the JSON body (empty or unset: a plain GET, for the machine's
-- baseline in scripts/bench-server.sh); CAIO_BENCH_KEY (optional): the API key, sent as
-- `Authorization: Bearer <key>`. Without it no Authorization header is sent (the direct-to-mock
-- baseline of scripts/bench-gateway.sh).
local key = os.getenv("CAIO_BENCH_KEY")
local path = os.getenv("CAIO_BENCH_BODY")
if path and path ~= "" then
  local f = assert(io.open(path, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end

-- wrk reports "Non-2xx or 3xx responses" itself: a run that measured errors says so.

-- Finer percentiles than wrk's own table (which stops at p99).
function done(summary, latency, requests)
  io.write("percentiles (us):")
  for _, p in ipairs({50, 90, 95, 99, 99.5, 99.9}) do
    io.write(string.format(" p%g=%d", p, latency:percentile(p)))
  end
  io.write("\n")
end
