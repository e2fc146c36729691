'use strict';
// cbd-client: a Node.js client for cbd (the Rust client's semantics, docs/DESIGN.md §8
// and §10): an Acquire deadline, the breaker spec's fallback policy when the daemon
// cannot answer in time, a two-step permit API, leases and a resuming watch.

const { performance } = require('node:perf_hooks');
const grpc = require('@grpc/grpc-js');
const errors = require('./errors');
const { BreakerOpenError, fromGrpc, isTransient, leaderOf } = errors;
const { loadCbd, durationMs, durationFromNs, PROTO_DIR } = require('./convert');
const { LocalBreaker } = require('./local');
const { LeaseSession, Aggregate } = require('./lease');

const FALLBACKS = { FALLBACK_UNSPECIFIED: 'FAIL_OPEN', FALLBACK_FAIL_OPEN: 'FAIL_OPEN', FALLBACK_FAIL_CLOSED: 'FAIL_CLOSED', FALLBACK_LOCAL: 'LOCAL' };
const OUTCOMES = { success: 'OUTCOME_SUCCESS', failure: 'OUTCOME_FAILURE', ignored: 'OUTCOME_IGNORED' };
const SPEC_RETRY_MS = 1000; // while the spec is unknown, fetch it again at most this often

/** The client's monotonic clock in milliseconds. */
const monotonic = () => performance.now();

/**
 * A connection to cbd (one channel per endpoint, one Session stream for leases).
 */
class Client {
  /**
   * @param {object} [options]
   * @param {string|string[]} [options.endpoints='127.0.0.1:7411'] host:port; with several,
   *   a transient failure moves to the next one; a standby naming the leader (DESIGN
   *   §11) moves the client there.
   * @param {string} [options.token] bearer token, sent as `authorization: Bearer <token>`.
   * @param {boolean|{ca?: Buffer, cert?: Buffer, key?: Buffer}} [options.tls] TLS (true: system roots).
   * @param {number} [options.acquireDeadlineMs=50] past it the fallback policy decides.
   * @param {number} [options.reportDeadlineMs=250]
   * @param {'FAIL_OPEN'|'FAIL_CLOSED'|'LOCAL'} [options.defaultFallback='FAIL_OPEN'] until the spec is known.
   * @param {boolean} [options.leases=true] ask for leases when the spec sets cache_ttl.
   * @param {number} [options.flushIntervalMs=20] how often leased outcomes are sent.
   * @param {number} [options.specRefreshMs=30000] how often a known spec is fetched again.
   * @param {number} [options.watchProgressMs=5000] progress interval asked of watches.
   * @param {string} [options.caller] sent as `caller` on every Acquire, Report and
   *   leased outcome, so the daemon attributes failures to it (DESIGN §3.7).
   */
  constructor(options = {}) {
    const eps = options.endpoints ?? '127.0.0.1:7411';
    this.endpoints = Array.isArray(eps) ? [...eps] : [eps];
    if (this.endpoints.length === 0) throw new TypeError('endpoints: at least one host:port');
    if (options.token != null && !/^[\x21-\x7e]+$/.test(options.token)) {
      throw new TypeError('token: not a valid header value (visible ASCII only)');
    }
    this.acquireDeadlineMs = options.acquireDeadlineMs ?? 50;
    this.reportDeadlineMs = options.reportDeadlineMs ?? 250;
    this.defaultFallback = options.defaultFallback ?? 'FAIL_OPEN';
    if (!['FAIL_OPEN', 'FAIL_CLOSED', 'LOCAL'].includes(this.defaultFallback)) {
      throw new TypeError(`defaultFallback: ${this.defaultFallback} is not FAIL_OPEN, FAIL_CLOSED or LOCAL`);
    }
    this.specRefreshMs = options.specRefreshMs ?? 30_000;
    this.watchProgressMs = options.watchProgressMs ?? 5000;
    this.leasesEnabled = options.leases ?? true;
    this.flushIntervalMs = options.flushIntervalMs ?? 20;
    this.caller = options.caller ?? '';
    this.#token = options.token ?? null;
    this.#creds = credentials(options.tls);
    this.#current = 0;
    this.#stubs = new Map();
    this.#breakers = new Map();
    this.#session = null;
    this.stats = { rpcDecisions: 0, leasedDecisions: 0, fallbackDecisions: 0 };
    this._stubs(); // start connecting now, not at the first Acquire
  }

  #token;
  #creds;
  #current;
  #stubs;
  #breakers;
  #session;
  #closed = false;

  /** @internal The Breakers and Admin stubs of the current endpoint (one channel). */
  _stubs() {
    const ep = this.endpoints[this.#current];
    let s = this.#stubs.get(ep);
    if (!s) {
      const cbd = loadCbd();
      const breakers = new cbd.Breakers(ep, this.#creds);
      const admin = new cbd.Admin(ep, this.#creds, { channelOverride: breakers.getChannel() });
      s = { breakers, admin };
      this.#stubs.set(ep, s);
      breakers.getChannel().getConnectivityState(true);
    }
    return s;
  }

  /**
   * @internal A transient failure: the next call goes to the leader a standby named
   * in `cbd-leader` (DESIGN §11), else to the next endpoint.
   */
  _rotate(err) {
    const leader = leaderOf(err);
    if (leader) {
      const target = leader.replace(/^[a-z]+:\/\//, '').replace(/\/+$/, '');
      if (!this.endpoints.includes(target)) this.endpoints.push(target); // learned from a standby
      this.#current = this.endpoints.indexOf(target);
    } else if (this.endpoints.length > 1) {
      this.#current = (this.#current + 1) % this.endpoints.length;
    }
  }

  /** The endpoint (host:port) calls go to now. */
  get endpoint() {
    return this.endpoints[this.#current];
  }

  /** @internal Per-call metadata (the token; never logged). */
  _metadata() {
    const md = new grpc.Metadata();
    if (this.#token != null) md.set('authorization', `Bearer ${this.#token}`);
    return md;
  }

  /** @internal A unary call as a Promise with a deadline; errors typed by code. */
  _unary(service, method, request, timeoutMs) {
    const stub = this._stubs()[service];
    return new Promise((resolve, reject) => {
      stub[method](request, this._metadata(), { deadline: new Date(Date.now() + timeoutMs) }, (err, res) => {
        if (!err) return resolve(res);
        if (isTransient(err)) this._rotate(err);
        reject(fromGrpc(err));
      });
    });
  }

  /** @internal */
  _session() {
    if (!this.#session && !this.#closed) this.#session = new LeaseSession(this, this.flushIntervalMs);
    return this.#session;
  }

  /** @internal Lease counters (granted, refused, revoked, outcomesSent, ...), or null. */
  leaseStats() {
    return this.#session ? { ...this.#session.stats } : null;
  }

  /**
   * The handle of breaker `name` (one per name per client, cached).
   * @param {string} name
   * @returns {Breaker}
   */
  breaker(name) {
    let b = this.#breakers.get(name);
    if (!b) {
      b = new Breaker(this, name);
      this.#breakers.set(name, b);
    }
    return b;
  }

  /**
   * The control plane (cbd.v1.Admin) as Promises: `await client.admin.PutBreaker({...})`.
   * @type {Record<string, (request: object, timeoutMs?: number) => Promise<any>>}
   */
  get admin() {
    return new Proxy(
      {},
      { get: (_, method) => (request = {}, timeoutMs = 5000) => this._unary('admin', String(method), request, timeoutMs) },
    );
  }

  /** Resolves once the channel is connected (rejects after timeoutMs). */
  waitForReady(timeoutMs = 5000) {
    const { breakers } = this._stubs();
    return new Promise((resolve, reject) =>
      breakers.waitForReady(new Date(Date.now() + timeoutMs), (err) =>
        err ? reject(new errors.UnavailableError({ code: grpc.status.UNAVAILABLE, details: err.message })) : resolve(),
      ),
    );
  }

  /** Sends the outcomes of leased calls now and waits for the daemon's answers (bounded). */
  async flush(timeoutMs = 1000) {
    return this.#session ? this.#session.flush(timeoutMs) : true;
  }

  /**
   * A resuming watch: an async iterable of items
   * `{type: 'snapshot', breakers, revision, resync}`, `{type: 'event', event}` and
   * `{type: 'progress', revision}` (revisions as decimal strings). After a disconnect
   * it reconnects (backoff 50 ms doubling to 2 s) from the revision after the last one
   * it delivered; if that was compacted away it delivers a fresh snapshot with
   * `resync: true`. Breaking out of the loop cancels the stream.
   * @param {{prefix?: string, names?: string[], startRevision?: string|number|bigint}} [filter]
   */
  watch(filter = {}) {
    return watch(this, filter);
  }

  /** Flushes leased outcomes (at most a second), ends the Session stream, closes channels. */
  async close() {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#session) await this.#session.close(1000);
    for (const s of this.#stubs.values()) s.breakers.close();
  }
}

function credentials(tls) {
  if (!tls) return grpc.credentials.createInsecure();
  if (tls === true) return grpc.credentials.createSsl();
  return grpc.credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null);
}

/**
 * One breaker of a client: `call(fn)` or the two-step `acquire()` / permit API.
 */
class Breaker {
  /** @param {Client} client @param {string} name */
  constructor(client, name) {
    this.client = client;
    this.name = name;
    this.spec = null; // last spec learned from the daemon (GetBreaker)
    this._specAt = null;
    this._specInFlight = false;
    this._local = null; // LocalBreaker of the LOCAL fallback, while the daemon is away
    this._lease = null;
    this._leaseAsked = false;
  }

  /** The fallback policy in force now: the known spec's, else the client's default. */
  get fallback() {
    return this.spec ? FALLBACKS[this.spec.fallback] ?? 'FAIL_OPEN' : this.client.defaultFallback;
  }

  /** Whether a valid lease lets this breaker decide locally right now. */
  get leased() {
    const l = this._lease;
    return l != null && l.valid && monotonic() < l.expiresAt;
  }

  /** @internal */
  _setLease(lease) {
    const old = this._lease;
    if (old) old.valid = false; // a renewal replaces it; its counts are still sent
    this._lease = lease;
  }

  /** @internal A pushed revocation or a lost stream: never use the lease again. */
  _voidLease() {
    if (this._lease) this._lease.valid = false;
    this._lease = null;
  }

  /** Fetches the spec now (Admin GetBreaker) and remembers it; NOT_FOUND forgets it. */
  async refreshSpec() {
    this._specAt = monotonic();
    try {
      const res = await this.client._unary('admin', 'GetBreaker', { name: this.name }, 5000);
      this.spec = res.breaker.spec;
      return this.spec;
    } catch (err) {
      if (err instanceof errors.NotFoundError) this.spec = null;
      throw err;
    }
  }

  #specFetchIfDue() {
    if (this._specInFlight) return;
    const every = this.spec ? this.client.specRefreshMs : SPEC_RETRY_MS;
    if (this._specAt != null && monotonic() - this._specAt < every) return;
    this._specInFlight = true;
    this.refreshSpec()
      .catch(() => {}) // best effort: the default fallback applies meanwhile
      .finally(() => (this._specInFlight = false));
  }

  /** A leased decision (synchronous), or null when there is no valid lease. */
  #leasedPermit() {
    const l = this._lease;
    if (l == null || !l.valid || monotonic() >= l.expiresAt) return null;
    l.used = true;
    this.client.stats.leasedDecisions++;
    return new Permit(this, { kind: 'leased', lease: l }, 'STATE_CLOSED');
  }

  /**
   * May a call proceed? Resolves to a Permit (report it once: success / failure /
   * ignore), or rejects with BreakerOpenError. Takes at most the client's Acquire
   * deadline: past it, or on a transient error, the fallback policy decides. Other
   * errors (NotFoundError, InvalidArgumentError, PermissionDeniedError, ...) reject.
   * @returns {Promise<Permit>}
   */
  async acquire() {
    const leased = this.#leasedPermit();
    if (leased) return leased;
    let answer;
    try {
      answer = await this.client._unary('breakers', 'Acquire', { name: this.name, caller: this.client.caller }, this.client.acquireDeadlineMs);
    } catch (err) {
      if (isTransient(err)) return this.#fallBack(err);
      this._local = null;
      throw err;
    }
    this._local = null; // the daemon answers again: the local breaker is done with
    this.client.stats.rpcDecisions++;
    this.#specFetchIfDue();
    if (answer.valid_until && this.client.leasesEnabled) this.client._session()?.request(this);
    if (answer.allowed) return new Permit(this, { kind: 'daemon', permit: answer.permit }, answer.state);
    throw new BreakerOpenError(this.name, answer.state, durationMs(answer.retry_after));
  }

  #fallBack(cause) {
    this.client.stats.fallbackDecisions++;
    const policy = this.fallback;
    if (policy === 'FAIL_OPEN') return new Permit(this, { kind: 'unguarded', cause }, null);
    if (policy === 'FAIL_CLOSED') throw new BreakerOpenError(this.name, 'STATE_OPEN', null, 'FAIL_CLOSED');
    this._local ??= new LocalBreaker(this.spec, monotonic);
    const local = this._local;
    const d = local.acquire();
    if (d.allowed) return new Permit(this, { kind: 'local', local, probe: d.probe }, d.state);
    throw new BreakerOpenError(this.name, d.state, d.retryAfter, 'LOCAL');
  }

  /**
   * Runs `fn` under the breaker: acquires (throws BreakerOpenError without running
   * fn), runs it, reports success, or failure if it throws (rethrown), with its
   * duration. Under a valid lease the decision is local and synchronous. A failed
   * report does not change the result.
   * @template T
   * @param {() => T | Promise<T>} fn
   * @param {{classify?: (error: unknown) => 'failure'|'ignored'}} [options] how a thrown error counts
   * @returns {Promise<T>}
   */
  async call(fn, options = {}) {
    const permit = this.#leasedPermit() ?? (await this.acquire());
    let result;
    try {
      result = await fn();
    } catch (err) {
      const outcome = options.classify ? options.classify(err) : 'failure';
      await permit.report(outcome).catch(() => {}); // never hide fn's own error behind ours
      throw err;
    }
    await permit.report('success').catch(() => {});
    return result;
  }
}

/**
 * The right to make one call; report how it went exactly once.
 * `fallback` is null when the daemon (or a lease) decided, else 'FAIL_OPEN' or 'LOCAL'.
 */
class Permit {
  constructor(breaker, how, state) {
    this.breaker = breaker;
    this.state = state;
    this.leased = how.kind === 'leased';
    this.fallback = how.kind === 'unguarded' ? 'FAIL_OPEN' : how.kind === 'local' ? 'LOCAL' : null;
    this.#how = how;
    this.#started = process.hrtime.bigint();
  }

  #how;
  #started;
  #done = false;

  /** The call succeeded (a slow success still counts as slow by its duration). */
  success() {
    return this.report('success');
  }
  /** The dependency failed. */
  failure() {
    return this.report('failure');
  }
  /** Counts for nothing (the caller's own fault, a cancellation); frees a probe slot. */
  ignore() {
    return this.report('ignored');
  }

  /**
   * Reports the outcome. Resolves to the daemon's ReportResponse ({state, stale, ...})
   * for a daemon permit, else null. A second report throws.
   * @param {'success'|'failure'|'ignored'} outcome
   */
  report(outcome) {
    if (this.#done) return Promise.reject(new errors.CbdError('permit already reported'));
    if (!(outcome in OUTCOMES)) return Promise.reject(new TypeError(`outcome: ${outcome}`));
    this.#done = true;
    const ns = process.hrtime.bigint() - this.#started;
    const how = this.#how;
    switch (how.kind) {
      case 'leased': {
        const slow = outcome === 'success' && how.lease.slowMs != null && Number(ns) / 1e6 > how.lease.slowMs;
        how.lease.pending.add(slow ? 'slow' : outcome);
        return Promise.resolve(null);
      }
      case 'local':
        how.local.report(outcome, how.probe);
        return Promise.resolve(null);
      case 'unguarded':
        return Promise.resolve(null);
      default: {
        const client = this.breaker.client;
        const req = {
          permit: how.permit, outcome: OUTCOMES[outcome], duration: durationFromNs(ns), caller: client.caller,
        };
        return client._unary('breakers', 'Report', req, client.reportDeadlineMs);
      }
    }
  }
}

const toBig = (r) => BigInt(r);

async function* watch(client, filter) {
  const INITIAL_BACKOFF = 50;
  const MAX_BACKOFF = 2000;
  let next = filter.startRevision != null ? toBig(filter.startRevision) : null; // resume point
  let backoff = INITIAL_BACKOFF;
  let resync = false;
  let snapshot = null; // chunks of a snapshot being assembled
  for (;;) {
    const request = {
      filter: { prefix: filter.prefix ?? '', names: filter.names ?? [] },
      progress_interval: durationFromNs(BigInt(client.watchProgressMs) * 1_000_000n),
    };
    if (next != null) request.start_revision = String(next);
    const call = client._stubs().breakers.Watch(request, client._metadata());
    const queue = [];
    let wake = null;
    const push = (item) => {
      queue.push(item);
      if (wake) wake();
    };
    call.on('data', (msg) => push({ msg }));
    call.on('error', (error) => push({ error }));
    call.on('end', () => push({ end: true }));
    let failure = null;
    try {
      for (;;) {
        while (queue.length === 0) await new Promise((r) => (wake = r));
        wake = null;
        const item = queue.shift();
        if (item.error || item.end) {
          failure = item.error ?? { code: grpc.status.UNAVAILABLE, details: 'watch stream ended' };
          break;
        }
        const msg = item.msg;
        backoff = INITIAL_BACKOFF; // the daemon answered: reconnects start small again
        if (msg.kind === 'snapshot') {
          snapshot ??= [];
          snapshot.push(...msg.snapshot.breakers);
          if (!msg.snapshot.done) continue;
          const revision = msg.snapshot.revision;
          next = toBig(revision) + 1n;
          const breakers = snapshot;
          snapshot = null;
          yield { type: 'snapshot', breakers, revision, resync };
          resync = false;
        } else if (msg.kind === 'event') {
          next = toBig(msg.event.revision) + 1n;
          yield { type: 'event', event: msg.event };
        } else if (msg.kind === 'progress_revision') {
          const r = toBig(msg.progress_revision) + 1n;
          if (next == null || r > next) next = r;
          yield { type: 'progress', revision: msg.progress_revision };
        }
      }
    } finally {
      if (!failure) call.cancel(); // the caller stopped iterating
    }
    call.cancel();
    snapshot = null;
    if (failure.code === grpc.status.OUT_OF_RANGE) {
      next = null; // what we missed is gone: start over from a snapshot
      resync = true;
      continue;
    }
    if (!isTransient(failure)) throw fromGrpc(failure);
    client._rotate(failure);
    await new Promise((r) => setTimeout(r, backoff * (0.8 + 0.4 * Math.random())));
    backoff = Math.min(backoff * 2, MAX_BACKOFF);
  }
}

module.exports = { Client, Breaker, Permit, Aggregate, LocalBreaker, PROTO_DIR, loadCbd, ...errors };
