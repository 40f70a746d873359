// The sequence-parallel pieces (DESIGN.md §2.2, §3): block summaries, the state fold, per-block
// state gradients and the suffix fold must let W contiguous blocks reproduce the whole-sequence
// kernels exactly (to float32 rounding).
//
// Bounds (relative max error, max|x − ref| / max|ref|):
//  - 1e-5 for forward outputs/states and for summaries/stateGrad against float64 (the correctness
//    bar of DESIGN.md §3). Every per-token map is non-expansive here (gates ≤ 1, β ∈ (0,1) with
//    unit keys), so folding W summaries adds only a few float32 roundings.
//  - backward, blocks vs whole sequence (both float32): 1e-5; 2e-5 for delta kinds, whose chunk
//    backward goes through a C×C triangular solve (I + β·strictlyLower(KKᵀ))⁻¹ evaluated at
//    different chunk boundaries in the two runs: each run is within ~1e-5 of the truth, so their
//    difference is bounded by twice that.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { kernels, type AttentionSpec, type Kind } from '../native/kernels.js';
import { rngFor, type Rng } from './helpers/rng.js';
import { assertClose, describeCase } from './helpers/check.js';
import {
  ALL_KINDS,
  applyAffine,
  concatF32,
  expandA,
  isDeltaKind,
  randomSpec,
  refForward,
  refStateGrad,
  refSummary,
  sliceRows,
  sliceSpec,
  type GenOptions,
} from './helpers/reference.js';

const FWD = 1e-5;
const bwdBound = (kind: Kind) => (isDeltaKind(kind) ? 2e-5 : 1e-5);

interface SplitCase {
  label: string;
  T: number;
  chunkSize: number | undefined;
  H: number;
  dk: number;
  dv: number;
  /** Block lengths, or 'random' for W-1 random distinct cut points. */
  blocks: number[] | { random: number };
}

const SPLITS: SplitCase[] = [
  { label: 'W=1', T: 150, chunkSize: undefined, H: 2, dk: 8, dv: 6, blocks: [150] },
  { label: 'W=2 uneven 100+50', T: 150, chunkSize: 32, H: 2, dk: 8, dv: 6, blocks: [100, 50] },
  { label: 'W=3 64+64+22', T: 150, chunkSize: 64, H: 3, dk: 16, dv: 12, blocks: [64, 64, 22] },
  { label: 'W=4 with 1-token blocks 1+63+1+65', T: 130, chunkSize: 16, H: 2, dk: 8, dv: 6, blocks: [1, 63, 1, 65] },
  { label: 'W=4 random cut points', T: 97, chunkSize: 16, H: 2, dk: 6, dv: 5, blocks: { random: 4 } },
  { label: 'W=3 random cut points', T: 200, chunkSize: undefined, H: 1, dk: 8, dv: 10, blocks: { random: 3 } },
  { label: 'W=4 tiny 1+1+2+3', T: 7, chunkSize: 4, H: 2, dk: 4, dv: 3, blocks: [1, 1, 2, 3] },
];

function blockLengths(c: SplitCase, rng: Rng): number[] {
  if (Array.isArray(c.blocks)) return c.blocks;
  const W = c.blocks.random;
  const cuts = new Set<number>();
  while (cuts.size < W - 1) cuts.add(rng.int(1, c.T - 1));
  const sorted = [0, ...[...cuts].sort((a, b) => a - b), c.T];
  return sorted.slice(1).map((x, i) => x - sorted[i]!);
}

for (const kind of ALL_KINDS) {
  describe(`sequence-parallel ${kind}: blocks reproduce the whole sequence`, () => {
    for (const c of SPLITS) {
      for (const [withInit, withDSf] of [
        [false, false],
        [true, true],
        [false, true],
      ] as const) {
        const name = `SP ${kind} ${c.label} T=${c.T} chunk=${c.chunkSize ?? 'default'} H=${c.H} dk=${c.dk} dv=${c.dv} ${withInit ? 'with' : 'without'} S_init, ${withDSf ? 'with' : 'without'} dFinalState`;
        test(name, async () => {
          const rng = rngFor(name);
          const o: GenOptions = { kind, T: c.T, H: c.H, dk: c.dk, dv: c.dv, chunkSize: c.chunkSize, initialState: withInit };
          const spec = randomSpec(rng, o);
          const lens = blockLengths(c, rng);
          const ctx = describeCase({ ...o, dFinalState: withDSf, blocks: lens.join('+') }, rng.seed);
          assert.equal(
            lens.reduce((a, b) => a + b, 0),
            c.T,
            ctx,
          );
          const { H, dk, dv } = c;
          const W = lens.length;
          const starts = lens.map((_, i) => lens.slice(0, i).reduce((a, b) => a + b, 0));
          const blocks = lens.map((L, r) => sliceSpec(spec, starts[r]!, starts[r]! + L));
          const shape = { kind, H, dk, dv };
          const sLen = H * dk * dv;

          // ---- forward
          const whole = await kernels.forward(spec);
          const sums = await Promise.all(blocks.map((b) => kernels.summary(b)));
          const P = await kernels.foldStates(shape, sums, spec.initialState);
          assert.equal(P.length, W + 1, `foldStates returns W+1 states (${ctx})`);
          assertClose(P[0], spec.initialState ?? new Float32Array(sLen), 1e-30, 'P_0 (= S_init or 0)', ctx);
          for (let r = 0; r < W; r++) {
            // The fold itself: P_{r+1} = A_r P_r + U_r, evaluated in float64 from the kernel's values.
            const want = applyAffine(expandA(kind, sums[r]!.a, H, dk), P[r]!, sums[r]!.u, H, dk, dv);
            assertClose(P[r + 1], want, FWD, `P_${r + 1} = A_${r} P_${r} + U_${r}`, ctx);
          }
          const outs = [];
          for (let r = 0; r < W; r++) outs.push(await kernels.forward({ ...blocks[r]!, initialState: P[r]! }));
          const oCat = concatF32(outs.map((x) => x.o));
          assertClose(oCat, whole.o, FWD, 'o (blocks vs whole)', ctx);
          assertClose(P[W], whole.finalState, FWD, 'P_W (fold end state) vs whole finalState', ctx);
          assertClose(outs[W - 1]!.finalState, whole.finalState, FWD, 'last block finalState vs whole', ctx);
          const ref = refForward(spec);
          assertClose(oCat, ref.o, FWD, 'o (blocks vs float64 reference)', ctx);
          assertClose(P[W], ref.finalState, FWD, 'P_W vs float64 reference finalState', ctx);

          // ---- backward
          const dO = rng.normals(c.T * H * dv);
          const dSf = withDSf ? rng.normals(sLen) : undefined;
          const wholeB = await kernels.backward(spec, dO, dSf);
          const dOs = lens.map((L, r) => sliceRows(dO, H * dv, starts[r]!, starts[r]! + L));
          const D = [];
          for (let r = 0; r < W; r++) D.push(await kernels.stateGrad(blocks[r]!, dOs[r]!));
          const A = sums.map((s) => s.a);
          const fold = await kernels.suffixFold(shape, A, D, dSf);
          assert.equal(fold.e.length, W, `suffixFold returns W end gradients (${ctx})`);
          assertClose(fold.e[W - 1], dSf ?? new Float32Array(sLen), 1e-30, 'E_{W-1} (= dFinalState or 0)', ctx);
          for (let r = W - 2; r >= 0; r--) {
            // E_r = D_{r+1} + A_{r+1}^T E_{r+1}, in float64 from the kernel's values.
            const aT = transposeA(expandA(kind, A[r + 1]!, H, dk), H, dk);
            assertClose(fold.e[r], applyAffine(aT, fold.e[r + 1]!, D[r + 1]!, H, dk, dv), FWD, `E_${r}`, ctx);
          }
          const aT0 = transposeA(expandA(kind, A[0]!, H, dk), H, dk);
          assertClose(fold.dInitialState, applyAffine(aT0, fold.e[0]!, D[0]!, H, dk, dv), FWD, 'dInitialState = D_0 + A_0^T E_0', ctx);

          const parts = [];
          for (let r = 0; r < W; r++) parts.push(await kernels.backward({ ...blocks[r]!, initialState: P[r]! }, dOs[r]!, fold.e[r]!));
          const bound = bwdBound(kind);
          for (const key of ['dq', 'dk', 'dv', 'dg', 'dbeta'] as const) {
            const w = wholeB[key];
            if (w === undefined) continue;
            const cat = concatF32(
              parts.map((p, r) => {
                const x = p[key];
                assert.ok(x, `${key} missing from block ${r} backward (${ctx})`);
                return x;
              }),
            );
            assertClose(cat, w, bound, `${key} (blocks vs whole)`, ctx);
          }
          // dInitialState: against the whole-sequence kernel when it has one, and always against
          // float64: D_total + A_total^T dSf.
          if (withInit) assertClose(fold.dInitialState, wholeB.dInitialState!, bound, 'dInitialState (suffixFold vs whole backward)', ctx);
          const refD = refStateGrad(spec, dO);
          const refA = refSummary(spec).aFull;
          const refDInit = dSf ? applyAffine(transposeA(refA, H, dk), dSf, refD, H, dk, dv) : refD;
          assertClose(fold.dInitialState, refDInit, bound, 'dInitialState (suffixFold vs float64)', ctx);
        });
      }
    }
  });
}

function transposeA(aFull: Float64Array, H: number, dk: number): Float64Array {
  const t = new Float64Array(aFull.length);
  for (let h = 0; h < H; h++)
    for (let i = 0; i < dk; i++) for (let l = 0; l < dk; l++) t[(h * dk + l) * dk + i] = aFull[(h * dk + i) * dk + l]!;
  return t;
}

describe('summary semantics: forward of a block from a random state S equals A·S + U', () => {
  for (const kind of ALL_KINDS) {
    for (const [T, chunkSize, gates] of [
      [1, undefined, 'mild'],
      [45, 16, 'mild'],
      [130, 64, 'mild'],
      [100, 32, 'strong'],
    ] as const) {
      if (gates === 'strong' && (kind === 'linear' || kind === 'delta')) continue;
      const name = `summary ${kind} T=${T} chunk=${chunkSize ?? 'default'} ${gates} gates: A·S+U, A and U vs float64, stateGrad vs float64`;
      test(name, async () => {
        const rng = rngFor(name);
        const [H, dk, dv] = [2, 8, 6];
        const o: GenOptions = { kind, T, H, dk, dv, chunkSize, initialState: false, gates };
        const spec: AttentionSpec = randomSpec(rng, o);
        const ctx = describeCase({ ...o }, rng.seed);
        const S = rng.normals(H * dk * dv, 0.5);
        const sum = await kernels.summary(spec);
        const fwd = await kernels.forward({ ...spec, initialState: S });
        assertClose(
          fwd.finalState,
          applyAffine(expandA(kind, sum.a, H, dk), S, sum.u, H, dk, dv),
          FWD,
          'forward(S).finalState vs A·S+U',
          ctx,
        );
        const ref = refSummary(spec);
        assert.equal(sum.a.length, ref.a.length, `compact A length (${ctx})`);
        // A is a product of per-token maps of norm ≤ 1; its float32 error is absolute on that
        // scale (≈ n·u), not relative to the product, which for delta kinds shrinks to ~1e-3 and
        // for gated_delta to ~1e-7 over a hundred tokens. Hence the scale floor of 1 (the norm of
        // every factor).
        if (ref.a.length > 0) assertClose(sum.a, ref.a, FWD, 'A (compact)', ctx, 1);
        assertClose(sum.u, ref.u, FWD, 'U', ctx);
        // The summary ignores the spec's initialState.
        const sum2 = await kernels.summary({ ...spec, initialState: S });
        assertClose(sum2.u, sum.u, FWD, 'U with an initialState in the spec (must be ignored)', ctx);
        const dO = rng.normals(T * H * dv);
        assertClose(await kernels.stateGrad(spec, dO), refStateGrad(spec, dO), FWD, 'stateGrad D', ctx);
      });
    }
  }
});
