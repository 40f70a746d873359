// The CUDA model ops (native/cuda-ops.ts) against the CPU ops (native/ops.ts, kernels.gemm,
// kernels.addInto) on the same fresh random inputs. They run only where build-cuda/lasp_cuda.node is
// built (with the model ops) and a CUDA device answers; elsewhere they are skipped with the reason,
// and only the argument checks and the unavailable path are checked.
// Metric: relative L2 error ‖gpu − cpu‖ / ‖cpu‖ < 1e-5 for every output (non-finite values fail);
// cross-entropy: count equal, loss relative error < 1e-6; sums of squares (double) < 1e-9.
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import { cudaStatus } from '../native/cuda.js';
import { cudaOps } from '../native/cuda-ops.js';
import { kernels } from '../native/kernels.js';
import { ops } from '../native/ops.js';
import { relL2Err } from './helpers/check.js';
import { rngFor, type Rng } from './helpers/rng.js';

const status = cudaStatus();
const skip = status.available ? false : `CUDA kernels unavailable: ${status.reason}`;
const TOL = 1e-5;

/**
 * ‖x − ref‖ / max(‖ref‖, floor). The floor is the size of the quantity's own terms where the
 * exact result is zero (rmsNorm's dx at D = 1 is rounding noise on either side), and 1e-30 by
 * default: a float32 underflow on one side (σ(−100) ≈ 4e-44 is a denormal on the GPU, 0 on the
 * CPU) is not an error.
 */
function relErr(x: Float32Array, ref: Float32Array, floor = 1e-30): number {
  return relL2Err(x, ref, floor);
}

function relScalar(x: number, ref: number): number {
  if (!Number.isFinite(x)) return Number.NaN;
  if (ref === 0) return x === 0 ? 0 : Number.POSITIVE_INFINITY;
  return Math.abs(x - ref) / Math.abs(ref);
}

/** Compares named outputs, prints the errors, and fails on the first one at or above `tol` (NaN fails). */
function expectClose(t: TestContext, pairs: Record<string, [Float32Array, Float32Array, number?]>, tol = TOL): void {
  const errs = Object.entries(pairs).map(([name, [gpu, cpu, floor]]) => [name, relErr(gpu, cpu, floor)] as const);
  t.diagnostic(errs.map(([name, e]) => `${name} ${e.toExponential(2)}`).join(', '));
  for (const [name, e] of errs) assert.ok(e < tol, `${name}: relative error ${e} ≥ ${tol}`);
}

/** The spacing of float32 values at x. */
function ulp(x: number): number {
  const a = Math.abs(x);
  return a < 2 ** -126 ? 2 ** -149 : 2 ** (Math.floor(Math.log2(a)) - 23);
}

/** Normal values with a few extremes mixed in (exercise the exp clamps and the stable formulas). */
function withExtremes(rng: Rng, n: number, scale: number): Float32Array {
  const x = rng.normals(n, scale);
  const extremes = [100, -100, 30, -30, 0];
  for (let i = 0; i < Math.min(n, extremes.length); i++) x[rng.int(0, n - 1)] = extremes[i]!;
  return x;
}

describe('cuda model ops', () => {
  test(
    'report why they are unavailable, and reject every call then',
    { skip: status.available ? 'CUDA is available here' : false },
    async () => {
      assert.equal(status.available, false);
      assert.match((status as { reason: string }).reason, /\S/);
      const x = new Float32Array(6).fill(0.5);
      const ids = Int32Array.of(0, 1);
      const calls: [string, () => Promise<unknown>][] = [
        ['gemm', () => cudaOps.gemm({ M: 2, N: 3, K: 1, A: x.subarray(0, 2), B: x.subarray(0, 3) })],
        ['addInto', () => cudaOps.addInto(x.slice(), x)],
        ['rmsNorm', () => cudaOps.rmsNorm({ N: 2, D: 3, x, w: x.subarray(0, 3) })],
        ['rmsNormBackward', () => cudaOps.rmsNormBackward({ N: 2, D: 3, x, w: x.subarray(0, 3) }, x.subarray(0, 2), x)],
        ['swiglu', () => cudaOps.swiglu(x, x)],
        ['swigluBackward', () => cudaOps.swigluBackward(x, x, x)],
        ['embedding', () => cudaOps.embedding({ V: 2, D: 3, ids, table: x })],
        ['embeddingBackward', () => cudaOps.embeddingBackward({ V: 2, D: 3, ids }, x)],
        ['crossEntropy', () => cudaOps.crossEntropy({ N: 2, V: 3, logits: x, targets: ids })],
        ['logSigmoidScaled', () => cudaOps.logSigmoidScaled(x, 0.5)],
        ['logSigmoidScaledBackward', () => cudaOps.logSigmoidScaledBackward(x, x, 0.5)],
        ['sigmoid', () => cudaOps.sigmoid(x)],
        ['sigmoidBackward', () => cudaOps.sigmoidBackward(x, x)],
        ['l2NormalizeRows', () => cudaOps.l2NormalizeRows(x, 2, 3)],
        ['l2NormalizeRowsBackward', () => cudaOps.l2NormalizeRowsBackward(x, x.subarray(0, 2), x, 2, 3)],
        ['shortConv', () => cudaOps.shortConv({ T: 3, C: 2, K: 2, x, w: x.subarray(0, 4) })],
        ['shortConvBackward', () => cudaOps.shortConvBackward({ T: 3, C: 2, K: 2, x, w: x.subarray(0, 4) }, x)],
        ['scaleInPlace', () => cudaOps.scaleInPlace(x.slice(), 2)],
        ['sumSquares', () => cudaOps.sumSquares([x])],
        ['gradNorm', () => cudaOps.gradNorm([x])],
        ['adamW', () => cudaOps.adamW({ params: x.slice(), grads: x, m: x.slice(), v: x.slice() }, { lr: 1e-3, step: 1 })],
      ];
      assert.deepEqual(calls.map(([name]) => name).sort(), Object.keys(cudaOps).sort(), 'every op is exercised');
      for (const [name, call] of calls) await assert.rejects(call(), /lasp cuda: unavailable: \S/, name);
    },
  );

  test('validate arguments before touching the device (as the CPU ops)', async () => {
    const x = new Float32Array(5);
    await assert.rejects(cudaOps.gemm({ M: 2, N: 2, K: 2, A: new Float32Array(3), B: new Float32Array(4) }), /A must have length 4/);
    await assert.rejects(cudaOps.gemm({ M: 2, N: 2, K: -1, A: x, B: x }), /K must be an integer/);
    await assert.rejects(cudaOps.rmsNorm({ N: 2, D: 3, x, w: new Float32Array(3) }), /x must have length 6/);
    await assert.rejects(cudaOps.rmsNorm({ N: 1, D: 5, x, w: x, eps: 0 }), /eps must be a finite number in \(0, 1\]/);
    await assert.rejects(cudaOps.addInto(x, new Float32Array(4)), /src must have length 5/);
    await assert.rejects(
      cudaOps.crossEntropy({ N: 1, V: 5, logits: x, targets: Int32Array.of(5) }),
      /targets\[0\] = 5 is out of range \[-1, 5\)/,
    );
    await assert.rejects(cudaOps.embedding({ V: 1, D: 5, ids: Int32Array.of(0, -1), table: x }), /ids\[1\] = -1 is out of range/);
    await assert.rejects(cudaOps.shortConv({ T: 5, C: 1, K: 65, x, w: x }), /K must be an integer in \[1, 64\]/);
    await assert.rejects(cudaOps.l2NormalizeRows(x, 1, 5, -1), /eps must be >= 0/);
    await assert.rejects(cudaOps.adamW({ params: x, grads: x, m: x, v: x }, { lr: 1e-3, step: 0 }), /step must be an integer/);
    await assert.rejects(cudaOps.adamW({ params: x, grads: x, m: x, v: x }, { lr: 1e-3, beta1: 1, step: 1 }), /beta1 must be/);
    await assert.rejects(cudaOps.sumSquares([x, new Float64Array(2) as unknown as Float32Array]), /arrays\[1\] must be a Float32Array/);
  });

  // [M, N, K, transA, transB, alpha, beta]
  const gemmCases: [number, number, number, boolean, boolean, number, number][] = [
    [1, 1, 1, false, false, 1, 0],
    [64, 64, 64, false, false, 1, 0],
    [67, 45, 130, false, false, 0.7, 0],
    [67, 45, 130, true, false, 1, 0.5],
    [67, 45, 130, false, true, -1.3, 1],
    [67, 45, 130, true, true, 1, -0.25],
    [1, 300, 77, false, true, 1, 0],
    [300, 1, 77, true, false, 1, 2],
    [129, 65, 17, false, false, 1, 0],
    // few output tiles and a long K: the split-K path, with and without beta
    [3, 200, 2049, false, false, 1, 0],
    [96, 80, 4096, true, false, 0.5, 0.75],
    [130, 17, 5000, false, true, 1, 0],
    // many tiles (a projection of 2048 tokens), and few tiles with K beyond one slice
    [2048, 320, 128, false, false, 1, 0],
    [520, 390, 700, true, true, 1, 0],
    [128, 384, 2048, true, false, 1, 1],
    // degenerate: K = 0 (C = beta·C), alpha = 0, empty outputs
    [5, 7, 0, false, false, 1, 2],
    [5, 7, 0, false, false, 1, 0],
    [5, 7, 9, false, false, 0, 0.5],
    [0, 7, 9, false, false, 1, 0],
    [6, 0, 9, true, true, 1, 1],
  ];
  for (const [M, N, K, transA, transB, alpha, beta] of gemmCases) {
    const name = `gemm M=${M} N=${N} K=${K} transA=${transA} transB=${transB} alpha=${alpha} beta=${beta}`;
    test(`${name}: matches kernels.gemm`, { skip }, async (t) => {
      const rng = rngFor(`cuda-ops ${name}`);
      const A = rng.normals(M * K);
      const B = rng.normals(K * N);
      const C0 = rng.normals(M * N);
      const cpuC = C0.slice();
      await kernels.gemm({ M, N, K, transA, transB, alpha, beta, A, B, C: cpuC });
      const gpuC = C0.slice();
      const out = await cudaOps.gemm({ M, N, K, transA, transB, alpha, beta, A, B, C: gpuC });
      assert.equal(out, gpuC, 'resolves with the caller’s C');
      expectClose(t, { C: [gpuC, cpuC] });
      if (beta === 0) {
        // Without C: a fresh array, the same values.
        const fresh = await cudaOps.gemm({ M, N, K, transA, transB, alpha, A, B });
        expectClose(t, { 'C (allocated)': [fresh, cpuC] });
      }
    });
  }

  test('addInto and scaleInPlace: in place, as the CPU', { skip }, async (t) => {
    const rng = rngFor('cuda-ops addInto scaleInPlace');
    for (const n of [0, 1, 100003]) {
      const dst = rng.normals(n);
      const src = rng.normals(n);
      const cpu = dst.slice();
      await kernels.addInto(cpu, src);
      const gpu = dst.slice();
      await cudaOps.addInto(gpu, src);
      const cpuS = cpu.slice();
      await ops.scaleInPlace(cpuS, -0.37);
      const gpuS = gpu.slice();
      await cudaOps.scaleInPlace(gpuS, -0.37);
      expectClose(t, { [`addInto n=${n}`]: [gpu, cpu], [`scaleInPlace n=${n}`]: [gpuS, cpuS] });
    }
  });

  for (const [N, D, eps] of [
    [1, 1, 1e-6],
    [37, 100, 1e-6],
    [513, 64, 1e-5],
    [8, 1000, 1e-6],
    [2000, 48, 1e-6],
  ] as const) {
    test(`rmsNorm N=${N} D=${D}: forward and backward match`, { skip }, async (t) => {
      const rng = rngFor(`cuda-ops rmsNorm ${N} ${D}`);
      const spec = { N, D, eps, x: rng.normals(N * D, 2), w: rng.normals(D) };
      const dy = rng.normals(N * D);
      const cpu = await ops.rmsNorm(spec);
      const gpu = await cudaOps.rmsNorm(spec);
      const cpuB = await ops.rmsNormBackward(spec, cpu.rstd, dy);
      const gpuB = await cudaOps.rmsNormBackward(spec, cpu.rstd, dy);
      // dx's terms are dy·w·rstd-sized; at D = 1 they cancel exactly, leaving rounding noise.
      let dxScale = 0;
      for (let i = 0; i < N * D; i++) dxScale += (dy[i]! * spec.w[i % D]! * cpu.rstd[Math.floor(i / D)]!) ** 2;
      expectClose(t, {
        y: [gpu.y, cpu.y],
        rstd: [gpu.rstd, cpu.rstd],
        dx: [gpuB.dx, cpuB.dx, Math.sqrt(dxScale)],
        dw: [gpuB.dw, cpuB.dw],
      });
    });
  }

  for (const n of [1, 7, 50001]) {
    test(`elementwise ops n=${n}: swiglu, sigmoid, logSigmoidScaled forward and backward match`, { skip }, async (t) => {
      const rng = rngFor(`cuda-ops elementwise ${n}`);
      const a = withExtremes(rng, n, 3);
      const b = rng.normals(n);
      const dy = rng.normals(n);
      const invTau = 1 / 16;
      const cpuSw = await ops.swiglu(a, b);
      const cpuSwB = await ops.swigluBackward(a, b, dy);
      const cpuSig = await ops.sigmoid(a);
      const cpuSigB = await ops.sigmoidBackward(cpuSig, dy);
      const cpuLs = await ops.logSigmoidScaled(a, invTau);
      const cpuLsB = await ops.logSigmoidScaledBackward(a, dy, invTau);
      const gpuSwB = await cudaOps.swigluBackward(a, b, dy);
      expectClose(t, {
        swiglu: [await cudaOps.swiglu(a, b), cpuSw],
        'swiglu da': [gpuSwB.da, cpuSwB.da],
        'swiglu db': [gpuSwB.db, cpuSwB.db],
        sigmoid: [await cudaOps.sigmoid(a), cpuSig],
        'sigmoid dz': [await cudaOps.sigmoidBackward(cpuSig, dy), cpuSigB],
        logSigmoidScaled: [await cudaOps.logSigmoidScaled(a, invTau), cpuLs],
        'logSigmoidScaled dz': [await cudaOps.logSigmoidScaledBackward(a, dy, invTau), cpuLsB],
      });
    });
  }

  for (const [V, D, N] of [
    [1, 1, 1],
    [50, 33, 200],
    [1000, 64, 4096],
  ] as const) {
    test(`embedding V=${V} D=${D} N=${N}: forward and backward match`, { skip }, async (t) => {
      const rng = rngFor(`cuda-ops embedding ${V} ${D} ${N}`);
      const ids = Int32Array.from({ length: N }, () => rng.int(0, V - 1));
      const table = rng.normals(V * D);
      const dy = rng.normals(N * D);
      const spec = { V, D, ids };
      expectClose(t, {
        y: [await cudaOps.embedding({ ...spec, table }), await ops.embedding({ ...spec, table })],
        dTable: [await cudaOps.embeddingBackward(spec, dy), await ops.embeddingBackward(spec, dy)],
      });
    });
  }

  for (const [N, V, ignored, scale] of [
    [1, 1, 0, 1],
    [70, 1000, 0.2, 1 / 56],
    [5, 3, 1, 1],
    [300, 257, 0.1, -2],
  ] as const) {
    test(`crossEntropy N=${N} V=${V} ignored=${ignored} scale=${scale}: loss, count and dlogits match`, { skip }, async (t) => {
      const rng = rngFor(`cuda-ops crossEntropy ${N} ${V} ${ignored}`);
      const logits = withExtremes(rng, N * V, 3);
      const targets = Int32Array.from({ length: N }, () => (rng.next() < ignored ? -1 : rng.int(0, V - 1)));
      const spec = { N, V, logits, targets, scale };
      const cpu = await ops.crossEntropy(spec);
      const gpu = await cudaOps.crossEntropy(spec);
      const lossErr = relScalar(gpu.loss, cpu.loss);
      t.diagnostic(`loss ${gpu.loss} vs ${cpu.loss} (${lossErr.toExponential(2)}), count ${gpu.count} vs ${cpu.count}`);
      assert.equal(gpu.count, cpu.count);
      assert.ok(lossErr < 1e-6, `loss: relative error ${lossErr} ≥ 1e-6`);
      expectClose(t, { dlogits: [gpu.dlogits, cpu.dlogits] });
    });
  }

  for (const [rows, d] of [
    [0, 8],
    [1, 1],
    [50, 64],
    [3, 1000],
    [4097, 32],
  ] as const) {
    test(`l2NormalizeRows rows=${rows} d=${d}: forward and backward match`, { skip }, async (t) => {
      const rng = rngFor(`cuda-ops l2 ${rows} ${d}`);
      const x = rng.normals(rows * d, 3);
      const dy = rng.normals(rows * d);
      const cpu = await ops.l2NormalizeRows(x, rows, d);
      const gpu = await cudaOps.l2NormalizeRows(x, rows, d);
      const eps = 1e-3;
      const cpuE = await ops.l2NormalizeRows(x, rows, d, eps);
      const gpuE = await cudaOps.l2NormalizeRows(x, rows, d, eps);
      // dx = inv·(dy − y (y·dy)): its terms are dy·inv-sized; at d = 1 they cancel exactly (y = ±1),
      // leaving rounding noise on either side.
      let dxScale = 0;
      for (let i = 0; i < rows * d; i++) dxScale += (dy[i]! * cpu.inv[Math.floor(i / d)]!) ** 2;
      expectClose(t, {
        y: [gpu.y, cpu.y],
        inv: [gpu.inv, cpu.inv],
        'y (eps 1e-3)': [gpuE.y, cpuE.y],
        dx: [
          await cudaOps.l2NormalizeRowsBackward(cpu.y, cpu.inv, dy, rows, d),
          await ops.l2NormalizeRowsBackward(cpu.y, cpu.inv, dy, rows, d),
          Math.sqrt(dxScale),
        ],
      });
    });
  }

  // [B, T, C, K, silu, halo]
  const convCases: [number, number, number, number, boolean, boolean][] = [
    [1, 1, 1, 1, false, false],
    [2, 37, 48, 4, true, true],
    [3, 5, 70, 8, false, false],
    [3, 5, 70, 8, true, true],
    [1, 300, 17, 64, true, true],
    [4, 513, 33, 3, false, true],
    [2, 100, 1, 5, true, true],
  ];
  for (const [B, T, C, K, silu, halo] of convCases) {
    test(`shortConv B=${B} T=${T} C=${C} K=${K} silu=${silu} halo=${halo}: forward and backward match`, { skip }, async (t) => {
      const rng = rngFor(`cuda-ops shortConv ${B} ${T} ${C} ${K} ${silu} ${halo}`);
      const spec = {
        B,
        T,
        C,
        K,
        silu,
        x: rng.normals(B * T * C),
        w: rng.normals(K * C, 0.5),
        ...(halo ? { halo: rng.normals(B * (K - 1) * C) } : {}),
      };
      const dy = rng.normals(B * T * C);
      const cpuB = await ops.shortConvBackward(spec, dy);
      const gpuB = await cudaOps.shortConvBackward(spec, dy);
      assert.equal(gpuB.dhalo !== undefined, cpuB.dhalo !== undefined, 'dhalo exactly when the spec has a halo');
      expectClose(t, {
        y: [await cudaOps.shortConv(spec), await ops.shortConv(spec)],
        dx: [gpuB.dx, cpuB.dx],
        dw: [gpuB.dw, cpuB.dw],
        ...(cpuB.dhalo ? { dhalo: [gpuB.dhalo!, cpuB.dhalo] as [Float32Array, Float32Array] } : {}),
      });
    });
  }

  for (const [n, step, hyper] of [
    [1, 1, { lr: 1e-3 }],
    [10007, 1, { lr: 3e-3, weightDecay: 0.1 }],
    [10007, 7, { lr: 1e-2, beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.01 }],
    [300000, 1000, { lr: 5e-4, weightDecay: 0.05 }],
  ] as const) {
    test(`adamW n=${n} step=${step}: params, m and v match, in place`, { skip }, async (t) => {
      const rng = rngFor(`cuda-ops adamW ${n} ${step}`);
      const params = rng.normals(n);
      const grads = rng.normals(n, 0.1);
      const m = rng.normals(n, 0.01);
      const v = rng.f32(n, () => (0.01 * rng.normal()) ** 2);
      const cpu = { params: params.slice(), grads, m: m.slice(), v: v.slice() };
      const gpu = { params: params.slice(), grads, m: m.slice(), v: v.slice() };
      await ops.adamW(cpu, { ...hyper, step });
      await cudaOps.adamW(gpu, { ...hyper, step });
      expectClose(t, { params: [gpu.params, cpu.params], m: [gpu.m, cpu.m], v: [gpu.v, cpu.v] });
      // The update itself (params − params₀, far smaller than params) to 1e-5 of its size, give or
      // take one float32 ulp of the parameter: a wrong step size cannot hide under ‖params‖.
      let worst = 0;
      let differ = 0;
      for (let i = 0; i < n; i++) {
        const c = cpu.params[i]!;
        const d = Math.abs(gpu.params[i]! - c);
        if (d > 0) differ++;
        worst = Math.max(worst, d / (1e-5 * Math.abs(c - params[i]!) + ulp(c)));
      }
      t.diagnostic(`update check: worst ${worst.toExponential(2)} of the bound, ${differ} of ${n} parameters differ from the CPU's`);
      assert.ok(worst <= 1, `a parameter update differs from the CPU's by more than 1e-5 of the update + 1 ulp (${worst})`);
    });
  }

  test('sumSquares and gradNorm match (double accumulation)', { skip }, async (t) => {
    const rng = rngFor('cuda-ops sumSquares');
    const arrays = [
      new Float32Array(0),
      rng.normals(1),
      rng.normals(1000, 3),
      rng.normals(300001),
      rng.normals(17, 100),
      rng.normals(2_100_000),
    ];
    const cpu = await ops.sumSquares(arrays);
    const gpu = await cudaOps.sumSquares(arrays);
    const cpuN = await ops.gradNorm(arrays);
    const gpuN = await cudaOps.gradNorm(arrays);
    t.diagnostic(`sumSquares ${gpu} vs ${cpu}, gradNorm ${gpuN} vs ${cpuN}`);
    assert.ok(relScalar(gpu, cpu) < 1e-9, `sumSquares: ${gpu} vs ${cpu}`);
    assert.ok(relScalar(gpuN, cpuN) < 1e-9, `gradNorm: ${gpuN} vs ${cpuN}`);
    assert.equal(await cudaOps.sumSquares([]), 0);
    assert.equal(await cudaOps.gradNorm([new Float32Array(3)]), 0);
  });
});
