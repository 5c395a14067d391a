-- The response filter before ext_proc (so, on the way back, after it): an OpenAI stream whose
-- usage chunk the server asked for on the client's behalf (stream_options.include_usage, to
-- meter it; ext_proc has read it by now) loses that chunk before the client sees it. The server
-- flags such a request with dynamic metadata `cascade.usage_injected = "1"`; every other answer
-- passes untouched, at the cost of one metadata lookup. Doing it here rather than in the
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

function envoy_on_response(handle)
  local meta = handle:streamInfo():dynamicMetadata():get(NAMESPACE)
  if not meta or meta.usage_injected ~= "1" then return end
  local headers = handle:headers()
  if not find(headers:get("content-type") or "", "text/event-stream", 1, true) then return end
  headers:remove("content-length") -- the body shrinks
  local carry, last, last_out = "", nil, ""
  for chunk in handle:bodyChunks() do
    local size = chunk:length()
    local bytes = size > 0 and chunk:getBytes(0, size) or ""
    local out
    out, carry = cascade_drop_usage(carry, bytes)
    if out ~= bytes then chunk:setBytes(out) end
    last, last_out = chunk, out
  end
  if last and carry ~= "" then
    last:setBytes(last_out .. cascade_flush_usage(carry))
  end
end
