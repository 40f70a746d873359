// kernels.softmax against the float64 reference (causal rule: query i sees keys j ≤ qOffset + i;
// lse[h,i] = log Σ_j exp(scale·q_i·k_j) over the visible keys, natural log of the *scaled* scores).
// Metric: relative max error max|x − ref| / max|ref|. Bounds: 1e-5 for o (float32 softmax-weighted
// sums) and lse (absolute error ≤ 1e-5·max(1, |lse|)); 1e-4 for gradients, which go through
// recomputed probabilities and the cancellation in dS = P⊙(dP − rowsum(dO⊙O)) (same budget as the
// linear-attention backward).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { kernels, type SoftmaxSpec } from '../native/kernels.js';
import { rngFor } from './helpers/rng.js';
import { assertClose, describeCase, maxAbs } from './helpers/check.js';
import { fdSoftmaxGrad, refSoftmaxBackward, refSoftmaxForward } from './helpers/reference.js';

const FWD = 1e-5;
const BWD = 1e-4;

interface Case {
  Tq: number;
  Tk: number;
  H: number;
  dk: number;
  dv: number;
  causal: boolean;
  qOffset: number | undefined;
  scale?: number;
}

function makeSpec(name: string, c: Case) {
  const rng = rngFor(name);
  const spec: SoftmaxSpec = {
    Tq: c.Tq,
    Tk: c.Tk,
    H: c.H,
    dk: c.dk,
    dv: c.dv,
    causal: c.causal,
    q: rng.normals(c.Tq * c.H * c.dk),
    k: rng.normals(c.Tk * c.H * c.dk),
    v: rng.normals(c.Tk * c.H * c.dv),
  };
  if (c.qOffset !== undefined) spec.qOffset = c.qOffset;
  if (c.scale !== undefined) spec.scale = c.scale;
  const dO = rng.normals(c.Tq * c.H * c.dv);
  return { spec, dO, ctx: describeCase({ ...c }, rng.seed) };
}

function checkLse(got: Float32Array, want: Float64Array, ctx: string): void {
  assert.equal(got.length, want.length, `lse length (${ctx})`);
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i]! - want[i]!);
    assert.ok(err <= 1e-5 * Math.max(1, Math.abs(want[i]!)), `lse[${i}] = ${got[i]}, ref ${want[i]} (|err| ${err}) (${ctx})`);
  }
}

const CASES: Case[] = [];
for (const T of [1, 5, 64, 65, 130]) {
  CASES.push({ Tq: T, Tk: T, H: 2, dk: 16, dv: 12, causal: true, qOffset: undefined });
  CASES.push({ Tq: T, Tk: T, H: 1, dk: 8, dv: 20, causal: false, qOffset: undefined });
}
// Queries are the last Tq positions of Tk keys (a rank attending to all keys before its block end).
for (const [Tq, Tk] of [
  [1, 5],
  [5, 64],
  [64, 130],
  [65, 130],
  [7, 200],
] as const) {
  CASES.push({ Tq, Tk, H: 3, dk: 16, dv: 8, causal: true, qOffset: Tk - Tq });
  CASES.push({ Tq, Tk, H: 1, dk: 12, dv: 16, causal: false, qOffset: undefined });
}
// A query block in the middle of the keys (causal rows see a prefix; keys past qOffset+i hidden),
// and an explicit scale.
CASES.push({ Tq: 20, Tk: 100, H: 2, dk: 8, dv: 6, causal: true, qOffset: 40 });
CASES.push({ Tq: 33, Tk: 33, H: 2, dk: 8, dv: 6, causal: true, qOffset: undefined, scale: 0.7 });

describe('softmax attention forward and backward match the float64 reference', () => {
  for (const c of CASES) {
    const name = `softmax Tq=${c.Tq} Tk=${c.Tk} H=${c.H} dk=${c.dk} dv=${c.dv} ${c.causal ? 'causal' : 'non-causal'} qOffset=${c.qOffset ?? 0}${c.scale !== undefined ? ` scale=${c.scale}` : ''}`;
    test(name, async () => {
      const { spec, dO, ctx } = makeSpec(name, c);
      const fwd = await kernels.softmax.forward(spec);
      const ref = refSoftmaxForward(spec);
      assertClose(fwd.o, ref.o, FWD, 'o', ctx);
      checkLse(fwd.lse, ref.lse, ctx);
      const got = await kernels.softmax.backward(spec, fwd, dO);
      const want = refSoftmaxBackward(spec, dO);
      // Scale floor = largest reference gradient of the case (dq, dk are exactly 0 for one key).
      const floor = maxAbs(want.dq, want.dk, want.dv);
      assertClose(got.dq, want.dq, BWD, 'dq', ctx, floor);
      assertClose(got.dk, want.dk, BWD, 'dk', ctx, floor);
      assertClose(got.dv, want.dv, BWD, 'dv', ctx, floor);
    });
  }
});

describe('softmax attention backward matches finite differences on tiny cases', () => {
  const tiny: Case[] = [
    { Tq: 5, Tk: 5, H: 2, dk: 4, dv: 3, causal: true, qOffset: undefined },
    { Tq: 3, Tk: 7, H: 1, dk: 3, dv: 5, causal: true, qOffset: 4 },
    { Tq: 4, Tk: 6, H: 2, dk: 5, dv: 2, causal: false, qOffset: undefined },
  ];
  for (const c of tiny) {
    const name = `softmax FD Tq=${c.Tq} Tk=${c.Tk} H=${c.H} dk=${c.dk} dv=${c.dv} ${c.causal ? 'causal' : 'non-causal'} qOffset=${c.qOffset ?? 0}`;
    test(name, async () => {
      const { spec, dO, ctx } = makeSpec(name, c);
      const fwd = await kernels.softmax.forward(spec);
      const got = await kernels.softmax.backward(spec, fwd, dO);
      const [dq, dk, dv] = [fdSoftmaxGrad(spec, dO, 'q'), fdSoftmaxGrad(spec, dO, 'k'), fdSoftmaxGrad(spec, dO, 'v')];
      const floor = maxAbs(dq, dk, dv);
      assertClose(got.dq, dq, BWD, 'dq', ctx, floor);
      assertClose(got.dk, dk, BWD, 'dk', ctx, floor);
      assertClose(got.dv, dv, BWD, 'dv', ctx, floor);
    });
  }
});
