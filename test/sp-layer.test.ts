// Sequence-parallel attention across real worker processes over gRPC (DESIGN.md §3): for every
// kind, W ∈ {1,2,3,4}, uneven blocks, with and without an initial state, the distributed
// outputs and gradients equal the single-process kernel on the whole sequence.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startLocalCluster, type LocalCluster } from '../cluster/local-cluster.js';
import { KINDS, type Kind } from '../native/kernels.js';
import {
  combineErrors,
  GRAD_TENSORS,
  OUTPUT_TENSORS,
  type SpLayerConfig,
  type SpLayerRankResult,
  type SpMode,
} from '../worker/sp/sp-layer-task.js';

const BOUND = 1e-5; // relative to the largest reference value of each tensor (float32 rounding)
const seedBase = Number(process.env.LASP_TEST_SEED ?? Math.floor(Math.random() * 1e6));
process.stdout.write(`# sp-layer tests: base seed ${seedBase}\n`);

let cluster: LocalCluster;
let job = 0;

async function run(config: SpLayerConfig, W: number): Promise<SpLayerRankResult[]> {
  const group = await cluster.formGroup(`sp-test-${++job}`, W);
  try {
    const replies = await cluster.runTask(group, 'sp-layer', config, { timeoutMs: 120_000 });
    return replies.map((r) => r.result as SpLayerRankResult);
  } finally {
    await cluster.releaseGroup(group);
  }
}

function assertExact(ranks: SpLayerRankResult[], modes: SpMode[], what: string, withInitialState: boolean, kind: Kind = 'linear') {
  for (const mode of modes) {
    const parts = ranks.map((r) => r.errors[mode] ?? {});
    const out = combineErrors(parts, OUTPUT_TENSORS);
    const grad = combineErrors(parts, GRAD_TENSORS);
    assert.ok(out < BOUND, `${what} ${mode}: output rel. error ${out} >= ${BOUND}`);
    assert.ok(grad < BOUND, `${what} ${mode}: gradient rel. error ${grad} >= ${BOUND}`);
    const expected = ['o', 'dq', 'dk', 'dv', 'finalState'];
    if (withInitialState) expected.push('dInitialState');
    if (kind === 'scalar_gate' || kind === 'vector_gate' || kind === 'gated_delta') expected.push('dg');
    if (kind === 'delta' || kind === 'gated_delta') expected.push('dbeta');
    for (const name of expected) {
      assert.ok(
        parts.some((p) => p[name]),
        `${what} ${mode}: ${name} was not compared`,
      );
    }
  }
}

describe('sequence-parallel layer over gRPC worker processes', { timeout: 600_000 }, () => {
  before(async () => {
    cluster = await startLocalCluster({ workers: 4, threadsPerWorker: 1 });
  });
  after(async () => {
    await cluster?.stop();
  });

  for (const kind of KINDS) {
    for (const W of [1, 2, 3, 4]) {
      for (const withInitialState of [false, true]) {
        const modes: SpMode[] = W > 1 && withInitialState ? ['lasp2', 'lasp1', 'ringkv'] : ['lasp2'];
        test(`${kind}, W=${W}, T=150 (uneven), ${withInitialState ? 'with' : 'without'} S0: ${modes.join(', ')} match the single-process kernel`, async () => {
          const seed = seedBase + job;
          const config: SpLayerConfig = {
            kind,
            T: 150,
            H: 2,
            dk: 8,
            dv: 12,
            chunk: 16,
            seed,
            withInitialState,
            withFinalGrad: true,
            modes,
            repeats: 1,
          };
          const ranks = await run(config, W);
          assert.equal(ranks.length, W);
          assert.deepEqual(
            ranks.map((r) => r.tokens),
            Array.from({ length: W }, (_, r) => Math.floor(((r + 1) * 150) / W) - Math.floor((r * 150) / W)),
          );
          assertExact(ranks, modes, `${kind} W=${W} seed=${seed}`, withInitialState, kind);
        });
      }
    }
  }

  for (const W of [2, 3]) {
    test(`non-causal linear, W=${W}, with S0: matches the single-process kernel`, async () => {
      const seed = seedBase + job;
      const ranks = await run(
        { kind: 'linear', causal: false, T: 101, H: 3, dk: 6, dv: 10, seed, withInitialState: true, withFinalGrad: true, repeats: 1 },
        W,
      );
      assertExact(ranks, ['lasp2'], `non-causal W=${W} seed=${seed}`, true);
    });
  }

  test('bytes sent per rank per layer do not grow with the sequence length', async () => {
    const bytes: number[] = [];
    for (const T of [512, 4096]) {
      const ranks = await run(
        { kind: 'gated_delta', T, H: 2, dk: 8, dv: 8, seed: seedBase, withFinalGrad: true, repeats: 1, check: false },
        3,
      );
      bytes.push(Math.max(...ranks.map((r) => r.lasp2BytesSent ?? NaN)));
    }
    // (W-1) peers × (A: H·dk·dk + U: H·dk·dv forward, D: H·dk·dv backward) floats.
    const expected = 2 * (2 * 8 * 8 + 2 * 8 * 8 + 2 * 8 * 8) * 4;
    assert.deepEqual(bytes, [expected, expected]);
  });

  test('a bad config is refused with the field named', async () => {
    await assert.rejects(
      run({ kind: 'delta', T: 10, H: 1, dk: 4, dv: 4, seed: 1, causal: false }, 2),
      /causal=false is only defined for kind linear/,
    );
    await assert.rejects(run({ kind: 'linear', T: 1, H: 1, dk: 4, dv: 4, seed: 1 }, 2), /cannot split 1 tokens over 2 ranks/);
  });
});
