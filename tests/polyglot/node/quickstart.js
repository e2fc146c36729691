'use strict';
// Guard a call with a cbd breaker: the README's Node quickstart, run by CI as is.
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { Breaker, BreakerOpenError } = require('./breaker');

const def = protoLoader.loadSync(['cbd/v1/breakers.proto', 'cbd/v1/admin.proto'], {
  includeDirs: [path.join(__dirname, '..', '..', '..', 'proto', 'proto')],
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
});
const { Admin, Breakers } = grpc.loadPackageDefinition(def).cbd.v1;
const endpoint = process.env.CBD_ENDPOINT || '127.0.0.1:7411';
const admin = new Admin(endpoint, grpc.credentials.createInsecure());
const client = new Breakers(endpoint, grpc.credentials.createInsecure());

async function charge(card) {
  if (card === 'declined') throw new Error('payment provider timed out');
  return `charged ${card}`;
}

async function main() {
  // Create the breaker (an operator would run `cbctl put payments.charge ...`).
  const spec = { consecutive_failures: 2, open_duration: { seconds: 30 } };
  await new Promise((resolve, reject) => admin.PutBreaker(
    { name: 'payments.charge', spec }, (err) => (err ? reject(err) : resolve())));

  const payments = new Breaker(client, 'payments.charge');
  for (const card of ['4242', 'declined', 'declined', '4242']) {
    try {
      // Acquire; Report SUCCESS, or FAILURE if it throws (rethrown).
      console.log(await payments.call(() => charge(card)));
    } catch (err) {
      if (err instanceof BreakerOpenError) {
        console.log(`payments are ${err.state}, retry in ${Math.round(err.retryAfterMs / 1000)} s`);
      } else {
        console.log(`failed: ${err.message}`);
      }
    }
  }
  client.close();
  admin.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
