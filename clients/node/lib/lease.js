'use strict';
// Leases (docs/DESIGN.md §10) over one Session stream per client: grants, pushed
// revocations, and the outcomes of leased calls sent as aggregates with sequence
// numbers, resent in order on a new stream after a disconnect.

const { performance } = require('node:perf_hooks');
const { durationMs } = require('./convert');
const { isTransient } = require('./errors');

/** The counts of one lease's outcomes since its last flush (cbd_breaker::Aggregate). */
class Aggregate {
  constructor() {
    this.successes = 0;
    this.slow_successes = 0;
    this.failures = 0;
    this.ignored = 0;
    this.leading_failures = 0;
    this.longest_failure_run = 0;
    this.trailing_failures = 0;
    this.sawSuccess = false;
  }
  get empty() {
    return this.successes + this.slow_successes + this.failures + this.ignored === 0;
  }
  /** @param {'success'|'slow'|'failure'|'ignored'} outcome */
  add(outcome) {
    if (outcome === 'failure') {
      this.failures++;
      if (!this.sawSuccess) this.leading_failures++;
      this.trailing_failures++;
      if (this.trailing_failures > this.longest_failure_run) this.longest_failure_run = this.trailing_failures;
    } else if (outcome === 'ignored') {
      this.ignored++; // breaks no failure run
    } else {
      if (outcome === 'slow') this.slow_successes++;
      else this.successes++;
      this.sawSuccess = true;
      this.trailing_failures = 0;
    }
  }
}

/** One granted lease: its token, its monotonic end, and its outcome book. */
class Lease {
  constructor(grant, sentAt) {
    this.token = grant.lease;
    this.generation = grant.generation;
    this.lengthMs = durationMs(grant.valid_for) ?? 0;
    // Counted from when the request was SENT, so it ends no later than the daemon thinks.
    this.sentAt = sentAt;
    this.expiresAt = sentAt + this.lengthMs;
    this.slowMs = durationMs(grant.slow_call_duration); // null: no call is slow
    this.valid = true;
    this.used = false;
    this.pending = new Aggregate();
    this.nextSequence = 1;
    this.unanswered = []; // sealed LeasedOutcomes not yet answered, in sequence order
  }
}

class LeaseSession {
  /** @param {import('./index').Client} client */
  constructor(client, flushIntervalMs, now = () => performance.now()) {
    this.client = client;
    this.now = now;
    this.stream = null;
    this.nextId = 1;
    this.pending = new Map(); // id -> what it answers
    this.breakers = new Map(); // name -> Breaker that asked for a lease
    this.books = new Set(); // leases with counts or unanswered outcomes
    this.waiters = new Set(); // flush() promises waiting for answers
    this.closed = false;
    this.reconnectAt = 0;
    this.timer = setInterval(() => this.tick(), flushIntervalMs);
    this.timer.unref(); // never keeps the process alive by itself
    this.stats = { granted: 0, refused: 0, revoked: 0, outcomesSent: 0, outcomesStale: 0, outcomesDuplicate: 0 };
  }

  #open() {
    if (this.stream || this.closed) return this.stream;
    if (this.now() < this.reconnectAt) return null;
    const stream = this.client._stubs().breakers.Session(this.client._metadata());
    this.stream = stream;
    stream.on('data', (msg) => this.#onMessage(msg));
    const lost = () => this.#lost(stream);
    stream.on('error', (err) => {
      // A standby naming the leader, or a replica gone: the next stream goes where
      // the client's calls go next (DESIGN §11.2).
      if (isTransient(err)) this.client._rotate(err);
      lost();
    });
    stream.on('end', lost);
    // Outcomes unanswered on the previous stream: resend in order, same sequence numbers.
    for (const lease of this.books) for (const msg of lease.unanswered) this.#sendOutcomes(lease, msg);
    return stream;
  }

  #send(item, what) {
    const id = this.nextId++;
    this.pending.set(id, what);
    this.stream.write({ id: String(id), ...item });
  }

  #sendOutcomes(lease, msg) {
    this.#send({ outcomes: msg }, { type: 'outcomes', lease, msg });
    this.stats.outcomesSent++;
  }

  /** Ask for a lease (or a renewal) of `breaker`; no-op if one is being asked for. */
  request(breaker) {
    if (this.closed || breaker._leaseAsked) return;
    if (!this.#open()) return;
    breaker._leaseAsked = true;
    this.breakers.set(breaker.name, breaker);
    this.#send({ lease: { name: breaker.name, caller: this.client.caller } }, { type: 'lease', breaker, sentAt: this.now() });
  }

  #onMessage(msg) {
    if (msg.kind === 'revoked') {
      const breaker = this.breakers.get(msg.revoked.name);
      // A follow-up push (the change committed) finds no lease: counted once.
      if (breaker?._lease) this.stats.revoked++;
      breaker?._voidLease();
      return;
    }
    const what = this.pending.get(Number(msg.id));
    if (!what) return;
    this.pending.delete(Number(msg.id));
    if (what.type === 'lease') {
      what.breaker._leaseAsked = false;
      if (msg.kind === 'lease' && msg.lease.granted) {
        this.stats.granted++;
        const lease = new Lease(msg.lease, what.sentAt);
        this.books.add(lease);
        what.breaker._setLease(lease);
      } else {
        this.stats.refused++;
      }
    } else if (what.type === 'outcomes') {
      const i = what.lease.unanswered.indexOf(what.msg);
      if (i >= 0) what.lease.unanswered.splice(i, 1);
      if (msg.kind === 'outcomes') {
        if (msg.outcomes.stale) this.stats.outcomesStale++;
        if (msg.outcomes.duplicate) this.stats.outcomesDuplicate++;
      }
      // An error answer (FAILED_PRECONDITION, NOT_FOUND for a deleted breaker) cannot be
      // mended by resending: the counts are dropped.
      this.#settle();
    }
  }

  #lost(stream) {
    if (this.stream !== stream) return;
    this.stream = null;
    this.pending.clear();
    // A lost stream voids every lease at once (no push could reach us any more).
    for (const b of this.breakers.values()) {
      b._leaseAsked = false;
      b._voidLease();
    }
    this.reconnectAt = this.now() + 100; // do not spin against a dead daemon
    this.#settle();
  }

  /** Seal every lease's counts into a LeasedOutcomes, send, renew used leases at half-life. */
  tick() {
    const now = this.now();
    for (const lease of this.books) {
      if (!lease.pending.empty) {
        const a = lease.pending;
        lease.pending = new Aggregate();
        const msg = {
          lease: lease.token,
          caller: this.client.caller,
          sequence: String(lease.nextSequence++),
          successes: a.successes,
          slow_successes: a.slow_successes,
          failures: a.failures,
          ignored: a.ignored,
          leading_failures: a.leading_failures,
          longest_failure_run: a.longest_failure_run,
          trailing_failures: a.trailing_failures,
        };
        lease.unanswered.push(msg);
        if (this.#open()) this.#sendOutcomes(lease, msg);
      }
      const over = !lease.valid || now >= lease.expiresAt;
      if (over && lease.pending.empty && lease.unanswered.length === 0) this.books.delete(lease);
    }
    for (const b of this.breakers.values()) {
      const l = b._lease;
      if (l && l.valid && l.used && now >= l.sentAt + l.lengthMs / 2) this.request(b);
    }
    this.#settle();
  }

  #outstanding() {
    for (const lease of this.books) if (!lease.pending.empty || lease.unanswered.length) return true;
    return false;
  }

  #settle() {
    if (this.#outstanding()) return;
    for (const w of this.waiters) w();
    this.waiters.clear();
  }

  /** Sends every count now and waits (at most timeoutMs) until the daemon answered them. */
  async flush(timeoutMs = 1000) {
    this.tick();
    if (!this.#outstanding()) return true;
    let timer;
    const answered = new Promise((resolve) => this.waiters.add(() => resolve(true)));
    const retry = setInterval(() => this.tick(), 50); // reconnects and resends meanwhile
    const timeout = new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs, false)));
    try {
      return await Promise.race([answered, timeout]);
    } finally {
      clearTimeout(timer);
      clearInterval(retry);
    }
  }

  async close(timeoutMs = 1000) {
    const ok = await this.flush(timeoutMs);
    this.closed = true;
    clearInterval(this.timer);
    const s = this.stream;
    this.stream = null;
    if (s) {
      s.end();
      s.cancel();
    }
    return ok;
  }
}

module.exports = { Aggregate, Lease, LeaseSession };
