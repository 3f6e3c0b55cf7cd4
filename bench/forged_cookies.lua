-- wrk script: every request carries a made-up session cookie of the right
-- shape (64 random base64url characters), as a flood of forged cookies
-- would. The gateway must refuse each on its seal, without a store read.
--
--   wrk -t1 -c8 -d10s -s bench/forged_cookies.lua http://127.0.0.1:8080/

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

function init(args)
   math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

function request()
   local t = {}
   for i = 1, 64 do
      local k = math.random(1, 64)
      t[i] = alphabet:sub(k, k)
   end
   return wrk.format("GET", "/", { ["Cookie"] = "signoff=" .. table.concat(t) })
end
