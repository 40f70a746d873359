// Hybrid models (DESIGN.md §3.1): 3 linear : 1 softmax (and sliding-window) layers. The job config
// and `lasp train --layers` accept softmax and swa; the model's gradient agrees with a directional
// finite difference; under sequence parallelism (W=3, uneven blocks 21/20/20: K/V gathered and
// dK/dV sent back for softmax, halos for swa) the whole-model gradient equals W=1, and 30 training
// steps give the same losses as W=1.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startLocalCluster, type LocalCluster } from '../cluster/local-cluster.js';
import { configFromFlags } from '../cli/train.js';
import { Model } from '../model/model.js';
import type { LayerKind } from '../model/backend.js';
import { ConfigErrors, parseTrainConfig } from '../train/config.js';
import { runTraining } from '../train/driver.js';
import { relMaxErr } from './helpers/check.js';
import { caseSeed, rngFor } from './helpers/rng.js';
import { writeCorpus } from './helpers/text-corpus.js';

let dir: string;
let corpus: string;
let cluster: LocalCluster;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lasp-hybrid-'));
  corpus = join(dir, 'corpus.txt');
  await writeCorpus(corpus, caseSeed('hybrid-corpus'), 40_000);
  cluster = await startLocalCluster({ workers: 3, threadsPerWorker: 1 });
});

after(async () => {
  await cluster?.stop();
  await rm(dir, { recursive: true, force: true });
});

const HYBRID: LayerKind[] = ['gated_delta', 'gated_delta', 'gated_delta', 'softmax'];
const HYBRID_SWA: LayerKind[] = ['gated_delta', 'swa', 'gated_delta', 'softmax'];

function problems(raw: unknown): string[] {
  try {
    parseTrainConfig(raw);
  } catch (e) {
    assert.ok(e instanceof ConfigErrors, `expected ConfigErrors, got ${String(e)}`);
    return e.errors.map((x) => x.message);
  }
  return [];
}

test('config: softmax and swa layers are accepted; the window is checked against the blocks', async () => {
  const c = await configFromFlags({ layers: 'gated_delta,gated_delta,gated_delta,softmax' });
  assert.deepEqual(c.model.kinds, HYBRID);
  assert.equal(c.model.layers, 4);
  assert.equal(c.model.window, 64);
  const s = await configFromFlags({ layers: 'gated_delta,swa', window: 16 });
  assert.deepEqual(s.model.kinds, ['gated_delta', 'swa']);
  assert.equal(s.model.window, 16);
  assert.match(problems({ model: { kinds: ['swa', 'linear'], window: 0 } })[0]!, /model\.window must be an integer in \[1, /);
  assert.match(
    problems({ model: { kinds: ['swa', 'linear'], window: 70 }, data: { type: 'mqar', seqLen: 128 }, cluster: { workers: 2 } })[0]!,
    /model\.window = 70 needs blocks of at least 69 tokens .* gives 64/,
  );
  // Without swa layers the window does not constrain the blocks.
  assert.deepEqual(
    problems({ model: { kinds: ['softmax', 'linear'], window: 70 }, data: { type: 'mqar', seqLen: 128 }, cluster: { workers: 2 } }),
    [],
  );
});

test('a hybrid model: the gradient matches a directional finite difference (float64 loss sums)', async () => {
  const model = new Model({
    vocab: 20,
    dModel: 16,
    nLayers: 3,
    heads: 2,
    dk: 8,
    dv: 8,
    ffn: 24,
    kinds: ['gated_delta', 'softmax', 'swa'],
    window: 5,
    chunk: 8,
    conv: 3,
  });
  await model.init(caseSeed('hybrid-fd-init') % 100000);
  const rng = rngFor('hybrid-fd');
  const tokens = Int32Array.from({ length: 33 }, () => rng.int(0, 19));
  await model.lossAndGrad(tokens);
  const grads = Float32Array.from(model.params.grads);
  const values = Float32Array.from(model.params.data);
  // A random direction, normalised; the exact directional derivative is g·u.
  const u = rng.normals(values.length);
  let norm = 0;
  for (const x of u) norm += x * x;
  norm = Math.sqrt(norm);
  let gu = 0;
  for (let i = 0; i < u.length; i++) {
    u[i] = u[i]! / norm;
    gu += grads[i]! * u[i]!;
  }
  const lossAt = async (eps: number) => {
    for (let i = 0; i < values.length; i++) model.params.data[i] = values[i]! + eps * u[i]!;
    return (await model.forward(tokens)).loss;
  };
  // Central differences at halving steps; Richardson-extrapolated (O(eps^4)).
  const fd = async (eps: number) => ((await lossAt(eps)) - (await lossAt(-eps))) / (2 * eps);
  const d1 = await fd(2e-2);
  const d2 = await fd(1e-2);
  const rich = (4 * d2 - d1) / 3;
  model.params.data.set(values);
  // Relative to |g·u|, or to its typical size ‖g‖/√n when a random direction happens to be nearly
  // orthogonal to g (so a small g·u cannot make the check flaky).
  let gNorm = 0;
  for (const x of grads) gNorm += x * x;
  const typical = Math.sqrt(gNorm / grads.length);
  const err = Math.abs(rich - gu) / Math.max(Math.abs(gu), typical);
  process.stdout.write(
    `# hybrid model: directional derivative ${gu.toExponential(4)}, finite difference ${rich.toExponential(4)} (rel. err ${err.toExponential(2)})\n`,
  );
  assert.ok(err < 2e-3, `g·u = ${gu}, finite difference ${rich}, ‖g‖/√n = ${typical} (rel. err ${err})`);
});

/** A small model on byte text: T = 61 splits into blocks 21, 20, 20 over 3 workers. */
function textConfig(name: string, kinds: LayerKind[], workers: number, steps: number) {
  return parseTrainConfig({
    model: { dModel: 16, layers: kinds.length, heads: 2, dk: 8, dv: 8, ffn: 32, kinds, chunk: 8, window: 9 },
    data: { type: 'bytes', path: corpus, seqLen: 61, seed: caseSeed(`hybrid-data-${name}`) },
    training: { steps, batchSize: 2, lr: 2e-3, seed: caseSeed(`hybrid-init-${name}`), evalSequences: 2 },
    cluster: { workers },
    checkpoint: { dir: join(dir, `eq-${name}-${workers}`) },
  });
}

async function gradientOf(name: string, kinds: LayerKind[], workers: number): Promise<{ loss: number; grads: Float32Array }> {
  const group = await cluster.formGroup(`hybrid-grads-${name}-${workers}`, workers);
  try {
    await cluster.runTask(group, 'train.start', { config: textConfig(name, kinds, workers, 1) });
    const replies = await cluster.runTask(group, 'train.gradients', {});
    await cluster.runTask(group, 'train.stop', {});
    const r0 = replies.find((r) => r.rank === 0)!;
    return { loss: (r0.result as { loss: number }).loss, grads: r0.tensors.find((t) => t.name === 'grads')!.data };
  } finally {
    await cluster.releaseGroup(group);
  }
}

// Bound 1e-4 of the largest gradient element, as for the linear kinds in train.test.ts: a lost dK/dV
// block or halo gradient is O(1e-2) or more.
test('same seed: the whole-model gradient of a hybrid at W=3 equals W=1 (3:1 softmax, and with swa)', async () => {
  for (const [name, kinds] of [
    ['3:1', HYBRID],
    ['swa', HYBRID_SWA],
  ] as const) {
    const one = await gradientOf(name, kinds, 1);
    const three = await gradientOf(name, kinds, 3);
    const e = relMaxErr(three.grads, one.grads);
    process.stdout.write(
      `# hybrid ${name}: W=3 vs W=1 gradient rel max err ${e.err.toExponential(2)} over ${one.grads.length} parameters\n`,
    );
    assert.ok(Math.abs(one.loss - three.loss) <= 1e-6 * Math.abs(one.loss), `${name}: loss ${one.loss} vs ${three.loss}`);
    assert.ok(e.err < 1e-4, `${name}: gradient rel max err ${e.err} at ${e.at}: ${three.grads[e.at]} vs ${one.grads[e.at]}`);
  }
});

// Learning rate 2e-3: the W=1 and W=3 runs start 1e-8 apart (float32 rounding in another order)
// and Adam, which scales small gradient differences up to full steps, amplifies that. With lr 3e-3
// one seed in CI (LASP_TEST_SEED=347940388) grew from 6e-9 at step 1 to 1.1e-3 at step 30, smoothly,
// step by step (chaos, not an error: at lr 1e-3 the same seed stays at 7e-8). At 2e-3, 9 seeds of
// the 3:1 model stayed at or below 2.9e-6 and 5 of the swa model at or below 4.8e-7, while the loss
// falls by 0.5 to 1.5. A lost dK/dV block or halo gradient moves the first steps by far more.
test('same seed: a 3:1 hybrid (gated_delta ×3 + softmax) trains to the same losses with W=1 and W=3 over 30 steps', async () => {
  for (const [name, kinds] of [
    ['3:1', HYBRID],
    ['swa', HYBRID_SWA],
  ] as const) {
    const one = await runTraining(textConfig(name, kinds, 1, 30), { cluster, writeFiles: false });
    const three = await runTraining(textConfig(name, kinds, 3, 30), { cluster, writeFiles: false });
    assert.equal(one.losses.length, 30);
    assert.equal(three.losses.length, 30);
    let worst = 0;
    let at = 0;
    one.losses.forEach((l, i) => {
      const d = Math.abs(l - three.losses[i]!) / Math.abs(l);
      if (!(d <= worst)) [worst, at] = [d, i + 1];
    });
    process.stdout.write(
      `# hybrid ${name}: W=1 vs W=3 largest relative loss difference ${worst.toExponential(2)} (step ${at}); loss ${one.losses[0]!.toFixed(4)} -> ${one.losses[29]!.toFixed(4)}\n`,
    );
    assert.ok(worst < 1e-3, `${name}: W=1 vs W=3 losses differ by ${worst} (relative) at step ${at}`);
    assert.ok(one.losses[29]! < one.losses[0]! - 0.3, `${name}: loss ${one.losses[0]} -> ${one.losses[29]} did not fall`);
  }
});
