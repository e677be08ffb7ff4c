-- wrk script: replay pre-built requests (METHOD<TAB>PATH<TAB>BODY per line)
-- from $WXKF_BENCH_REQUESTS, each thread starting at its own offset.
-- $WXKF_BENCH_DELAY_MS paces each connection (fixed-rate runs).
--
-- wrk loads the script of each thread in turn and starts a thread as soon
-- as its script is loaded, but starts its clock only after the last one:
-- the first thread would send for the second's loading time (about a
-- second for 200,000 requests) and wrk would count those requests within
-- its duration, overstating the rate. So the first thread blocks before its first
-- request (in delay()) until the last has written the file $WXKF_BENCH_READY.
local requests = {}
local index = 0
local delay_ms = tonumber(os.getenv("WXKF_BENCH_DELAY_MS") or "0")
local thread_count = 0
local THREADS = 2 -- as scripts/bench/run starts wrk (-t2)
local ready_file = os.getenv("WXKF_BENCH_READY")
local ready = ready_file == nil

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
  index = math.floor(#requests * (thread_id or 0) / THREADS)
  if ready_file ~= nil and thread_id == THREADS - 1 then
    local f = assert(io.open(ready_file, "w"))
    f:close()
  end
end

function request()
  index = index + 1
  if index > #requests then index = 1 end
  return requests[index]
end

-- Blocks this thread (its event loop sends nothing meanwhile); LuaJIT's ffi.
function wait_until_ready()
  local ffi = require("ffi")
  ffi.cdef("int usleep(unsigned int usec);")
  while true do
    local f = io.open(ready_file, "r")
    if f ~= nil then
      f:close()
      break
    end
    ffi.C.usleep(2000)
  end
  ready = true
end

-- wrk asks before every request of each connection, the first included,
-- from the thread's own loop (request() is also called once from wrk's main
-- thread, before the other threads load, to inspect the request).
function delay()
  if not ready then
    wait_until_ready()
  end
  return delay_ms
end
