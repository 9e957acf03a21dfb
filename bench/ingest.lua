-- wrk script for bench/ingest.py: POST /api/v1/messages as a channel integration would.
--
-- Arguments (after `--` on the wrk command line):
--   1 token          the channel's API token (sent as `Authorization: Token <key>`)
--   2 message_prefix prefix of every channel_message_id (unique per run and phase)
--   3 conv_prefix    prefix of the conversation_external_ids
--   4 conversations  size of the conversation pool (several messages land in one
--                    conversation, so the supersede path of draft_request runs too)
--
-- Environment: BENCH_RATE_PER_THREAD (requests/s, default 0). 0 is a closed loop: each
-- connection sends its next request as soon as the previous answer arrives (the server's
-- capacity). Above 0, each thread hands out send slots on a fixed schedule (an open-loop
-- arrival rate, as wrk2 does but without its coordinated-omission correction); when the
-- server falls behind, late slots are sent at once, so the achieved rate shows it.
--
-- Every request carries a unique channel_message_id (prefix, thread, counter, random), so
-- each should be a 201. done() prints one line starting with BENCH_JSON for the Python side.

local threads = {}
local RATE_PER_THREAD = tonumber(os.getenv("BENCH_RATE_PER_THREAD") or "0") or 0

if RATE_PER_THREAD > 0 then
  -- wrk's Lua has no sub-second wall clock; LuaJIT's FFI reaches clock_gettime.
  local ffi = require("ffi")
  ffi.cdef([[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clock_id, bench_timespec *tp);
  ]])
  local CLOCK_MONOTONIC = 1
  local timespec = ffi.new("bench_timespec")
  local interval_ms = 1000 / RATE_PER_THREAD
  local next_slot_ms = nil

  local function now_ms()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
    return tonumber(timespec.tv_sec) * 1000 + tonumber(timespec.tv_nsec) / 1e6
  end

  -- wrk calls delay() before each request (defined only when pacing: it costs a timer).
  function delay()
    local now = now_ms()
    next_slot_ms = next_slot_ms or now
    local slot = next_slot_ms
    next_slot_ms = next_slot_ms + interval_ms
    return math.max(0, math.floor(slot - now))
  end
end

local TEXTS = {
  "Hi, my order hasn't arrived yet and the tracking page has not changed for four days. Can you check?",
  "I was charged twice for the same order this morning. Please refund one of the payments.",
  "Can I change the delivery address on my order? I'm moving next week.",
  "The shoes I received are one size too small. How do I exchange them for a bigger pair?",
  "Your website keeps logging me out when I try to pay with my card. What should I do?",
  "Do you ship to Norway, and how long does delivery usually take?",
  "The blender arrived with a cracked jug. I would like a replacement, not a refund.",
  "I never got the confirmation email for my order. Did it go through?",
  "Is there any way to cancel my subscription before the next billing date on the 3rd?",
  "Thanks for the quick help yesterday! One more thing: can I add gift wrapping to the order?",
  "The discount code SPRING20 says it's invalid but the newsletter said it's valid until Sunday.",
  "I returned the jacket two weeks ago and still have not received my money back.",
}

-- Runs in the main Lua state, once per thread, before the thread starts.
function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

-- Runs in each thread's own Lua state.
function init(args)
  token = args[1]
  message_prefix = args[2]
  conv_prefix = args[3]
  conversations = tonumber(args[4]) or 2000
  counter = 0
  created = 0
  ok = 0
  other = 0
  math.randomseed(os.time() * 1000 + thread_id)
  wrk.method = "POST"
  wrk.path = "/api/v1/messages"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Token " .. token
end

function request()
  counter = counter + 1
  local conversation = math.random(conversations)
  local body = string.format(
    '{"conversation_external_id":"%s-%d","channel_message_id":"%s-%d-%d-%d",'
      .. '"text":"%s","customer_ref":"customer-%d"}',
    conv_prefix, conversation,
    message_prefix, thread_id, counter, math.random(1000000000),
    TEXTS[math.random(#TEXTS)], conversation
  )
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
  elseif status >= 200 and status < 300 then
    ok = ok + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local created_total, ok_total, other_total = 0, 0, 0
  for _, thread in ipairs(threads) do
    created_total = created_total + thread:get("created")
    ok_total = ok_total + thread:get("ok")
    other_total = other_total + thread:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"status_201":%d,"status_other_2xx":%d,'
      .. '"non_2xx":%d,"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p95":%d,"p99":%d,"mean":%.1f,"max":%d}}\n',
    summary.requests, summary.duration, created_total, ok_total, other_total,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.mean, latency.max
  ))
end
