'use strict';
// Node (@grpc/grpc-js, proto/ loaded at run time) against a real cbd.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const grpc = require('@grpc/grpc-js');
const { startDaemon, unary, sleep, StreamReader } = require('./cbd');
const { Breaker, BreakerOpenError } = require('./breaker');

const OPEN_MS = 800; // long enough that a loaded CI machine still acquires while OPEN
const DEADLINE_MS = 10_000;
const SPEC = { consecutive_failures: 3, open_duration: { seconds: 0, nanos: OPEN_MS * 1e6 } };

let cbd;
before(async () => {
  cbd = await startDaemon();
});
after(async () => {
  if (cbd) assert.equal(await cbd.stop(), 0, 'cbd exits 0 on SIGTERM');
});

const put = (name) => unary(cbd.admin, 'PutBreaker', { name, spec: SPEC });
const get = (name) => unary(cbd.admin, 'GetBreaker', { name });
const acquire = (name) => unary(cbd.breakers, 'Acquire', { name });
const report = (permit, outcome) =>
  unary(cbd.breakers, 'Report', { permit, outcome, duration: { seconds: 0, nanos: 1e6 } });

async function waitState(name, state) {
  const deadline = Date.now() + DEADLINE_MS;
  for (;;) {
    const { breaker } = await get(name);
    if (breaker.state === state) return;
    assert.ok(Date.now() < deadline, `${name}: still ${breaker.state}, want ${state}`);
    await sleep(20);
  }
}

test('tutorial: Acquire/Report trips the breaker, one probe closes it', async () => {
  const created = await put('node.tutorial');
  assert.equal(created.created, true);
  assert.equal(created.breaker.state, 'STATE_CLOSED');

  for (let i = 0; i < 3; i++) {
    const a = await acquire('node.tutorial');
    assert.equal(a.allowed, true);
    assert.ok(a.permit.length > 0);
    const r = await report(a.permit, 'OUTCOME_FAILURE');
    assert.equal(r.state, i === 2 ? 'STATE_OPEN' : 'STATE_CLOSED');
  }

  const rejected = await acquire('node.tutorial');
  assert.equal(rejected.allowed, false);
  assert.equal(rejected.state, 'STATE_OPEN');
  assert.ok(rejected.retry_after, 'retry_after is set');
  const retryMs = Number(rejected.retry_after.seconds) * 1000 + rejected.retry_after.nanos / 1e6;
  assert.ok(retryMs > 0 && retryMs <= OPEN_MS, `retry_after ${retryMs} ms`);

  await waitState('node.tutorial', 'STATE_HALF_OPEN');
  const probe = await acquire('node.tutorial');
  assert.equal(probe.allowed, true);
  assert.equal(probe.state, 'STATE_HALF_OPEN');
  const second = await acquire('node.tutorial');
  assert.equal(second.allowed, false, 'one probe at a time');
  const closed = await report(probe.permit, 'OUTCOME_SUCCESS');
  assert.equal(closed.state, 'STATE_CLOSED');
});

test('breaker.call: failures open it, BreakerOpenError, a probe through call() closes it', async () => {
  await put('node.helper');
  const b = new Breaker(cbd.breakers, 'node.helper');
  const boom = new Error('upstream down');
  for (let i = 0; i < 3; i++) {
    await assert.rejects(b.call(async () => { throw boom; }), (err) => err === boom);
  }
  assert.equal((await get('node.helper')).breaker.state, 'STATE_OPEN');

  let ran = false;
  await assert.rejects(
    b.call(async () => { ran = true; }),
    (err) =>
      err instanceof BreakerOpenError &&
      err.state === 'STATE_OPEN' &&
      err.retryAfterMs > 0 &&
      err.retryAfterMs <= OPEN_MS,
  );
  assert.equal(ran, false, 'fn must not run when rejected');

  await waitState('node.helper', 'STATE_HALF_OPEN');
  const result = await b.call(async () => {
    // the probe is in flight: a second call is refused
    await assert.rejects(b.call(async () => { ran = true; }), (err) => err instanceof BreakerOpenError && err.state === 'STATE_HALF_OPEN');
    return 'charged';
  });
  assert.equal(result, 'charged');
  assert.equal(ran, false);
  assert.equal((await get('node.helper')).breaker.state, 'STATE_CLOSED');
});

test('Watch: snapshot, then the CLOSED -> OPEN trip', async () => {
  await put('node.watch');
  const stream = new StreamReader(
    cbd.breakers.Watch({ filter: { names: ['node.watch'] }, progress_interval: { seconds: 0, nanos: 50e6 } }),
  );
  try {
    const deadline = Date.now() + DEADLINE_MS;
    let msg = await stream.next(deadline);
    const snapshot = [];
    for (; msg.kind === 'snapshot'; msg = await stream.next(deadline)) {
      snapshot.push(...msg.snapshot.breakers);
      if (msg.snapshot.done) break;
    }
    assert.equal(msg.kind, 'snapshot', 'the stream starts with the snapshot');
    assert.deepEqual(snapshot.map((x) => [x.name, x.state]), [['node.watch', 'STATE_CLOSED']]);
    const snapRev = BigInt(msg.snapshot.revision);

    const b = new Breaker(cbd.breakers, 'node.watch');
    for (let i = 0; i < 3; i++) await assert.rejects(b.call(async () => { throw new Error('down'); }));

    for (;;) {
      msg = await stream.next(deadline);
      if (msg.kind === 'progress_revision') continue;
      assert.equal(msg.kind, 'event');
      break;
    }
    const e = msg.event;
    assert.equal(e.name, 'node.watch');
    assert.equal(e.kind, 'EVENT_KIND_STATE_CHANGED');
    assert.equal(e.previous_state, 'STATE_CLOSED');
    assert.equal(e.state, 'STATE_OPEN');
    assert.equal(e.reason, '3 consecutive failures');
    assert.ok(BigInt(e.revision) > snapRev, `event revision ${e.revision} after snapshot ${snapRev}`);
  } finally {
    stream.cancel();
  }
});

test('errors arrive as gRPC status codes', async () => {
  await assert.rejects(acquire('node.unknown'), (err) => err.code === grpc.status.NOT_FOUND);
  await assert.rejects(acquire('has space'), (err) => err.code === grpc.status.INVALID_ARGUMENT);
  await assert.rejects(get('node.unknown'), (err) => err.code === grpc.status.NOT_FOUND);
});
