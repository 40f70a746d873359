// `lasp bench collectives` end to end at small sizes: worker processes measure the gRPC AllGather,
// raw TCP and plain node:http2 for each size (for each stream transport), and the rows are
// consistent (positive times, GB/s = bytes received / time, ratios from them).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runCollectivesBench } from '../bench/collectives.js';

for (const [streamTransport, referenceProcesses, allocator] of [
  ['http2', 'shared', 'tuned'],
  ['raw', 'separate', 'default'],
] as const) {
  test(`bench collectives (${streamTransport}, references ${referenceProcesses}, allocator ${allocator}): one row per size, times positive, ratios consistent`, async () => {
    const sizes = [1024, 96 * 1024];
    const r = await runCollectivesBench({
      workers: 2,
      sizes,
      iterations: 3,
      progress: false,
      endpoint: { streamTransport },
      referenceProcesses,
      allocator,
    });
    assert.equal(r.transport, streamTransport);
    assert.equal(r.referenceProcesses, referenceProcesses);
    assert.deepEqual(
      r.rows.map((x) => x.bytes),
      sizes,
    );
    for (const x of r.rows) {
      for (const ms of [x.allGatherMs, x.tcpMs, x.http2Ms]) assert.ok(Number.isFinite(ms) && ms > 0, `time ${ms} at ${x.bytes} B`);
      assert.ok(Math.abs(x.allGatherGBps - x.bytes / (x.allGatherMs * 1e6)) < 1e-12);
      assert.ok(Math.abs(x.ratio - x.allGatherGBps / x.tcpGBps) < 1e-12);
      assert.ok(Math.abs(x.ratioToHttp2 - x.allGatherGBps / x.http2GBps) < 1e-12);
    }
  });
}
