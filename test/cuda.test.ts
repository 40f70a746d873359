// The CUDA kernels (native/cuda.ts) against the CPU kernels on the same random inputs. They run only
// where build-cuda/lasp_cuda.node is built and a CUDA device answers; elsewhere (CI) they are
// skipped with the reason, and only the unavailable path is checked.
// Metric: relative L2 error ‖x − cpu‖ / ‖cpu‖; float32 mode < 1e-5, bf16 < 2e-2 (inputs are rounded
// to bf16 on the device, the CPU sees the float32 values).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { cudaBackward, cudaForward, cudaStatus, type CudaKind, type CudaPrecision } from '../native/cuda.js';
import { kernels } from '../native/kernels.js';
import { relL2Err } from './helpers/check.js';
import { rngFor } from './helpers/rng.js';
import { randomSpec } from './helpers/reference.js';

const status = cudaStatus();
const skip = status.available ? false : `CUDA kernels unavailable: ${status.reason}`;

function relErr(x: Float32Array, ref: Float32Array): number {
  return relL2Err(x, ref, 1e-150);
}

describe('cuda kernels', () => {
  test(
    'report why they are unavailable, and reject calls then',
    { skip: status.available ? 'CUDA is available here' : false },
    async () => {
      assert.equal(status.available, false);
      assert.match((status as { reason: string }).reason, /\S/);
      const n = 64 * 64;
      const x = new Float32Array(n);
      await assert.rejects(cudaForward({ kind: 'linear', T: 64, H: 1, dk: 64, dv: 64, q: x, k: x, v: x }), /lasp cuda: unavailable/);
    },
  );

  test('validate arguments before touching the device', async () => {
    const x = new Float32Array(10);
    await assert.rejects(cudaForward({ kind: 'linear', T: 64, H: 1, dk: 64, dv: 64, q: x, k: x, v: x }), /q must have length 4096/);
    const y = new Float32Array(64 * 32);
    await assert.rejects(cudaForward({ kind: 'linear', T: 64, H: 1, dk: 32, dv: 32, q: y, k: y, v: y }), /dk and dv must be in/);
  });

  const cases: [CudaKind, CudaPrecision, number, number][] = [
    ['linear', 'f32', 300, 64],
    ['scalar_gate', 'f32', 300, 64],
    ['delta', 'f32', 300, 64],
    ['linear', 'bf16', 512, 128],
    ['scalar_gate', 'bf16', 512, 128],
    ['delta', 'bf16', 512, 128],
  ];
  for (const [kind, precision, T, d] of cases) {
    test(`${kind} ${precision} T=${T} d=${d}: forward and backward match the CPU kernels`, { skip }, async (t) => {
      const H = 2;
      const rng = rngFor(`cuda ${kind} ${precision}`);
      const spec = randomSpec(rng, { kind, T, H, dk: d, dv: d, initialState: true });
      const dO = rng.normals(T * H * d);
      const dFinal = rng.normals(H * d * d, 0.5);
      const tol = precision === 'f32' ? 1e-5 : 2e-2;
      const cpuF = await kernels.forward(spec);
      const cpuB = await kernels.backward(spec, dO, dFinal);
      const cs = {
        kind,
        precision,
        T,
        H,
        dk: d,
        dv: d,
        q: spec.q,
        k: spec.k,
        v: spec.v,
        g: spec.g,
        beta: spec.beta,
        initialState: spec.initialState,
      };
      const gpuF = await cudaForward(cs);
      const gpuB = await cudaBackward(cs, dO, dFinal);
      const errs: Record<string, number> = {
        o: relErr(gpuF.o, cpuF.o),
        finalState: relErr(gpuF.finalState, cpuF.finalState),
        dq: relErr(gpuB.dq, cpuB.dq),
        dk: relErr(gpuB.dk, cpuB.dk),
        dv: relErr(gpuB.dv, cpuB.dv),
        dInitialState: relErr(gpuB.dInitialState, cpuB.dInitialState!),
      };
      if (kind === 'delta') errs.dbeta = relErr(gpuB.dbeta!, cpuB.dbeta!);
      // Gate gradients cancel (sums of q·dq − k·dk): 5x looser in bf16, see docs/cuda.md.
      if (kind === 'scalar_gate') errs.dg = relErr(gpuB.dg!, cpuB.dg!);
      t.diagnostic(
        Object.entries(errs)
          .map(([name, e]) => `${name} ${e.toExponential(2)}`)
          .join(', '),
      );
      for (const [name, e] of Object.entries(errs)) {
        const bound = name === 'dg' && precision === 'bf16' ? 5 * tol : tol;
        assert.ok(e < bound, `${name}: relative error ${e.toExponential(2)} ≥ ${bound}`);
      }
    });
  }
});
