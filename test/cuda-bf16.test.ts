// The CUDA kernel set at precision 'bf16' (native/cuda-bf16-attention.ts) against the CPU float32
// kernels on fresh random inputs: linear, scalar_gate and delta with head dims 64 and 128, with and
// without an initial state, T not a multiple of the 64-token chunk; the kinds and shapes without a
// bf16 kernel fall back to the float32 CUDA kernels and give their results (the forward bit for bit,
// the backward to the rounding of its atomic sums). GPU only:
// skipped with the reason where the CUDA addon or a device is missing.
//
// Tolerances (relative L2 error against float32): q, k, v and o travel as bf16 (8 bits of
// mantissa: ~2e-3 per value), accumulation and the state chain are float32. Outputs, final states
// and the q/k/v/state gradients: < 2e-2. The scalar gate's dg is a suffix sum of q·dq − k·dk
// differences that cancel (la_bench measured up to 1.1e-1 against float64): < 0.25. delta's dβ:
// < 5e-2.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { bf16Unsupported } from '../native/cuda-bf16-attention.js';
import { cudaStatus } from '../native/cuda.js';
import { kernels, type BackwardResult, type Kind } from '../native/kernels.js';
import { relL2Err } from './helpers/check.js';
import { randomSpec } from './helpers/reference.js';
import { rngFor } from './helpers/rng.js';

const status = cudaStatus();
const skip = status.available ? false : `CUDA kernels unavailable: ${status.reason}`;

async function sets() {
  const { cudaKernelSet } = await import('../native/cuda-kernel-set.js');
  return { bf16: cudaKernelSet({ precision: 'bf16' }), fp32: cudaKernelSet({ precision: 'fp32' }) };
}

describe('cuda kernel set, precision bf16', () => {
  const cases: [Kind, number, number, number, boolean][] = [
    ['linear', 200, 64, 64, false],
    ['linear', 130, 128, 64, true],
    ['scalar_gate', 200, 64, 128, true],
    ['scalar_gate', 77, 128, 128, false],
    ['delta', 150, 64, 64, true],
    ['delta', 260, 128, 128, false],
  ];
  for (const [kind, T, dk, dv, s0] of cases) {
    test(`${kind} T=${T} dk=${dk} dv=${dv}${s0 ? ' with S0' : ''}: bf16 matches float32 within bf16 tolerance`, { skip }, async (t) => {
      const { bf16 } = await sets();
      const spec = randomSpec(rngFor(`cuda-bf16 ${kind} ${T} ${dk} ${dv} ${s0}`), { kind, T, H: 2, dk, dv, initialState: s0 });
      assert.equal(bf16Unsupported(spec), undefined);
      const rng = rngFor(`cuda-bf16 grads ${kind} ${T}`);
      const dO = rng.normals(T * 2 * dv);
      const dS = rng.normals(2 * dk * dv);
      const cpu = await kernels.forward(spec);
      const gpu = await bf16.forward(spec);
      const cpuB = await kernels.backward(spec, dO, dS);
      const gpuB = await bf16.backward(spec, dO, dS);
      const errs: [string, number, number][] = [
        ['o', relL2Err(gpu.o, cpu.o), 2e-2],
        ['finalState', relL2Err(gpu.finalState, cpu.finalState), 2e-2],
        ['dq', relL2Err(gpuB.dq, cpuB.dq), 2e-2],
        ['dk', relL2Err(gpuB.dk, cpuB.dk), 2e-2],
        ['dv', relL2Err(gpuB.dv, cpuB.dv), 2e-2],
      ];
      const opt = (name: keyof BackwardResult, tol: number) => {
        const a = gpuB[name];
        const b = cpuB[name];
        assert.equal(a === undefined, b === undefined, `${name} present on both or neither`);
        if (a && b) errs.push([name, relL2Err(a as Float32Array, b as Float32Array), tol]);
      };
      opt('dg', 0.25);
      opt('dbeta', 5e-2);
      opt('dInitialState', 2e-2);
      t.diagnostic(errs.map(([n, e]) => `${n} ${e.toExponential(2)}`).join(', '));
      for (const [n, e, tol] of errs) assert.ok(e < tol, `${n}: relative error ${e} >= ${tol}`);
      // Not the float32 kernels in disguise: bf16 rounding shows in the output.
      assert.ok(errs[0]![1] > 1e-6, `o differs from float32 by ${errs[0]![1]}: expected bf16 rounding`);
    });
  }

  test('kinds and shapes without a bf16 kernel run the float32 CUDA kernels', { skip }, async () => {
    const { bf16, fp32 } = await sets();
    const specs = [
      randomSpec(rngFor('cuda-bf16 fallback vg'), { kind: 'vector_gate', T: 90, H: 2, dk: 64, dv: 64 }),
      randomSpec(rngFor('cuda-bf16 fallback gd'), { kind: 'gated_delta', T: 90, H: 2, dk: 64, dv: 64, initialState: true }),
      randomSpec(rngFor('cuda-bf16 fallback dims'), { kind: 'linear', T: 90, H: 2, dk: 32, dv: 64 }),
      randomSpec(rngFor('cuda-bf16 fallback delta'), { kind: 'delta', T: 90, H: 2, dk: 64, dv: 128 }),
    ];
    for (const spec of specs) {
      assert.ok(bf16Unsupported(spec) !== undefined, `${spec.kind} dk=${spec.dk} dv=${spec.dv} has no bf16 kernel`);
      const dO = rngFor(`cuda-bf16 fallback dO ${spec.kind}`).normals(spec.T * spec.H * spec.dv);
      assert.deepEqual(await bf16.forward(spec), await fp32.forward(spec));
      // The float32 backward sums across column tiles with atomics: two runs agree to rounding only.
      const a = await bf16.backward(spec, dO);
      const b = await fp32.backward(spec, dO);
      assert.deepEqual(Object.keys(a).sort(), Object.keys(b).sort());
      for (const name of Object.keys(b) as (keyof BackwardResult)[]) {
        const e = relL2Err(a[name] as Float32Array, b[name] as Float32Array);
        assert.ok(e < 1e-6, `${spec.kind} ${name}: ${e} from the float32 kernels`);
      }
    }
  });
});
