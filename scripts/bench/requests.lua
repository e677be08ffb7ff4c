-- wrk script: replay pre-built requests (METHOD<TAB>PATH<TAB>BODY per line)
-- from $WXKF_BENCH_REQUESTS, each thread starting at its own offset.
-- $WXKF_BENCH_DELAY_MS paces each connection (fixed-rate runs).
local requests = {}
local index = 0
local delay_ms = tonumber(os.getenv("WXKF_BENCH_DELAY_MS") or "0")
local thread_count = 0

function setup(thread)
  thread:set("thread_id", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  local path = os.getenv("WXKF_BENCH_REQUESTS")
  for line in io.lines(path) do
    local method, target, body = line:match("^(%u+)\t([^\t]*)\t(.*)$")
    local headers = {}
    if method == "POST" then
      if body:sub(1, 1) == "{" then
        headers["Content-Type"] = "application/json"
      else
        headers["Content-Type"] = "text/xml"
      end
    else
      body = nil
    end
    requests[#requests + 1] = wrk.format(method, target, headers, body)
  end
  index = math.floor(#requests * (thread_id or 0) / 2)
end

function request()
  index = index + 1
  if index > #requests then index = 1 end
  return requests[index]
end

function delay()
  return delay_ms
end
