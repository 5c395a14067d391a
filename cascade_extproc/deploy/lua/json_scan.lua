-- A JSON *scanner* for Envoy's Lua filters (LuaJIT, Lua 5.1), which have no JSON library.
--
-- Not a decoder: it finds where values start and end, so a filter can look at a few fields of
-- a large body and replace one value while every other byte stays as the client sent it (the
-- provider's prompt cache keys on the bytes). Positions are 1-based string indexes; every
-- function returns nil on input that is not well-formed where it looked, and the filters then
-- leave the body alone. Skipping a container is iterative (bracket depth, strings jumped over),
-- so deep nesting cannot overflow the C stack. Prepended to each filter's own file
-- (envoy_config.lua_source).

local byte, find, sub, char, concat = string.byte, string.find, string.sub, string.char, table.concat

local QUOTE, BACKSLASH, COLON, COMMA = 34, 92, 58, 44
local LBRACE, RBRACE, LBRACKET, RBRACKET = 123, 125, 91, 93

-- The index of the first byte at or after i that is not JSON whitespace; nil at the end.
-- (Compact JSON has none: the byte test spares a call into the pattern matcher.)
local function skip_ws(s, i)
  local c = byte(s, i)
  if c ~= 32 and c ~= 10 and c ~= 13 and c ~= 9 then return c and i end
  return find(s, "[^ \t\n\r]", i + 1)
end

-- s[i] is the opening quote: the index just past the closing one. Plain finds of the quote
-- (fast, and compiled by LuaJIT), then a quote preceded by an odd run of backslashes is escaped.
local function skip_string(s, i)
  local j = i + 1
  while true do
    local k = find(s, '"', j, true)
    if not k then return nil end
    local p = k - 1
    while byte(s, p) == BACKSLASH do p = p - 1 end
    if (k - 1 - p) % 2 == 0 then return k + 1 end
    j = k + 1
  end
end

local ESCAPES = { ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t' }

-- The string token at i, decoded, and the index past it. \u escapes of non-ASCII characters
-- decode to "\255", which no name this code compares against contains.
local function string_at(s, i)
  local e = skip_string(s, i)
  if not e then return nil end
  local raw = sub(s, i + 1, e - 2)
  if not find(raw, "\\", 1, true) then return raw, e end
  local parts, j = {}, 1
  while true do
    local k = find(raw, "\\", j, true)
    if not k then
      parts[#parts + 1] = sub(raw, j)
      break
    end
    parts[#parts + 1] = sub(raw, j, k - 1)
    local c = sub(raw, k + 1, k + 1)
    if c == "u" then
      local n = tonumber(sub(raw, k + 2, k + 5), 16)
      if not n then return nil end
      parts[#parts + 1] = n < 128 and char(n) or "\255"
      j = k + 6
    else
      local d = ESCAPES[c]
      if not d then return nil end
      parts[#parts + 1] = d
      j = k + 2
    end
  end
  return concat(parts), e
end

-- The value at i (a string, object, array, number, true, false or null): the index past it.
local function skip_value(s, i)
  local c = byte(s, i)
  if c == QUOTE then return skip_string(s, i) end
  if c == LBRACE or c == LBRACKET then
    -- Byte by byte between strings (LuaJIT compiles this loop), strings by skip_string.
    local depth, j, n = 0, i, #s
    while j <= n do
      local d = byte(s, j)
      if d == QUOTE then
        j = skip_string(s, j)
        if not j then return nil end
      else
        if d == LBRACE or d == LBRACKET then
          depth = depth + 1
        elseif d == RBRACE or d == RBRACKET then
          depth = depth - 1
          if depth == 0 then return j + 1 end
        end
        j = j + 1
      end
    end
    return nil
  end
  local e = find(s, "[,}%] \t\n\r]", i) or #s + 1
  local token = sub(s, i, e - 1)
  if token == "true" or token == "false" or token == "null"
      or find(token, "^%-?%d+%.?%d*[eE]?[%+%-]?%d*$") then
    return e
  end
  return nil
end

-- Calls fn(key, value_start) for each member of the object at i, in order (a key repeated is
-- seen twice: the last is the one JSON readers keep). fn may read the value itself and return
-- the index past it (one pass over the bytes, not two), or return nothing: then it is skipped.
-- The index past the object.
local function each_member(s, i, fn)
  if byte(s, i) ~= LBRACE then return nil end
  local j = skip_ws(s, i + 1)
  if not j then return nil end
  if byte(s, j) == RBRACE then return j + 1 end
  while true do
    if byte(s, j) ~= QUOTE then return nil end
    local key, e = string_at(s, j)
    if not key then return nil end
    j = skip_ws(s, e)
    if not j or byte(s, j) ~= COLON then return nil end
    local v = skip_ws(s, j + 1)
    if not v then return nil end
    local ve = fn(key, v) or skip_value(s, v)
    if not ve then return nil end
    j = skip_ws(s, ve)
    if not j then return nil end
    local c = byte(s, j)
    if c == RBRACE then return j + 1 end
    if c ~= COMMA then return nil end
    j = skip_ws(s, j + 1)
    if not j then return nil end
  end
end

-- Calls fn(value_start) for each element of the array at i; like each_member's, fn may return
-- the index past the value. The index past the array.
local function each_element(s, i, fn)
  if byte(s, i) ~= LBRACKET then return nil end
  local j = skip_ws(s, i + 1)
  if not j then return nil end
  if byte(s, j) == RBRACKET then return j + 1 end
  while true do
    local ve = fn(j) or skip_value(s, j)
    if not ve then return nil end
    j = skip_ws(s, ve)
    if not j then return nil end
    local c = byte(s, j)
    if c == RBRACKET then return j + 1 end
    if c ~= COMMA then return nil end
    j = skip_ws(s, j + 1)
    if not j then return nil end
  end
end

-- The members of the object that is the whole of s (whitespace around it allowed) whose keys
-- are in `wanted`: key -> {value_start, value_end}, the last occurrence of each. A wanted key's
-- value is handed to readers[key](s, value_start) when there is one, which returns the index
-- past it. nil when s is not one well-formed object.
local function top_members(s, wanted, readers)
  local i = skip_ws(s, 1)
  if not i then return nil end
  local found = {}
  local e = each_member(s, i, function(key, v)
    if not wanted[key] then return nil end
    local read = readers and readers[key]
    local ve = (read and read(s, v)) or skip_value(s, v)
    found[key] = ve and { v, ve } or false
    return ve
  end)
  if not e or skip_ws(s, e) then return nil end
  return found
end

-- The decoded string at i, or false when the value there is not a string.
local function string_or_false(s, i)
  if byte(s, i) ~= QUOTE then return false end
  return string_at(s, i) or false
end

-- The value of `key` in the object at i, as a string (false when absent or not a string).
local function string_member(s, i, key)
  local out = false
  each_member(s, i, function(k, v)
    if k == key then out = string_or_false(s, v) end
  end)
  return out
end
