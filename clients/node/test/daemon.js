'use strict';
// Test support: a real cbd (CBD_BIN) on 127.0.0.1:0 with a temporary data dir, ready
// once grpc.health.v1 Check answers SERVING (never a fixed sleep). It can be
// SIGSTOPped, killed -9 and restarted on the same port and data dir.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const START_TIMEOUT_MS = 30_000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const health = grpc.loadPackageDefinition(
  protoLoader.fromJSON(
    {
      nested: { grpc: { nested: { health: { nested: { v1: { nested: {
        HealthCheckRequest: { fields: { service: { type: 'string', id: 1 } } },
        HealthCheckResponse: {
          fields: { status: { type: 'ServingStatus', id: 1 } },
          nested: { ServingStatus: { values: { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } } },
        },
        Health: { methods: { Check: { requestType: 'HealthCheckRequest', responseType: 'HealthCheckResponse' } } },
      } } } } } } },
    },
    { enums: String, defaults: true },
  ),
).grpc.health.v1;

function cbdBin() {
  const bin = process.env.CBD_BIN || path.resolve(__dirname, '..', '..', '..', 'target', 'debug', 'cbd');
  if (!fs.existsSync(bin)) throw new Error(`cbd binary not found at ${bin} (set CBD_BIN)`);
  return bin;
}

/** Polls `check` every 20 ms until it returns truthy; throws after timeoutMs. */
async function until(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

class Daemon {
  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cbd-client-node-'));
    this.address = null;
    this.child = null;
    this.exited = null;
  }

  logTail() {
    try {
      return fs.readFileSync(path.join(this.dir, 'cbd.log'), 'utf8').split('\n').slice(-30).join('\n');
    } catch {
      return '';
    }
  }

  /** Starts cbd (on the previous address when restarting) and waits for SERVING. */
  async start() {
    const addrFile = path.join(this.dir, 'addr');
    fs.rmSync(addrFile, { force: true });
    const log = fs.openSync(path.join(this.dir, 'cbd.log'), 'a');
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CBD_')));
    const listen = this.address ?? '127.0.0.1:0';
    this.exited = null;
    const child = spawn(cbdBin(), ['--listen', listen, '--data-dir', path.join(this.dir, 'data'), '--addr-file', addrFile], {
      stdio: ['ignore', log, log],
      env,
    });
    fs.closeSync(log);
    this.child = child;
    this.exit = new Promise((resolve) => child.on('exit', (code, signal) => resolve((this.exited = { code, signal }))));
    await until(
      () => {
        if (this.exited) throw new Error(`cbd exited ${JSON.stringify(this.exited)}:\n${this.logTail()}`);
        return fs.existsSync(addrFile) && fs.readFileSync(addrFile, 'utf8').trim();
      },
      START_TIMEOUT_MS,
      'the addr file',
    ).then((a) => (this.address = a));
    const checker = new health.Health(this.address, grpc.credentials.createInsecure());
    try {
      await until(
        () =>
          new Promise((resolve) => {
            if (this.exited) throw new Error(`cbd exited:\n${this.logTail()}`);
            checker.Check({ service: '' }, { deadline: Date.now() + 1000 }, (err, res) => resolve(!err && res.status === 'SERVING'));
          }),
        START_TIMEOUT_MS,
        'health SERVING',
      );
    } finally {
      checker.close();
    }
    return this;
  }

  pause() {
    this.child.kill('SIGSTOP');
  }
  resume() {
    this.child.kill('SIGCONT');
  }

  /** kill -9, and wait until the process is gone. */
  async kill9() {
    this.child.kill('SIGKILL');
    await this.exit;
  }

  /** SIGTERM (after SIGCONT, in case it is stopped) and clean up a clean exit's data. */
  async stop() {
    if (this.child && !this.exited) {
      this.child.kill('SIGCONT');
      this.child.kill('SIGTERM');
      const t = setTimeout(() => this.child.kill('SIGKILL'), 20_000);
      await this.exit;
      clearTimeout(t);
    }
    if (this.exited?.code === 0 || this.exited?.signal === 'SIGKILL') fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

async function startDaemon() {
  return new Daemon().start();
}

/**
 * The daemon's own standby routes (target/debug/standby, next to CBD_BIN) on
 * 127.0.0.1:0, naming `leader` (null: no leader known); resolves once its health
 * answers. `stop()` closes its stdin, which ends it.
 */
async function startStandby(leader) {
  const bin = process.env.CBD_STANDBY_BIN || path.join(path.dirname(cbdBin()), 'standby');
  if (!fs.existsSync(bin)) throw new Error(`standby binary not found at ${bin} (cargo build -p cbd-tests)`);
  const child = spawn(bin, leader == null ? [] : ['--leader', leader], { stdio: ['pipe', 'pipe', 'inherit'] });
  const address = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(out.split('\n')[0].trim());
    });
    child.on('exit', (code) => reject(new Error(`standby exited ${code}`)));
  });
  const checker = new health.Health(address, grpc.credentials.createInsecure());
  await until(
    () => new Promise((resolve) => {
      checker.Check({ service: '' }, { deadline: Date.now() + 1000 }, (err) => resolve(!err));
    }),
    START_TIMEOUT_MS,
    'the standby\'s health',
  );
  checker.close();
  const exited = new Promise((r) => child.on('exit', r));
  return {
    address,
    async stop() {
      child.stdin.end();
      await exited;
    },
  };
}

module.exports = { startDaemon, startStandby, until, sleep };
