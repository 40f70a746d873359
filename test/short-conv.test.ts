// The short causal convolution (native/ops.ts shortConv) against a float64 reference: forward
// against the definition, backward (dx, dw, dhalo) against central finite differences of the
// reference, with and without SiLU and halo, kernel sizes 1..5, uneven channel counts (channel
// blocks of 16 split unevenly), sequences shorter than the kernel; bit-identical reruns; argument
// checks. Bounds as in ops.test.ts: forward 1e-5, backward 1e-4 relative max error.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ops } from '../index.js';
import { assertClose } from './helpers/check.js';
import { finiteDiff, inner, toF64 } from './helpers/ops-reference.js';
import { rngFor } from './helpers/rng.js';

interface Case {
  B: number;
  T: number;
  C: number;
  K: number;
  silu: boolean;
  halo: boolean;
}

/** y[b,t,c] = act(Σ_j w[j,c] x[b,t−j,c]) in float64; rows before 0 from halo (or zero). */
function refConv(c: Case, x: Float64Array, w: Float64Array, halo: Float64Array | undefined): Float64Array {
  const { B, T, C, K } = c;
  const y = new Float64Array(B * T * C);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++)
      for (let ch = 0; ch < C; ch++) {
        let z = 0;
        for (let j = 0; j < K; j++) {
          const s = t - j;
          const v = s >= 0 ? x[(b * T + s) * C + ch]! : halo ? halo[(b * (K - 1) + s + K - 1) * C + ch]! : 0;
          z += w[j * C + ch]! * v;
        }
        y[(b * T + t) * C + ch] = c.silu ? z / (1 + Math.exp(-z)) : z;
      }
  return y;
}

const CASES: Case[] = [
  { B: 1, T: 9, C: 5, K: 4, silu: false, halo: false },
  { B: 2, T: 7, C: 19, K: 4, silu: true, halo: true },
  { B: 3, T: 2, C: 33, K: 5, silu: true, halo: true },
  { B: 1, T: 6, C: 3, K: 1, silu: true, halo: false },
  { B: 2, T: 5, C: 16, K: 2, silu: false, halo: true },
];

for (const c of CASES) {
  test(`shortConv ${JSON.stringify(c)}: forward and gradients vs float64 reference`, async () => {
    const rng = rngFor(`short-conv-${JSON.stringify(c)}`);
    const ctx = `${JSON.stringify(c)} seed=${rng.seed}`;
    const { B, T, C, K } = c;
    const x = rng.normals(B * T * C);
    const w = rng.normals(K * C, 0.5);
    const halo = c.halo ? rng.normals(B * (K - 1) * C) : undefined;
    const spec = { B, T, C, K, x, w, silu: c.silu, ...(halo ? { halo } : {}) };
    const y = await ops.shortConv(spec);
    const x64 = toF64(x);
    const w64 = toF64(w);
    const h64 = halo ? toF64(halo) : undefined;
    assertClose(y, refConv(c, x64, w64, h64), 1e-5, 'y', ctx);

    const dy = rng.normals(B * T * C);
    const g = await ops.shortConvBackward(spec, dy);
    const loss = () => inner(refConv(c, x64, w64, h64), dy);
    assertClose(g.dx, finiteDiff(x64, loss), 1e-4, 'dx', ctx);
    assertClose(g.dw, finiteDiff(w64, loss), 1e-4, 'dw', ctx);
    if (h64) assertClose(g.dhalo, finiteDiff(h64, loss), 1e-4, 'dhalo', ctx);
    else assert.equal(g.dhalo, undefined);

    const again = await ops.shortConvBackward(spec, dy);
    assert.deepEqual(again.dw, g.dw, 'dw is bit-identical on a rerun');
  });
}

test('shortConv: argument errors name the field', async () => {
  const x = new Float32Array(12);
  await assert.rejects(ops.shortConv({ T: 4, C: 3, K: 2, x, w: new Float32Array(5) }), /w must have length 6 \(\[K,C\]\), got 5/);
  await assert.rejects(ops.shortConv({ T: 4, C: 3, K: 0, x, w: new Float32Array(0) }), /K must be an integer in \[1, 64\], got 0/);
  await assert.rejects(
    ops.shortConv({ T: 4, C: 3, K: 2, x, w: new Float32Array(6), halo: new Float32Array(2) }),
    /halo must have length 3 \(\[B,K-1,C\]\), got 2/,
  );
});
