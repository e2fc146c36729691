'use strict';
// The package ships a copy of the repo's proto/proto (it is loaded at run time, with no
// build step): it must not drift from the original.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { PROTO_DIR } = require('..');

const REPO_PROTO = path.resolve(__dirname, '..', '..', '..', 'proto', 'proto');

function files(dir, base = dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? files(p, base) : [path.relative(base, p)];
  }).sort();
}

test('clients/node/proto is an exact copy of the repo proto/proto', () => {
  assert.deepEqual(files(PROTO_DIR), files(REPO_PROTO), 'same file list (cp -r proto/proto/* clients/node/proto/)');
  for (const f of files(REPO_PROTO)) {
    assert.equal(fs.readFileSync(path.join(PROTO_DIR, f), 'utf8'), fs.readFileSync(path.join(REPO_PROTO, f), 'utf8'), `${f} differs`);
  }
});
