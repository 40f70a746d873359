// Hybrid and local layers under sequence parallelism (DESIGN.md §3.1), across real worker
// processes over gRPC on loopback: softmax attention (K/V gathered, dK/dV sent back to their
// owners), sliding-window attention (halo), the short convolution (halo), each for W ∈ {1,2,3,4}
// and the contiguous and zig-zag layouts, and every linear kind
// folded over the 2W zig-zag segments. Outputs and gradients equal the single-process computation
// on the whole sequence to float32 rounding.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startLocalCluster, type LocalCluster } from '../cluster/local-cluster.js';
import { KINDS } from '../native/kernels.js';
import { combineErrors, GRAD_TENSORS, OUTPUT_TENSORS, type SpLayerConfig, type SpLayerRankResult } from '../worker/sp/sp-layer-task.js';
import { BASE_SEED, caseSeed } from './helpers/rng.js';
import { runSpBench } from '../bench/sp.js';

const BOUND = 1e-5; // relative to the largest reference value of each tensor

let cluster: LocalCluster;
let job = 0;

async function run(config: SpLayerConfig, W: number): Promise<SpLayerRankResult[]> {
  const group = await cluster.formGroup(`sp-hybrid-${++job}`, W);
  try {
    const replies = await cluster.runTask(group, 'sp-layer', config, { timeoutMs: 120_000 });
    return replies.map((r) => r.result as SpLayerRankResult);
  } finally {
    await cluster.releaseGroup(group);
  }
}

function assertExact(ranks: SpLayerRankResult[], expected: string[], what: string): { out: number; grad: number } {
  const parts = ranks.map((r) => r.errors.lasp2 ?? {});
  const out = combineErrors(parts, OUTPUT_TENSORS);
  const grad = combineErrors(parts, GRAD_TENSORS);
  assert.ok(out < BOUND, `${what}: output rel. error ${out} >= ${BOUND}`);
  assert.ok(grad < BOUND, `${what}: gradient rel. error ${grad} >= ${BOUND}`);
  for (const name of expected)
    assert.ok(
      parts.some((p) => p[name]),
      `${what}: ${name} was not compared`,
    );
  return { out, grad };
}

/** Tokens per rank: contiguous splitBlocks(T, W); zig-zag segments r and 2W−1−r of splitBlocks(T, 2W). */
function tokens(T: number, W: number, zigzag: boolean): number[] {
  const n = zigzag ? 2 * W : W;
  const len = (i: number) => Math.floor(((i + 1) * T) / n) - Math.floor((i * T) / n);
  return Array.from({ length: W }, (_, r) => (zigzag ? len(r) + len(2 * W - 1 - r) : len(r)));
}

const worst = { out: 0, grad: 0 };

describe('hybrid and local layers over gRPC worker processes', { timeout: 600_000 }, () => {
  before(async () => {
    cluster = await startLocalCluster({ workers: 4, threadsPerWorker: 1 });
  });
  after(async () => {
    await cluster?.stop();
    process.stdout.write(`# sp-hybrid: worst rel. error outputs ${worst.out.toExponential(2)}, gradients ${worst.grad.toExponential(2)}\n`);
  });

  const cases: { name: string; cfg: Omit<SpLayerConfig, 'seed' | 'T' | 'layout'>; T: number; expected: string[]; zigzag: boolean }[] = [];
  for (const zigzag of [false, true]) {
    cases.push({ name: 'softmax', cfg: { kind: 'softmax', H: 2, dk: 8, dv: 12 }, T: 150, expected: ['o', 'dq', 'dk', 'dv'], zigzag });
    for (const window of [2, 17])
      cases.push({
        name: `swa window=${window}`,
        cfg: { kind: 'swa', window, H: 2, dk: 8, dv: 6 },
        T: 150,
        expected: ['o', 'dq', 'dk', 'dv'],
        zigzag,
      });
  }
  for (const zigzag of [false, true])
    cases.push({ name: 'conv K=4', cfg: { kind: 'conv', convSize: 4, H: 2, dk: 8, dv: 8 }, T: 61, expected: ['y', 'dx', 'dw'], zigzag });
  for (const kind of KINDS) {
    const expected = ['o', 'dq', 'dk', 'dv', 'finalState', 'dInitialState'];
    if (kind === 'scalar_gate' || kind === 'vector_gate' || kind === 'gated_delta') expected.push('dg');
    if (kind === 'delta' || kind === 'gated_delta') expected.push('dbeta');
    cases.push({
      name: kind,
      cfg: { kind, H: 2, dk: 8, dv: 12, chunk: 16, withInitialState: true, withFinalGrad: true },
      T: 150,
      expected,
      zigzag: true,
    });
  }

  for (const c of cases)
    for (const W of [1, 2, 3, 4]) {
      const what = `${c.name}, W=${W}, T=${c.T}, ${c.zigzag ? 'zig-zag' : 'contiguous'}`;
      test(`${what}: outputs and gradients match the single-process computation`, async () => {
        const seed = caseSeed(what) % 1_000_000;
        const config: SpLayerConfig = { ...c.cfg, T: c.T, seed, layout: c.zigzag ? 'zigzag' : 'contiguous', repeats: 1 };
        const ranks = await run(config, W);
        assert.deepEqual(
          ranks.map((r) => r.tokens),
          tokens(c.T, W, c.zigzag),
        );
        const e = assertExact(ranks, c.expected, `${what} (base seed ${BASE_SEED})`);
        worst.out = Math.max(worst.out, e.out);
        worst.grad = Math.max(worst.grad, e.grad);
      });
    }

  test('softmax traffic grows with T; the sliding window and the convolution send a fixed halo', async () => {
    const bytes = async (cfg: Partial<SpLayerConfig>, T: number) => {
      const ranks = await run({ kind: 'softmax', H: 2, dk: 8, dv: 8, seed: 1, T, repeats: 1, check: false, ...cfg } as SpLayerConfig, 3);
      return ranks.map((r) => r.lasp2BytesSent);
    };
    // Contiguous softmax: rank r sends its K/V rows (H·(dk+dv) floats each) to the W−1−r later
    // ranks and receives dK/dV for them back; rank r sends dK/dV of the r earlier blocks' keys.
    for (const T of [300, 1200]) {
      const n = T / 3;
      const row = 2 * (8 + 8) * 4;
      assert.deepEqual(await bytes({}, T), [2 * n * row, n * row + n * row, 2 * n * row]);
    }
    // Sliding window 9: 8 halo rows forward and their gradient back, for any T.
    const halo = 8 * 2 * (8 + 8) * 4;
    for (const T of [300, 1200]) assert.deepEqual(await bytes({ kind: 'swa', window: 9 }, T), [halo, 2 * halo, halo]);
    // Convolution K=4 on q,k,v... here one x of C = H·dk channels: 3 rows each way.
    for (const T of [300, 1200]) assert.deepEqual(await bytes({ kind: 'conv', convSize: 4 }, T), [3 * 16 * 4, 2 * 3 * 16 * 4, 3 * 16 * 4]);
  });

  test('lasp bench sp --kind softmax|swa|conv [--zigzag]: checked errors, bytes and per-rank times in the JSON', async () => {
    for (const o of [
      { kind: 'softmax', zigzag: false },
      { kind: 'softmax', zigzag: true },
      { kind: 'swa', window: 16, zigzag: true },
      { kind: 'conv', convSize: 4, zigzag: false },
      { kind: 'conv', convSize: 4, zigzag: true },
    ] as const) {
      const r = await runSpBench({ ...o, workers: 2, seqLen: 256, heads: 2, headDim: 8, repeats: 1 });
      const what = JSON.stringify(o);
      assert.equal(r.layout, o.zigzag ? 'zigzag' : 'contiguous', what);
      assert.ok(r.maxRelErrorOutput !== null && r.maxRelErrorOutput < BOUND, `${what}: output error ${r.maxRelErrorOutput}`);
      assert.ok(r.maxRelErrorGrad !== null && r.maxRelErrorGrad < BOUND, `${what}: gradient error ${r.maxRelErrorGrad}`);
      assert.ok(r.bytesSentPerRankPerLayer !== null && r.bytesSentPerRankPerLayer > 0, what);
      assert.ok(r.lasp2Ms !== null && r.lasp2Ms > 0, what);
      assert.equal(r.lasp1Ms, null);
      assert.equal(r.ringKvMs, null);
      assert.equal(r.rankComputeMs.length, 2);
      assert.ok(r.loadBalance !== null && r.loadBalance >= 1, what);
      // The layer's time beyond its busiest rank's own work: what no rank could hide (medians, so ≥ −1 ms).
      const busiest = Math.max(...r.rankComputeMs);
      assert.ok(r.lasp2OverheadMs !== null && Math.abs(r.lasp2OverheadMs - (r.lasp2Ms! - busiest)) < 1e-9, what);
      assert.ok(r.lasp2OverheadMs > -1 && r.lasp2OverheadMs <= r.lasp2Ms!, `${what}: overhead ${r.lasp2OverheadMs}`);
      // Their waits are point-to-point (halos, rings), not one collective per phase on every rank.
      assert.equal(r.lasp2CriticalCommMs, null, what);
    }
  });

  test('bad configs are refused with the field named', async () => {
    await assert.rejects(run({ kind: 'swa', T: 100, H: 1, dk: 4, dv: 4, seed: 1 } as SpLayerConfig, 2), /window must be an integer/);
    await assert.rejects(
      run({ kind: 'swa', window: 40, T: 60, H: 1, dk: 4, dv: 4, seed: 1, layout: 'zigzag' }, 2),
      /a sliding window of 40 needs segments of at least 39 tokens/,
    );
    await assert.rejects(run({ kind: 'softmax', window: 4, T: 60, H: 1, dk: 4, dv: 4, seed: 1 }, 2), /window applies to kind swa only/);
    await assert.rejects(run({ kind: 'softmax', T: 60, H: 1, dk: 4, dv: 4, seed: 1, modes: ['lasp1'] }, 2), /modes must be \["lasp2"\]/);
    await assert.rejects(
      run({ kind: 'linear', T: 60, H: 1, dk: 4, dv: 4, seed: 1, layout: 'diagonal' as 'zigzag' }, 2),
      /layout must be one of/,
    );
    await assert.rejects(
      run({ kind: 'conv', convSize: 8, T: 20, H: 1, dk: 4, dv: 4, seed: 1, layout: 'zigzag' }, 2),
      /a short convolution of size 8 needs segments of at least 7 tokens; segment \d has 5/,
    );
  });
});
