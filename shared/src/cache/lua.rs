//! The Lua scripts that write views: the one version compare, who may create an account view
//! (see [`super::Ticket`]), and the views' time to live. Each script also says when the
//! generation on the server is no longer the one the caller's link was opened under (the
//! Redis was flushed, or another process took over its data): it returns -1 and the link is
//! opened again, which claims a generation (see `cache/link.rs`).

/// Lua: sets an account view unless the cached one is at least as new. The one version
/// compare; both scripts below start with it. A view that does not exist is only created when
/// `may_create`: the caller's ticket matches the views' generation, so what it read (or
/// committed) is at least as new as anything a lost publish of an earlier master held. Every
/// view set lives `ttl` seconds from then: a busy account's view is renewed by each write.
macro_rules! set_account_if_newer_lua {
    () => {
        r"
local function set_account_if_newer(key, version, body, may_create, ttl)
  local current = redis.call('HGET', key, 'version')
  if current == false then
    if not may_create then return 0 end
  elseif tonumber(current) >= tonumber(version) then
    return 0
  end
  redis.call('HSET', key, 'version', version, 'body', body)
  redis.call('EXPIRE', key, ttl)
  return 1
end
"
    };
}

/// A reader's fill of an account view. KEYS[1] account view, KEYS[2] views' generation;
/// ARGV[1] version, ARGV[2] body, ARGV[3] ticket, ARGV[4] the link's generation, ARGV[5] time
/// to live (s). Returns 1 if it was set, 0 if not, -1 if the link's generation is gone.
pub const FILL_ACCOUNT_LUA: &str = concat!(
    set_account_if_newer_lua!(),
    r"
local generation = redis.call('GET', KEYS[2])
if generation ~= ARGV[4] then return -1 end
return set_account_if_newer(KEYS[1], ARGV[1], ARGV[2], ARGV[3] == generation, ARGV[5])
"
);

/// Committed changes, any number of them, in one round trip: for each, the account view
/// (versioned, as above), the transaction view and the stream entry, in the order given.
/// KEYS[1] stream, KEYS[2] views' generation, then per change: account view, transaction view.
/// ARGV[1] stream max length, ARGV[2] ticket, ARGV[3] the link's generation, ARGV[4] time to
/// live (s), then per change: version, account body, transaction body, transaction id, account
/// id. Returns the number of changes, or -1 (nothing written) if the link's generation is gone.
/// The stream has no time to live: it is trimmed by length, and never evicted.
pub const PUBLISH_LUA: &str = concat!(
    set_account_if_newer_lua!(),
    r"
local generation = redis.call('GET', KEYS[2])
if generation ~= ARGV[3] then return -1 end
local may_create = ARGV[2] == generation
local ttl = ARGV[4]
local changes = math.floor((#KEYS - 2) / 2)
for i = 0, changes - 1 do
  local account_key, transaction_key = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  local a = 5 + 5 * i
  local version, account, transaction = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  set_account_if_newer(account_key, version, account, may_create, ttl)
  redis.call('SET', transaction_key, transaction, 'EX', ttl)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
    'type', 'transaction.created', 'transaction_id', ARGV[a + 3], 'account_id', ARGV[a + 4],
    'account_version', version, 'transaction', transaction, 'account', account)
end
return changes
"
);
