'use strict';
// Following the leader (DESIGN §11): a standby answers UNAVAILABLE naming the leader
// in `cbd-leader` and the client moves there; a standby that knows no leader sends it
// to the next endpoint. The standby is the daemon's own standby routes
// (target/debug/standby); the leader a real cbd.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Client, UnavailableError, NotFoundError } = require('..');
const { startDaemon, startStandby } = require('./daemon');

let daemon;
const standbys = [];
test.before(async () => {
  daemon = await startDaemon();
});
test.after(async () => {
  for (const s of standbys) await s.stop();
  await daemon?.stop();
});

test('a standby naming the leader sends the client there', async () => {
  const standby = await startStandby(`http://${daemon.address}`);
  standbys.push(standby);
  const client = new Client({ endpoints: [standby.address], leases: false, acquireDeadlineMs: 2000 });
  try {
    const spec = { consecutive_failures: 3 };
    const err = await client.admin.PutBreaker({ name: 'follow.a', spec }).then(
      () => assert.fail('a standby writes nothing'),
      (e) => e,
    );
    assert.ok(err instanceof UnavailableError, String(err));
    assert.equal(err.leader, `http://${daemon.address}`);
    assert.equal(client.endpoint, daemon.address);
    await client.admin.PutBreaker({ name: 'follow.a', spec });
    const permit = await client.breaker('follow.a').acquire();
    assert.equal(permit.fallback, null, 'decided by the leader');
    await permit.success();
    assert.equal(client.stats.rpcDecisions, 1);
  } finally {
    await client.close();
  }
});

test('a standby without a leader moves the client to the next endpoint', async () => {
  const standby = await startStandby(null);
  standbys.push(standby);
  const client = new Client({ endpoints: [standby.address, daemon.address], leases: false });
  try {
    const err = await client.admin.GetBreaker({ name: 'follow.none' }).then(
      () => assert.fail('a standby answers nothing'),
      (e) => e,
    );
    assert.ok(err instanceof UnavailableError, String(err));
    assert.equal(err.leader, '');
    assert.equal(client.endpoint, daemon.address);
    await assert.rejects(client.admin.GetBreaker({ name: 'follow.none' }), NotFoundError);
  } finally {
    await client.close();
  }
});

test('a lease stream that meets a standby moves the client to the leader', async () => {
  const standby = await startStandby(`http://${daemon.address}`);
  standbys.push(standby);
  const client = new Client({ endpoints: [standby.address, daemon.address] });
  try {
    // What an acquire answered with a lease offer does, without the unary call (which
    // would move the client by itself): the lease stream opens on the standby.
    client._session().request(client.breaker('follow.lease'));
    const deadline = Date.now() + 5000;
    while (client.endpoint !== daemon.address) {
      assert.ok(Date.now() < deadline, `still on ${client.endpoint}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  } finally {
    await client.close();
  }
});
