// The model runs every op through its kernel set (native/kernel-set.ts), which is how a worker
// started with --device cuda:N computes on the GPU: a set that counts its calls and forwards them
// to the CPU kernels gives bit-identical losses and gradients, and every op of a training step
// (attention of each kind, softmax, short convolution, norms, GEMMs, loss) reaches it. Device
// strings are parsed with errors that name the field and the value.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cpuBackend, hostBackend } from '../model/backend.js';
import { Model, type ModelConfig } from '../model/model.js';
import { parseDevice, restrictToGpu } from '../native/device.js';
import { cpuKernels, type KernelSet } from '../native/kernel-set.js';
import { workerDevice } from '../cluster/local-cluster.js';
import { rngFor } from './helpers/rng.js';

function countingSet(calls: Map<string, number>): KernelSet {
  const wrap = <F extends (...a: never[]) => unknown>(name: string, f: F): F =>
    ((...a: Parameters<F>) => {
      calls.set(name, (calls.get(name) ?? 0) + 1);
      return f(...a);
    }) as F;
  const set: Record<string, unknown> = { device: 'counting' };
  for (const [name, v] of Object.entries(cpuKernels)) {
    if (typeof v === 'function') set[name] = wrap(name, v as (...a: never[]) => unknown);
  }
  set.softmax = {
    forward: wrap('softmax.forward', cpuKernels.softmax.forward),
    backward: wrap('softmax.backward', cpuKernels.softmax.backward),
  };
  return set as unknown as KernelSet;
}

test('a model on a kernel set: same loss and gradients as the CPU backend, every op through the set', async () => {
  const cfg: ModelConfig = {
    vocab: 13,
    dModel: 8,
    nLayers: 6,
    heads: 2,
    dk: 4,
    dv: 4,
    ffn: 16,
    kinds: ['linear', 'scalar_gate', 'vector_gate', 'delta', 'gated_delta', 'softmax'],
    chunk: 4,
    conv: 3,
  };
  const rng = rngFor('kernel-set');
  const toks = Int32Array.from({ length: 19 }, () => rng.int(0, cfg.vocab - 1));
  const seed = rng.int(1, 1 << 30);
  const calls = new Map<string, number>();
  const viaSet = new Model(cfg, hostBackend(countingSet(calls)));
  const viaCpu = new Model(cfg, cpuBackend);
  await viaSet.init(seed);
  await viaCpu.init(seed);
  const l1 = await viaSet.lossAndGrad(toks);
  const l2 = await viaCpu.lossAndGrad(toks);
  assert.equal(l1, l2);
  assert.deepEqual(viaSet.params.grads, viaCpu.params.grads);
  const expected = [
    'forward',
    'backward',
    'softmax.forward',
    'softmax.backward',
    'gemm',
    'rmsNorm',
    'rmsNormBackward',
    'swiglu',
    'swigluBackward',
    'embedding',
    'embeddingBackward',
    'crossEntropy',
    'logSigmoidScaled',
    'logSigmoidScaledBackward',
    'sigmoid',
    'sigmoidBackward',
    'l2NormalizeRows',
    'l2NormalizeRowsBackward',
    'shortConv',
    'shortConvBackward',
  ];
  const missing = expected.filter((n) => !calls.has(n));
  assert.deepEqual(missing, [], `ops that bypassed the kernel set: ${missing.join(', ')}`);
  // Five linear kinds: five forward and five backward calls (one sequence).
  assert.equal(calls.get('forward'), 5);
  assert.equal(calls.get('backward'), 5);
});

test('device strings: cpu and cuda:N, anything else named in the error', () => {
  assert.deepEqual(parseDevice('cpu'), { kind: 'cpu' });
  assert.deepEqual(parseDevice('cuda:3'), { kind: 'cuda', index: 3 });
  for (const bad of ['gpu', 'cuda', 'cuda:', 'cuda:-1', 'cuda:x', 'CPU', ''])
    assert.throws(
      () => parseDevice(bad, '--device'),
      new RegExp(`^Error: --device must be "cpu" or "cuda:N".*got ${JSON.stringify(JSON.stringify(bad)).slice(1, -1)}$`),
    );
  assert.equal(workerDevice('cuda:0,cuda:1', 0), 'cuda:0');
  assert.equal(workerDevice('cuda:0,cuda:1', 3), 'cuda:1');
  assert.equal(workerDevice('cuda:0', 2), 'cuda:0');
  assert.throws(() => workerDevice('cuda:0,tpu', 0), /device must be "cpu" or "cuda:N".*got "tpu"/);
});

test('cuda:N picks the N-th GPU of CUDA_VISIBLE_DEVICES, or GPU N when it is unset', () => {
  const env: NodeJS.ProcessEnv = {};
  restrictToGpu(2, env);
  assert.equal(env.CUDA_VISIBLE_DEVICES, '2');
  const listed: NodeJS.ProcessEnv = { CUDA_VISIBLE_DEVICES: '4,6' };
  restrictToGpu(1, listed);
  assert.equal(listed.CUDA_VISIBLE_DEVICES, '6');
  assert.throws(() => restrictToGpu(2, { CUDA_VISIBLE_DEVICES: '4,6' }), /cuda:2: CUDA_VISIBLE_DEVICES=4,6 lists 2 GPUs/);
});
