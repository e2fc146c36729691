'use strict';
// The Redis-Lua breaker bench.js compares with (the scripts and what they do:
// clients/redis-lua/README.md), on ioredis, and a throwaway redis-server on a free
// loopback port for it.

const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');
const Redis = require('ioredis');

const SCRIPTS = path.resolve(__dirname, '..', 'redis-lua');
const script = (name) => fs.readFileSync(path.join(SCRIPTS, name), 'utf8');

class Rejected extends Error {}

/** `call(fn)`: EVALSHA acquire.lua, run fn, EVALSHA report.lua. */
class RedisLuaBreaker {
  constructor(redis, name, { failMax = 5, openMs = 30_000 } = {}) {
    this.redis = redis;
    this.key = `cb:${name}`;
    this.failMax = failMax;
    this.openMs = openMs;
    redis.defineCommand('cbAcquire', { numberOfKeys: 1, lua: script('acquire.lua') });
    redis.defineCommand('cbReport', { numberOfKeys: 1, lua: script('report.lua') });
  }

  async call(fn) {
    const now = Date.now();
    if (!(await this.redis.cbAcquire(this.key, now))) throw new Rejected(this.key);
    let result;
    try {
      result = await fn();
    } catch (e) {
      await this.redis.cbReport(this.key, 1, now, this.failMax, this.openMs);
      throw e;
    }
    await this.redis.cbReport(this.key, 0, now, this.failMax, this.openMs);
    return result;
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** redis-server on 127.0.0.1 and a free port, no persistence; ready once PING answers. */
async function startRedis(binary = 'redis-server') {
  const port = await freePort();
  const proc = spawn(binary, ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
  let exited = false;
  proc.once('exit', () => { exited = true; });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: null });
    probe.on('error', () => {}); // refused until it listens: the loop retries
    try {
      await probe.connect();
      if ((await probe.ping()) === 'PONG') { probe.disconnect(); break; }
    } catch {
      probe.disconnect();
      if (exited || Date.now() > deadline) throw new Error(`redis-server did not answer PING on port ${port}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  return {
    port,
    client: () => new Redis({ port, host: '127.0.0.1' }),
    stop: () => new Promise((resolve) => { proc.once('exit', resolve); proc.kill('SIGTERM'); }),
  };
}

module.exports = { RedisLuaBreaker, Rejected, startRedis };
