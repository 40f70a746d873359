// The general float32 CUDA attention kernels (native/cuda-attention.ts) against the CPU kernels
// (native/kernels.ts) on fresh random inputs: every linear-attention kind with and without an
// initial state over several shapes (T not a multiple of the 64-token checkpoint, T = 1, dk ≠ dv,
// head dims 16, 64 and odd ones, H = 2), the sequence-parallel pieces, non-causal linear, and
// softmax attention with and without a sliding window. They run only where build-cuda/lasp_cuda.node
// is built and a CUDA device answers; elsewhere they are skipped with the reason, and only the
// argument checks and the "unavailable" rejection are exercised.
// Metric: relative L2 error ‖gpu − cpu‖ / ‖cpu‖ < 1e-5 (2e-5 for the gated kinds' long case,
// where e^g products over hundreds of tokens round differently in the chunked CPU form and the
// token-by-token GPU form).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { cudaKernels } from '../native/cuda-attention.js';
import { cudaStatus } from '../native/cuda.js';
import { kernels, type AttentionSpec, type Kind, type SoftmaxSpec } from '../native/kernels.js';
import { ALL_KINDS, randomSpec } from './helpers/reference.js';
import { relL2Err } from './helpers/check.js';
import { rngFor, type Rng } from './helpers/rng.js';

const status = cudaStatus();
const skip = status.available ? false : `CUDA kernels unavailable: ${status.reason}`;

/** Relative L2 error (helpers/check.ts); non-finite reference entries (lse = −∞) must match exactly. */
function relErr(x: Float32Array, ref: Float32Array, floor = 0): number {
  return relL2Err(x, ref, floor, true);
}

function norm(x: Float32Array): number {
  let s = 0;
  for (const v of x) s += v * v;
  return Math.sqrt(s);
}

function checkAll(t: { diagnostic(msg: string): void }, errs: Record<string, number>, tol: number, seed: number): void {
  t.diagnostic(
    Object.entries(errs)
      .map(([name, e]) => `${name} ${e.toExponential(2)}`)
      .join(', '),
  );
  for (const [name, e] of Object.entries(errs)) {
    assert.ok(e < tol, `${name}: relative error ${e.toExponential(2)} >= ${tol} (seed ${seed})`);
  }
}

describe('cuda general attention', () => {
  test('reject every call when CUDA is unavailable', { skip: status.available ? 'CUDA is available here' : false }, async () => {
    assert.equal(status.available, false);
    const spec = randomSpec(rngFor('cuda-attention unavailable'), { kind: 'gated_delta', T: 5, H: 1, dk: 4, dv: 3 });
    const dO = new Float32Array(5 * 3);
    await assert.rejects(cudaKernels.forward(spec), /lasp cuda: unavailable: \S/);
    await assert.rejects(cudaKernels.backward(spec, dO), /lasp cuda: unavailable/);
    await assert.rejects(cudaKernels.summary(spec), /lasp cuda: unavailable/);
    await assert.rejects(cudaKernels.stateGrad(spec, dO), /lasp cuda: unavailable/);
    const lin = randomSpec(rngFor('cuda-attention unavailable linear'), { kind: 'linear', T: 5, H: 1, dk: 4, dv: 3 });
    await assert.rejects(cudaKernels.addStateTerm(lin, new Float32Array(12), new Float32Array(15)), /lasp cuda: unavailable/);
    const x = new Float32Array(5 * 4);
    const sm: SoftmaxSpec = { Tq: 5, H: 1, dk: 4, dv: 4, q: x, k: x, v: x, window: 2 };
    await assert.rejects(cudaKernels.softmax.forward(sm), /lasp cuda: unavailable/);
    await assert.rejects(cudaKernels.softmax.backward(sm, { o: x, lse: new Float32Array(5) }, x), /lasp cuda: unavailable/);
  });

  test('validate arguments before touching the device', async () => {
    const x = new Float32Array(10);
    await assert.rejects(cudaKernels.forward({ kind: 'linear', T: 4, H: 1, dk: 4, dv: 4, q: x, k: x, v: x }), /q must have length 16/);
    const y = new Float32Array(16);
    await assert.rejects(
      cudaKernels.forward({ kind: 'scalar_gate', T: 4, H: 1, dk: 4, dv: 4, q: y, k: y, v: y }),
      /g \(log gates\) is required/,
    );
    await assert.rejects(cudaKernels.forward({ kind: 'delta', T: 4, H: 1, dk: 4, dv: 4, q: y, k: y, v: y, causal: false }), /causal=false/);
    const big = new Float32Array(1024);
    await assert.rejects(
      cudaKernels.forward({ kind: 'linear', T: 1, H: 1, dk: 1024, dv: 1, q: big, k: big, v: new Float32Array(1) }),
      /dk must be <= 512/,
    );
    await assert.rejects(
      cudaKernels.addStateTerm({ kind: 'delta', T: 4, H: 1, dk: 4, dv: 4, q: y, k: y, v: y, beta: new Float32Array(4) }, y, y),
      /addStateTerm needs causal linear/,
    );
    await assert.rejects(
      cudaKernels.softmax.forward({ Tq: 4, H: 1, dk: 4, dv: 4, q: y, k: y, v: y, window: 3, causal: false }),
      /window needs causal/,
    );
    await assert.rejects(cudaKernels.backward({ kind: 'linear', T: 4, H: 1, dk: 4, dv: 4, q: y, k: y, v: y }, x), /dO must have length 16/);
  });

  // [T, H, dk, dv]
  const shapes: [number, number, number, number][] = [
    [150, 2, 16, 16],
    [1, 2, 16, 16],
    [200, 2, 64, 64],
    [130, 2, 24, 40],
    [70, 1, 128, 96],
    [9, 2, 5, 3],
  ];
  for (const kind of ALL_KINDS) {
    for (const [T, H, dk, dv] of shapes) {
      for (const initialState of [false, true]) {
        const name = `${kind} T=${T} H=${H} dk=${dk} dv=${dv}${initialState ? ' with initial state' : ''}`;
        test(`${name}: forward, backward, summary, stateGrad and addStateTerm match the CPU`, { skip }, async (t) => {
          const rng = rngFor(`cuda-attention ${name}`);
          await compareKind(t, rng, kind, T, H, dk, dv, initialState, 1e-5);
        });
      }
    }
  }
  for (const kind of ['scalar_gate', 'vector_gate', 'gated_delta'] as Kind[]) {
    test(`${kind} T=700 dk=dv=32 with initial state (long gated run): match the CPU`, { skip }, async (t) => {
      const rng = rngFor(`cuda-attention long ${kind}`);
      await compareKind(t, rng, kind, 700, 2, 32, 32, true, 2e-5);
    });
  }

  // One long sequence is cut into P segments on the GPU (general_attention.cu, segments_for): at
  // T = 4096 into 16 of 256 tokens (summaries, a fold on the device, every segment at once); T = 4099
  // (prime) runs whole. T = 700 above runs as 2 segments of 350.
  for (const kind of ALL_KINDS) {
    for (const T of [4096, 4099]) {
      test(`${kind} T=${T} dk=dv=32 with initial state (${T === 4096 ? '16 segments' : 'whole'}): match the CPU`, { skip }, async (t) => {
        const rng = rngFor(`cuda-attention segments ${kind} ${T}`);
        await compareKind(t, rng, kind, T, 2, 32, 32, true, 2e-5);
      });
    }
  }

  for (const [T, H, dk, dv] of [
    [150, 2, 16, 16],
    [33, 2, 24, 40],
    [1, 1, 64, 64],
  ] as const) {
    for (const initialState of [false, true]) {
      test(`non-causal linear T=${T} dk=${dk} dv=${dv}${initialState ? ' with initial state' : ''}: match the CPU`, { skip }, async (t) => {
        const rng = rngFor(`cuda-attention non-causal ${T} ${dk} ${dv} ${initialState}`);
        const spec = randomSpec(rng, { kind: 'linear', T, H, dk, dv, initialState, causal: false });
        const dO = rng.normals(T * H * dv);
        const dF = rng.normals(H * dk * dv, 0.5);
        const [cf, gf] = [await kernels.forward(spec), await cudaKernels.forward(spec)];
        const [cb, gb] = [await kernels.backward(spec, dO, dF), await cudaKernels.backward(spec, dO, dF)];
        const [cs, gs] = [await kernels.summary(spec), await cudaKernels.summary(spec)];
        const [cd, gd] = [await kernels.stateGrad(spec, dO), await cudaKernels.stateGrad(spec, dO)];
        const errs: Record<string, number> = {
          o: relErr(gf.o, cf.o),
          finalState: relErr(gf.finalState, cf.finalState),
          dq: relErr(gb.dq, cb.dq),
          dk: relErr(gb.dk, cb.dk),
          dv: relErr(gb.dv, cb.dv),
          u: relErr(gs.u, cs.u),
          D: relErr(gd, cd),
        };
        if (initialState) errs.dInitialState = relErr(gb.dInitialState!, cb.dInitialState!);
        else assert.equal(gb.dInitialState, undefined);
        assert.equal(gs.a.length, 0);
        checkAll(t, errs, 1e-5, rng.seed);
      });
    }
  }

  // Softmax: [Tq, Tk, qOffset, H, dk, dv, causal, window]
  const softCases: [number, number, number, number, number, number, boolean, number][] = [
    [100, 100, 0, 2, 16, 16, true, 0],
    [100, 100, 0, 2, 16, 16, true, 7],
    [70, 70, 0, 2, 64, 64, true, 0],
    [70, 70, 0, 2, 64, 64, true, 7],
    // One query (a decoding step) at position 5. (Tq = Tk = 1 would make dq and dk pure rounding
    // noise: with a single key, dP − D = dO·v − dO·o = 0.)
    [1, 6, 5, 2, 16, 16, true, 0],
    [1, 6, 5, 2, 16, 16, true, 3],
    [40, 130, 90, 2, 24, 40, true, 0],
    [40, 130, 90, 2, 24, 40, true, 7],
    [40, 130, 90, 2, 24, 40, true, 100],
    [50, 80, 0, 2, 32, 16, false, 0],
    [30, 60, 10, 1, 128, 96, true, 0],
    // Rows past the keys: with a window of 7, queries at positions ≥ 26 see no key (o = 0, lse = −∞).
    [20, 20, 10, 2, 16, 16, true, 7],
  ];
  for (const [Tq, Tk, qOffset, H, dk, dv, causal, window] of softCases) {
    const name = `softmax Tq=${Tq} Tk=${Tk} qOffset=${qOffset} H=${H} dk=${dk} dv=${dv} causal=${causal} window=${window}`;
    test(`${name}: forward and backward match the CPU`, { skip }, async (t) => {
      const rng = rngFor(`cuda-attention ${name}`);
      const spec: SoftmaxSpec = {
        Tq,
        Tk,
        H,
        dk,
        dv,
        q: rng.normals(Tq * H * dk),
        k: rng.normals(Tk * H * dk),
        v: rng.normals(Tk * H * dv),
        causal,
        qOffset,
        window,
      };
      const dO = rng.normals(Tq * H * dv);
      const cf = await kernels.softmax.forward(spec);
      const gf = await cudaKernels.softmax.forward(spec);
      const cb = await kernels.softmax.backward(spec, cf, dO);
      const gb = await cudaKernels.softmax.backward(spec, gf, dO);
      checkAll(
        t,
        {
          o: relErr(gf.o, cf.o),
          lse: relErr(gf.lse, cf.lse),
          dq: relErr(gb.dq, cb.dq),
          dk: relErr(gb.dk, cb.dk),
          dv: relErr(gb.dv, cb.dv),
        },
        1e-5,
        rng.seed,
      );
    });
  }
});

async function compareKind(
  t: { diagnostic(msg: string): void },
  rng: Rng,
  kind: Kind,
  T: number,
  H: number,
  dk: number,
  dv: number,
  initialState: boolean,
  tol: number,
): Promise<void> {
  const spec: AttentionSpec = randomSpec(rng, { kind, T, H, dk, dv, initialState });
  const dO = rng.normals(T * H * dv);
  const dF = rng.normals(H * dk * dv, 0.5);
  const cf = await kernels.forward(spec);
  const gf = await cudaKernels.forward(spec);
  const cb = await kernels.backward(spec, dO, dF);
  const gb = await cudaKernels.backward(spec, dO, dF);
  // Without dFinalState too (the gradient then starts from zero at the end).
  const cb0 = await kernels.backward(spec, dO);
  const gb0 = await cudaKernels.backward(spec, dO);
  const cs = await kernels.summary(spec);
  const gs = await cudaKernels.summary(spec);
  const cd = await kernels.stateGrad(spec, dO);
  const gd = await cudaKernels.stateGrad(spec, dO);
  const errs: Record<string, number> = {
    o: relErr(gf.o, cf.o),
    finalState: relErr(gf.finalState, cf.finalState),
    dq: relErr(gb.dq, cb.dq),
    dk: relErr(gb.dk, cb.dk),
    dv: relErr(gb.dv, cb.dv),
    'dq (no dFinal)': relErr(gb0.dq, cb0.dq),
    'dk (no dFinal)': relErr(gb0.dk, cb0.dk),
    'dv (no dFinal)': relErr(gb0.dv, cb0.dv),
    u: relErr(gs.u, cs.u),
    D: relErr(gd, cd),
  };
  assert.equal(gs.a.length, cs.a.length, 'summary a length');
  if (cs.a.length > 0) errs.a = relErr(gs.a, cs.a);
  // dg sums products that cancel: at T = 1 without an initial state it is exactly 0 and the CPU's
  // chunked identity (q·dq − k·dk + …) returns rounding noise of ~1e-7·‖dq‖ there, so dg's error is
  // measured against max(‖dg‖, ‖dq‖) (a wrong term would still be O(‖dg‖) off).
  for (const name of ['dg', 'dbeta', 'dInitialState'] as const) {
    assert.equal(gb[name] === undefined, cb[name] === undefined, `${name} present on both or neither`);
    if (cb[name]) errs[name] = relErr(gb[name]!, cb[name]!, name === 'dg' ? norm(cb.dq) : 0);
  }
  if (cb0.dg) errs['dg (no dFinal)'] = relErr(gb0.dg!, cb0.dg, norm(cb0.dq));
  if (cb0.dbeta) errs['dbeta (no dFinal)'] = relErr(gb0.dbeta!, cb0.dbeta);
  if (kind === 'linear' || kind === 'scalar_gate' || kind === 'vector_gate') {
    const state = rng.normals(H * dk * dv, 0.5);
    const o0 = rng.normals(T * H * dv);
    const oc = o0.slice();
    const og = o0.slice();
    await kernels.addStateTerm(spec, state, oc);
    await cudaKernels.addStateTerm(spec, state, og);
    errs.addStateTerm = relErr(og, oc);
  }
  checkAll(t, errs, tol, rng.seed);
}
