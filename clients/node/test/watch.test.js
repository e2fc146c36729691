'use strict';
// The resuming watch across kill -9 and a restart on the same data dir and port: no
// event lost, none delivered twice, no second snapshot.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Client, InvalidArgumentError } = require('..');
const { startDaemon } = require('./daemon');

/** The next item of `it` that is not a progress message, within timeoutMs. */
async function nextItem(it, timeoutMs = 10_000) {
  let timer;
  const timeout = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('no watch item in time')), timeoutMs)));
  try {
    for (;;) {
      const { value, done } = await Promise.race([it.next(), timeout]);
      assert.equal(done, false, 'the watch ended');
      if (value.type !== 'progress') return value;
    }
  } finally {
    clearTimeout(timer);
  }
}

test('watch resumes from the last revision after kill -9 and restart', async (t) => {
  const daemon = await startDaemon();
  t.after(() => daemon.stop());
  const client = new Client({ endpoints: daemon.address, acquireDeadlineMs: 2000, watchProgressMs: 100 });
  t.after(() => client.close());
  await client.admin.PutBreaker({ name: 'w.before', spec: {} });

  const it = client.watch({ prefix: 'w.' })[Symbol.asyncIterator]();
  t.after(() => it.return());
  const snap = await nextItem(it);
  assert.equal(snap.type, 'snapshot');
  assert.deepEqual(snap.breakers.map((b) => b.name), ['w.before']);

  const put1 = await client.admin.PutBreaker({ name: 'w.one', spec: {} });
  const e1 = await nextItem(it);
  assert.deepEqual([e1.type, e1.event.name, e1.event.revision], ['event', 'w.one', put1.revision]);

  await daemon.kill9();
  await daemon.start(); // same port, same data dir
  // Two changes made with a second connection; the watcher reconnects on its own.
  const other = new Client({ endpoints: daemon.address, acquireDeadlineMs: 2000 });
  t.after(() => other.close());
  const put2 = await other.admin.PutBreaker({ name: 'w.two', spec: {} });
  const put3 = await other.admin.PutBreaker({ name: 'w.three', spec: {} });

  const e2 = await nextItem(it);
  assert.deepEqual([e2.type, e2.event.name, e2.event.revision], ['event', 'w.two', put2.revision]);
  const e3 = await nextItem(it);
  assert.deepEqual([e3.type, e3.event.name, e3.event.revision], ['event', 'w.three', put3.revision]);
});

test('a watch with a bad start revision fails with InvalidArgumentError', async (t) => {
  const daemon = await startDaemon();
  t.after(() => daemon.stop());
  const client = new Client({ endpoints: daemon.address });
  t.after(() => client.close());
  const it = client.watch({ startRevision: 0 })[Symbol.asyncIterator]();
  await assert.rejects(it.next(), InvalidArgumentError);
});
