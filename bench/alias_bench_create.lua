-- wrk script for bench/alias_bench.py: POST /api/v1/aliases with a JSON body.
-- wrk itself reports "Non-2xx or 3xx responses"; the Python side also counts the rows created.
-- ALIAS_TARGET (environment) overrides the target address.
local target = os.getenv("ALIAS_TARGET") or "bench-target@example.org"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"target": "' .. target .. '", "days": 7, "max_usage": 5}'
