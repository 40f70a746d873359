// The addon's output buffer pool (native/src/buffer_pool.h): outputs are plain Float32Arrays of
// the requested length, a dropped output's block is reused by the next request of its size after
// a garbage collection, and blocks in use are never handed out twice.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { output, poolStats, zeros } from '../native/kernels.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

async function collect(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
}

test('pooled outputs: right length, distinct while alive, reused after collection', async () => {
  const n = 1_000_003; // an odd size no other test allocates
  const a = output(n);
  const b = output(n);
  assert.ok(a instanceof Float32Array);
  assert.equal(a.length, n);
  a.fill(1);
  b.fill(2);
  assert.equal(a[n - 1], 1, 'two live outputs do not share memory');
  assert.equal(
    zeros(17).reduce((s, x) => s + Math.abs(x), 0),
    0,
  );

  const before = poolStats();
  (function drop() {
    for (let i = 0; i < 4; i++) output(n).fill(i);
  })();
  await collect();
  const idle = poolStats();
  assert.ok(idle.idleBytes >= before.idleBytes + 4 * 4 * n, `dropped blocks return to the pool: ${JSON.stringify({ before, idle })}`);
  const c = output(n);
  const after = poolStats();
  assert.equal(after.hits, idle.hits + 1, 'the next request of that size is served from the pool');
  c.fill(3);
  assert.equal(a[0], 1);
  assert.equal(b[0], 2);
});

test('pooled outputs: bad sizes are refused by name', () => {
  assert.throws(() => output(-1), /allocF32: n must be an integer in \[0, 1073741824\]/);
  assert.throws(() => output(1.5), /allocF32: n must be an integer/);
  assert.equal(output(0).length, 0);
});
