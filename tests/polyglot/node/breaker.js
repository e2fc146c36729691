'use strict';
// A thin, idiomatic wrapper over cbd.v1.Breakers (Acquire, then Report):
//
//   const payments = new Breaker(breakersClient, 'payments.charge');
//   const receipt = await payments.call(() => charge(card));
//
// call(fn) acquires a permit (throws BreakerOpenError when the daemon rejects the call),
// runs fn, and reports OUTCOME_SUCCESS or OUTCOME_FAILURE (rethrowing fn's error) with
// the call's duration. `client` is a cbd.v1.Breakers client from @grpc/grpc-js, loaded
// by @grpc/proto-loader with { keepCase: true, enums: String, defaults: true }.

class BreakerOpenError extends Error {
  constructor(breaker, state, retryAfterMs) {
    super(`breaker ${breaker} is ${state}` + (retryAfterMs == null ? '' : `; retry after ${retryAfterMs} ms`));
    this.name = 'BreakerOpenError';
    this.breaker = breaker;
    this.state = state; // 'STATE_OPEN' or 'STATE_HALF_OPEN'
    this.retryAfterMs = retryAfterMs; // null when unknown (forced open)
  }
}

class Breaker {
  constructor(client, name, { timeoutMs = 5000 } = {}) {
    Object.assign(this, { client, name, timeoutMs });
  }

  #rpc(method, request) {
    const deadline = Date.now() + this.timeoutMs;
    return new Promise((resolve, reject) =>
      this.client[method](request, { deadline }, (err, res) => (err ? reject(err) : resolve(res))),
    );
  }

  async call(fn) {
    const decision = await this.#rpc('Acquire', { name: this.name });
    if (!decision.allowed) {
      const d = decision.retry_after;
      throw new BreakerOpenError(this.name, decision.state, d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : null);
    }
    const started = process.hrtime.bigint();
    const report = (outcome) => {
      const ns = process.hrtime.bigint() - started;
      const duration = { seconds: String(ns / 1_000_000_000n), nanos: Number(ns % 1_000_000_000n) };
      return this.#rpc('Report', { permit: decision.permit, outcome, duration });
    };
    let result;
    try {
      result = await fn();
    } catch (err) {
      await report('OUTCOME_FAILURE').catch(() => {}); // never hide fn's own error behind ours
      throw err;
    }
    await report('OUTCOME_SUCCESS');
    return result;
  }
}

module.exports = { Breaker, BreakerOpenError };
