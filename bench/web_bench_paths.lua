-- wrk script for bench/web_bench.py: GET the paths of the file $WEB_BENCH_PATHS (one a line) in
-- turn, each thread starting at its own place in the list. The session cookie comes from wrk -H.
local paths = {}
for line in io.lines(os.getenv("WEB_BENCH_PATHS")) do
  if #line > 0 then paths[#paths + 1] = line end
end

local threads = 0
function setup(thread)
  thread:set("first", threads)
  threads = threads + 1
end

local i
function init(args)
  i = (first or 0) * 7
end

function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
