-- wrk script: authenticated GETs cycling through many sessions.
--
--   TOKENS=tokens.txt TOKEN_COUNT=5000 wrk -t2 -c32 -d10s -s bench/sessions.lua http://127.0.0.1:8080/
--
-- Reads the first TOKEN_COUNT tokens (default 5000, 0 = all) of the file
-- TOKENS (one per line) and sends each request with the next one as the
-- `signoff` cookie. Thread i of WRK_THREADS (default 2, the -t given to
-- wrk) starts at TOKEN_OFFSET (default 0) + i * count / WRK_THREADS, and
-- prints where it stopped, so a next run can carry on from there. A
-- rejected session shows as wrk's "Non-2xx or 3xx responses" (the gateway
-- answers 401).

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   local path = os.getenv("TOKENS") or error("set TOKENS to the tokens file")
   local limit = tonumber(os.getenv("TOKEN_COUNT") or "5000")
   local cookie = os.getenv("COOKIE_NAME") or "signoff"
   tokens = {}
   for line in io.lines(path) do
      if line ~= "" then
         table.insert(tokens, cookie .. "=" .. line)
         if limit > 0 and #tokens >= limit then break end
      end
   end
   if #tokens == 0 then error("no tokens in " .. path) end
   local nthreads = tonumber(os.getenv("WRK_THREADS") or "2")
   local offset = tonumber(os.getenv("TOKEN_OFFSET") or "0")
   sent = 0
   index = (offset + math.floor(id * #tokens / nthreads)) % #tokens
end

request = function()
   index = index % #tokens + 1
   sent = sent + 1
   wrk.headers["Cookie"] = tokens[index]
   return wrk.format()
end

done = function(summary, latency, requests)
   local parts = {}
   for _, t in ipairs(threads) do
      table.insert(parts, string.format("%d", t:get("sent")))
   end
   io.write("tokens sent per thread: " .. table.concat(parts, " ") .. "\n")
end
