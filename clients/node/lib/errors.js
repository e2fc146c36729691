'use strict';
// The client's errors: typed by gRPC status code (never by message text), plus the
// breaker's rejection (BreakerOpenError), which is a normal answer, not an RPC failure.

const { status: Code } = require('@grpc/grpc-js');

/** Trailing-metadata key of an OUT_OF_RANGE watch error: the oldest retained revision. */
const COMPACT_REVISION_METADATA = 'cbd-compact-revision';

/**
 * Metadata key of a standby's UNAVAILABLE (DESIGN §11): the leader's URL, empty while
 * no leader is known.
 */
const LEADER_METADATA = 'cbd-leader';

/** Base class of every error this package throws. */
class CbdError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * The breaker said no: the call must not be made.
 * `fallback` is null when the daemon decided, else the policy that decided because the
 * daemon could not be reached in time ('FAIL_CLOSED' or 'LOCAL').
 */
class BreakerOpenError extends CbdError {
  /**
   * @param {string} breaker
   * @param {string} state 'STATE_OPEN' or 'STATE_HALF_OPEN'
   * @param {number|null} retryAfter milliseconds; null when unknown (forced open, fail closed)
   * @param {string|null} fallback
   */
  constructor(breaker, state, retryAfter, fallback = null) {
    let msg = `breaker ${JSON.stringify(breaker)} rejected the call (${state}`;
    if (retryAfter != null) msg += `, retry after ${retryAfter} ms`;
    if (fallback === 'FAIL_CLOSED') msg += ', daemon unreachable: fail closed';
    if (fallback === 'LOCAL') msg += ', daemon unreachable: local breaker';
    super(msg + ')');
    this.breaker = breaker;
    this.state = state;
    this.retryAfter = retryAfter;
    this.fallback = fallback;
  }
}

/** An RPC failed; `code` is the gRPC status code, `details` the daemon's message. */
class RpcError extends CbdError {
  constructor(err) {
    super(`${Code[err.code] ?? err.code}: ${err.details ?? err.message}`, { cause: err });
    this.code = err.code;
    this.details = err.details ?? err.message;
    this.metadata = err.metadata ?? null;
  }
}
/** INVALID_ARGUMENT: a bad name, spec, filter or permit. */
class InvalidArgumentError extends RpcError {}
/** NOT_FOUND: no such breaker (and no template for its prefix). */
class NotFoundError extends RpcError {}
/** ALREADY_EXISTS. */
class AlreadyExistsError extends RpcError {}
/** RESOURCE_EXHAUSTED: a daemon limit (breakers, watchers, message size). */
class ResourceExhaustedError extends RpcError {}
/** FAILED_PRECONDITION: e.g. a LeasedOutcomes sequence gap. */
class FailedPreconditionError extends RpcError {}
/**
 * UNAVAILABLE: the daemon could not be reached, or the replica is a standby.
 * `leader`: the leader's URL a standby named, '' when it knows none, null when the
 * answer is not a standby's.
 */
class UnavailableError extends RpcError {
  constructor(err) {
    super(err);
    this.leader = leaderOf(err, true);
  }
}
/** DEADLINE_EXCEEDED: no answer in time (the client's own deadlines included). */
class DeadlineExceededError extends RpcError {}
/** UNAUTHENTICATED: missing or unknown token. */
class UnauthenticatedError extends RpcError {}
/** PERMISSION_DENIED: the token's role may not call this RPC. */
class PermissionDeniedError extends RpcError {}
/** OUT_OF_RANGE on a watch: the start revision was compacted away. */
class CompactedError extends RpcError {
  constructor(err) {
    super(err);
    const v = err.metadata?.get?.(COMPACT_REVISION_METADATA)?.[0];
    /** The oldest revision the daemon still holds, when it said so (decimal string). */
    this.oldestRetained = v == null ? null : String(v);
  }
}

/** The one mapping from gRPC code to error class; codes not listed become RpcError. */
const BY_CODE = new Map([
  [Code.INVALID_ARGUMENT, InvalidArgumentError],
  [Code.NOT_FOUND, NotFoundError],
  [Code.ALREADY_EXISTS, AlreadyExistsError],
  [Code.RESOURCE_EXHAUSTED, ResourceExhaustedError],
  [Code.FAILED_PRECONDITION, FailedPreconditionError],
  [Code.OUT_OF_RANGE, CompactedError],
  [Code.UNAVAILABLE, UnavailableError],
  [Code.DEADLINE_EXCEEDED, DeadlineExceededError],
  [Code.UNAUTHENTICATED, UnauthenticatedError],
  [Code.PERMISSION_DENIED, PermissionDeniedError],
]);

/** Codes after which trying again later may work: Acquire applies the fallback policy on them. */
const TRANSIENT = new Set([
  Code.UNAVAILABLE,
  Code.DEADLINE_EXCEEDED,
  Code.CANCELLED,
  Code.UNKNOWN,
  Code.INTERNAL,
  Code.ABORTED,
  Code.DATA_LOSS,
]);

/** A grpc-js ServiceError (or a google.rpc.Status from a stream item) as a typed error. */
function fromGrpc(err) {
  if (err instanceof CbdError) return err;
  const Cls = BY_CODE.get(err.code) ?? RpcError;
  return new Cls(err);
}

/**
 * The leader a standby named in `err` (raw gRPC error or RpcError): its URL, or
 * (withEmpty) '' for a standby that knows none; null otherwise.
 */
function leaderOf(err, withEmpty = false) {
  const v = err?.metadata?.get?.(LEADER_METADATA)?.[0];
  if (v == null) return null;
  const url = String(v);
  return url || withEmpty ? url : null;
}

/** Whether an RpcError (or raw gRPC error) is transient. */
function isTransient(err) {
  return err != null && TRANSIENT.has(err.code);
}

module.exports = {
  COMPACT_REVISION_METADATA,
  LEADER_METADATA,
  leaderOf,
  CbdError,
  BreakerOpenError,
  RpcError,
  InvalidArgumentError,
  NotFoundError,
  AlreadyExistsError,
  ResourceExhaustedError,
  FailedPreconditionError,
  UnavailableError,
  DeadlineExceededError,
  UnauthenticatedError,
  PermissionDeniedError,
  CompactedError,
  BY_CODE,
  fromGrpc,
  isTransient,
};
