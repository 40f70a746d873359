// Precision selection without a GPU: which attention layers have a bf16 kernel, and that bf16 is
// refused with the reason where it cannot run (the CPU kernels are float32) — before any worker
// process starts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startLocalCluster } from '../cluster/local-cluster.js';
import { bf16Unsupported } from '../native/cuda-bf16-attention.js';
import { kernelsFor, parsePrecision } from '../native/device.js';

test('bf16Unsupported names why a layer runs in float32, and nothing for the bf16 ones', () => {
  for (const kind of ['linear', 'scalar_gate', 'delta'] as const)
    for (const d of [64, 128]) assert.equal(bf16Unsupported({ kind, dk: d, dv: d }), undefined, `${kind} ${d}`);
  assert.equal(bf16Unsupported({ kind: 'linear', dk: 64, dv: 128 }), undefined);
  assert.match(bf16Unsupported({ kind: 'vector_gate', dk: 64, dv: 64 })!, /kind vector_gate has no bf16 kernel/);
  assert.match(bf16Unsupported({ kind: 'gated_delta', dk: 64, dv: 64 })!, /kind gated_delta has no bf16 kernel/);
  assert.match(bf16Unsupported({ kind: 'linear', dk: 64, dv: 64, causal: false })!, /non-causal/);
  assert.match(bf16Unsupported({ kind: 'linear', dk: 32, dv: 64 })!, /dk=32, dv=64: the bf16 kernels take 64 or 128/);
  assert.match(bf16Unsupported({ kind: 'delta', dk: 64, dv: 128 })!, /delta in bf16 needs dk = dv/);
});

test('bf16 on the CPU is refused with the reason; precision names are checked', async () => {
  await assert.rejects(kernelsFor({ kind: 'cpu' }, 'bf16'), /precision bf16 needs a cuda device: the CPU kernels are float32/);
  assert.equal((await kernelsFor({ kind: 'cpu' })).precision, 'fp32');
  assert.equal(parsePrecision('bf16'), 'bf16');
  assert.throws(() => parsePrecision('fp16', '--precision'), /--precision must be one of fp32, bf16, got "fp16"/);
  await assert.rejects(
    startLocalCluster({ workers: 2, precision: 'bf16', device: 'cuda:0,cpu' }),
    /precision bf16 needs cuda devices for every worker, got device "cuda:0,cpu"/,
  );
});
