-- The response filter before ext_proc (so, on the way back, after it): an OpenAI stream whose
-- usage chunk the server asked for on the client's behalf (stream_options.include_usage, to
-- meter it; ext_proc has read it by now) loses that chunk before the client sees it. The server
-- flags such a request with dynamic metadata `cascade.usage_injected = "1"`. It also meters the
-- answers the server no longer reads (`cascade.meter`, below). Every other answer passes
-- untouched, at the cost of one metadata lookup. Doing it here rather than in the
-- server means it still happens when the server dies mid-stream (failure_mode_allow).
--
-- Chunks pass as they come (bodyChunks: nothing is buffered); an event cut between two chunks
-- is held back until its end arrives (a client cannot use half an event anyway), and what is
-- left at the end of the stream is flushed. The event dropped must be exactly the usage-only
-- chunk: a JSON object whose "choices" is an empty array and whose "usage" is an object.

local NAMESPACE = "cascade"
local EVENT_END = "\n\r?\n"
local EMPTY_CHOICES = '"choices"%s*:%s*%[%s*%]'
local USAGE_KEYS = { choices = true, usage = true }

-- Whether one SSE event (its lines, with or without the blank line ending it) is the usage chunk.
local function usage_only(event)
  if not find(event, EMPTY_CHOICES) then return false end
  local data
  for line in string.gmatch(event, "[^\r\n]+") do
    if sub(line, 1, 5) == "data:" then
      local d = sub(line, byte(line, 6) == 32 and 7 or 6)
      data = data and (data .. "\n" .. d) or d
    end
  end
  if not data then return false end
  local top = top_members(data, USAGE_KEYS)
  if not top or not top.choices or not top.usage then return false end
  local c = top.choices[1]
  return byte(data, c) == LBRACKET and byte(data, skip_ws(data, c + 1)) == RBRACKET
      and byte(data, top.usage[1]) == LBRACE
end

-- Feeds one chunk (`carry`: what an earlier chunk left unfinished). Returns the bytes to pass
-- on and the new carry.
function cascade_drop_usage(carry, chunk)
  local data = carry .. chunk
  if carry == "" and not find(chunk, EMPTY_CHOICES) then
    -- The common case: no usage chunk here; hold back only an unfinished last event.
    local last = #chunk
    local tail_at
    local pos = 1
    while true do
      local _, e = find(chunk, EVENT_END, pos)
      if not e then break end
      tail_at, pos = e + 1, e + 1
    end
    if tail_at == last + 1 then return chunk, "" end
    if not tail_at then return "", chunk end
    return sub(chunk, 1, tail_at - 1), sub(chunk, tail_at)
  end
  local out, pos = {}, 1
  while true do
    local _, e = find(data, EVENT_END, pos)
    if not e then break end
    local event = sub(data, pos, e)
    if not usage_only(event) then out[#out + 1] = event end
    pos = e + 1
  end
  return concat(out), sub(data, pos)
end

-- The end of the stream: what is left of an event the stream never finished.
function cascade_flush_usage(carry)
  if carry ~= "" and usage_only(carry) then return "" end
  return carry
end

-- Metering off the critical path. The server asks for it with metadata `cascade.meter` (a token
-- of its own) instead of reading the answer itself, a round trip per chunk: this filter keeps what
-- the server's decoder needs for the usage, in dynamic metadata, and Envoy's access log carries it
-- to the server when the answer is over (envoy.access_loggers.http_grpc). For SSE that is the
-- events that carry usage (`"usage": {`: Anthropic's message_start and message_delta, OpenAI's
-- usage chunk) and the stream's end (message_stop, [DONE]), byte for byte, in order
-- (`cascade.answer_sse`); for JSON, the answer's top-level model and usage (`cascade.answer_json`).
-- A key in a JSON string is escaped (\"usage\"), so text the model writes cannot match.
local USAGE_EVENT = '"usage"%s*:%s*{'
local STOP_EVENT = '"type"%s*:%s*"message_stop"'
local DONE_LINE = "data: ?%[DONE%]" -- a whole line: at the event's start or after a line break
local MAX_HELD = 8 * 1024 * 1024 -- an event or a JSON answer larger than this is not metered
local METER_KEYS = { type = true, object = true, model = true, usage = true, choices = true }

local function metered_event(event)
  return find(event, USAGE_EVENT) or find(event, STOP_EVENT) or find(event, "^" .. DONE_LINE)
      or find(event, "\n" .. DONE_LINE)
end

-- The index of the end of the last whole event in data (0: none).
local function last_event_end(data)
  local n = #data
  if byte(data, n) == 10 and (byte(data, n - 1) == 10 or (byte(data, n - 1) == 13 and byte(data, n - 2) == 10)) then
    return n
  end
  local last, pos = 0, 1
  while true do
    local _, e = find(data, EVENT_END, pos)
    if not e then return last end
    last, pos = e, e + 1
  end
end

-- Feeds one chunk of an SSE answer (`carry`: an event an earlier chunk left unfinished); appends
-- the metered events to `out`. Returns the new carry (nil: an event too large, metering gives up)
-- and whether `out` grew.
function cascade_capture_usage(carry, chunk, out)
  local data = carry == "" and chunk or carry .. chunk
  local done = last_event_end(data)
  local grew = false
  if done > 0 then
    local whole = done == #data and data or sub(data, 1, done)
    if (find(whole, '"usage"', 1, true) and find(whole, USAGE_EVENT)) or find(whole, "message_stop", 1, true)
        or find(whole, "[DONE]", 1, true) then
      local pos = 1
      while pos <= done do
        local _, e = find(whole, EVENT_END, pos)
        local event = sub(whole, pos, e)
        if metered_event(event) then
          out[#out + 1] = event
          grew = true
        end
        pos = e + 1
      end
    end
  end
  local rest = done == #data and "" or sub(data, done + 1)
  if #rest > MAX_HELD then return nil, grew end
  return rest, grew
end

-- The end of an SSE answer: an event the stream never finished still counts.
function cascade_capture_flush(carry, out)
  if carry ~= "" and metered_event(carry) then
    out[#out + 1] = carry
    return true
  end
  return false
end

-- A JSON answer's top-level members the server's reader looks at (type, object, model, usage,
-- and whether choices is empty), as a JSON object; nil when there is no usage to read.
function cascade_json_excerpt(body)
  local top = top_members(body, METER_KEYS)
  if not top or not top.usage then return nil end
  local out = {}
  for _, key in ipairs({ "type", "object", "model", "usage" }) do
    local v = top[key]
    if v then out[#out + 1] = '"' .. key .. '":' .. sub(body, v[1], v[2] - 1) end
  end
  local c = top.choices
  if c and byte(body, c[1]) == LBRACKET then
    local empty = byte(body, skip_ws(body, c[1] + 1) or 0) == RBRACKET
    out[#out + 1] = empty and '"choices":[]' or '"choices":[{}]'
  end
  return "{" .. concat(out, ",") .. "}"
end

function envoy_on_response(handle)
  local dm = handle:streamInfo():dynamicMetadata()
  local meta = dm:get(NAMESPACE)
  if not meta then return end
  local drop = meta.usage_injected == "1"
  local meter = meta.meter ~= nil and meta.meter ~= ""
  if not drop and not meter then return end
  local headers = handle:headers()
  local sse = find(headers:get("content-type") or "", "text/event-stream", 1, true) ~= nil
  if meter and (tonumber(headers:get(":status") or "") or 0) >= 300 then
    meter = false -- nothing to meter in an error
  end
  if not sse then
    if not meter then return end
    local parts, size = {}, 0
    for chunk in handle:bodyChunks() do
      local n = chunk:length()
      size = size + n
      if size > MAX_HELD then return end
      if n > 0 then parts[#parts + 1] = chunk:getBytes(0, n) end
    end
    local excerpt = cascade_json_excerpt(concat(parts))
    if excerpt then handle:streamInfo():dynamicMetadata():set(NAMESPACE, "answer_json", excerpt) end
    return
  end
  if drop then headers:remove("content-length") end -- the body shrinks
  local carry, last, last_out = "", nil, ""
  local mcarry, metered = "", {}
  for chunk in handle:bodyChunks() do
    local size = chunk:length()
    local bytes = size > 0 and chunk:getBytes(0, size) or ""
    if meter and mcarry then
      local grew
      mcarry, grew = cascade_capture_usage(mcarry, bytes, metered)
      if grew then -- as it comes: a client that leaves early still leaves what was used
        handle:streamInfo():dynamicMetadata():set(NAMESPACE, "answer_sse", concat(metered))
      end
    end
    if drop then
      local out
      out, carry = cascade_drop_usage(carry, bytes)
      if out ~= bytes then chunk:setBytes(out) end
      last, last_out = chunk, out
    end
  end
  if meter and mcarry and cascade_capture_flush(mcarry, metered) then
    handle:streamInfo():dynamicMetadata():set(NAMESPACE, "answer_sse", concat(metered))
  end
  if drop and last and carry ~= "" then
    last:setBytes(last_out .. cascade_flush_usage(carry))
  end
end
