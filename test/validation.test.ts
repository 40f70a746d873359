// Bad input is rejected before any native code runs, with an Error whose message names the
// argument and what was expected.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { kernels, type AttentionSpec } from '../native/kernels.js';
import { rngFor } from './helpers/rng.js';
import { randomSpec } from './helpers/reference.js';

const T = 5;
const H = 2;
const dk = 4;
const dv = 3;

function good(kind: AttentionSpec['kind'], initialState = false): AttentionSpec {
  return randomSpec(rngFor(`validation-${kind}`), { kind, T, H, dk, dv, initialState });
}

/** A spec with some fields replaced (undefined deletes the field). Typed loosely on purpose. */
function bad(base: AttentionSpec, patch: Record<string, unknown>): AttentionSpec {
  const s: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) delete s[k];
    else s[k] = v;
  }
  return s as unknown as AttentionSpec;
}

describe('forward rejects bad specs with a message naming the argument', () => {
  test('wrong q length names q and the expected length [T,H,dk]', async () => {
    const s = good('linear');
    await assert.rejects(kernels.forward(bad(s, { q: new Float32Array(T * H * dk - 1) })), /\bq\b.*length 40.*\[T,H,dk\].*got 39/);
  });
  test('wrong k and v lengths name k and v', async () => {
    const s = good('linear');
    await assert.rejects(kernels.forward(bad(s, { k: new Float32Array(T * H * dk + 1) })), /\bk\b.*length 40/);
    await assert.rejects(kernels.forward(bad(s, { v: new Float32Array(T * H * dk) })), /\bv\b.*length 30/);
  });
  test('non-Float32Array q (plain Array, Float64Array) names q and Float32Array', async () => {
    const s = good('linear');
    await assert.rejects(kernels.forward(bad(s, { q: Array.from(s.q) })), /\bq\b.*Float32Array.*got Array\(40\)/);
    await assert.rejects(kernels.forward(bad(s, { q: Float64Array.from(s.q) })), /\bq\b.*Float32Array.*got Float64Array\(40\)/);
  });
  test('unknown kind lists the valid kinds', async () => {
    await assert.rejects(
      kernels.forward(bad(good('linear'), { kind: 'mamba' })),
      /kind must be one of linear, scalar_gate, vector_gate, delta, gated_delta.*"mamba"/,
    );
  });
  for (const kind of ['scalar_gate', 'vector_gate', 'gated_delta'] as const) {
    test(`missing g for ${kind} says g (log gates) is required`, async () => {
      await assert.rejects(kernels.forward(bad(good(kind), { g: undefined })), new RegExp(`\\bg\\b.*required for kind ${kind}`));
    });
  }
  test('vector_gate g of scalar-gate length names g and [T,H,dk]', async () => {
    await assert.rejects(kernels.forward(bad(good('vector_gate'), { g: new Float32Array(T * H) })), /\bg\b.*length 40.*\[T,H,dk\]/);
  });
  for (const kind of ['delta', 'gated_delta'] as const) {
    test(`missing beta for ${kind} says beta is required`, async () => {
      await assert.rejects(kernels.forward(bad(good(kind), { beta: undefined })), new RegExp(`beta is required for kind ${kind}`));
    });
  }
  test('g supplied for linear is rejected (g is not used by kind linear)', async () => {
    await assert.rejects(kernels.forward(bad(good('linear'), { g: new Float32Array(T * H) })), /g is not used by kind linear/);
  });
  test('beta supplied for scalar_gate is rejected', async () => {
    await assert.rejects(
      kernels.forward(bad(good('scalar_gate'), { beta: new Float32Array(T * H) })),
      /beta is not used by kind scalar_gate/,
    );
  });
  test('causal:false with delta is rejected (only linear)', async () => {
    await assert.rejects(kernels.forward(bad(good('delta'), { causal: false })), /causal=false is only defined for kind 'linear'.*"delta"/);
  });
  for (const [label, value, shown] of [
    ['0', 0, '0'],
    ['NaN', NaN, 'NaN'],
    ['1.5', 1.5, '1\\.5'],
    ['-3', -3, '-3'],
    ['"5" (string)', '5', '"5"'],
  ] as const) {
    test(`T=${label} is rejected: T must be an integer >= 1`, async () => {
      await assert.rejects(
        kernels.forward(bad(good('linear'), { T: value })),
        new RegExp(`\\bT must be an integer in \\[1, .*got ${shown}`),
      );
    });
  }
  test('chunkSize=0 and non-integer H are rejected naming the field', async () => {
    await assert.rejects(kernels.forward(bad(good('linear'), { chunkSize: 0 })), /chunkSize must be an integer/);
    await assert.rejects(kernels.forward(bad(good('linear'), { H: 2.5 })), /\bH must be an integer.*2\.5/);
  });
  test('wrong initialState length names initialState and [H,dk,dv]', async () => {
    await assert.rejects(
      kernels.forward(bad(good('linear'), { initialState: new Float32Array(H * dk * dv + 2) })),
      /initialState.*length 24.*\[H,dk,dv\].*got 26/,
    );
  });
  test('a non-object spec is rejected', async () => {
    await assert.rejects(kernels.forward(null as unknown as AttentionSpec), /spec must be an object/);
  });
});

describe('backward rejects bad gradients with a message naming the argument', () => {
  test('wrong dO length names dO and [T,H,dv]', async () => {
    await assert.rejects(kernels.backward(good('linear'), new Float32Array(T * H * dv + 1)), /\bdO\b.*length 30.*\[T,H,dv\].*got 31/);
  });
  test('dO as a Float64Array names dO and Float32Array', async () => {
    await assert.rejects(kernels.backward(good('linear'), new Float64Array(T * H * dv) as unknown as Float32Array), /\bdO\b.*Float32Array/);
  });
  test('wrong dFinalState length names dFinalState and [H,dk,dv]', async () => {
    const dO = rngFor('validation-dO').normals(T * H * dv);
    await assert.rejects(
      kernels.backward(good('scalar_gate', true), dO, new Float32Array(H * dk * dv - 1)),
      /dFinalState.*length 24.*\[H,dk,dv\].*got 23/,
    );
  });
  test('backward validates the spec too (missing beta for gated_delta)', async () => {
    const dO = rngFor('validation-dO2').normals(T * H * dv);
    await assert.rejects(kernels.backward(bad(good('gated_delta'), { beta: undefined }), dO), /beta is required for kind gated_delta/);
  });
});

describe('summary, stateGrad, folds, softmax and gemm validate their arguments', () => {
  test('addStateTerm rejects delta kinds, non-causal specs and a wrong state length', async () => {
    await assert.rejects(
      kernels.addStateTerm(good('delta'), new Float32Array(H * dk * dv), new Float32Array(30)),
      /addStateTerm needs causal linear/,
    );
    await assert.rejects(
      kernels.addStateTerm({ ...good('linear'), causal: false }, new Float32Array(H * dk * dv), new Float32Array(30)),
      /non-causal/,
    );
    await assert.rejects(kernels.addStateTerm(good('linear'), new Float32Array(3), new Float32Array(30)), /\bstate\b.*length 24/);
  });
  test('stateGrad rejects a wrong dO length', async () => {
    await assert.rejects(kernels.stateGrad(good('delta'), new Float32Array(3)), /\bdO\b.*length 30/);
  });
  test('foldStates rejects an empty summary list and a wrong U length', async () => {
    const shape = { kind: 'linear' as const, H, dk, dv };
    await assert.rejects(kernels.foldStates(shape, []), /summaries must be a non-empty array/);
    await assert.rejects(kernels.foldStates(shape, [{ a: new Float32Array(0), u: new Float32Array(5) }]), /summaries\.u\[0\].*length 24/);
  });
  test('foldStates rejects a wrong compact A length for delta ([H,dk,dk])', async () => {
    const shape = { kind: 'delta' as const, H, dk, dv };
    const u = rngFor('validation-u').normals(H * dk * dv);
    await assert.rejects(kernels.foldStates(shape, [{ a: new Float32Array(H * dk), u }]), /summaries\.a\[0\].*length 32/);
  });
  test('suffixFold rejects a and d of different lengths', async () => {
    const shape = { kind: 'linear' as const, H, dk, dv };
    await assert.rejects(kernels.suffixFold(shape, [new Float32Array(0)], []), /a and d must be arrays of the same non-zero length/);
  });
  test('softmax rejects a wrong k length naming k and [Tk,H,dk]', async () => {
    const rng = rngFor('validation-softmax');
    const spec = { Tq: 3, Tk: 4, H: 1, dk: 2, dv: 2, q: rng.normals(6), k: rng.normals(6), v: rng.normals(8) };
    await assert.rejects(kernels.softmax.forward(spec), /\bk\b.*length 8.*\[Tk,H,dk\]/);
  });
  test('softmax rejects a non-finite scale', async () => {
    const rng = rngFor('validation-softmax2');
    const spec = { Tq: 2, H: 1, dk: 2, dv: 2, q: rng.normals(4), k: rng.normals(4), v: rng.normals(4), scale: Infinity };
    await assert.rejects(kernels.softmax.forward(spec), /scale must be a finite number/);
  });
  test('gemm rejects wrong A length, negative M and non-finite alpha', async () => {
    const rng = rngFor('validation-gemm');
    await assert.rejects(kernels.gemm({ M: 2, N: 3, K: 4, A: rng.normals(7), B: rng.normals(12) }), /\bA\b.*length 8.*\[M,K\]/);
    await assert.rejects(
      kernels.gemm({ transA: true, M: 2, N: 3, K: 4, A: rng.normals(7), B: rng.normals(12) }),
      /\bA\b.*length 8.*\[K,M\]/,
    );
    await assert.rejects(kernels.gemm({ M: -1, N: 3, K: 4, A: rng.normals(0), B: rng.normals(12) }), /\bM must be an integer/);
    await assert.rejects(kernels.gemm({ M: 2, N: 3, K: 4, alpha: NaN, A: rng.normals(8), B: rng.normals(12) }), /alpha must be finite/);
  });
});
