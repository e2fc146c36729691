'use strict';
// The README's Node quickstart runs as written against a real daemon, and the
// README shows exactly this file.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { startDaemon } = require('./cbd');

test('the quickstart runs against a daemon', async () => {
  const cbd = await startDaemon();
  try {
    const out = execFileSync(process.execPath, ['quickstart.js'], {
      cwd: __dirname,
      env: { ...process.env, CBD_ENDPOINT: cbd.address },
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.deepEqual(out.trim().split('\n'), [
      'charged 4242',
      'failed: payment provider timed out',
      'failed: payment provider timed out',
      'payments are STATE_OPEN, retry in 30 s',
    ]);
  } finally {
    assert.equal(await cbd.stop(), 0, 'cbd exits 0 on SIGTERM');
  }
});

test('the README shows this file', () => {
  const readme = fs.readFileSync(path.join(__dirname, '..', '..', '..', 'README.md'), 'utf8');
  const marker = '<!-- tests/polyglot/node/quickstart.js -->\n```js\n';
  assert.ok(readme.includes(marker), "the README's Node block is marked");
  const block = readme.split(marker)[1].split('```\n')[0];
  assert.equal(block, fs.readFileSync(path.join(__dirname, 'quickstart.js'), 'utf8'));
});
