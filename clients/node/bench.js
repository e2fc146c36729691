'use strict';
// Guarded calls/s in one process, in one run: cbd per call (Acquire + Report) and
// leased, and a Redis-Lua breaker on ioredis against a redis-server the bench starts
// (needs redis-server on PATH, Debian's redis-server; skipped, saying so, without).
// CBD_BIN=target/release/cbd node bench.js [seconds=3] [concurrency=64]
const { execFileSync } = require('node:child_process');
const { performance } = require('node:perf_hooks');
const { Client } = require('.');
const { startDaemon, until } = require('./test/daemon');
const { RedisLuaBreaker, Rejected, startRedis } = require('./redis_breaker');

function onPath(binary) {
  try {
    execFileSync('sh', ['-c', `command -v ${binary}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function run(client, name, seconds, concurrency) {
  return rate(client.breaker(name), seconds, concurrency);
}

/** Calls of `b.call(noop)` per second over `concurrency` loops for `seconds`. */
async function rate(b, seconds, concurrency) {
  const end = performance.now() + seconds * 1000;
  let calls = 0;
  const worker = async () => {
    while (performance.now() < end) {
      await b.call(() => undefined);
      calls++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return calls / seconds;
}

async function main() {
  const seconds = Number(process.argv[2] ?? 3);
  const concurrency = Number(process.argv[3] ?? 64);
  const daemon = await startDaemon();
  try {
    const client = new Client({ endpoints: daemon.address, acquireDeadlineMs: 5000 });
    await client.admin.PutBreaker({ name: 'bench.rpc', spec: { consecutive_failures: 5 } });
    await client.admin.PutBreaker({ name: 'bench.lease', spec: { consecutive_failures: 5, cache_ttl: { seconds: 10 } } });
    const rpc = await run(client, 'bench.rpc', seconds, concurrency);
    await client.breaker('bench.lease').call(() => undefined);
    await until(() => client.breaker('bench.lease').leased, 5000, 'the lease');
    const leased = await run(client, 'bench.lease', seconds, concurrency);
    await client.flush(2000);
    const s = (await client.admin.GetBreaker({ name: 'bench.lease' })).breaker;
    await client.close();
    const rows = [
      ['cbd per call (Acquire + Report)', rpc],
      [`cbd leased (daemon window_calls after: ${s.window_calls})`, leased],
    ];
    if (onPath('redis-server')) {
      const server = await startRedis();
      const redis = server.client();
      try {
        const lua = new RedisLuaBreaker(redis, 'bench.lua');
        const version = require('ioredis/package.json').version;
        rows.push([`Redis-Lua breaker (ioredis ${version})`, await rate(lua, seconds, concurrency)]);
        await checkTrips(new RedisLuaBreaker(redis, 'bench.lua.check'));
      } finally {
        redis.disconnect();
        await server.stop();
      }
    } else {
      console.log('redis-server not on PATH (Debian package redis-server): Redis rows skipped');
    }
    console.log(`Node ${process.version}, ${seconds} s per row, concurrency ${concurrency}`);
    console.log('| mode | guarded calls/s |\n|---|---|');
    for (const [name, r] of rows) console.log(`| ${name} | ${Math.round(r).toLocaleString('en-US')} |`);
    console.log(`leased / per call: ${Math.round(leased / rpc)}x`);
  } finally {
    await daemon.stop();
  }
}
/** The comparison is with a working breaker: 5 failures trip it, then it rejects. */
async function checkTrips(b) {
  for (let i = 0; i < 5; i++) {
    await b.call(() => { throw new Error('down'); }).catch((e) => { if (e instanceof Rejected) throw e; });
  }
  const rejected = await b.call(() => undefined).then(() => false, (e) => e instanceof Rejected);
  if (!rejected) throw new Error('the Redis-Lua breaker did not trip after 5 failures');
}

main().catch((e) => { console.error(e); process.exit(1); });
