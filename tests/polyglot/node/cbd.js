'use strict';
// Test support: cbd.v1 loaded from proto/ at run time, and a real cbd daemon on
// 127.0.0.1:0 with a temporary data dir.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const REPO = path.resolve(__dirname, '..', '..', '..'); // tests/polyglot/node -> repo root
const PROTO_DIR = path.join(REPO, 'proto', 'proto');
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 20_000; // the daemon drains for at most 10 s

/** The cbd.v1 package: proto/ read at run time, google/protobuf/* from protobufjs. */
function loadCbd() {
  const definition = protoLoader.loadSync(['cbd/v1/breakers.proto', 'cbd/v1/admin.proto'], {
    includeDirs: [PROTO_DIR],
    keepCase: true, // field names as in the .proto: retry_after, start_revision
    longs: String, // uint64 revisions arrive as decimal strings
    enums: String, // 'STATE_OPEN'
    defaults: true,
    oneofs: true, // WatchResponse.kind = 'snapshot' | 'event' | 'progress_revision'
  });
  return grpc.loadPackageDefinition(definition).cbd.v1;
}

// grpc.health.v1 (the standard health protocol; not part of proto/).
const health = grpc.loadPackageDefinition(
  protoLoader.fromJSON(
    {
      nested: {
        grpc: { nested: { health: { nested: { v1: { nested: {
          HealthCheckRequest: { fields: { service: { type: 'string', id: 1 } } },
          HealthCheckResponse: {
            fields: { status: { type: 'ServingStatus', id: 1 } },
            nested: { ServingStatus: { values: { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } } },
          },
          Health: { methods: { Check: { requestType: 'HealthCheckRequest', responseType: 'HealthCheckResponse' } } },
        } } } } } },
      },
    },
    { enums: String, defaults: true },
  ),
).grpc.health.v1;

/** Promise form of a unary call with a deadline. */
function unary(client, method, request, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + timeoutMs }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function cbdBin() {
  const bin = process.env.CBD_BIN || path.join(REPO, 'target', 'debug', 'cbd');
  if (!fs.existsSync(bin)) throw new Error(`cbd binary not found at ${bin} (cargo build -p cbd, or set CBD_BIN)`);
  return bin;
}

/** Starts cbd and waits for its addr file, then for health SERVING. */
async function startDaemon() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cbd-node-'));
  const addrFile = path.join(dir, 'addr');
  const logPath = path.join(dir, 'cbd.log');
  const log = fs.openSync(logPath, 'w');
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CBD_')));
  const child = spawn(
    cbdBin(),
    ['--listen', '127.0.0.1:0', '--data-dir', path.join(dir, 'data'), '--addr-file', addrFile],
    { stdio: ['ignore', log, log], env },
  );
  fs.closeSync(log);
  let exited = null;
  const exit = new Promise((resolve) => child.on('exit', (code, signal) => resolve((exited = { code, signal }))));
  const logTail = () => fs.readFileSync(logPath, 'utf8').split('\n').slice(-40).join('\n');

  const daemon = {
    dir,
    address: null,
    breakers: null,
    admin: null,
    logTail,
    /** SIGTERM; resolves to the exit code once it has exited. */
    async stop() {
      for (const c of [daemon.breakers, daemon.admin]) c?.close();
      if (!exited) {
        child.kill('SIGTERM');
        let timer;
        const timeout = new Promise((resolve) => (timer = setTimeout(resolve, STOP_TIMEOUT_MS, 'timeout')));
        const outcome = await Promise.race([exit, timeout]);
        clearTimeout(timer);
        if (outcome === 'timeout') {
          child.kill('SIGKILL');
          await exit;
          throw new Error(`cbd did not stop within ${STOP_TIMEOUT_MS} ms of SIGTERM:\n${logTail()}`);
        }
      }
      if (exited.code === 0) fs.rmSync(dir, { recursive: true, force: true }); // else keep the log
      return exited.code;
    },
  };

  try {
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!fs.existsSync(addrFile)) {
      if (exited) throw new Error(`cbd exited (${JSON.stringify(exited)}) before serving:\n${logTail()}`);
      if (Date.now() > deadline) throw new Error(`cbd wrote no addr file in time:\n${logTail()}`);
      await sleep(20);
    }
    daemon.address = fs.readFileSync(addrFile, 'utf8').trim();
    const checker = new health.Health(daemon.address, grpc.credentials.createInsecure());
    try {
      for (;;) {
        const status = await unary(checker, 'Check', { service: '' }, 1000).then(
          (r) => r.status,
          () => null,
        );
        if (status === 'SERVING') break;
        if (exited) throw new Error(`cbd exited (${JSON.stringify(exited)}):\n${logTail()}`);
        if (Date.now() > deadline) throw new Error(`cbd not SERVING in time (last: ${status}):\n${logTail()}`);
        await sleep(20);
      }
    } finally {
      checker.close();
    }
    const cbd = loadCbd();
    daemon.breakers = new cbd.Breakers(daemon.address, grpc.credentials.createInsecure());
    daemon.admin = new cbd.Admin(daemon.address, grpc.credentials.createInsecure());
    return daemon;
  } catch (err) {
    await daemon.stop().catch(() => {});
    throw err;
  }
}

/** Reads a server stream into a queue, so that every wait has a deadline. */
class StreamReader {
  constructor(call) {
    this.call = call;
    this.items = [];
    this.waiters = [];
    const push = (item) => (this.waiters.length ? this.waiters.shift()(item) : this.items.push(item));
    call.on('data', (msg) => push({ msg }));
    call.on('error', (error) => push({ error }));
    call.on('end', () => push({ end: true }));
  }

  async next(deadline) {
    const item = this.items.length
      ? this.items.shift()
      : await new Promise((resolve) => {
          const timer = setTimeout(() => {
            this.waiters.splice(this.waiters.indexOf(waiter), 1);
            resolve({ timeout: true });
          }, Math.max(0, deadline - Date.now()));
          const waiter = (item) => {
            clearTimeout(timer);
            resolve(item);
          };
          this.waiters.push(waiter);
        });
    if (item.timeout) throw new Error('stream: no message before the deadline');
    if (item.error) throw new Error(`stream failed: ${item.error.code} ${item.error.details}`);
    if (item.end) throw new Error('stream ended');
    return item.msg;
  }

  cancel() {
    this.call.cancel();
  }
}

module.exports = { loadCbd, startDaemon, unary, sleep, StreamReader, PROTO_DIR };
