'use strict';
// The LOCAL fallback's in-process breaker (the documented subset) on a fake clock.

const test = require('node:test');
const assert = require('node:assert/strict');
const { LocalBreaker, Aggregate } = require('..');

test('local breaker: trips on consecutive failures, opens for open_duration, probes, closes', () => {
  let now = 0;
  const b = new LocalBreaker({ consecutive_failures: 3, open_duration: { seconds: '2', nanos: 0 }, half_open_permits: 1, success_threshold: 1 }, () => now);
  for (let i = 0; i < 2; i++) b.report('failure', b.acquire().probe);
  b.report('success', false); // breaks the run
  for (let i = 0; i < 3; i++) b.report('failure', b.acquire().probe);
  let d = b.acquire();
  assert.deepEqual([d.allowed, d.state, d.retryAfter], [false, 'STATE_OPEN', 2000]);
  now = 1999;
  assert.equal(b.acquire().allowed, false);
  now = 2000;
  const probe = b.acquire();
  assert.deepEqual([probe.allowed, probe.state, probe.probe], [true, 'STATE_HALF_OPEN', true]);
  assert.equal(b.acquire().allowed, false, 'one probe at a time');
  b.report('failure', true);
  assert.equal(b.acquire().state, 'STATE_OPEN');
  now = 4000;
  b.report('success', b.acquire().probe);
  d = b.acquire();
  assert.deepEqual([d.allowed, d.state], [true, 'STATE_CLOSED']);
});

test('aggregate: counts and the three failure runs', () => {
  const a = new Aggregate();
  for (const o of ['failure', 'failure', 'success', 'failure', 'ignored', 'failure', 'failure', 'slow', 'failure']) a.add(o);
  assert.deepEqual(
    [a.successes, a.slow_successes, a.failures, a.ignored, a.leading_failures, a.longest_failure_run, a.trailing_failures],
    [1, 1, 6, 1, 2, 3, 1],
  );
  const b = new Aggregate();
  b.add('failure');
  b.add('failure');
  assert.deepEqual([b.leading_failures, b.longest_failure_run, b.trailing_failures], [2, 2, 2]);
});
