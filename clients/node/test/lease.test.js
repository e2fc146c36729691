'use strict';
// Leases end to end: granted after an Acquire that carries valid_until, decided with
// no RPC, outcomes sent as aggregates the daemon counts exactly, revoked at once by a
// trip or an override, and never used past valid_until when the daemon goes silent.

const test = require('node:test');
const assert = require('node:assert/strict');
const { performance } = require('node:perf_hooks');
const { Client, BreakerOpenError } = require('..');
const { startDaemon, until } = require('./daemon');

let daemon;
let client;
test.before(async () => {
  daemon = await startDaemon();
  client = new Client({ endpoints: daemon.address, acquireDeadlineMs: 2000 });
  await client.waitForReady();
});
test.after(async () => {
  daemon?.resume();
  await client?.close();
  await daemon?.stop();
});

/** Creates the breaker, makes one per-call decision, and waits for its lease. */
async function leased(name, spec) {
  await client.admin.PutBreaker({ name, spec: { cache_ttl: { seconds: 10 }, open_duration: { seconds: 30 }, ...spec } });
  const b = client.breaker(name);
  const p = await b.acquire();
  assert.equal(p.leased, false, 'the first decision is the daemon\'s');
  await p.success();
  await until(() => b.leased, 5000, `a lease on ${name}`);
  return b;
}

test('leased calls need no RPC and the daemon counts exactly the aggregated outcomes', async () => {
  const b = await leased('lease.count', { consecutive_failures: 100, count_window: { calls: 1000 } });
  const rpc = client.stats.rpcDecisions;
  const leasedBefore = client.stats.leasedDecisions;
  let failures = 0;
  for (let i = 0; i < 200; i++) {
    if (i % 10 === 3) {
      failures++;
      await assert.rejects(b.call(() => { throw new Error('x'); }));
    } else if (i % 25 === 7) {
      await b.call(() => { throw new Error('mine'); }, { classify: () => 'ignored' }).catch(() => {});
    } else {
      await b.call(() => 'ok');
    }
  }
  assert.equal(client.stats.rpcDecisions, rpc, 'no Acquire while leased');
  assert.equal(client.stats.leasedDecisions - leasedBefore, 200);
  assert.equal(await client.flush(2000), true, 'every aggregate answered');
  const s = (await client.admin.GetBreaker({ name: 'lease.count' })).breaker;
  const ignored = 8; // i % 25 === 7 for i < 200, none of them also i % 10 === 3
  assert.equal(s.window_calls, 1 + 200 - ignored);
  assert.equal(s.window_failures, failures);
  assert.equal(client.leaseStats().outcomesStale, 0);
});

test('a trip caused by leased failures revokes the lease; the next call is rejected by the daemon', async () => {
  const b = await leased('lease.trip', { consecutive_failures: 3 });
  for (let i = 0; i < 3; i++) await assert.rejects(b.call(() => { throw new Error('down'); }));
  // The flush carries the three failures; the daemon trips and pushes the revocation.
  await until(() => !b.leased, 3000, 'the revocation');
  const err = await b.acquire().catch((e) => e);
  assert.ok(err instanceof BreakerOpenError, String(err));
  assert.equal(err.fallback, null);
  assert.equal(err.state, 'STATE_OPEN');
});

test('a forced open revokes the lease at once', async () => {
  const b = await leased('lease.forced', { consecutive_failures: 5 });
  const revokedBefore = client.leaseStats().revoked;
  await client.admin.SetOverride({ name: 'lease.forced', override: 'OVERRIDE_FORCED_OPEN' });
  await until(() => !b.leased, 3000, 'the revocation');
  assert.equal(client.leaseStats().revoked, revokedBefore + 1);
  const err = await b.call(() => 'must not run').catch((e) => e);
  assert.ok(err instanceof BreakerOpenError, String(err));
  assert.equal(err.retryAfter, null, 'forced open has no retry_after');
});

test('a silent daemon: the lease is used until valid_until, never after; then the fallback decides', async () => {
  const b = await leased('lease.silent', { consecutive_failures: 5, cache_ttl: { nanos: 400_000_000 }, fallback: 'FALLBACK_FAIL_CLOSED' });
  await b.refreshSpec();
  const lease = b._lease;
  daemon.pause();
  let lastLeased = 0;
  await until(async () => {
    const p = await b.acquire().catch((e) => e);
    if (p instanceof BreakerOpenError) return true;
    assert.equal(p.leased, true, 'allowed only under the lease');
    lastLeased = performance.now();
    await p.success();
    return false;
  }, 3000, 'the lease to end');
  assert.ok(lastLeased > 0, 'the lease was used while valid');
  assert.ok(lastLeased < lease.sentAt + 400, `used ${lastLeased - lease.sentAt} ms after the request was sent`);
  const err = await b.acquire().catch((e) => e);
  assert.equal(err.fallback, 'FAIL_CLOSED');
  daemon.resume();
});
