"""The windows' counts in Redis, shared by every replica: one Lua script per step, so no
two replicas ever read a count between another's read and write.

A window is a hash: `settled` (units), and one `<hold>` field per open reservation,
`"<units>:<deadline ms>"`. The reserve script is `ledger.grant` in Lua; both are tested
against the same properties (tests/test_budgets.py).
"""

from __future__ import annotations

import redis.asyncio as redis

from proxy.admission.budgets.ledger import MIN_ALLOWANCE, Grant, Refusal, Window
from proxy.admission.budgets.store import GRACE, Claim

# The count of KEYS[i] at ARGV[1] (ms), dropping holds past their deadline.
_COUNT = """
local function count(key, now)
  local total = 0
  local fields = redis.call('HGETALL', key)
  for j = 1, #fields, 2 do
    if fields[j] == 'settled' then
      total = total + tonumber(fields[j + 1])
    else
      local units, deadline = string.match(fields[j + 1], '^(%d+):(%d+)$')
      if units == nil or tonumber(deadline) < now then
        redis.call('HDEL', key, fields[j])
      else
        total = total + tonumber(units)
      end
    end
  end
  return total
end
"""

# ARGV: now ms, hold, deadline ms, prompt tokens, requested, minimum, then for each window
# its limit, input rate, output rate, expiry ms. Returns {1, allowance, counts...} or
# {0, refusing window (0-based), counts...}. A hold already there was undone (UNDO): the
# proxy stopped waiting for this reservation, which must not count when it runs late.
RESERVE = (
    _COUNT
    + """
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return {0, 0} end
local now, prompt, requested = tonumber(ARGV[1]), tonumber(ARGV[4]), tonumber(ARGV[5])
local minimum = math.min(tonumber(ARGV[6]), requested)
local used, allowance, binding = {}, requested, -1
for i, key in ipairs(KEYS) do
  local base = 7 + (i - 1) * 4
  local limit, rate_in = tonumber(ARGV[base]), tonumber(ARGV[base + 1])
  local rate_out = tonumber(ARGV[base + 2])
  used[i] = count(key, now)
  local room = limit - used[i] - prompt * rate_in
  if room < 0 then return {0, i - 1} end
  if rate_out > 0 and math.floor(room / rate_out) < allowance then
    allowance, binding = math.floor(room / rate_out), i - 1
  end
end
if allowance < minimum then return {0, binding} end
local result = {1, allowance}
for i, key in ipairs(KEYS) do
  local base = 7 + (i - 1) * 4
  local charge = prompt * tonumber(ARGV[base + 1]) + allowance * tonumber(ARGV[base + 2])
  redis.call('HSET', key, ARGV[2], string.format('%d:%d', charge, tonumber(ARGV[3])))
  redis.call('PEXPIRE', key, ARGV[base + 3])
  result[i + 2] = used[i] + charge
end
return result
"""
)

# ARGV: hold, then for each window its charge and expiry ms.
SETTLE = """
for i, key in ipairs(KEYS) do
  redis.call('HDEL', key, ARGV[1])
  redis.call('HINCRBY', key, 'settled', ARGV[2 * i])
  redis.call('PEXPIRE', key, ARGV[2 * i + 1])
end
return 1
"""

# ARGV: hold, its deadline ms, then each window's expiry ms. The hold is left at zero until
# its deadline: a reservation that runs after its undo finds it and takes nothing.
UNDO = """
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, ARGV[1], string.format('0:%d', tonumber(ARGV[2])))
  if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ARGV[i + 2]) end
end
return 1
"""

COUNTS = (
    _COUNT
    + """
local result = {}
for i, key in ipairs(KEYS) do result[i] = count(key, tonumber(ARGV[1])) end
return result
"""
)


def _expiry_ms(window: Window, now: float) -> int:
    return max(1000, int((window.resets_at - now + GRACE) * 1000))


class RedisBudgetStore:
    def __init__(self, client: redis.Redis) -> None:
        self._reserve = client.register_script(RESERVE)
        self._settle = client.register_script(SETTLE)
        self._undo = client.register_script(UNDO)
        self._counts = client.register_script(COUNTS)

    async def reserve(self, claim: Claim, now: float) -> tuple[Grant | Refusal, tuple[int, ...]]:
        arguments: list[int | str] = [int(now * 1000), claim.hold, int(claim.deadline * 1000)]
        arguments += [claim.prompt_tokens, claim.requested, MIN_ALLOWANCE]
        for window in claim.windows:
            expiry = _expiry_ms(window, now)
            arguments += [window.limit, window.input_rate, window.output_rate, expiry]
        result = [int(value) for value in await self._reserve(list(claim.keys), arguments)]
        if result[0] == 0:
            return Refusal(result[1]), ()
        allowance = result[1]
        charges = tuple(window.cost(claim.prompt_tokens, allowance) for window in claim.windows)
        return Grant(allowance, charges), tuple(result[2:])

    async def settle(self, claim: Claim, charges: tuple[int, ...], now: float) -> None:
        arguments: list[int | str] = [claim.hold]
        for window, charge in zip(claim.windows, charges, strict=True):
            arguments += [charge, _expiry_ms(window, now)]
        await self._settle(list(claim.keys), arguments)

    async def undo(self, claim: Claim, now: float) -> None:
        arguments: list[int | str] = [claim.hold, int(claim.deadline * 1000)]
        arguments += [_expiry_ms(window, now) for window in claim.windows]
        await self._undo(list(claim.keys), arguments)

    async def counts(self, keys: tuple[str, ...], now: float) -> tuple[int, ...]:
        if not keys:
            return ()
        return tuple(int(value) for value in await self._counts(list(keys), [int(now * 1000)]))
