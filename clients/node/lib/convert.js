'use strict';
// google.protobuf.Duration <-> milliseconds, and the cbd.v1 package loaded from the
// proto copy shipped inside this package (proto/, checked against the repo by a test).

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_DIR = path.join(__dirname, '..', 'proto');

/** Milliseconds of a decoded Duration; null when unset. */
function durationMs(d) {
  if (d == null) return null;
  return Number(d.seconds) * 1000 + Number(d.nanos || 0) / 1e6;
}

/** A Duration message from nanoseconds (bigint). */
function durationFromNs(ns) {
  return { seconds: String(ns / 1_000_000_000n), nanos: Number(ns % 1_000_000_000n) };
}

let cached = null;
/** The cbd.v1 package (Breakers, Admin) as grpc-js service constructors. */
function loadCbd() {
  if (cached) return cached;
  const definition = protoLoader.loadSync(['cbd/v1/breakers.proto', 'cbd/v1/admin.proto'], {
    includeDirs: [PROTO_DIR],
    keepCase: true, // field names as in the .proto: retry_after, valid_until
    longs: String, // uint64 revisions and generations arrive as decimal strings
    enums: String, // 'STATE_OPEN'
    defaults: true,
    oneofs: true, // oneof name holds the field set: kind = 'snapshot' | 'event' | ...
  });
  cached = grpc.loadPackageDefinition(definition).cbd.v1;
  return cached;
}

module.exports = { PROTO_DIR, durationMs, durationFromNs, loadCbd };
