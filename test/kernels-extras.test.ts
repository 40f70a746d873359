// The facade's extra entry points: outputs into caller-owned buffers, the separable state term
// (zero-state forward + addStateTerm = forward from that state), the non-causal summary and
// state gradient, and the counter-based random fill.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { kernels, type Kind } from '../index.js';
import { assertClose } from './helpers/check.js';
import { randomSpec, refForward, refStateGrad, toF64 } from './helpers/reference.js';
import { rngFor } from './helpers/rng.js';

describe('forwardInto / backwardInto', () => {
  for (const kind of ['linear', 'vector_gate', 'gated_delta'] as Kind[]) {
    test(`${kind}: results equal forward/backward, written into the given arrays`, async () => {
      const rng = rngFor(`into-${kind}`);
      const spec = randomSpec(rng, { kind, T: 70, H: 2, dk: 8, dv: 6, chunkSize: 16, initialState: true });
      const dO = rng.normals(70 * 2 * 6);
      const f = await kernels.forward(spec);
      const fo = { o: new Float32Array(f.o.length).fill(NaN), finalState: new Float32Array(f.finalState.length).fill(NaN) };
      assert.equal(await kernels.forwardInto(spec, fo), fo);
      assert.deepEqual(fo, f);
      const b = await kernels.backward(spec, dO);
      const bo = kernels.backwardOutputs(spec);
      await kernels.backwardInto(spec, dO, undefined, bo);
      assert.deepEqual(bo, b);
      await assert.rejects(kernels.forwardInto(spec, { o: new Float32Array(3), finalState: fo.finalState }), /out\.o must have length 840/);
      const missing = { ...bo };
      delete missing.dInitialState;
      await assert.rejects(kernels.backwardInto(spec, dO, undefined, missing), /out\.dInitialState must be a Float32Array/);
    });
  }
});

describe('addStateTerm', () => {
  for (const kind of ['linear', 'scalar_gate', 'vector_gate'] as Kind[]) {
    test(`${kind}: forward from zero + addStateTerm(P) equals the forward from P`, async () => {
      const rng = rngFor(`state-term-${kind}`);
      const spec = randomSpec(rng, { kind, T: 300, H: 3, dk: 8, dv: 5, gates: 'strong' });
      const P = rng.normals(3 * 8 * 5);
      const o = (await kernels.forward(spec)).o;
      await kernels.addStateTerm(spec, P, o);
      const ref = refForward(toF64({ ...spec, initialState: P }));
      assertClose(o, ref.o, 1e-5, 'o', `${kind} seed-named state-term-${kind}`);
    });
  }
});

describe('non-causal linear summary and state gradient', () => {
  test('summary is (empty A, U = K^T V); stateGrad is Q^T dO', async () => {
    const rng = rngFor('noncausal-pieces');
    const spec = { ...randomSpec(rng, { kind: 'linear', T: 45, H: 2, dk: 7, dv: 5 }), causal: false };
    const s = await kernels.summary(spec);
    assert.equal(s.a.length, 0);
    assertClose(s.u, refForward(toF64(spec)).finalState, 1e-5, 'u', 'non-causal summary');
    const dO = rng.normals(45 * 2 * 5);
    const d = await kernels.stateGrad(spec, dO);
    // Q^T dO equals the causal state gradient's first-token-free form only for linear: check
    // against the explicit product in float64.
    const ref = new Float64Array(2 * 7 * 5);
    for (let t = 0; t < 45; t++)
      for (let h = 0; h < 2; h++)
        for (let i = 0; i < 7; i++)
          for (let j = 0; j < 5; j++) ref[(h * 7 + i) * 5 + j]! += spec.q[(t * 2 + h) * 7 + i]! * dO[(t * 2 + h) * 5 + j]!;
    assertClose(d, ref, 1e-5, 'D', 'non-causal stateGrad');
    // And the causal state gradient of linear attention is the same Q^T dO (A = I).
    assertClose(
      await kernels.stateGrad({ ...spec, causal: true }, dO),
      refStateGrad(toF64({ ...spec, causal: true }), dO),
      1e-5,
      'D',
      'causal',
    );
  });
});

describe('fillRandom', () => {
  test('a slice generated alone equals the same slice of the whole tensor', async () => {
    const whole = await kernels.fillRandom(new Float32Array(100_000), { seed: 7, dist: 'normal', scale: 2 });
    const part = await kernels.fillRandom(new Float32Array(1000), { seed: 7, offset: 31_337, dist: 'normal', scale: 2 });
    assert.deepEqual(part, whole.subarray(31_337, 32_337));
    const other = await kernels.fillRandom(new Float32Array(1000), { seed: 8, offset: 31_337, dist: 'normal', scale: 2 });
    assert.notDeepEqual(other, part);
  });
  test('normal draws have the requested scale; uniform draws stay in [lo, hi)', async () => {
    const n = 200_000;
    const x = await kernels.fillRandom(new Float32Array(n), { seed: 3, dist: 'normal', scale: 2 });
    let m = 0;
    let v = 0;
    for (const a of x) m += a / n;
    for (const a of x) v += (a - m) ** 2 / n;
    assert.ok(Math.abs(m) < 0.03, `mean ${m}`);
    assert.ok(Math.abs(Math.sqrt(v) - 2) < 0.03, `std ${Math.sqrt(v)}`);
    const u = await kernels.fillRandom(new Float32Array(n), { seed: 3, dist: 'uniform', lo: -0.1, hi: 0 });
    let lo = Infinity;
    let hi = -Infinity;
    for (const a of u) {
      lo = Math.min(lo, a);
      hi = Math.max(hi, a);
    }
    assert.ok(lo >= -0.1 && lo < -0.099 && hi <= 0 && hi > -0.001, `range [${lo}, ${hi}]`);
  });
  test('rejects a negative seed and a non-Float32Array', async () => {
    await assert.rejects(kernels.fillRandom(new Float32Array(3), { seed: -1, dist: 'normal' }), /seed must be an integer/);
    await assert.rejects(kernels.fillRandom([1, 2] as unknown as Float32Array, { seed: 1, dist: 'normal' }), /out must be a Float32Array/);
  });
});

describe('addInto', () => {
  test('adds elementwise in place, across thread blocks and a ragged tail', async () => {
    const rng = rngFor('add-into');
    for (const n of [1, 7, 65_536, 200_003]) {
      const a = rng.normals(n);
      const b = rng.normals(n);
      const want = Float32Array.from(a, (x, i) => x + b[i]!);
      await kernels.addInto(a, b);
      assert.deepEqual(a, want, `n=${n}`);
    }
  });
  test('rejects arrays of different lengths', async () => {
    await assert.rejects(kernels.addInto(new Float32Array(4), new Float32Array(3)), /src must have length 4/);
  });
});

describe('saveForBackward', () => {
  for (const kind of ['linear', 'scalar_gate', 'vector_gate', 'delta', 'gated_delta'] as Kind[]) {
    for (const initialState of [false, true]) {
      test(`${kind}${initialState ? ' with S0' : ''}: backward with the saved chunk states equals the recomputing backward`, async () => {
        const rng = rngFor(`saved-${kind}-${initialState}`);
        const spec = randomSpec(rng, { kind, T: 150, H: 2, dk: 8, dv: 6, chunkSize: 32, initialState, gates: 'strong' });
        const dO = rng.normals(150 * 2 * 6);
        const dSf = rng.normals(2 * 8 * 6);
        const f = await kernels.forward(spec, { saveForBackward: true });
        assert.ok(f.saved, 'forward returned no saved states');
        assert.deepEqual((await kernels.forward(spec)).o, f.o);
        const withSaved = await kernels.backward(spec, dO, dSf, f.saved);
        const recomputed = await kernels.backward(spec, dO, dSf);
        assert.deepEqual(withSaved, recomputed);
      });
    }
  }
  test('refuses saved states of other arrays, and non-causal saving', async () => {
    const rng = rngFor('saved-misuse');
    const spec = randomSpec(rng, { kind: 'linear', T: 40, H: 1, dk: 4, dv: 4 });
    const { saved } = await kernels.forward(spec, { saveForBackward: true });
    const dO = rng.normals(40 * 4);
    await assert.rejects(
      kernels.backward({ ...spec, q: spec.q.slice() }, dO, undefined, saved),
      /saved belongs to a forward on other arrays: q/,
    );
    await assert.rejects(kernels.backward(spec, dO, undefined, {} as never), /saved must be the 'saved' of a forward/);
    await assert.rejects(kernels.forward({ ...spec, causal: false }, { saveForBackward: true }), /saveForBackward is for causal attention/);
  });
});
