'use strict';
// Guarded calls/s in one process: per-call Acquire+Report vs leases.
// CBD_BIN=/work/bin/cbd node bench.js [seconds=3] [concurrency=64]
const { performance } = require('node:perf_hooks');
const { Client } = require('.');
const { startDaemon, until } = require('./test/daemon');

async function run(client, name, seconds, concurrency) {
  const b = client.breaker(name);
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
    console.log(`per-call Acquire+Report: ${Math.round(rpc)} calls/s (concurrency ${concurrency})`);
    console.log(`leased:                  ${Math.round(leased)} calls/s (daemon window_calls ${s.window_calls})`);
    await client.close();
  } finally {
    await daemon.stop();
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
