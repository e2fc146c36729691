'use strict';
// The in-process breaker of the LOCAL fallback: a documented SUBSET of the daemon's
// state machine (see README "Fallback"): consecutive failures trip it, it stays open
// for open_duration, then lets half_open_permits probes through; success_threshold
// probe successes close it, a probe failure opens it again. Not implemented: the
// failure-rate and slow-call-rate conditions, windows, backoff, permit_ttl.

const { durationMs } = require('./convert');

class LocalBreaker {
  /**
   * @param {object|null} spec a cbd.v1.BreakerSpec as decoded (or null: defaults)
   * @param {() => number} now monotonic milliseconds (injectable for tests)
   */
  constructor(spec, now) {
    const s = spec ?? {};
    this.now = now;
    // Unset consecutive_failures means 5 only when no other trip condition is set; the
    // rate conditions are not implemented here, so 5 is the subset's default either way.
    this.threshold = s.consecutive_failures || 5;
    this.openMs = durationMs(s.open_duration) ?? 30_000;
    this.probes = s.half_open_permits || 1;
    this.successesNeeded = s.success_threshold || 1;
    this.state = 'STATE_CLOSED';
    this.run = 0;
    this.openUntil = 0;
    this.inFlight = 0;
    this.halfOpenSuccesses = 0;
  }

  #tick() {
    if (this.state === 'STATE_OPEN' && this.now() >= this.openUntil) {
      this.state = 'STATE_HALF_OPEN';
      this.inFlight = 0;
      this.halfOpenSuccesses = 0;
    }
  }

  /** @returns {{allowed: boolean, state: string, retryAfter: number|null, probe: boolean}} */
  acquire() {
    this.#tick();
    if (this.state === 'STATE_CLOSED') return { allowed: true, state: this.state, retryAfter: null, probe: false };
    if (this.state === 'STATE_HALF_OPEN' && this.inFlight < this.probes) {
      this.inFlight++;
      return { allowed: true, state: this.state, retryAfter: null, probe: true };
    }
    const retryAfter = this.state === 'STATE_OPEN' ? Math.max(0, this.openUntil - this.now()) : 0;
    return { allowed: false, state: this.state, retryAfter, probe: false };
  }

  #open() {
    this.state = 'STATE_OPEN';
    this.openUntil = this.now() + this.openMs;
    this.run = 0;
  }

  /** @param {'success'|'failure'|'ignored'} outcome @param {boolean} probe */
  report(outcome, probe) {
    if (probe) {
      if (this.state !== 'STATE_HALF_OPEN') return;
      this.inFlight = Math.max(0, this.inFlight - 1);
      if (outcome === 'failure') this.#open();
      else if (outcome === 'success' && ++this.halfOpenSuccesses >= this.successesNeeded) {
        this.state = 'STATE_CLOSED';
        this.run = 0;
      }
      return;
    }
    if (this.state !== 'STATE_CLOSED') return; // a permit from before the trip: stale
    if (outcome === 'success') this.run = 0;
    else if (outcome === 'failure' && ++this.run >= this.threshold) this.#open();
  }
}

module.exports = { LocalBreaker };
