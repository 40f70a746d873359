// The CUDA addon's memory caches (native/cuda/addon_memory.cc): device buffers and pinned result
// blocks are reused for repeated shapes, results are Float32Arrays over pinned blocks that a
// step's output scope releases at its end, and nothing of that changes the numbers. GPU only:
// skipped with the reason where the CUDA addon or a device is missing.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cudaMemCacheStats, cudaStatus } from '../native/cuda.js';
import { cudaOps } from '../native/cuda-ops.js';
import { kernels, withOutputScope } from '../native/kernels.js';
import { relL2Err } from './helpers/check.js';
import { rngFor } from './helpers/rng.js';

const status = cudaStatus();
const skip = status.available ? false : `CUDA kernels unavailable: ${status.reason}`;

test('repeated shapes reuse device and pinned blocks; a step scope releases CUDA results', { skip }, async () => {
  const rng = rngFor('cuda-memory gemm');
  const [M, N, K] = [300, 200, 100];
  const A = rng.normals(M * K);
  const B = rng.normals(K * N);
  const want = await kernels.gemm({ M, N, K, A, B });
  const step = async () => {
    const C = await cudaOps.gemm({ M, N, K, A, B });
    assert.ok(relL2Err(C, want) < 1e-6, `gemm result differs by ${relL2Err(C, want)}`);
    return C;
  };
  let inside: Float32Array | undefined;
  await withOutputScope(async () => {
    inside = await step();
  });
  assert.equal(inside!.length, 0, 'the scope released the result (its pinned block went back to the cache)');
  const before = cudaMemCacheStats();
  // A released block reaches the cache on the next turn of the event loop (Node runs external
  // buffers' finalizers from an immediate), as it does between a training step's ops.
  const turn = () => new Promise((resolve) => setImmediate(resolve));
  await turn();
  for (let i = 0; i < 3; i++) {
    await withOutputScope(step);
    await turn();
  }
  const after = cudaMemCacheStats();
  const dev = { takes: after.device.takes - before.device.takes, hits: after.device.hits - before.device.hits };
  const pin = { takes: after.pinned.takes - before.pinned.takes, hits: after.pinned.hits - before.pinned.hits };
  assert.ok(dev.takes >= 9 && dev.hits === dev.takes, `device blocks: ${dev.hits} of ${dev.takes} from the cache`);
  assert.ok(pin.takes >= 3 && pin.hits === pin.takes, `pinned blocks: ${pin.hits} of ${pin.takes} from the cache`);
  // Outside any scope a result stays valid (it goes back when collected).
  const kept = await step();
  assert.equal(kept.length, M * N);
});
