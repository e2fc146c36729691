'use strict';
// The fallback policies against a SIGSTOPped daemon (connected, but never answering):
// every Acquire hits the client's deadline and the breaker spec's policy decides.

const test = require('node:test');
const assert = require('node:assert/strict');
const { performance } = require('node:perf_hooks');
const { Client, BreakerOpenError } = require('..');
const { startDaemon } = require('./daemon');

let daemon;
let client;
test.before(async () => {
  daemon = await startDaemon();
  client = new Client({ endpoints: daemon.address, acquireDeadlineMs: 100 });
  await client.waitForReady();
  for (const [name, fallback] of [['fb.open', 'FALLBACK_FAIL_OPEN'], ['fb.closed', 'FALLBACK_FAIL_CLOSED'], ['fb.local', 'FALLBACK_LOCAL']]) {
    await client.admin.PutBreaker({ name, spec: { consecutive_failures: 2, open_duration: { seconds: 30 }, fallback } });
    await client.breaker(name).refreshSpec(); // learn the policy while the daemon answers
  }
});
test.after(async () => {
  daemon?.resume();
  await client?.close();
  await daemon?.stop();
});

test('with the daemon stopped: fail open allows, fail closed rejects, local trips in process', async (t) => {
  assert.equal(client.breaker('fb.closed').fallback, 'FAIL_CLOSED');
  daemon.pause();
  t.after(() => daemon.resume());

  const before = client.stats.fallbackDecisions;
  const t0 = performance.now();
  const open = await client.breaker('fb.open').acquire();
  const took = performance.now() - t0;
  assert.equal(open.fallback, 'FAIL_OPEN');
  assert.ok(took >= 90 && took < 1000, `decided after ${took} ms, the deadline is 100 ms`);
  assert.equal(await open.success(), null);
  assert.equal(await client.breaker('fb.open').call(async () => 'ran'), 'ran');

  const closed = await client.breaker('fb.closed').acquire().catch((e) => e);
  assert.ok(closed instanceof BreakerOpenError, String(closed));
  assert.equal(closed.fallback, 'FAIL_CLOSED');
  assert.equal(closed.retryAfter, null);

  const local = client.breaker('fb.local');
  for (let i = 0; i < 2; i++) await assert.rejects(local.call(() => { throw new Error('down'); }), /down/);
  const tripped = await local.acquire().catch((e) => e);
  assert.ok(tripped instanceof BreakerOpenError, String(tripped));
  assert.equal(tripped.fallback, 'LOCAL');
  assert.equal(tripped.state, 'STATE_OPEN');
  assert.ok(tripped.retryAfter > 25_000, `local retryAfter ${tripped.retryAfter}`);
  assert.equal(client.stats.fallbackDecisions - before, 6);

  // Back: the daemon decides again (it never saw the local failures).
  daemon.resume();
  const p = await new Client({ endpoints: daemon.address, acquireDeadlineMs: 5000 }).breaker('fb.local').acquire();
  assert.equal(p.fallback, null);
  assert.equal(p.state, 'STATE_CLOSED');
  await p.ignore();
});
