// lasp bench sp's critical-path communication (bench/sp.ts criticalCommMs): per collective, from the
// last rank ready to the last rank done, summed over the layer; median over iterations.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { criticalCommMs, runSpBench } from '../bench/sp.js';

test('criticalCommMs: last ready to last done per collective, summed, median over iterations; null when waits do not line up', () => {
  // Two ranks, two collectives, three iterations. Iteration 0: rank 1 is ready last (12) and done
  // last (12.4) in collective 0 → 0.4; in collective 1 rank 0 is ready last (20), rank 1 done last
  // (20.5) → 0.5; sum 0.9. Iteration 1: 100 → 100.2 and 110 → 110.1: 0.3. Iteration 2: 200 → 202
  // and 210 → 211: 3. Median 0.9 (not the mean, 1.4; not a rank's own wait: rank 1 waited 51 ms).
  const waits = (...pairs: [ready: number, done: number][]) => pairs.map(([ready, done]) => ({ ready, done }));
  const rank0 = [waits([10, 12.3], [20, 20.1]), waits([100, 100.2], [110, 110.1]), waits([200, 202], [210, 211])];
  const rank1 = [waits([12, 12.4], [19, 20.5]), waits([99, 100.1], [105, 110.05]), waits([150, 201], [205, 210.5])];
  const got = criticalCommMs([rank0, rank1]);
  assert.ok(got !== null && Math.abs(got - 0.9) < 1e-9, `median of 0.9, 0.3, 3: got ${got}`);
  assert.equal(criticalCommMs([rank0, rank1.slice(0, 2)]), null, 'different iteration counts');
  assert.equal(criticalCommMs([rank0, [rank1[0]!, rank1[1]!.slice(0, 1), rank1[2]!]]), null, 'different collective counts');
  assert.equal(criticalCommMs([rank0, undefined]), null, 'a rank without waits');
});

test('lasp bench sp (linear, W=2): the critical-path communication is reported, within the layer time', async () => {
  const r = await runSpBench({ kind: 'linear', workers: 2, seqLen: 2048, heads: 2, headDim: 16, repeats: 3, modes: ['lasp2'] });
  assert.ok(r.lasp2Ms !== null && r.lasp2Ms > 0);
  assert.ok(r.lasp2CriticalCommMs !== null && r.lasp2CriticalCommMs >= 0, `critical ${r.lasp2CriticalCommMs}`);
  assert.ok(r.lasp2CriticalCommMs <= r.lasp2Ms, `critical ${r.lasp2CriticalCommMs} of ${r.lasp2Ms}`);
  assert.ok(Math.abs(r.lasp2CriticalCommFraction! - r.lasp2CriticalCommMs / r.lasp2Ms) < 1e-12);
});
