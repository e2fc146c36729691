'use strict';
// The `caller` option against a real cbd (docs/DESIGN.md §3.7): sent on every Acquire
// and Report, so a quorum of two callers holds against one failing client and trips
// on a second; the breaker shows who failed.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Client, BreakerOpenError } = require('..');
const { startDaemon } = require('./daemon');

let daemon;
let a;
let b;
test.before(async () => {
  daemon = await startDaemon();
  a = new Client({ endpoints: daemon.address, acquireDeadlineMs: 2000, caller: 'svc-a' });
  b = new Client({ endpoints: daemon.address, acquireDeadlineMs: 2000, caller: 'svc-b' });
  await a.waitForReady();
});
test.after(async () => {
  await a?.close();
  await b?.close();
  await daemon?.stop();
});

const boom = async () => { throw new Error('boom'); };

test('one failing caller does not make a quorum of two; a second one does', async () => {
  await a.admin.PutBreaker({
    name: 'callers.quorum',
    spec: { consecutive_failures: 2, min_distinct_callers: 2, open_duration: { seconds: 30 } },
  });
  for (let i = 0; i < 4; i++) {
    await assert.rejects(a.breaker('callers.quorum').call(boom), /boom/);
  }
  let status = (await a.admin.GetBreaker({ name: 'callers.quorum' })).breaker;
  assert.equal(status.state, 'STATE_CLOSED');
  assert.deepEqual(
    status.failing_callers.map((c) => [c.caller, Number(c.failures), Number(c.calls)]),
    [['svc-a', 4, 4]],
  );
  await assert.rejects(b.breaker('callers.quorum').call(boom), /boom/);
  status = (await a.admin.GetBreaker({ name: 'callers.quorum' })).breaker;
  assert.equal(status.state, 'STATE_OPEN');
  const err = await a.breaker('callers.quorum').call(async () => 'no').catch((e) => e);
  assert.ok(err instanceof BreakerOpenError, String(err));
});
