// Compiled with `tsc --noEmit` by check.sh: the hand-written index.d.ts covers the API.
import { Client, BreakerOpenError, NotFoundError, Permit, WatchItem } from 'cbd-client';

async function main(): Promise<void> {
  const client = new Client({ endpoints: ['127.0.0.1:7411'], token: 't', acquireDeadlineMs: 50, defaultFallback: 'FAIL_CLOSED' });
  const payments = client.breaker('payments.charge');
  const n: number = await payments.call(async () => 42, { classify: () => 'ignored' });
  try {
    const p: Permit = await payments.acquire();
    const answer = await p.success();
    if (answer) console.log(answer.stale, answer.state);
  } catch (e) {
    if (e instanceof BreakerOpenError) console.log(e.retryAfter ?? 'unknown', e.fallback);
    else if (e instanceof NotFoundError) console.log(e.code, e.details);
  }
  for await (const item of client.watch({ prefix: 'payments.' })) {
    const i: WatchItem = item;
    if (i.type === 'event') console.log(i.event.revision, i.event.state);
    break;
  }
  console.log(n, payments.leased, payments.fallback, client.stats.rpcDecisions);
  await client.flush();
  await client.close();
}
void main;
