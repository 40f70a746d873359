// `lasp bench scale` in-process at tiny sizes: W = 1 and 2 (T = 64 and 128), two steps each plus
// the W=1 reference run at T = 128: a row per W with measured throughput, bytes only where there
// are peers, the losses of W=2 equal to W=1's on the same T, and every JSON field present.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { printScaleBench, runScaleBench } from '../bench/scale.js';

const FIELDS = [
  'workers',
  'seqLen',
  'tokensPerSec',
  'efficiency',
  'collectiveMsMax',
  'collectiveMsMean',
  'collectiveShare',
  'bytesSentPerRankPerStep',
  'bytesSentPerRankPerLayer',
  'layerCollectiveMsPerLayer',
  'peakRssMiB',
  'gpuMemMiB',
  'maxRelLossDiff',
];

test('bench scale: W=1,2 rows, bytes, memory and the loss check', async () => {
  const lines: string[] = [];
  const r = await runScaleBench({ workers: [2, 1], seqLenPerWorker: 64, steps: 2, warmup: 0, lossSteps: 2, device: 'cpu' }, (s) =>
    lines.push(s),
  );
  const json = JSON.parse(JSON.stringify(r)) as { config: Record<string, unknown>; rows: Record<string, unknown>[] };
  assert.deepEqual(json.config.workers, [1, 2]);
  assert.deepEqual(json.config.layers, ['gated_delta', 'gated_delta']);
  assert.equal(json.rows.length, 2);
  for (const row of json.rows) for (const f of FIELDS) assert.ok(f in row, `row field ${f}`);

  const [w1, w2] = r.rows as [(typeof r.rows)[0], (typeof r.rows)[0]];
  assert.deepEqual([w1.workers, w1.seqLen, w2.workers, w2.seqLen], [1, 64, 2, 128]);
  for (const row of [w1, w2]) {
    assert.ok(row.tokensPerSec > 0, `W=${row.workers}: tokens/s ${row.tokensPerSec}`);
    assert.ok(row.peakRssMiB > 0 && row.rssMiB > 0, `W=${row.workers}: RSS`);
    assert.equal(row.gpuMemMiB, null);
    assert.ok(row.collectiveMsMax >= row.collectiveMsMean && row.collectiveShare >= 0);
    assert.equal(row.losses.length, 2);
  }
  assert.equal(w1.efficiency, 1);
  assert.ok(w2.efficiency > 0);
  assert.equal(w1.bytesSentPerRankPerStep, 0);
  assert.equal(w1.bytesSentPerRankPerLayer, 0);
  assert.equal(w1.maxRelLossDiff, null);
  assert.ok(w2.bytesSentPerRankPerStep > 0, `W=2 bytes ${w2.bytesSentPerRankPerStep}`);
  assert.ok(w2.bytesSentPerRankPerLayer > 0 && 2 * w2.bytesSentPerRankPerLayer < w2.bytesSentPerRankPerStep);
  // The layers' waits are part of the step's collective wait (two layers here).
  assert.ok(w2.layerCollectiveMsPerLayer > 0, `W=2 layer wait ${w2.layerCollectiveMsPerLayer}`);
  assert.ok(
    2 * w2.layerCollectiveMsPerLayer <= w2.collectiveMsMax + 1e-9,
    `layer wait ${w2.layerCollectiveMsPerLayer} × 2 > ${w2.collectiveMsMax}`,
  );
  // W = 1 has no peers but still awaits its (local) collectives: small, never more than the step's wait.
  assert.ok(w1.layerCollectiveMsPerLayer >= 0 && 2 * w1.layerCollectiveMsPerLayer <= w1.collectiveMsMax + 1e-9);
  assert.ok(w2.maxRelLossDiff !== null && w2.maxRelLossDiff < 1e-3, `W=2 loss vs W=1: ${w2.maxRelLossDiff}`);
  assert.equal(lines.length, 2);
  assert.match(printScaleBench(r), /\| 2 \| 128 \|/);
});
