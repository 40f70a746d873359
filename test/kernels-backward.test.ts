// kernels.backward against central finite differences of the float64 reference.
// Loss: L = Σ dO⊙o + Σ dSf⊙finalState with random dO, dSf. Every element of q, k, v, g, beta and
// initialState is differentiated (small shapes keep this cheap).
//
// Bound: relative max error (max|x − ref| / max|ref|) < 1e-4. The FD reference is accurate to
// ~1e-9 relative (float64, h = 1e-6, O(h²) truncation), so the whole budget is the float32 kernel's:
// the backward chains several GEMM-shaped reductions of length up to T·max(dk,dv) ≈ 300 whose
// rounding (u ≈ 6e-8 per op, growing ~√n–n) together with cancellation in dg (a difference of
// q⊙dq and k⊙dk-like terms summed over the suffix) can reach ~1e-5 of the largest gradient; 1e-4
// leaves a margin without admitting a wrong formula (a wrong term is O(1) relative).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { kernels, type AttentionSpec } from '../native/kernels.js';
import { rngFor } from './helpers/rng.js';
import { assertClose, describeCase, maxAbs, relMaxErr } from './helpers/check.js';
import { ALL_KINDS, fdGrad, randomSpec, refLoss, type GenOptions, type GradField, type RefSpec } from './helpers/reference.js';

const BOUND = 1e-4;

async function checkBackward(o: GenOptions, withDSf: boolean, name: string): Promise<void> {
  const rng = rngFor(name);
  const spec = randomSpec(rng, o);
  const { T, H, dk, dv } = o;
  const dO = rng.normals(T * H * dv);
  const dSf = withDSf ? rng.normals(H * dk * dv) : undefined;
  const ctx = describeCase({ ...o, dFinalState: withDSf }, rng.seed);
  const got = await kernels.backward(spec, dO, dSf);
  const L = (s: RefSpec) => refLoss(s, dO, dSf);
  const fields: [GradField, Float32Array | undefined, string][] = [
    ['q', got.dq, 'dq'],
    ['k', got.dk, 'dk'],
    ['v', got.dv, 'dv'],
  ];
  if (spec.g) fields.push(['g', got.dg, 'dg']);
  else assert.equal(got.dg, undefined, `dg must be absent for kind ${o.kind} (${ctx})`);
  if (spec.beta) fields.push(['beta', got.dbeta, 'dbeta']);
  else assert.equal(got.dbeta, undefined, `dbeta must be absent for kind ${o.kind} (${ctx})`);
  if (spec.initialState) fields.push(['initialState', got.dInitialState, 'dInitialState']);
  else assert.equal(got.dInitialState, undefined, `dInitialState must be absent without initialState (${ctx})`);
  const refs = fields.map(([field]) => fdGrad(L, spec, field));
  // Scale floor: the largest reference gradient of this case (matters only for tensors whose exact
  // value is zero, e.g. dg for T=1 from a zero state; see helpers/check.ts).
  const floor = maxAbs(...refs);
  fields.forEach(([, value, what], i) => assertClose(value, refs[i]!, BOUND, what, ctx, floor));
}

// [T, chunkSize, H, dk, dv]
const SHAPES: [number, number | undefined, number, number, number][] = [
  [1, undefined, 1, 4, 3],
  [5, 4, 2, 5, 4],
  [19, 8, 1, 6, 5],
  [37, 16, 2, 8, 6],
  [70, undefined, 1, 4, 3], // crosses the default chunk of 64
];

for (const kind of ALL_KINDS) {
  describe(`backward ${kind} matches finite differences of the float64 reference`, () => {
    for (const [T, chunkSize, H, dk, dv] of SHAPES) {
      for (const initialState of [false, true]) {
        for (const withDSf of [false, true]) {
          const o: GenOptions = { kind, T, H, dk, dv, chunkSize, initialState };
          const name = `backward ${kind} T=${T} chunk=${chunkSize ?? 'default(64)'} H=${H} dk=${dk} dv=${dv} ${initialState ? 'with' : 'without'} initialState, ${withDSf ? 'with' : 'without'} dFinalState`;
          test(name, () => checkBackward(o, withDSf, name));
        }
      }
    }
  });
}

describe('backward with strongly decaying gates (g down to about -3) matches finite differences', () => {
  for (const kind of ['scalar_gate', 'vector_gate', 'gated_delta'] as const) {
    const o: GenOptions = { kind, T: 37, H: 2, dk: 6, dv: 5, chunkSize: 16, initialState: true, gates: 'strong' };
    const name = `backward ${kind} strong decay T=37 chunk=16 H=2 dk=6 dv=5`;
    test(name, () => checkBackward(o, true, name));
  }
  const o: GenOptions = { kind: 'vector_gate', T: 40, H: 1, dk: 5, dv: 4, chunkSize: 32, initialState: true, gates: 'extreme' };
  const name = 'backward vector_gate extreme decay (g down to -5) T=40 chunk=32 stays finite and correct';
  test(name, () => checkBackward(o, true, name));
});

describe('backward non-causal linear matches finite differences', () => {
  for (const [T, chunkSize, H, dk, dv] of SHAPES) {
    for (const initialState of [false, true]) {
      for (const withDSf of [false, true]) {
        const o: GenOptions = { kind: 'linear', T, H, dk, dv, chunkSize, initialState, causal: false };
        const name = `backward non-causal linear T=${T} chunk=${chunkSize ?? 'default(64)'} H=${H} dk=${dk} dv=${dv} ${initialState ? 'with' : 'without'} initialState, ${withDSf ? 'with' : 'without'} dFinalState`;
        test(name, () => checkBackward(o, withDSf, name));
      }
    }
  }
});

describe('backward without dFinalState equals backward with an all-zero dFinalState', () => {
  for (const kind of ALL_KINDS) {
    for (const causal of kind === 'linear' ? [true, false] : [true]) {
      const name = `backward ${kind}${causal ? '' : ' non-causal'}: omitted dFinalState == zero dFinalState`;
      test(name, async () => {
        const rng = rngFor(name);
        const o: GenOptions = { kind, T: 100, H: 2, dk: 8, dv: 6, chunkSize: 32, initialState: true, causal };
        const spec: AttentionSpec = randomSpec(rng, o);
        const dO = rng.normals(o.T * o.H * o.dv);
        const a = await kernels.backward(spec, dO);
        const b = await kernels.backward(spec, dO, new Float32Array(o.H * o.dk * o.dv));
        const ctx = describeCase({ ...o }, rng.seed);
        // Same computation up to adding exact zeros: allow only last-bit differences from a
        // different evaluation order (1e-6 relative).
        for (const key of ['dq', 'dk', 'dv', 'dg', 'dbeta', 'dInitialState'] as const) {
          const x = a[key];
          const y = b[key];
          assert.equal(x === undefined, y === undefined, `${key} presence differs (${ctx})`);
          if (x && y) {
            const r = relMaxErr(x, y);
            assert.ok(r.err <= 1e-6, `${key}: omitted vs zero dFinalState differ by ${r.err} relative at [${r.at}] (${ctx})`);
          }
        }
      });
    }
  }
});
