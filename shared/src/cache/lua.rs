//! The Lua scripts that write account views: the one version compare, and who may create a
//! view (see [`super::Ticket`]).

/// Lua: sets an account view unless the cached one is at least as new. The one version
/// compare; both scripts below start with it. A view that does not exist is only created when
/// `may_create`: the caller's ticket matches the views' generation, so what it read (or
/// committed) is at least as new as anything a lost publish of an earlier master held.
macro_rules! set_account_if_newer_lua {
    () => {
        r"
local function set_account_if_newer(key, version, body, may_create)
  local current = redis.call('HGET', key, 'version')
  if current == false then
    if not may_create then return 0 end
  elseif tonumber(current) >= tonumber(version) then
    return 0
  end
  redis.call('HSET', key, 'version', version, 'body', body)
  return 1
end
local function ticket_is_current(generation_key, ticket)
  return ticket ~= '' and redis.call('GET', generation_key) == ticket
end
"
    };
}

/// A reader's fill of an account view. KEYS[1] account view, KEYS[2] views' generation;
/// ARGV[1] version, ARGV[2] body, ARGV[3] ticket. Returns 1 if it was set.
pub const FILL_ACCOUNT_LUA: &str = concat!(
    set_account_if_newer_lua!(),
    "return set_account_if_newer(KEYS[1], ARGV[1], ARGV[2], ticket_is_current(KEYS[2], ARGV[3]))"
);

/// Committed changes, any number of them, in one round trip: for each, the account view
/// (versioned, as above), the transaction view and the stream entry, in the order given.
/// KEYS[1] stream, KEYS[2] views' generation, then per change: account view, transaction view.
/// ARGV[1] stream max length, ARGV[2] ticket, then per change: version, account body,
/// transaction body, transaction id, account id. Returns the number of changes.
pub const PUBLISH_LUA: &str = concat!(
    set_account_if_newer_lua!(),
    r"
local may_create = ticket_is_current(KEYS[2], ARGV[2])
local changes = math.floor((#KEYS - 2) / 2)
for i = 0, changes - 1 do
  local account_key, transaction_key = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  local a = 3 + 5 * i
  local version, account, transaction = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  set_account_if_newer(account_key, version, account, may_create)
  redis.call('SET', transaction_key, transaction)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
    'type', 'transaction.created', 'transaction_id', ARGV[a + 3], 'account_id', ARGV[a + 4],
    'account_version', version, 'transaction', transaction, 'account', account)
end
return changes
"
);
