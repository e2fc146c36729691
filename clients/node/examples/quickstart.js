'use strict';
// Guard a call with a cbd breaker: the Node quickstart, run by check.sh as is.
const { Client, BreakerOpenError } = require('cbd-client');

async function main() {
  const client = new Client({ endpoints: process.env.CBD_ENDPOINT || '127.0.0.1:7411' });
  await client.admin.PutBreaker({ name: 'payments.charge', spec: { consecutive_failures: 2 } });
  const payments = client.breaker('payments.charge');
  const charge = async (card) => { if (card === 'declined') throw new Error('timeout'); return `charged ${card}`; };
  for (const card of ['4242', 'declined', 'declined', '4242']) {
    try {
      console.log(await payments.call(() => charge(card)));
    } catch (err) {
      if (err instanceof BreakerOpenError) console.log(`rejected, retry after ${err.retryAfter} ms`);
      else console.log(`failed: ${err.message}`);
    }
  }
  await client.close();
}
main().catch((err) => { console.error(err); process.exit(1); });
