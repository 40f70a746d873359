// The model ops (native/ops.ts) against float64 references: forwards against the definitions,
// backwards against central finite differences of the float64 reference, determinism, and
// argument checks.
//
// Bounds (relative max error, test/helpers/check.ts):
// - forwards 1e-5: float32 rounding of O(D)-term sums gives ~1e-6 at these sizes.
// - backwards 1e-4 against finite differences: the FD of the float64 reference (h = 1e-5) is
//   accurate to ~1e-9 (truncation h²·f''' ≈ 1e-10, rounding 1e-16·|L|/h ≈ 1e-11), and the float32
//   kernel gradient to ~1e-6; 1e-4 leaves margin for unlucky cancellations, while a wrong
//   derivative (a missing term, a sign) gives errors of order 1.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { addon } from '../native/binding.js';
import { ops } from '../index.js';
import { assertClose } from './helpers/check.js';
import { finiteDiff, inner, pick, refAdamW, refCrossEntropy, refEmbedding, refRmsNorm, refSwiglu, toF64 } from './helpers/ops-reference.js';
import { rngFor, type Rng } from './helpers/rng.js';

const FWD = 1e-5;
const BWD = 1e-4;

function ids(rng: Rng, n: number, V: number): Int32Array {
  return Int32Array.from({ length: n }, () => rng.int(0, V - 1));
}

/** k distinct random indices in [0, n), ascending (all of them when n ≤ k). */
function sample(rng: Rng, n: number, k: number): number[] {
  if (n <= k) return Array.from({ length: n }, (_, i) => i);
  const at = new Set<number>();
  while (at.size < k) at.add(rng.int(0, n - 1));
  return [...at].sort((a, b) => a - b);
}

describe('rmsNorm', () => {
  // D not a multiple of 8, N = 1, and a shape with several row blocks (dw partials).
  for (const [N, D] of [
    [1, 1],
    [1, 13],
    [5, 8],
    [7, 37],
    [40, 515],
  ] as const) {
    test(`N=${N} D=${D}: forward and backward (finite differences)`, async () => {
      const rng = rngFor(`rmsnorm-${N}-${D}`);
      const ctx = `N=${N} D=${D} seed=${rng.seed}`;
      const eps = 1e-5;
      const x = rng.normals(N * D);
      const w = rng.f32(D, () => rng.uniform(0.5, 1.5));
      const dy = rng.normals(N * D);
      const f = await ops.rmsNorm({ N, D, x, w, eps });
      const ref = refRmsNorm(x, w, N, D, eps);
      assertClose(f.y, ref.y, FWD, 'y', ctx);
      assertClose(f.rstd, ref.rstd, FWD, 'rstd', ctx);

      const b = await ops.rmsNormBackward({ N, D, x, w, eps }, f.rstd, dy);
      const x64 = toF64(x);
      const w64 = toF64(w);
      const loss = () => inner(dy, refRmsNorm(x64, w64, N, D, eps).y);
      const at = sample(rng, N * D, 200);
      // dx = r·(w⊙dy − x·r²·c/D) cancels when D is tiny (D = 1: dx ∝ eps); float32 noise is then
      // measured against the size of the terms, max |r·w⊙dy| (the floor of assertClose).
      let terms = 0;
      for (let i = 0; i < N * D; i++) terms = Math.max(terms, Math.abs(f.rstd[Math.floor(i / D)]! * w[i % D]! * dy[i]!));
      assertClose(pick(b.dx, at), finiteDiff(x64, loss, at), BWD, 'dx', ctx, terms);
      assertClose(b.dw, finiteDiff(w64, loss), BWD, 'dw', ctx);
    });
  }

  test('dw is the same bits on every run', async () => {
    const rng = rngFor('rmsnorm-determinism');
    const [N, D] = [3000, 601];
    const spec = { N, D, x: rng.normals(N * D), w: rng.normals(D) };
    const dy = rng.normals(N * D);
    const { rstd } = await ops.rmsNorm(spec);
    const first = await ops.rmsNormBackward(spec, rstd, dy);
    for (let r = 0; r < 3; r++) assert.deepEqual(await ops.rmsNormBackward(spec, rstd, dy), first, `run ${r} seed=${rng.seed}`);
  });
});

describe('swiglu', () => {
  for (const n of [1, 37, 50_001]) {
    test(`n=${n}: forward and backward (finite differences)`, async () => {
      const rng = rngFor(`swiglu-${n}`);
      const ctx = `n=${n} seed=${rng.seed}`;
      // Include large |a| (sigmoid saturated both ways) next to ordinary values.
      const a = rng.f32(n, () => (rng.next() < 0.1 ? rng.uniform(-100, 100) : 3 * rng.normal()));
      const b = rng.normals(n);
      const dy = rng.normals(n);
      assertClose(await ops.swiglu(a, b), refSwiglu(a, b), FWD, 'y', ctx);
      const g = await ops.swigluBackward(a, b, dy);
      const a64 = toF64(a);
      const b64 = toF64(b);
      const at = sample(rng, n, 300);
      // y is elementwise: the loss only needs the sampled elements (keeps FD cheap for large n).
      const loss = () => at.reduce((s, i) => s + dy[i]! * refSwiglu([a64[i]!], [b64[i]!])[0]!, 0);
      assertClose(pick(g.da, at), finiteDiff(a64, loss, at), BWD, 'da', ctx);
      assertClose(pick(g.db, at), finiteDiff(b64, loss, at), BWD, 'db', ctx);
    });
  }
});

describe('embedding', () => {
  for (const [N, V, D] of [
    [1, 1, 1],
    [9, 5, 13],
    [300, 17, 40],
  ] as const) {
    test(`N=${N} V=${V} D=${D}: gather, and scatter-add backward (finite differences)`, async () => {
      const rng = rngFor(`embedding-${N}-${V}-${D}`);
      const ctx = `N=${N} V=${V} D=${D} seed=${rng.seed}`;
      const table = rng.normals(V * D);
      const id = ids(rng, N, V);
      const dy = rng.normals(N * D);
      const y = await ops.embedding({ V, D, ids: id, table });
      assert.deepEqual(Array.from(y), Array.from(refEmbedding(table, id, D)), ctx); // a copy: exact
      const dTable = await ops.embeddingBackward({ V, D, ids: id }, dy);
      const t64 = toF64(table);
      const at = sample(rng, V * D, 200);
      assertClose(
        pick(dTable, at),
        finiteDiff(t64, () => inner(dy, refEmbedding(t64, id, D)), at),
        BWD,
        'dTable',
        ctx,
      );
    });
  }

  test('backward is the same bits on every run (many repeated ids)', async () => {
    const rng = rngFor('embedding-determinism');
    const [N, V, D] = [20_000, 7, 33];
    const spec = { V, D, ids: ids(rng, N, V) };
    const dy = rng.normals(N * D);
    const first = await ops.embeddingBackward(spec, dy);
    for (let r = 0; r < 3; r++) assert.deepEqual(await ops.embeddingBackward(spec, dy), first, `run ${r} seed=${rng.seed}`);
  });
});

describe('crossEntropy', () => {
  for (const [N, V] of [
    [1, 1],
    [1, 9],
    [6, 37],
    [64, 1000],
  ] as const) {
    test(`N=${N} V=${V}: loss, count, and dlogits (finite differences), with ignored rows`, async () => {
      const rng = rngFor(`ce-${N}-${V}`);
      const ctx = `N=${N} V=${V} seed=${rng.seed}`;
      // Large logits in some rows: a naive exp would overflow.
      const logits = rng.f32(N * V, () => 3 * rng.normal());
      for (let n = 1; n < N; n += 3) for (let i = 0; i < V; i++) logits[n * V + i]! += 500;
      const targets = Int32Array.from({ length: N }, (_, n) => (n % 4 === 3 ? -1 : rng.int(0, V - 1)));
      const scale = 1 / (3 * N);
      const r = await ops.crossEntropy({ N, V, logits, targets, scale });
      const ref = refCrossEntropy(logits, targets, N, V);
      assert.equal(r.count, ref.count, ctx);
      assertClose([r.loss], [ref.loss], FWD, 'loss', ctx);
      const l64 = toF64(logits);
      const at = sample(rng, N * V, 300);
      const fd = finiteDiff(l64, () => scale * refCrossEntropy(l64, targets, N, V).loss, at);
      // Floor: one-class rows have an exact zero gradient; measure noise against the scale.
      assertClose(pick(r.dlogits, at), fd, BWD, 'dlogits', ctx, scale);
      for (let n = 3; n < N; n += 4)
        assert.ok(
          r.dlogits.subarray(n * V, (n + 1) * V).every((d) => d === 0),
          `ignored row ${n} (${ctx})`,
        );
    });
  }
});

describe('adamW', () => {
  for (const step of [1, 7]) {
    test(`step ${step}: params, m, v against the float64 step`, async () => {
      const rng = rngFor(`adamw-${step}`);
      const ctx = `step=${step} seed=${rng.seed}`;
      const n = 40_003;
      const h = { lr: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step };
      const p = rng.normals(n);
      const g = rng.normals(n, 0.01);
      const m = step === 1 ? new Float32Array(n) : rng.normals(n, 0.01);
      const v = step === 1 ? new Float32Array(n) : rng.f32(n, () => rng.uniform(0, 1e-4));
      const ref = refAdamW(p, g, m, v, h);
      await ops.adamW({ params: p, grads: g, m, v }, h);
      assertClose(p, ref.p, FWD, 'params', ctx);
      assertClose(m, ref.m, FWD, 'm', ctx);
      assertClose(v, ref.v, FWD, 'v', ctx);
    });
  }
});

describe('sumSquares, gradNorm, scaleInPlace', () => {
  test('double-accumulated sum of squares over ragged arrays; same bits every run', async () => {
    const rng = rngFor('sum-squares');
    const arrays = [rng.normals(1), new Float32Array(0), rng.normals(77), rng.normals(100_003, 1e3)];
    let ref = 0;
    for (const a of arrays) for (const x of a) ref += x * x;
    const s = await ops.sumSquares(arrays);
    assert.ok(Math.abs(s - ref) <= 1e-12 * ref, `sumSquares ${s} vs ${ref} seed=${rng.seed}`);
    assert.equal(await ops.sumSquares(arrays), s);
    assert.equal(await ops.gradNorm(arrays), Math.sqrt(s));
    assert.equal(await ops.sumSquares([]), 0);
  });

  test('scaleInPlace is one float32 multiply per element', async () => {
    const rng = rngFor('scale-in-place');
    const x = rng.normals(70_001);
    const want = x.map((v) => Math.fround(v * Math.fround(0.37)));
    await ops.scaleInPlace(x, 0.37);
    assert.deepEqual(x, want, `seed=${rng.seed}`);
  });
});

describe('argument checks name the argument', () => {
  const x = new Float32Array(12);
  const w = new Float32Array(4);

  test('lengths, shapes and scalars', async () => {
    await assert.rejects(ops.rmsNorm({ N: 3, D: 4, x, w: new Float32Array(5) }), /w must have length 4 \(\[D\]\), got 5/);
    await assert.rejects(ops.rmsNorm({ N: 3, D: 4, x, w, eps: 0 }), /eps must be a finite number in \(0, 1\], got 0/);
    await assert.rejects(ops.rmsNormBackward({ N: 3, D: 4, x, w }, new Float32Array(2), x), /rstd must have length 3/);
    await assert.rejects(ops.swiglu(x, new Float32Array(11)), /b must have length 12/);
    await assert.rejects(ops.swigluBackward(x, x, new Float32Array(1)), /dy must have length 12/);
    await assert.rejects(ops.crossEntropy({ N: 3, V: 4, logits: x, targets: new Int32Array(3), scale: NaN }), /scale must be a finite/);
    await assert.rejects(ops.scaleInPlace(x, Infinity), /s must be a finite number/);
    await assert.rejects(ops.sumSquares([x, [1, 2] as unknown as Float32Array]), /arrays\[1\] must be a Float32Array/);
  });

  test('adamW hyper-parameters', async () => {
    const st = { params: new Float32Array(3), grads: new Float32Array(3), m: new Float32Array(3), v: new Float32Array(3) };
    await assert.rejects(ops.adamW(st, { lr: NaN, step: 1 }), /lr must be a finite number in \[0, 1000000000\], got NaN/);
    await assert.rejects(ops.adamW(st, { lr: Infinity, step: 1 }), /lr must be a finite number/);
    await assert.rejects(ops.adamW(st, { lr: 1e-3, beta2: 1, step: 1 }), /beta2 must be a finite number in \[0, 1\)/);
    await assert.rejects(ops.adamW(st, { lr: 1e-3, step: 0 }), /step must be an integer in \[1, /);
    await assert.rejects(ops.adamW({ ...st, v: new Float32Array(2) }, { lr: 1e-3, step: 1 }), /v must have length 3/);
  });

  test('ids and targets: type and range, naming the first bad element', async () => {
    const table = new Float32Array(5 * 4);
    await assert.rejects(ops.embedding({ V: 5, D: 4, table, ids: Int32Array.of(0, 4, 5, 9) }), /ids\[2\] = 5 is out of range \[0, 5\)/);
    await assert.rejects(ops.embeddingBackward({ V: 5, D: 4, ids: Int32Array.of(-1) }, w), /ids\[0\] = -1 is out of range/);
    await assert.rejects(
      ops.embedding({ V: 5, D: 4, table, ids: Float32Array.of(1) as unknown as Int32Array }),
      /ids must be a non-empty Int32Array/,
    );
    await assert.rejects(ops.embedding({ V: 5, D: 4, table: w, ids: Int32Array.of(1) }), /table must have length 20/);
    const targets = Int32Array.of(0, -2, 1);
    await assert.rejects(ops.crossEntropy({ N: 3, V: 4, logits: x, targets }), /targets\[1\] = -2 is out of range \[-1, 4\)/);
  });

  test('the addon itself rejects bad ids and lengths (whoever calls it)', async () => {
    const native = addon();
    const y = new Float32Array(2 * 4);
    await assert.rejects(
      native.embeddingForward(2, 5, 4, new Float32Array(20), Int32Array.of(1, 7), y),
      /ids\[1\] = 7 is out of range \[0, 5\)/,
    );
    await assert.rejects(native.embeddingBackward(2, 5, 4, Int32Array.of(1, -3), y, new Float32Array(20)), /ids\[1\] = -3/);
    await assert.rejects(native.crossEntropy(1, 4, 1, w, Int32Array.of(4), w), /targets\[0\] = 4 is out of range \[-1, 4\)/);
    assert.throws(() => native.rmsNormForward(3, 4, 1e-6, x, w, x, new Float32Array(2)), /rstd must have length 3, got 2/);
    assert.throws(() => native.adamwStep(3, w, w, w, w, NaN, 0.9, 0.9, 1e-8, 0, 1), /params must have length 3/);
    const v3 = new Float32Array(3);
    assert.throws(() => native.adamwStep(3, v3, v3, v3, v3, NaN, 0.9, 0.9, 1e-8, 0, 1), /lr must be finite/);
    assert.throws(
      () => native.embeddingForward(1, 5, 4, new Float32Array(20), Float32Array.of(1) as unknown as Int32Array, w),
      /ids must be an Int32Array/,
    );
  });
});

// ---- gate ops of the attention layer --------------------------------------------------------

const logSigmoid64 = (z: number) => Math.min(z, 0) - Math.log1p(Math.exp(-Math.abs(z)));
const sigmoid64 = (z: number) => 1 / (1 + Math.exp(-z));

describe('gate ops: logSigmoidScaled, sigmoid, l2NormalizeRows', () => {
  test('logSigmoidScaled and sigmoid match float64 (z up to ±60), backwards match finite differences', async () => {
    const rng = rngFor('gate-ops');
    const n = 1003;
    const z = rng.f32(n, () => rng.uniform(-60, 60));
    for (let i = 0; i < 40; i++) z[i] = rng.uniform(-3, 3);
    const invTau = 1 / 16;
    const g = await ops.logSigmoidScaled(z, invTau);
    assertClose(
      g,
      Float64Array.from(z, (x) => logSigmoid64(x) * invTau),
      1e-5,
      'g',
      'logSigmoidScaled',
    );
    const y = await ops.sigmoid(z);
    assertClose(y, Float64Array.from(z, sigmoid64), 1e-5, 'y', 'sigmoid');
    const dg = rng.normals(n);
    const dz = await ops.logSigmoidScaledBackward(z, dg, invTau);
    const z64 = toF64(z);
    const idx = Array.from({ length: 60 }, (_, i) => i);
    const fd = finiteDiff(
      z64,
      () =>
        inner(
          dg,
          Array.from(z64, (x) => logSigmoid64(x) * invTau),
        ),
      idx,
    );
    assertClose(pick(dz, idx), fd, 1e-4, 'dz', 'logSigmoidScaled backward');
    const dy = rng.normals(n);
    const dzs = await ops.sigmoidBackward(y, dy);
    const fds = finiteDiff(z64, () => inner(dy, Array.from(z64, sigmoid64)), idx);
    assertClose(pick(dzs, idx), fds, 1e-4, 'dz', 'sigmoid backward');
  });

  test('l2NormalizeRows matches float64; its backward matches finite differences (d = 13, ragged)', async () => {
    const rng = rngFor('l2-rows');
    const rows = 7;
    const d = 13;
    const eps = 1e-6;
    const x = rng.normals(rows * d);
    const { y, inv } = await ops.l2NormalizeRows(x, rows, d, eps);
    const norm64 = (xs: ArrayLike<number>) => {
      const out = new Float64Array(rows * d);
      for (let r = 0; r < rows; r++) {
        let s = 0;
        for (let j = 0; j < d; j++) s += xs[r * d + j]! ** 2;
        for (let j = 0; j < d; j++) out[r * d + j] = xs[r * d + j]! / Math.sqrt(s + eps);
      }
      return out;
    };
    assertClose(y, norm64(x), 1e-5, 'y', 'l2NormalizeRows');
    const dy = rng.normals(rows * d);
    const dx = await ops.l2NormalizeRowsBackward(y, inv, dy, rows, d);
    const x64 = toF64(x);
    assertClose(
      dx,
      finiteDiff(x64, () => inner(dy, norm64(x64))),
      1e-4,
      'dx',
      'l2NormalizeRows backward',
    );
  });

  test('gate ops reject bad arguments by name', async () => {
    await assert.rejects(ops.logSigmoidScaled(new Float32Array(3), Number.NaN), /invTau must be a finite number/);
    await assert.rejects(ops.sigmoidBackward(new Float32Array(3), new Float32Array(2)), /dy must have length 3/);
    await assert.rejects(ops.l2NormalizeRows(new Float32Array(5), 2, 3), /x must have length 6/);
  });
});
