-- The request filter after ext_proc: what the server would have done, when it did not.
--
-- It holds the request until the body is complete (body(): headers, route and content-length
-- then follow whatever ext_proc made of the body), then:
-- * the server decided (it always sets dynamic metadata `cascade`): nothing more to do;
-- * no body, or not a POST: nothing for the server to decide, the request passes untouched and
--   says so (`cascade.path = direct`), rather than looking like a failure;
-- * otherwise the server was down, not ready or too slow (ext_proc's failure_mode_allow) and
--   Envoy sends the client's request to the strong provider as it is. One thing in it can make
--   that provider refuse it: with extended thinking on, a final assistant turn that calls a
--   tool must start with the strong model's signed thinking, and a turn the draft answered has
--   none. Such a request gets `"thinking": {"type":"disabled"}` in place of its thinking value,
--   every other byte kept (prompt caching keys on them), as the server itself would do
--   (codecs/provenance.py).
-- Plain finds for "thinking", "tool_use" and "enabled" or "adaptive" come first, so other bodies
-- are never scanned.

local NAMESPACE = "cascade"
local DISABLED = '{"type":"disabled"}'
local ON = { enabled = true, adaptive = true }
local THINKING_BLOCK = { thinking = true, redacted_thinking = true }
local TOP = { thinking = true, messages = true }

-- Where the top-level thinking value is (start, end past it) when it must be turned off:
-- thinking enabled or adaptive, and the final assistant turn (consecutive assistant messages
-- count as one, as the API merges them) holds a tool_use block but does not start with a
-- thinking or redacted_thinking block (string content counts as a text block). nil otherwise.
-- One walk over the body; inside messages only the final turn's blocks are looked at.
local function thinking_to_disable(s)
  if not find(s, '"thinking"', 1, true) or not find(s, '"tool_use"', 1, true)
      or not (find(s, '"enabled"', 1, true) or find(s, '"adaptive"', 1, true)) then
    return nil
  end
  local turn, in_turn -- the content positions of the final assistant turn's messages
  local function read_messages(_, i)
    turn, in_turn = {}, false
    return each_element(s, i, function(v)
      local role, content = false, false
      local e = each_member(s, v, function(k, mv)
        if k == "role" then
          role = string_or_false(s, mv)
        elseif k == "content" then
          content = mv
        end
      end)
      if role ~= "assistant" then
        in_turn = false
      else
        if not in_turn then turn, in_turn = {}, true end
        turn[#turn + 1] = content
      end
      return e
    end)
  end
  local top = top_members(s, TOP, { messages = read_messages })
  if not top or not top.thinking or not top.messages or not turn then return nil end
  local tv, te = top.thinking[1], top.thinking[2]
  if byte(s, tv) ~= LBRACE or not ON[string_member(s, tv, "type")] then return nil end
  local first, uses_tool = nil, false
  for _, content in ipairs(turn) do
    if content and byte(s, content) == QUOTE then
      if first == nil then first = "text" end
    elseif content then
      each_element(s, content, function(b)
        local kind = byte(s, b) == LBRACE and string_member(s, b, "type") or false
        if first == nil then first = kind end
        if kind == "tool_use" then uses_tool = true end
      end)
    end
  end
  if uses_tool and not THINKING_BLOCK[first] then return tv, te end
  return nil
end

-- The body with thinking turned off, or nil when it needs no change.
function cascade_fix_body(s)
  local ok, v, e = pcall(thinking_to_disable, s)
  if not ok or not v then return nil end
  return sub(s, 1, v - 1) .. DISABLED .. sub(s, e)
end

-- Wrappers Envoy hands the script (stream info, headers, body) die when the script yields (in
-- body()): each is fetched again after it.
function envoy_on_request(handle)
  if handle:headers():get(":method") ~= "POST" then
    handle:streamInfo():dynamicMetadata():set(NAMESPACE, "path", "direct")
    return
  end
  local body = handle:body()
  local meta = handle:streamInfo():dynamicMetadata()
  local size = body and body:length() or 0
  if meta:get(NAMESPACE) == nil then
    if size == 0 then
      meta:set(NAMESPACE, "path", "direct")
      return
    end
    local fixed = cascade_fix_body(body:getBytes(0, size))
    if fixed then
      body:setBytes(fixed)
      size = #fixed
      handle:headers():remove("content-length")
    end
  end
  -- ext_proc drops content-length when it may change the body; the provider gets it back.
  local headers = handle:headers()
  if size > 0 and headers:get("content-length") == nil and headers:get("transfer-encoding") == nil then
    headers:add("content-length", tostring(size))
  end
end
