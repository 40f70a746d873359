// Sliding-window softmax attention (kernels.softmax with `window`) against a float64 reference
// written here: query i (position qOffset + i) sees the keys j with qOffset + i − window < j ≤
// qOffset + i. Bounds as in softmax.test.ts: 1e-5 relative for o and lse, 1e-4 for gradients;
// the reference backward itself is checked against finite differences on tiny cases.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { kernels, type SoftmaxSpec } from '../native/kernels.js';
import { rngFor } from './helpers/rng.js';
import { assertClose, describeCase, maxAbs } from './helpers/check.js';

const FWD = 1e-5;
const BWD = 1e-4;

interface Case {
  Tq: number;
  Tk: number;
  H: number;
  dk: number;
  dv: number;
  qOffset: number;
  window: number;
}

type Arr = Float32Array | Float64Array;

/** Probabilities of row i of head h over its visible keys [lo, hi). */
function row(s: SoftmaxSpec, h: number, i: number, q: Arr, k: Arr): { lo: number; hi: number; p: Float64Array; lse: number } {
  const { H, dk } = s;
  const Tk = s.Tk ?? s.Tq;
  const pos = (s.qOffset ?? 0) + i;
  const hi = Math.min(Tk, pos + 1);
  const lo = s.window ? Math.max(0, pos - s.window + 1) : 0;
  const scale = s.scale ?? 1 / Math.sqrt(dk);
  const n = Math.max(0, hi - lo);
  const p = new Float64Array(n);
  if (n === 0) return { lo, hi, p, lse: -Infinity };
  let m = -Infinity;
  for (let j = lo; j < hi; j++) {
    let acc = 0;
    for (let d = 0; d < dk; d++) acc += q[(i * H + h) * dk + d]! * k[(j * H + h) * dk + d]!;
    p[j - lo] = scale * acc;
    m = Math.max(m, p[j - lo]!);
  }
  let z = 0;
  for (let j = 0; j < n; j++) {
    p[j] = Math.exp(p[j]! - m);
    z += p[j]!;
  }
  for (let j = 0; j < n; j++) p[j] = p[j]! / z;
  return { lo, hi, p, lse: m + Math.log(z) };
}

function refForward(s: SoftmaxSpec, q: Arr = s.q, k: Arr = s.k, v: Arr = s.v): { o: Float64Array; lse: Float64Array } {
  const { Tq, H, dv } = s;
  const o = new Float64Array(Tq * H * dv);
  const lse = new Float64Array(H * Tq);
  for (let h = 0; h < H; h++)
    for (let i = 0; i < Tq; i++) {
      const r = row(s, h, i, q, k);
      lse[h * Tq + i] = r.lse;
      for (let j = r.lo; j < r.hi; j++)
        for (let d = 0; d < dv; d++) o[(i * H + h) * dv + d] = o[(i * H + h) * dv + d]! + r.p[j - r.lo]! * v[(j * H + h) * dv + d]!;
    }
  return { o, lse };
}

function refBackward(s: SoftmaxSpec, dO: Arr): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { Tq, H, dk, dv } = s;
  const Tk = s.Tk ?? Tq;
  const scale = s.scale ?? 1 / Math.sqrt(dk);
  const dq = new Float64Array(Tq * H * dk);
  const dK = new Float64Array(Tk * H * dk);
  const dV = new Float64Array(Tk * H * dv);
  for (let h = 0; h < H; h++)
    for (let i = 0; i < Tq; i++) {
      const r = row(s, h, i, s.q, s.k);
      const ob = (i * H + h) * dv;
      const dP = new Float64Array(r.p.length);
      let Di = 0;
      for (let j = r.lo; j < r.hi; j++) {
        let acc = 0;
        for (let d = 0; d < dv; d++) acc += dO[ob + d]! * s.v[(j * H + h) * dv + d]!;
        dP[j - r.lo] = acc;
        Di += r.p[j - r.lo]! * acc;
      }
      for (let j = r.lo; j < r.hi; j++) {
        const p = r.p[j - r.lo]!;
        for (let d = 0; d < dv; d++) dV[(j * H + h) * dv + d] = dV[(j * H + h) * dv + d]! + p * dO[ob + d]!;
        const dS = p * (dP[j - r.lo]! - Di) * scale;
        for (let d = 0; d < dk; d++) {
          dq[(i * H + h) * dk + d] = dq[(i * H + h) * dk + d]! + dS * s.k[(j * H + h) * dk + d]!;
          dK[(j * H + h) * dk + d] = dK[(j * H + h) * dk + d]! + dS * s.q[(i * H + h) * dk + d]!;
        }
      }
    }
  return { dq, dk: dK, dv: dV };
}

/** Central differences of L = Σ dO⊙o (float64 forward) w.r.t. every element of q, k or v. */
function fdGrad(s: SoftmaxSpec, dO: Arr, field: 'q' | 'k' | 'v'): Float64Array {
  const x = { q: Float64Array.from(s.q), k: Float64Array.from(s.k), v: Float64Array.from(s.v) };
  const loss = () => {
    const { o } = refForward(s, x.q, x.k, x.v);
    let L = 0;
    for (let i = 0; i < o.length; i++) L += o[i]! * dO[i]!;
    return L;
  };
  const a = x[field];
  const g = new Float64Array(a.length);
  const h = 1e-6;
  for (let i = 0; i < a.length; i++) {
    const v0 = a[i]!;
    a[i] = v0 + h;
    const lp = loss();
    a[i] = v0 - h;
    const lm = loss();
    a[i] = v0;
    g[i] = (lp - lm) / (2 * h);
  }
  return g;
}

function makeSpec(name: string, c: Case) {
  const rng = rngFor(name);
  const spec: SoftmaxSpec = {
    Tq: c.Tq,
    Tk: c.Tk,
    H: c.H,
    dk: c.dk,
    dv: c.dv,
    causal: true,
    qOffset: c.qOffset,
    window: c.window,
    q: rng.normals(c.Tq * c.H * c.dk),
    k: rng.normals(c.Tk * c.H * c.dk),
    v: rng.normals(c.Tk * c.H * c.dv),
  };
  return { spec, dO: rng.normals(c.Tq * c.H * c.dv), ctx: describeCase({ ...c }, rng.seed) };
}

function checkLse(got: Float32Array, want: Float64Array, ctx: string): void {
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i]! - want[i]!);
    assert.ok(err <= 1e-5 * Math.max(1, Math.abs(want[i]!)), `lse[${i}] = ${got[i]}, ref ${want[i]} (|err| ${err}) (${ctx})`);
  }
}

const CASES: Case[] = [];
// Whole sequences: windows shorter than, across and longer than the kernel's tiles (64 × 128).
for (const [T, w] of [
  [5, 1],
  [5, 3],
  [70, 16],
  [200, 1],
  [200, 37],
  [300, 128],
  [300, 129],
  [260, 500],
] as const)
  CASES.push({ Tq: T, Tk: T, H: 2, dk: 8, dv: 6, qOffset: 0, window: w });
// A rank's block after a halo of window − 1 keys (the sequence-parallel layout), and a block in
// the middle of longer keys.
CASES.push({ Tq: 90, Tk: 90 + 23, H: 3, dk: 8, dv: 4, qOffset: 23, window: 24 });
CASES.push({ Tq: 64, Tk: 64 + 129, H: 1, dk: 16, dv: 8, qOffset: 129, window: 130 });
CASES.push({ Tq: 40, Tk: 300, H: 2, dk: 4, dv: 4, qOffset: 150, window: 70 });

describe('sliding-window softmax attention matches a float64 reference', () => {
  for (const c of CASES) {
    const name = `softmax window=${c.window} Tq=${c.Tq} Tk=${c.Tk} qOffset=${c.qOffset} H=${c.H}`;
    test(name, async () => {
      const { spec, dO, ctx } = makeSpec(name, c);
      const fwd = await kernels.softmax.forward(spec);
      const ref = refForward(spec);
      assertClose(fwd.o, ref.o, FWD, 'o', ctx);
      checkLse(fwd.lse, ref.lse, ctx);
      const got = await kernels.softmax.backward(spec, fwd, dO);
      const want = refBackward(spec, dO);
      const floor = maxAbs(want.dq, want.dk, want.dv);
      assertClose(got.dq, want.dq, BWD, 'dq', ctx, floor);
      assertClose(got.dk, want.dk, BWD, 'dk', ctx, floor);
      assertClose(got.dv, want.dv, BWD, 'dv', ctx, floor);
    });
  }

  test('window ≥ the sequence equals the unwindowed kernel bit for bit', async () => {
    const { spec } = makeSpec('window-large', { Tq: 150, Tk: 150, H: 2, dk: 8, dv: 8, qOffset: 0, window: 150 });
    const a = await kernels.softmax.forward(spec);
    const b = await kernels.softmax.forward({ ...spec, window: 0 });
    assert.deepEqual(a.o, b.o);
    assert.deepEqual(a.lse, b.lse);
  });

  test('the float64 reference backward matches finite differences', async () => {
    for (const c of [
      { Tq: 7, Tk: 7, H: 1, dk: 3, dv: 2, qOffset: 0, window: 3 },
      { Tq: 4, Tk: 6, H: 2, dk: 2, dv: 3, qOffset: 2, window: 2 },
    ]) {
      const { spec, dO, ctx } = makeSpec(`fd-${c.window}-${c.Tq}`, c);
      const want = refBackward(spec, dO);
      for (const f of ['q', 'k', 'v'] as const) {
        const fd = fdGrad(spec, dO, f);
        const an = want[f === 'q' ? 'dq' : f === 'k' ? 'dk' : 'dv'];
        assertClose(an, fd, 1e-6, `d${f} vs finite differences`, ctx, maxAbs(fd));
      }
      // And the kernel's gradients against the same finite differences.
      const got = await kernels.softmax.backward(spec, await kernels.softmax.forward(spec), dO);
      assertClose(got.dk, fdGrad(spec, dO, 'k'), BWD, 'kernel dk vs finite differences', ctx, maxAbs(want.dk));
    }
  });

  test('bad window arguments are refused by name', async () => {
    const { spec } = makeSpec('bad', { Tq: 4, Tk: 4, H: 1, dk: 2, dv: 2, qOffset: 0, window: 2 });
    await assert.rejects(kernels.softmax.forward({ ...spec, window: -1 }), /window/);
    await assert.rejects(kernels.softmax.forward({ ...spec, window: 1.5 }), /window/);
    await assert.rejects(kernels.softmax.forward({ ...spec, causal: false }), /window needs causal attention/);
  });
});
