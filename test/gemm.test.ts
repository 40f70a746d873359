// kernels.gemm: C = alpha·op(A)·op(B) + beta·C against a naive float64 GEMM.
// Metric (elementwise, rigorous for any summation order incl. FMA and blocking):
//   |C_mn − ref_mn| ≤ γ·(|alpha|·Σ_k |a_mk b_kn| + |beta·C0_mn|) + tiny, γ = (K+2)·2⁻²⁴,
// the standard forward error bound of a float32 dot product of length K plus the alpha/beta steps.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { kernels } from '../native/kernels.js';
import { rngFor } from './helpers/rng.js';
import { refGemm } from './helpers/reference.js';

const U32 = 2 ** -24;

async function check(
  name: string,
  o: { ta: boolean; tb: boolean; M: number; N: number; K: number; alpha: number; beta: number; cNaN?: boolean; mt: boolean },
) {
  const rng = rngFor(name);
  const { ta, tb, M, N, K, alpha, beta, mt } = o;
  const A = rng.normals(M * K);
  const B = rng.normals(K * N);
  const ctx = `${name} seed=${rng.seed}`;
  let C0: Float32Array | undefined;
  if (o.cNaN) C0 = new Float32Array(M * N).fill(NaN);
  else if (beta !== 0) C0 = rng.normals(M * N);
  const Cin = C0?.slice();
  const args = { transA: ta, transB: tb, M, N, K, alpha, beta, A, B, multiThreaded: mt, ...(Cin ? { C: Cin } : {}) };
  const C = await kernels.gemm(args);
  assert.equal(C.length, M * N, `C length (${ctx})`);
  if (Cin) assert.equal(C, Cin, `gemm must resolve with the C it was given (${ctx})`);
  const { c: ref, absBound } = refGemm(ta, tb, M, N, K, alpha, A, B, beta, beta === 0 ? undefined : C0);
  const gamma = (K + 2) * U32;
  for (let i = 0; i < M * N; i++) {
    const got = C[i]!;
    assert.ok(Number.isFinite(got), `C[${i}] = ${got} is not finite (${ctx})${o.cNaN ? ': beta=0 must ignore C' : ''}`);
    const err = Math.abs(got - ref[i]!);
    const tol = gamma * absBound[i]! + 1e-30;
    assert.ok(
      err <= tol,
      `C[${i}] (m=${Math.floor(i / Math.max(N, 1))}, n=${i % Math.max(N, 1)}) = ${got}, ref ${ref[i]}, |err| ${err} > ${tol} (${ctx})`,
    );
  }
}

const SIZES: [number, number, number][] = [
  [0, 5, 7],
  [5, 0, 7],
  [4, 6, 0],
  [1, 1, 1],
  [1, 17, 7],
  [7, 1, 17],
  [17, 7, 1],
  [7, 17, 65],
  [65, 7, 17],
  [17, 65, 130],
  [130, 65, 17],
  [65, 130, 7],
  [130, 130, 130],
];

for (const ta of [false, true]) {
  for (const tb of [false, true]) {
    describe(`gemm transA=${ta} transB=${tb} matches a naive float64 GEMM`, () => {
      for (const [M, N, K] of SIZES) {
        for (const mt of [true, false]) {
          const name = `gemm transA=${ta} transB=${tb} M=${M} N=${N} K=${K} alpha=1 beta=0 multiThreaded=${mt}`;
          test(name, () => check(name, { ta, tb, M, N, K, alpha: 1, beta: 0, mt }));
        }
      }
      for (const [M, N, K] of [
        [7, 17, 65],
        [65, 130, 17],
        [1, 1, 1],
        [4, 6, 0],
      ] as const) {
        const name1 = `gemm transA=${ta} transB=${tb} M=${M} N=${N} K=${K} alpha=-0.75 beta=1.5 accumulates into C`;
        test(name1, () => check(name1, { ta, tb, M, N, K, alpha: -0.75, beta: 1.5, mt: true }));
        const name2 = `gemm transA=${ta} transB=${tb} M=${M} N=${N} K=${K} alpha=2 beta=0 ignores a NaN-filled C`;
        test(name2, () => check(name2, { ta, tb, M, N, K, alpha: 2, beta: 0, cNaN: true, mt: true }));
        const name3 = `gemm transA=${ta} transB=${tb} M=${M} N=${N} K=${K} alpha=0.5 beta=-1 single-threaded`;
        test(name3, () => check(name3, { ta, tb, M, N, K, alpha: 0.5, beta: -1, mt: false }));
      }
    });
  }
}

test('gemm with beta=0 and no C allocates a fresh C', async () => {
  const rng = rngFor('gemm-alloc');
  const A = rng.normals(3 * 4);
  const B = rng.normals(4 * 5);
  const C = await kernels.gemm({ M: 3, N: 5, K: 4, A, B });
  assert.equal(C.length, 15);
  const { c, absBound } = refGemm(false, false, 3, 5, 4, 1, A, B, 0, undefined);
  for (let i = 0; i < 15; i++) assert.ok(Math.abs(C[i]! - c[i]!) <= 6 * U32 * absBound[i]!, `C[${i}] ${C[i]} vs ${c[i]} seed=${rng.seed}`);
});

test('kernels.info reports an ISA string and a positive thread count', () => {
  const i = kernels.info();
  assert.equal(typeof i.isa, 'string');
  assert.ok(Number.isInteger(i.threads) && i.threads >= 1, `threads = ${i.threads}`);
});
