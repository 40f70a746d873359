// Sliding-window softmax attention (kernels.softmax with `window`) against the float64 softmax
// reference of test/helpers/reference.ts (its `window` option): query i (position qOffset + i)
// sees the keys j with qOffset + i − window < j ≤ qOffset + i. Bounds as in softmax.test.ts: 1e-5 relative for o and lse, 1e-4 for gradients;
// the reference backward itself is checked against finite differences on tiny cases.
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
  qOffset: number;
  window: number;
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
      const ref = refSoftmaxForward(spec);
      assertClose(fwd.o, ref.o, FWD, 'o', ctx);
      checkLse(fwd.lse, ref.lse, ctx);
      const got = await kernels.softmax.backward(spec, fwd, dO);
      const want = refSoftmaxBackward(spec, dO);
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
      const want = refSoftmaxBackward(spec, dO);
      for (const f of ['q', 'k', 'v'] as const) {
        const fd = fdSoftmaxGrad(spec, dO, f);
        const an = want[f === 'q' ? 'dq' : f === 'k' ? 'dk' : 'dv'];
        assertClose(an, fd, 1e-6, `d${f} vs finite differences`, ctx, maxAbs(fd));
      }
      // And the kernel's gradients against the same finite differences.
      const got = await kernels.softmax.backward(spec, await kernels.softmax.forward(spec), dO);
      assertClose(got.dk, fdSoftmaxGrad(spec, dO, 'k'), BWD, 'kernel dk vs finite differences', ctx, maxAbs(want.dk));
    }
  });

  test('bad window arguments are refused by name', async () => {
    const { spec } = makeSpec('bad', { Tq: 4, Tk: 4, H: 1, dk: 2, dv: 2, qOffset: 0, window: 2 });
    await assert.rejects(kernels.softmax.forward({ ...spec, window: -1 }), /window/);
    await assert.rejects(kernels.softmax.forward({ ...spec, window: 1.5 }), /window/);
    await assert.rejects(kernels.softmax.forward({ ...spec, causal: false }), /window needs causal attention/);
  });
});
