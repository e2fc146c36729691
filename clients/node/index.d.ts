// Hand-written types of cbd-client (checked by `tsc --noEmit` on test/types-check.ts).

import type { Metadata } from '@grpc/grpc-js';

/** What a client does when the daemon cannot answer within the Acquire deadline. */
export type FallbackPolicy = 'FAIL_OPEN' | 'FAIL_CLOSED' | 'LOCAL';
export type BreakerState = 'STATE_UNSPECIFIED' | 'STATE_CLOSED' | 'STATE_OPEN' | 'STATE_HALF_OPEN';
export type OutcomeName = 'success' | 'failure' | 'ignored';

/** google.protobuf.Duration as decoded (seconds is a decimal string). */
export interface Duration {
  seconds: string | number;
  nanos?: number;
}

export interface ClientOptions {
  /** host:port, or several (a transient failure moves to the next). Default 127.0.0.1:7411. */
  endpoints?: string | string[];
  /** Bearer token, sent as `authorization: Bearer <token>`. */
  token?: string;
  /** TLS: true for the system roots, or PEM buffers (cert + key for mTLS). */
  tls?: boolean | { ca?: Buffer; cert?: Buffer; key?: Buffer };
  /** Past it the breaker's fallback policy decides. Default 50. */
  acquireDeadlineMs?: number;
  /** Default 250. */
  reportDeadlineMs?: number;
  /** Until a breaker's spec is known. Default 'FAIL_OPEN'. */
  defaultFallback?: FallbackPolicy;
  /** Ask for leases when a spec sets cache_ttl. Default true. */
  leases?: boolean;
  /** How often leased outcomes are sent. Default 20. */
  flushIntervalMs?: number;
  /** How often a known spec is fetched again. Default 30000. */
  specRefreshMs?: number;
  /** Progress interval asked of watches. Default 5000. */
  watchProgressMs?: number;
  /**
   * Sent as `caller` on every Acquire, Report and leased outcome (docs/DESIGN.md §3.7):
   * the daemon attributes failures to it. Default: none (a named token's name applies).
   */
  caller?: string;
}

export interface ClientStats {
  rpcDecisions: number;
  leasedDecisions: number;
  fallbackDecisions: number;
}

export interface LeaseStats {
  granted: number;
  refused: number;
  revoked: number;
  outcomesSent: number;
  outcomesStale: number;
  outcomesDuplicate: number;
}

/** A cbd.v1.BreakerStatus as decoded (uint64 fields as decimal strings). */
export interface BreakerStatus {
  name: string;
  spec: Record<string, unknown>;
  state: BreakerState;
  override: string;
  generation: string;
  window_calls: number;
  window_failures: number;
  window_slow_calls: number;
  consecutive_failures: number;
  [field: string]: unknown;
}

/** A cbd.v1.Event as decoded. */
export interface WatchEventMessage {
  revision: string;
  name: string;
  kind: string;
  previous_state: BreakerState;
  state: BreakerState;
  override: string;
  generation: string;
  reason: string;
  [field: string]: unknown;
}

export type WatchItem =
  | { type: 'snapshot'; breakers: BreakerStatus[]; revision: string; resync: boolean }
  | { type: 'event'; event: WatchEventMessage }
  | { type: 'progress'; revision: string };

export interface WatchFilter {
  prefix?: string;
  names?: string[];
  /** Resume from this revision (inclusive); unset: snapshot first. */
  startRevision?: string | number | bigint;
}

/** cbd.v1.ReportResponse as decoded. */
export interface ReportResponse {
  state: BreakerState;
  stale: boolean;
  revision: string;
  generation: string;
}

export class Client {
  constructor(options?: ClientOptions);
  readonly endpoints: string[];
  /** The endpoint (host:port) calls go to now: it follows a standby's leader hint. */
  readonly endpoint: string;
  readonly acquireDeadlineMs: number;
  readonly stats: ClientStats;
  /** The handle of breaker `name` (cached per client). */
  breaker(name: string): Breaker;
  /** cbd.v1.Admin as Promises, e.g. `client.admin.PutBreaker({ name, spec })`. */
  readonly admin: Record<string, (request?: object, timeoutMs?: number) => Promise<any>>;
  waitForReady(timeoutMs?: number): Promise<void>;
  /** Sends leased outcomes now; resolves true once the daemon answered them all. */
  flush(timeoutMs?: number): Promise<boolean>;
  leaseStats(): LeaseStats | null;
  watch(filter?: WatchFilter): AsyncIterable<WatchItem>;
  close(): Promise<void>;
}

export interface CallOptions {
  /** How a thrown error counts; default 'failure'. */
  classify?: (error: unknown) => 'failure' | 'ignored';
}

export class Breaker {
  readonly client: Client;
  readonly name: string;
  /** The last spec learned from the daemon, or null. */
  readonly spec: Record<string, unknown> | null;
  /** The policy in force now: the known spec's, else the client's default. */
  readonly fallback: FallbackPolicy;
  /** Whether a valid lease decides locally right now. */
  readonly leased: boolean;
  acquire(): Promise<Permit>;
  call<T>(fn: () => T | Promise<T>, options?: CallOptions): Promise<T>;
  refreshSpec(): Promise<Record<string, unknown>>;
}

export class Permit {
  readonly breaker: Breaker;
  readonly state: BreakerState | null;
  readonly leased: boolean;
  /** null: the daemon (or a lease) decided; else the fallback policy that did. */
  readonly fallback: 'FAIL_OPEN' | 'LOCAL' | null;
  success(): Promise<ReportResponse | null>;
  failure(): Promise<ReportResponse | null>;
  ignore(): Promise<ReportResponse | null>;
  report(outcome: OutcomeName): Promise<ReportResponse | null>;
}

export class CbdError extends Error {}
export class BreakerOpenError extends CbdError {
  readonly breaker: string;
  readonly state: BreakerState;
  /** Milliseconds; null when unknown (forced open, fail closed). */
  readonly retryAfter: number | null;
  /** null: the daemon decided. */
  readonly fallback: 'FAIL_CLOSED' | 'LOCAL' | null;
}
export class RpcError extends CbdError {
  /** The gRPC status code. */
  readonly code: number;
  readonly details: string;
  readonly metadata: Metadata | null;
}
export class InvalidArgumentError extends RpcError {}
export class NotFoundError extends RpcError {}
export class AlreadyExistsError extends RpcError {}
export class ResourceExhaustedError extends RpcError {}
export class FailedPreconditionError extends RpcError {}
export class UnavailableError extends RpcError {
  /** A standby's answer: the leader's URL, '' when it knows none; null otherwise. */
  readonly leader: string | null;
}
export class DeadlineExceededError extends RpcError {}
export class UnauthenticatedError extends RpcError {}
export class PermissionDeniedError extends RpcError {}
export class CompactedError extends RpcError {
  /** The oldest retained revision (decimal string), when the daemon said so. */
  readonly oldestRetained: string | null;
}

/** Maps a gRPC error to its typed class. */
export function fromGrpc(err: { code: number; details?: string; message?: string }): CbdError;
export function isTransient(err: { code?: number } | null | undefined): boolean;
export const COMPACT_REVISION_METADATA: 'cbd-compact-revision';
export const PROTO_DIR: string;
