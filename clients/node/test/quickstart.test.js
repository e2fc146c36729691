'use strict';
// The quickstart runs against a real daemon with the output the README promises, and
// clients/node/README.md shows it verbatim.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { startDaemon } = require('./daemon');

const FILE = path.join(__dirname, '..', 'examples', 'quickstart.js');

test('README.md shows examples/quickstart.js verbatim', () => {
  const readme = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');
  const source = fs.readFileSync(FILE, 'utf8');
  assert.ok(readme.includes('<!-- examples/quickstart.js -->\n```js\n' + source + '```\n'), 'update the README quickstart');
});

test('the quickstart trips the breaker after two failures', async (t) => {
  const daemon = await startDaemon();
  t.after(() => daemon.stop());
  const out = await new Promise((resolve, reject) =>
    execFile(process.execPath, [FILE], { env: { ...process.env, CBD_ENDPOINT: daemon.address }, timeout: 20_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout))),
  );
  const lines = out.trim().split('\n');
  assert.deepEqual(lines.slice(0, 3), ['charged 4242', 'failed: timeout', 'failed: timeout']);
  assert.match(lines[3], /^rejected, retry after \d+(\.\d+)? ms$/);
});
