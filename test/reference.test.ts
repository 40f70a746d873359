// Self-checks of the float64 references in helpers/reference.ts (no native code): closed forms,
// special cases that must coincide, and hand-derived gradients against finite differences. If a
// kernel test fails, these say whether the reference can be trusted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rngFor } from './helpers/rng.js';
import { assertClose, relL2Err } from './helpers/check.js';
import {
  ALL_KINDS,
  applyAffine,
  fdGrad,
  fdSoftmaxGrad,
  randomSpec,
  refForward,
  refLoss,
  refSoftmaxBackward,
  refSoftmaxForward,
  refStateGrad,
  refSummary,
  type RefSpec,
} from './helpers/reference.js';

const TIGHT = 1e-12; // float64 against float64
const FD = 1e-7; // float64 central differences, h = 1e-6 relative

test('reference linear forward equals the closed form o_t = S0^T q_t + Σ_{s≤t} (q_t·k_s) v_s', () => {
  const rng = rngFor('ref-linear-closed');
  const [T, H, dk, dv] = [9, 2, 3, 4];
  const s = randomSpec(rng, { kind: 'linear', T, H, dk, dv, initialState: true });
  const { o } = refForward(s);
  const want = new Float64Array(T * H * dv);
  for (let t = 0; t < T; t++)
    for (let h = 0; h < H; h++)
      for (let j = 0; j < dv; j++) {
        let acc = 0;
        for (let i = 0; i < dk; i++) acc += s.initialState![(h * dk + i) * dv + j]! * s.q[(t * H + h) * dk + i]!;
        for (let r = 0; r <= t; r++) {
          let qk = 0;
          for (let i = 0; i < dk; i++) qk += s.q[(t * H + h) * dk + i]! * s.k[(r * H + h) * dk + i]!;
          acc += qk * s.v[(r * H + h) * dv + j]!;
        }
        want[(t * H + h) * dv + j] = acc;
      }
  assertClose(o, want, TIGHT, 'o', `seed=${rng.seed}`);
});

test('reference scalar_gate forward equals the closed form with decay products e^{Σ g}', () => {
  const rng = rngFor('ref-scalar-closed');
  const [T, H, dk, dv] = [8, 2, 3, 2];
  const s = randomSpec(rng, { kind: 'scalar_gate', T, H, dk, dv, initialState: true, gates: 'strong' });
  const { o } = refForward(s);
  const want = new Float64Array(T * H * dv);
  const G = (h: number, a: number, b: number) => {
    let x = 0;
    for (let r = a; r <= b; r++) x += s.g![r * H + h]!;
    return x;
  };
  for (let t = 0; t < T; t++)
    for (let h = 0; h < H; h++)
      for (let j = 0; j < dv; j++) {
        let acc = 0;
        for (let i = 0; i < dk; i++) acc += Math.exp(G(h, 0, t)) * s.initialState![(h * dk + i) * dv + j]! * s.q[(t * H + h) * dk + i]!;
        for (let r = 0; r <= t; r++) {
          let qk = 0;
          for (let i = 0; i < dk; i++) qk += s.q[(t * H + h) * dk + i]! * s.k[(r * H + h) * dk + i]!;
          acc += Math.exp(G(h, r + 1, t)) * qk * s.v[(r * H + h) * dv + j]!;
        }
        want[(t * H + h) * dv + j] = acc;
      }
  assertClose(o, want, TIGHT, 'o', `seed=${rng.seed}`);
});

test('reference special cases coincide: gated_delta(g=0)=delta, vector_gate(equal dims)=scalar_gate', () => {
  const rng = rngFor('ref-special');
  const [T, H, dk, dv] = [11, 2, 4, 3];
  const d = randomSpec(rng, { kind: 'gated_delta', T, H, dk, dv, initialState: true });
  const withZeroGate = refForward({ ...d, g: new Float64Array(T * H) });
  const asDelta = refForward({ ...d, kind: 'delta', g: undefined });
  assertClose(withZeroGate.o, asDelta.o, TIGHT, 'o', `seed=${rng.seed}`);
  assertClose(withZeroGate.finalState, asDelta.finalState, TIGHT, 'finalState', `seed=${rng.seed}`);
  const sg = randomSpec(rng, { kind: 'scalar_gate', T, H, dk, dv, initialState: true });
  const vg = Float64Array.from({ length: T * H * dk }, (_, x) => sg.g![Math.floor(x / dk)]!);
  const a = refForward(sg);
  const b = refForward({ ...sg, kind: 'vector_gate', g: vg });
  assertClose(b.o, a.o, TIGHT, 'o', `seed=${rng.seed}`);
  assertClose(b.finalState, a.finalState, TIGHT, 'finalState', `seed=${rng.seed}`);
});

test('reference delta single token: S1 = S0 + β k (v − S0^T k)^T', () => {
  const rng = rngFor('ref-delta-1');
  const [dk, dv] = [3, 2];
  const s = randomSpec(rng, { kind: 'delta', T: 1, H: 1, dk, dv, initialState: true });
  const S0 = s.initialState!;
  const b = s.beta![0]!;
  const want = new Float64Array(dk * dv);
  for (let j = 0; j < dv; j++) {
    let sk = 0;
    for (let i = 0; i < dk; i++) sk += S0[i * dv + j]! * s.k[i]!;
    for (let i = 0; i < dk; i++) want[i * dv + j] = S0[i * dv + j]! + b * s.k[i]! * (s.v[j]! - sk);
  }
  assertClose(refForward(s).finalState, want, TIGHT, 'finalState', `seed=${rng.seed}`);
});

test('finite differences of the linear reference match the hand-derived gradient', () => {
  const rng = rngFor('ref-linear-grad');
  const [T, H, dk, dv] = [6, 2, 3, 4];
  const s = randomSpec(rng, { kind: 'linear', T, H, dk, dv, initialState: true });
  const dO = rng.normals(T * H * dv);
  const dSf = rng.normals(H * dk * dv);
  // L = Σ_t q_t^T S_t dO_t + <dSf, S_T>: dq_t = S_t dO_t; dS0 = Σ_t q_t dO_t^T + dSf;
  // with Z_s = Σ_{t≥s} q_t dO_t^T + dSf: dk_s = Z_s v_s, dv_s = Z_s^T k_s.
  const dq = new Float64Array(T * H * dk);
  const dkk = new Float64Array(T * H * dk);
  const dvv = new Float64Array(T * H * dv);
  const dS0 = new Float64Array(H * dk * dv);
  for (let h = 0; h < H; h++) {
    const S = Float64Array.from({ length: dk * dv }, (_, x) => s.initialState![h * dk * dv + x]!);
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < dk; i++)
        for (let j = 0; j < dv; j++) S[i * dv + j] = S[i * dv + j]! + s.k[(t * H + h) * dk + i]! * s.v[(t * H + h) * dv + j]!;
      for (let i = 0; i < dk; i++) {
        let acc = 0;
        for (let j = 0; j < dv; j++) acc += S[i * dv + j]! * dO[(t * H + h) * dv + j]!;
        dq[(t * H + h) * dk + i] = acc;
      }
    }
    const Z = Float64Array.from({ length: dk * dv }, (_, x) => dSf[h * dk * dv + x]!);
    for (let t = T - 1; t >= 0; t--) {
      for (let i = 0; i < dk; i++)
        for (let j = 0; j < dv; j++) Z[i * dv + j] = Z[i * dv + j]! + s.q[(t * H + h) * dk + i]! * dO[(t * H + h) * dv + j]!;
      for (let i = 0; i < dk; i++) {
        let acc = 0;
        for (let j = 0; j < dv; j++) acc += Z[i * dv + j]! * s.v[(t * H + h) * dv + j]!;
        dkk[(t * H + h) * dk + i] = acc;
      }
      for (let j = 0; j < dv; j++) {
        let acc = 0;
        for (let i = 0; i < dk; i++) acc += Z[i * dv + j]! * s.k[(t * H + h) * dk + i]!;
        dvv[(t * H + h) * dv + j] = acc;
      }
    }
    dS0.set(Z, h * dk * dv);
  }
  const L = (x: RefSpec) => refLoss(x, dO, dSf);
  const ctx = `seed=${rng.seed}`;
  assertClose(fdGrad(L, s, 'q'), dq, FD, 'dq', ctx);
  assertClose(fdGrad(L, s, 'k'), dkk, FD, 'dk', ctx);
  assertClose(fdGrad(L, s, 'v'), dvv, FD, 'dv', ctx);
  assertClose(fdGrad(L, s, 'initialState'), dS0, FD, 'dInitialState', ctx);
});

for (const kind of ALL_KINDS) {
  test(`reference summary of ${kind}: forward from a random state equals A·S + U; stateGrad equals FD`, () => {
    const rng = rngFor(`ref-summary-${kind}`);
    const [T, H, dk, dv] = [13, 2, 4, 3];
    const s = randomSpec(rng, { kind, T, H, dk, dv, initialState: true, gates: 'strong' });
    const { aFull, u } = refSummary(s);
    const ctx = `kind=${kind} seed=${rng.seed}`;
    assertClose(refForward(s).finalState, applyAffine(aFull, s.initialState!, u, H, dk, dv), TIGHT, 'finalState', ctx);
    const dO = rng.normals(T * H * dv);
    const fd = fdGrad((x) => refLoss(x, dO), s, 'initialState');
    assertClose(refStateGrad(s, dO), fd, FD, 'stateGrad', ctx);
  });
}

test('softmax reference: analytic backward equals finite differences (causal with offset, non-causal)', () => {
  const rng = rngFor('ref-softmax');
  for (const [Tq, Tk, causal, qOffset] of [
    [4, 7, true, 3],
    [5, 5, false, 0],
    [3, 3, true, 0],
  ] as const) {
    const [H, dk, dv] = [2, 3, 4];
    const s = { Tq, Tk, H, dk, dv, causal, qOffset, q: rng.normals(Tq * H * dk), k: rng.normals(Tk * H * dk), v: rng.normals(Tk * H * dv) };
    const dO = rng.normals(Tq * H * dv);
    const an = refSoftmaxBackward(s, dO);
    const ctx = `Tq=${Tq} Tk=${Tk} causal=${causal} seed=${rng.seed}`;
    assertClose(an.dq, fdSoftmaxGrad(s, dO, 'q'), FD, 'dq', ctx);
    assertClose(an.dk, fdSoftmaxGrad(s, dO, 'k'), FD, 'dk', ctx);
    assertClose(an.dv, fdSoftmaxGrad(s, dO, 'v'), FD, 'dv', ctx);
    const { o, lse } = refSoftmaxForward(s);
    assert.ok(o.every(Number.isFinite) && lse.every(Number.isFinite), ctx);
  }
});

test("relL2Err (the GPU tests' metric): ‖x − ref‖ / max(‖ref‖, floor), NaN on a length mismatch or a non-finite entry", () => {
  const rng = rngFor('relL2Err');
  const ref = Float32Array.from({ length: 37 }, () => rng.normal());
  const x = Float32Array.from(ref, (r) => r + 1e-3 * rng.normal());
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (x[i]! - ref[i]!) ** 2;
    den += ref[i]! ** 2;
  }
  assert.ok(Math.abs(relL2Err(x, ref) - Math.sqrt(num / den)) < 1e-15);
  assert.ok(Math.abs(relL2Err(x, ref, 1e6) - Math.sqrt(num) / 1e6) < 1e-18);
  assert.equal(relL2Err(Float32Array.of(3, 4), new Float32Array(2)), 5); // zero scale: absolute
  assert.ok(Number.isNaN(relL2Err(x, ref.subarray(1))));
  assert.ok(Number.isNaN(relL2Err(Float32Array.of(1, Number.NaN), Float32Array.of(1, 1))));
  const inf = Float32Array.of(1, -Infinity);
  assert.ok(Number.isNaN(relL2Err(inf, inf)));
  assert.equal(relL2Err(inf, inf, 0, true), 0);
  assert.ok(Number.isNaN(relL2Err(Float32Array.of(1, 0), inf, 0, true)));
});
