// Collectives between real worker processes over real gRPC on loopback: AllGather (small and
// large, uneven blocks, mixed direct/ring paths), AllReduce (small and large, bit-identical on all
// ranks and equal to the sum in the documented order), point-to-point, interleaved ops.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_COLLECTIVE_OPTIONS } from '../worker/collectives/grpc-communicator.js';
import { Cluster, type RunResult } from './helpers/collectives-cluster.js';
import { expectedSum, rankBytes, rankFloats, sha256 } from './helpers/collectives-data.js';
import type { Step, StepResult } from './helpers/collectives-protocol.js';
import { caseSeed } from './helpers/rng.js';
import { bytesOf } from '../worker/collectives/reduce.js';

const MiB = 1 << 20;

function ok(r: RunResult, rank: number): StepResult[] {
  if (!r.ok) assert.fail(`rank ${rank} failed: ${r.error}`);
  return r.results;
}

// Expected checksums are computed once per input, not once per rank.
const memo = new Map<string, string>();
function memoized(key: string, f: () => string): string {
  let v = memo.get(key);
  if (v === undefined) memo.set(key, (v = f()));
  return v;
}

function checkGather(res: StepResult | undefined, sizes: number[], seed: number, ctx: string): void {
  assert.equal(res?.kind, 'allGather', ctx);
  if (res?.kind !== 'allGather') return;
  assert.deepEqual(res.lengths, sizes, `${ctx}: block lengths`);
  sizes.forEach((size, j) =>
    assert.equal(
      res.hashes[j],
      memoized(`bytes ${seed} ${j} ${size}`, () => sha256(rankBytes(seed, j, size))),
      `${ctx}: block of rank ${j} (size ${size})`,
    ),
  );
}

function checkReduce(res: StepResult | undefined, W: number, n: number, seed: number, ctx: string): string {
  assert.equal(res?.kind, 'allReduce', ctx);
  if (res?.kind !== 'allReduce') return '';
  const want = memoized(`sum ${W} ${n} ${seed}`, () => {
    const inputs = Array.from({ length: W }, (_, r) => rankFloats(seed, r, n));
    const sum = expectedSum(inputs, DEFAULT_COLLECTIVE_OPTIONS.reduceDirectMaxBytes);
    return `${sha256(bytesOf(sum))} ${[...sum.subarray(0, 4)].join(',')}`;
  });
  const [hash, head] = want.split(' ');
  assert.equal(res.hash, hash, `${ctx}: result differs from the sum in the documented order (head ${res.head.join(',')} vs ${head})`);
  return res.hash;
}

for (const W of [2, 3, 4]) {
  test(`W=${W}: allGather, allReduceSum, send/recv and interleaved ops between ${W} processes`, async (t) => {
    const seed = caseSeed(`collectives W=${W}`);
    const tStart = performance.now();
    const cluster = await Cluster.start(W, { timeoutMs: 15_000 });
    t.diagnostic(`W=${W}: started in ${(performance.now() - tStart).toFixed(0)} ms`);
    try {
      const smallSizes = Array.from({ length: W }, (_, r) => (r === 0 ? 0 : 1000 + 37 * r));
      const largeSizes = Array.from({ length: W }, (_, r) => 4 * MiB + 12_345 * r + 1);
      const mixedSizes = Array.from({ length: W }, (_, r) => (r % 2 === 0 ? 300 + r : 2 * MiB + 999 * r));
      const nSmall = 1000 + W;
      const nLarge = 1_000_003;
      const tag = (step: number, op: string) => ({ step, layer: 0, op });
      const next = (r: number) => (r + 1) % W;
      const prev = (r: number) => (r + W - 1) % W;
      const plan = (r: number): Step[] => [
        { kind: 'allGather', tag: tag(1, 'ag.small'), sizes: smallSizes, seed },
        { kind: 'allGather', tag: tag(1, 'ag.large'), sizes: largeSizes, seed: seed + 1 },
        { kind: 'allGather', tag: tag(1, 'ag.mixed'), sizes: mixedSizes, seed: seed + 2 },
        { kind: 'allReduce', tag: tag(1, 'ar.small'), n: nSmall, seed: seed + 3 },
        { kind: 'allReduce', tag: tag(1, 'ar.large'), n: nLarge, seed: seed + 4 },
        {
          kind: 'parallel',
          steps: [
            { kind: 'send', tag: tag(2, 'p2p'), to: next(r), size: 3 * MiB + r, seed: seed + 5 },
            { kind: 'recv', tag: tag(2, 'p2p'), from: prev(r) },
          ],
        },
        {
          kind: 'parallel',
          steps: [
            { kind: 'allGather', tag: tag(3, 'x'), sizes: smallSizes, seed: seed + 6 },
            { kind: 'allReduce', tag: tag(3, 'y'), n: nLarge, seed: seed + 7 },
            { kind: 'allGather', tag: { step: 3, layer: 1, op: 'x' }, sizes: largeSizes, seed: seed + 8 },
            { kind: 'allReduce', tag: tag(4, 'x'), n: nSmall, seed: seed + 9 },
          ],
        },
        // Same tag reused sequentially.
        { kind: 'repeat', step: { kind: 'allReduce', tag: tag(5, 'again'), n: nSmall, seed: seed + 10 }, count: 3 },
      ];
      const t0 = performance.now();
      const reports = await cluster.runAll(plan);
      t.diagnostic(`W=${W}: plan ran in ${(performance.now() - t0).toFixed(0)} ms (seed ${seed})`);
      const hashes: string[][] = [];
      reports.forEach((rep, r) => {
        const res = ok(rep, r);
        const ctx = (what: string) => `W=${W} rank ${r} ${what} (seed ${seed})`;
        checkGather(res[0], smallSizes, seed, ctx('small allGather'));
        checkGather(res[1], largeSizes, seed + 1, ctx('large allGather'));
        checkGather(res[2], mixedSizes, seed + 2, ctx('mixed direct/ring allGather'));
        const h = [
          checkReduce(res[3], W, nSmall, seed + 3, ctx('small allReduce')),
          checkReduce(res[4], W, nLarge, seed + 4, ctx('large allReduce')),
        ];
        const p2p = res[5];
        assert.ok(p2p?.kind === 'parallel' && p2p.results[1]?.kind === 'recv', ctx('p2p result'));
        const got = p2p.results[1];
        assert.equal(got.hash, sha256(rankBytes(seed + 5, prev(r), 3 * MiB + prev(r))), ctx('recv from predecessor'));
        const par = res[6];
        assert.ok(par?.kind === 'parallel', ctx('parallel result'));
        checkGather(par.results[0], smallSizes, seed + 6, ctx('interleaved allGather'));
        h.push(checkReduce(par.results[1], W, nLarge, seed + 7, ctx('interleaved large allReduce')));
        checkGather(par.results[2], largeSizes, seed + 8, ctx('interleaved large allGather'));
        h.push(checkReduce(par.results[3], W, nSmall, seed + 9, ctx('interleaved small allReduce')));
        assert.deepEqual(res[7], { kind: 'repeat', count: 3 }, ctx('repeated allReduce'));
        hashes.push(h);
        if (rep.ok)
          assert.ok(rep.stats.bytesSent > 0 && rep.stats.bytesReceived > 0 && rep.stats.messagesSent > 0, ctx('stats count traffic'));
      });
      for (let r = 1; r < W; r++) assert.deepEqual(hashes[r], hashes[0], `allReduce results are bit-identical on rank ${r} and rank 0`);
      t.diagnostic(`W=${W}: checked in ${(performance.now() - t0).toFixed(0)} ms after the start of the plan`);
    } finally {
      await cluster.close();
    }
  });
}
