// native/allocator.ts: the worker's allocator tuning is applied on glibc (this project's CI and
// GPU machines), refuses values out of range with the field named, and leaves the process working.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_ALLOCATOR_TUNING, tuneAllocator } from '../native/allocator.js';

test('tuneAllocator applies the defaults on glibc and checks its arguments', () => {
  const glibc = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header?.glibcVersionRuntime;
  const r = tuneAllocator();
  if (glibc) assert.deepEqual(r, { applied: true, reason: '' }, `glibc ${glibc}`);
  else assert.equal(r.applied, false);
  assert.throws(
    () => tuneAllocator({ ...DEFAULT_ALLOCATOR_TUNING, mmapThresholdBytes: -1 }),
    /mmapThresholdBytes must be an integer in \[0, 2\^31\)/,
  );
  assert.throws(() => tuneAllocator({ ...DEFAULT_ALLOCATOR_TUNING, trimThresholdBytes: 2 ** 31 }), /trimThresholdBytes must be an integer/);
  assert.throws(() => tuneAllocator({ ...DEFAULT_ALLOCATOR_TUNING, trimThresholdBytes: 1.5 }), /trimThresholdBytes must be an integer/);
  // The process still allocates and frees normally afterwards.
  const bufs = Array.from({ length: 64 }, (_, i) => Buffer.alloc(64 * 1024 + i, i));
  assert.equal(
    bufs.reduce((a, b) => a + b[b.length - 1]!, 0),
    (63 * 64) / 2,
  );
});
