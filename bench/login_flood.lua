-- wrk script: failing logins, each from a random client address (sent in
-- X-Forwarded-For; start the gateway with --trusted-proxy 127.0.0.1) for a
-- random account, so the per-address and per-account throttles never
-- answer 429 and every attempt costs a real Argon2 hash.
--
--   ORIGIN=http://127.0.0.1:8080 wrk -t2 -c64 -d10s -s bench/login_flood.lua http://127.0.0.1:8080
--
-- Prints a status code breakdown at the end.

local threads = {}
local next_id = 1

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   math.randomseed(os.time() * 1000 + id)
   statuses = {}
   origin = os.getenv("ORIGIN") or ("http://" .. wrk.host .. ":" .. wrk.port)
   prefix = os.getenv("PREFIX") or "/.signoff"
end

request = function()
   local user = string.format("flood%08x", math.random(0, 0x7fffffff))
   local ip = string.format("10.%d.%d.%d", math.random(0, 255), math.random(0, 255), math.random(1, 254))
   local headers = {
      ["Host"] = wrk.headers["Host"],
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["Origin"] = origin,
      ["X-Forwarded-For"] = ip,
   }
   local body = "username=" .. user .. "&password=wrong-password-123"
   return wrk.format("POST", prefix .. "/login", headers, body)
end

response = function(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

done = function(summary, latency, requests)
   local total = {}
   for _, t in ipairs(threads) do
      local s = t:get("statuses")
      for code, n in pairs(s) do
         total[code] = (total[code] or 0) + n
      end
   end
   local parts = {}
   for code, n in pairs(total) do
      table.insert(parts, string.format("%d=%d", code, n))
   end
   table.sort(parts)
   io.write("status codes: " .. table.concat(parts, " ") .. "\n")
end
