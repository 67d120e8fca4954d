-- With WRK_BODY_BYTES set, each request is a POST of that many bytes.
local body_bytes = tonumber(os.getenv("WRK_BODY_BYTES") or "")
if body_bytes then
  wrk.method = "POST"
  wrk.body = string.rep("x", body_bytes)
end

-- Print one JSON line wrk's summary lacks: requests/s and latency
-- percentiles up to p99.9 (milliseconds), plus the error counts.
done = function(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    'JSON {"rps": %.1f, "p50": %.3f, "p99": %.3f, "p999": %.3f, "errors": %d, "requests": %d}\n',
    summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, errors, summary.requests))
end
