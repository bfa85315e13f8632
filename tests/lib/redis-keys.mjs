// Where the services keep a view in Redis, for tests that look at or remove one directly.
// Account views live under the epoch of the views' generation (`{prefix}views-generation` holds
// `{run_id}:{epoch}`; see shared/src/cache/link.rs), transaction views under their id.

/**
 * The key of `account`'s view on a Redis. `get(key)` returns the string value of a key there
 * (e.g. from `redis-cli GET`); empty when the views have no generation yet.
 */
export async function accountViewKey(get, account, prefix = 'tm:') {
  const generation = String(await get(`${prefix}views-generation`)).trim();
  const epoch = generation.slice(generation.lastIndexOf(':') + 1);
  return `${prefix}account:${epoch}:${account}`;
}

/** The key of a transaction's view. */
export function transactionViewKey(transactionId, prefix = 'tm:') {
  return `${prefix}transaction:${transactionId}`;
}
