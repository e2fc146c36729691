'use strict';
// End to end against a real cbd: trip, reject, half-open probe, stale report, typed
// errors, the permit API.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Client, BreakerOpenError, NotFoundError, InvalidArgumentError, RpcError } = require('..');
const { startDaemon, until } = require('./daemon');

let daemon;
let client;
test.before(async () => {
  daemon = await startDaemon();
  // A generous deadline: these tests are about the daemon's answers, not the fallback.
  client = new Client({ endpoints: daemon.address, acquireDeadlineMs: 2000 });
  await client.waitForReady();
});
test.after(async () => {
  await client?.close();
  await daemon?.stop();
});

const put = (name, spec) => client.admin.PutBreaker({ name, spec });

test('consecutive failures trip the breaker, which then rejects with retryAfter', async () => {
  await put('trip.a', { consecutive_failures: 2, open_duration: { seconds: 30 } });
  const b = client.breaker('trip.a');
  assert.equal(await b.call(async () => 'ok'), 'ok');
  for (let i = 0; i < 2; i++) {
    await assert.rejects(b.call(async () => { throw new Error('boom'); }), /boom/);
  }
  let ran = false;
  const err = await b.call(() => (ran = true)).catch((e) => e);
  assert.ok(err instanceof BreakerOpenError, String(err));
  assert.equal(ran, false, 'fn must not run when rejected');
  assert.equal(err.state, 'STATE_OPEN');
  assert.equal(err.fallback, null);
  assert.ok(err.retryAfter > 25_000 && err.retryAfter <= 30_000, `retryAfter ${err.retryAfter}`);
  const status = await client.admin.GetBreaker({ name: 'trip.a' });
  assert.equal(status.breaker.state, 'STATE_OPEN');
});

test('after open_duration one half-open probe is allowed, a second is not, and its success closes', async () => {
  await put('probe.a', { consecutive_failures: 1, open_duration: { nanos: 300_000_000 }, half_open_permits: 1 });
  const b = client.breaker('probe.a');
  await assert.rejects(b.call(() => { throw new Error('x'); }));
  const open = await b.acquire().catch((e) => e);
  assert.ok(open instanceof BreakerOpenError);
  // The daemon's timer half-opens it: poll its status instead of sleeping a guess.
  await until(
    async () => (await client.admin.GetBreaker({ name: 'probe.a' })).breaker.state === 'STATE_HALF_OPEN',
    open.retryAfter + 5_000,
    'probe.a to half-open',
  );
  const probe = await b.acquire();
  assert.equal(probe.state, 'STATE_HALF_OPEN');
  const second = await b.acquire().catch((e) => e);
  assert.ok(second instanceof BreakerOpenError, 'a second probe must be rejected');
  assert.equal(second.state, 'STATE_HALF_OPEN');
  const answer = await probe.success();
  assert.equal(answer.state, 'STATE_CLOSED');
  assert.equal(answer.stale, false);
});

test('a permit from before a trip is reported stale and counts nowhere', async () => {
  await put('stale.a', { consecutive_failures: 1, open_duration: { seconds: 30 } });
  const b = client.breaker('stale.a');
  const early = await b.acquire();
  const tripper = await b.acquire();
  const tripped = await tripper.failure();
  assert.equal(tripped.state, 'STATE_OPEN');
  const late = await early.success();
  assert.equal(late.stale, true);
  assert.equal(late.state, 'STATE_OPEN');
  await assert.rejects(early.success(), /already reported/);
});

test('ignore() counts nothing: it breaks no failure run', async () => {
  await put('ignore.a', { consecutive_failures: 2, open_duration: { seconds: 30 } });
  const b = client.breaker('ignore.a');
  await (await b.acquire()).failure();
  await (await b.acquire()).ignore();
  const s = await client.admin.GetBreaker({ name: 'ignore.a' });
  assert.equal(s.breaker.consecutive_failures, 1);
  assert.equal(s.breaker.window_calls, 1);
  const r = await (await b.acquire()).failure();
  assert.equal(r.state, 'STATE_OPEN');
});

test('call(fn, {classify}) reports an error classified as ignored as ignored', async () => {
  await put('classify.a', { consecutive_failures: 1 });
  const b = client.breaker('classify.a');
  await assert.rejects(b.call(() => { throw new RangeError('caller bug'); }, { classify: () => 'ignored' }), RangeError);
  const s = await client.admin.GetBreaker({ name: 'classify.a' });
  assert.equal(s.breaker.state, 'STATE_CLOSED');
});

test('errors are typed by gRPC code', async () => {
  const missing = await client.breaker('no.such.breaker').acquire().catch((e) => e);
  assert.ok(missing instanceof NotFoundError, String(missing));
  assert.ok(missing instanceof RpcError);
  assert.equal(missing.code, 5);
  const bad = await client.breaker('bad name!').acquire().catch((e) => e);
  assert.ok(bad instanceof InvalidArgumentError, String(bad));
  const badSpec = await put('spec.bad', { failure_rate_percent: 101 }).catch((e) => e);
  assert.ok(badSpec instanceof InvalidArgumentError, String(badSpec));
});
