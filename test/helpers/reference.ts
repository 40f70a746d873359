// Float64 reference implementations, written plainly (token by token, exactly as DESIGN.md §2),
// plus finite differences and random inputs. Nothing here calls the native kernels.
//
// Layouts (row-major, as in native/kernels.ts): q,k [T,H,dk]; v,o [T,H,dv]; g [T,H] (scalar_gate,
// gated_delta) or [T,H,dk] (vector_gate); beta [T,H]; states [H,dk,dv] with S[h][i][j] at
// (h*dk+i)*dv+j; compact summary A: [] linear, [H] scalar_gate, [H,dk] vector_gate, [H,dk,dk] delta
// kinds with A[h][i][l] at (h*dk+i)*dk+l and S_end = A·S_start + U.
import type { AttentionSpec, Kind } from '../../native/kernels.js';
import { Rng } from './rng.js';

export const ALL_KINDS: Kind[] = ['linear', 'scalar_gate', 'vector_gate', 'delta', 'gated_delta'];

type Arr = ArrayLike<number>;

/** A spec the references accept: the kernels' AttentionSpec, or the same with float64 arrays. */
export interface RefSpec {
  kind: Kind;
  T: number;
  H: number;
  dk: number;
  dv: number;
  q: Arr;
  k: Arr;
  v: Arr;
  g?: Arr | undefined;
  beta?: Arr | undefined;
  initialState?: Arr | undefined;
  causal?: boolean | undefined;
}

export function isDeltaKind(kind: Kind): boolean {
  return kind === 'delta' || kind === 'gated_delta';
}

export function hasScalarGate(kind: Kind): boolean {
  return kind === 'scalar_gate' || kind === 'gated_delta';
}

function need(a: Arr | undefined, what: string): Arr {
  if (a === undefined) throw new Error(`reference: ${what} is required`);
  return a;
}

/**
 * Causal forward, token by token: o_t = S_t^T q_t, S_t from the table of DESIGN.md §2.
 * Non-causal (linear only): S_T = S0 + Σ_t k_t v_t^T and o_t = S_T^T q_t for every t.
 */
export function refForward(s: RefSpec): { o: Float64Array; finalState: Float64Array } {
  const { kind, T, H, dk, dv, q, k, v } = s;
  const causal = s.causal ?? true;
  if (!causal && kind !== 'linear') throw new Error('reference: non-causal is defined for linear only');
  const o = new Float64Array(T * H * dv);
  const finalState = new Float64Array(H * dk * dv);
  const S = new Float64Array(dk * dv);
  const u = new Float64Array(dv);
  const g = kind === 'linear' || kind === 'delta' ? undefined : need(s.g, 'g');
  const beta = isDeltaKind(kind) ? need(s.beta, 'beta') : undefined;
  for (let h = 0; h < H; h++) {
    for (let x = 0; x < dk * dv; x++) S[x] = s.initialState ? s.initialState[h * dk * dv + x]! : 0;
    if (!causal) {
      for (let t = 0; t < T; t++) {
        const kb = (t * H + h) * dk;
        const vb = (t * H + h) * dv;
        for (let i = 0; i < dk; i++) for (let j = 0; j < dv; j++) S[i * dv + j] = S[i * dv + j]! + k[kb + i]! * v[vb + j]!;
      }
      for (let t = 0; t < T; t++) outputRow(S, q, (t * H + h) * dk, o, (t * H + h) * dv, dk, dv);
    } else {
      for (let t = 0; t < T; t++) {
        const kb = (t * H + h) * dk;
        const vb = (t * H + h) * dv;
        // Decay: S ← e^{g_t} S (scalar) or diag(e^{g_t}) S (vector).
        if (kind === 'scalar_gate' || kind === 'gated_delta') {
          const a = Math.exp(g![t * H + h]!);
          for (let x = 0; x < dk * dv; x++) S[x] = S[x]! * a;
        } else if (kind === 'vector_gate') {
          for (let i = 0; i < dk; i++) {
            const a = Math.exp(g![kb + i]!);
            for (let j = 0; j < dv; j++) S[i * dv + j] = S[i * dv + j]! * a;
          }
        }
        if (beta) {
          // Delta rule on the (decayed) state S': S ← S' + β k (v − S'^T k)^T.
          const b = beta[t * H + h]!;
          for (let j = 0; j < dv; j++) {
            let acc = 0;
            for (let i = 0; i < dk; i++) acc += S[i * dv + j]! * k[kb + i]!;
            u[j] = v[vb + j]! - acc;
          }
          for (let i = 0; i < dk; i++) {
            const bk = b * k[kb + i]!;
            for (let j = 0; j < dv; j++) S[i * dv + j] = S[i * dv + j]! + bk * u[j]!;
          }
        } else {
          for (let i = 0; i < dk; i++) {
            const ki = k[kb + i]!;
            for (let j = 0; j < dv; j++) S[i * dv + j] = S[i * dv + j]! + ki * v[vb + j]!;
          }
        }
        outputRow(S, q, kb, o, vb, dk, dv);
      }
    }
    finalState.set(S, h * dk * dv);
  }
  return { o, finalState };
}

function outputRow(S: Float64Array, q: Arr, qb: number, o: Float64Array, ob: number, dk: number, dv: number): void {
  for (let j = 0; j < dv; j++) {
    let acc = 0;
    for (let i = 0; i < dk; i++) acc += S[i * dv + j]! * q[qb + i]!;
    o[ob + j] = acc;
  }
}

/** L = Σ dO⊙o + Σ dSf⊙finalState (dSf optional), in float64. */
export function refLoss(s: RefSpec, dO: Arr, dSf?: Arr): number {
  const { o, finalState } = refForward(s);
  let L = 0;
  for (let i = 0; i < o.length; i++) L += dO[i]! * o[i]!;
  if (dSf) for (let i = 0; i < finalState.length; i++) L += dSf[i]! * finalState[i]!;
  return L;
}

export type GradField = 'q' | 'k' | 'v' | 'g' | 'beta' | 'initialState';

/** A float64 copy of a spec (so single elements can be perturbed without float32 rounding). */
export function toF64(s: RefSpec): RefSpec & { q: Float64Array; k: Float64Array; v: Float64Array } {
  const c = (a: Arr | undefined) => (a === undefined ? undefined : Float64Array.from(a));
  return {
    kind: s.kind,
    T: s.T,
    H: s.H,
    dk: s.dk,
    dv: s.dv,
    causal: s.causal,
    q: Float64Array.from(s.q),
    k: Float64Array.from(s.k),
    v: Float64Array.from(s.v),
    g: c(s.g),
    beta: c(s.beta),
    initialState: c(s.initialState),
  };
}

/**
 * ∂L/∂field by central finite differences of the float64 reference, for every element.
 * Step h = 1e-6·max(1,|x|) (the actually representable step is used). In float64 the truncation
 * error is O(h²)≈1e-12 and the rounding error ≈ ε|L|/h ≈ 2e-10·|L|: far below any float32 bound.
 */
export function fdGrad(f: (s: RefSpec) => number, spec: RefSpec, field: GradField): Float64Array {
  const s = toF64(spec);
  const x = s[field] as Float64Array | undefined;
  if (!x) throw new Error(`fdGrad: spec has no ${field}`);
  const grad = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const x0 = x[i]!;
    const step = 1e-6 * Math.max(1, Math.abs(x0));
    const xp = x0 + step;
    const xm = x0 - step;
    x[i] = xp;
    const Lp = f(s);
    x[i] = xm;
    const Lm = f(s);
    x[i] = x0;
    grad[i] = (Lp - Lm) / (xp - xm);
  }
  return grad;
}

/**
 * Block summary in float64, token by token: S_end = A·S_start + U with U = end state from zero and
 * A = Π_t M_t where S_t = M_t S_{t-1} + (…): M_t = I (linear), e^{g_t} I (scalar_gate),
 * diag(e^{g_t}) (vector_gate), I − β_t k_t k_t^T (delta), e^{g_t}(I − β_t k_t k_t^T) (gated_delta).
 * Returned compact as in kernels.summary, and as full dk×dk matrices per head.
 */
export function refSummary(s: RefSpec): { a: Float64Array; aFull: Float64Array; u: Float64Array } {
  const { kind, T, H, dk } = s;
  const u = refForward({ ...s, initialState: undefined, causal: true }).finalState;
  const aFull = new Float64Array(H * dk * dk);
  const A = new Float64Array(dk * dk);
  const tmp = new Float64Array(dk * dk);
  for (let h = 0; h < H; h++) {
    A.fill(0);
    for (let i = 0; i < dk; i++) A[i * dk + i] = 1;
    for (let t = 0; t < T; t++) {
      const kb = (t * H + h) * dk;
      if (kind === 'scalar_gate' || kind === 'gated_delta') {
        const a = Math.exp(s.g![t * H + h]!);
        for (let x = 0; x < dk * dk; x++) A[x] = A[x]! * a;
      } else if (kind === 'vector_gate') {
        for (let i = 0; i < dk; i++) {
          const a = Math.exp(s.g![kb + i]!);
          for (let l = 0; l < dk; l++) A[i * dk + l] = A[i * dk + l]! * a;
        }
      }
      if (isDeltaKind(kind)) {
        // A ← (I − β k k^T) A
        const b = s.beta![t * H + h]!;
        for (let l = 0; l < dk; l++) {
          let kA = 0;
          for (let i = 0; i < dk; i++) kA += s.k[kb + i]! * A[i * dk + l]!;
          for (let i = 0; i < dk; i++) tmp[i * dk + l] = A[i * dk + l]! - b * s.k[kb + i]! * kA;
        }
        A.set(tmp);
      }
    }
    aFull.set(A, h * dk * dk);
  }
  let a: Float64Array;
  if (kind === 'linear') a = new Float64Array(0);
  else if (kind === 'scalar_gate') a = Float64Array.from({ length: H }, (_, h) => aFull[h * dk * dk]!);
  else if (kind === 'vector_gate')
    a = Float64Array.from({ length: H * dk }, (_, x) => aFull[Math.floor(x / dk) * dk * dk + (x % dk) * dk + (x % dk)]!);
  else a = aFull.slice();
  return { a, aFull, u };
}

/** Expands a compact summary A (as kernels.summary returns it) to full [H,dk,dk] matrices. */
export function expandA(kind: Kind, a: Arr, H: number, dk: number): Float64Array {
  const full = new Float64Array(H * dk * dk);
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < dk; i++) {
      for (let l = 0; l < dk; l++) {
        let val: number;
        if (kind === 'linear') val = i === l ? 1 : 0;
        else if (kind === 'scalar_gate') val = i === l ? a[h]! : 0;
        else if (kind === 'vector_gate') val = i === l ? a[h * dk + i]! : 0;
        else val = a[(h * dk + i) * dk + l]!;
        full[(h * dk + i) * dk + l] = val;
      }
    }
  }
  return full;
}

/** A·S + U per head, float64 (A full [H,dk,dk], S and U [H,dk,dv]). */
export function applyAffine(aFull: Arr, S: Arr, U: Arr, H: number, dk: number, dv: number): Float64Array {
  const out = new Float64Array(H * dk * dv);
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < dk; i++) {
      for (let j = 0; j < dv; j++) {
        let acc = U[(h * dk + i) * dv + j]!;
        for (let l = 0; l < dk; l++) acc += aFull[(h * dk + i) * dk + l]! * S[(h * dk + l) * dv + j]!;
        out[(h * dk + i) * dv + j] = acc;
      }
    }
  }
  return out;
}

/**
 * D = ∂(Σ dO⊙o)/∂S_start of a causal block: o_t = S_t^T q_t with S_t = A_t S_start + (…), A_t the
 * prefix product of the per-token maps, so D = Σ_t A_t^T q_t dO_t^T.
 */
export function refStateGrad(s: RefSpec, dO: Arr): Float64Array {
  const { T, H, dk, dv } = s;
  const D = new Float64Array(H * dk * dv);
  const Aq = new Float64Array(dk);
  for (let t = 0; t < T; t++) {
    const prefix = refSummary({ ...s, T: t + 1 }).aFull; // A_t for every head (tests use small T)
    for (let h = 0; h < H; h++) {
      const qb = (t * H + h) * dk;
      for (let l = 0; l < dk; l++) {
        let acc = 0;
        for (let i = 0; i < dk; i++) acc += prefix[(h * dk + i) * dk + l]! * s.q[qb + i]!;
        Aq[l] = acc;
      }
      for (let l = 0; l < dk; l++) {
        for (let j = 0; j < dv; j++) D[(h * dk + l) * dv + j] = D[(h * dk + l) * dv + j]! + Aq[l]! * dO[(t * H + h) * dv + j]!;
      }
    }
  }
  return D;
}

// ---------------------------------------------------------------------------------------------
// Softmax attention

export interface RefSoftmaxSpec {
  Tq: number;
  Tk?: number | undefined;
  H: number;
  dk: number;
  dv: number;
  q: Arr;
  k: Arr;
  v: Arr;
  causal?: boolean | undefined;
  qOffset?: number | undefined;
  scale?: number | undefined;
  /** Sliding window (causal only): query i sees the keys j with qOffset + i − window < j ≤ qOffset + i. 0 or absent: no window. */
  window?: number | undefined;
}

/** Row i of head h: probabilities p[j − first] over its visible keys first ≤ j < keys. */
function softmaxRow(s: RefSoftmaxSpec, h: number, i: number): { first: number; keys: number; p: Float64Array; lse: number } {
  const Tk = s.Tk ?? s.Tq;
  const { H, dk } = s;
  const causal = s.causal ?? true;
  const scale = s.scale ?? 1 / Math.sqrt(dk);
  const last = causal ? Math.min(Tk - 1, (s.qOffset ?? 0) + i) : Tk - 1; // query i sees keys j <= qOffset+i
  const keys = last + 1;
  const first = causal && s.window ? Math.max(0, (s.qOffset ?? 0) + i - s.window + 1) : 0;
  const n = Math.max(keys - first, 0);
  const p = new Float64Array(n);
  if (n === 0) return { first, keys: first, p, lse: -Infinity };
  let m = -Infinity;
  for (let j = 0; j < n; j++) {
    let acc = 0;
    for (let d = 0; d < dk; d++) acc += s.q[(i * H + h) * dk + d]! * s.k[((first + j) * H + h) * dk + d]!;
    p[j] = scale * acc;
    m = Math.max(m, p[j]!);
  }
  let z = 0;
  for (let j = 0; j < n; j++) {
    p[j] = Math.exp(p[j]! - m);
    z += p[j]!;
  }
  for (let j = 0; j < n; j++) p[j] = p[j]! / z;
  return { first, keys, p, lse: m + Math.log(z) };
}

/** o [Tq,H,dv]; lse [H,Tq] = log Σ_j exp(scale·q_i·k_j) over visible keys (−∞ and o=0 if none). */
export function refSoftmaxForward(s: RefSoftmaxSpec): { o: Float64Array; lse: Float64Array } {
  const { Tq, H, dv } = s;
  const o = new Float64Array(Tq * H * dv);
  const lse = new Float64Array(H * Tq);
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < Tq; i++) {
      const r = softmaxRow(s, h, i);
      lse[h * Tq + i] = r.lse;
      for (let j = r.first; j < r.keys; j++) {
        for (let d = 0; d < dv; d++) o[(i * H + h) * dv + d] = o[(i * H + h) * dv + d]! + r.p[j - r.first]! * s.v[(j * H + h) * dv + d]!;
      }
    }
  }
  return { o, lse };
}

/** Analytic backward of softmax attention in float64 (checked against finite differences in reference.test). */
export function refSoftmaxBackward(s: RefSoftmaxSpec, dO: Arr): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const Tk = s.Tk ?? s.Tq;
  const { Tq, H, dk, dv } = s;
  const scale = s.scale ?? 1 / Math.sqrt(dk);
  const dq = new Float64Array(Tq * H * dk);
  const dK = new Float64Array(Tk * H * dk);
  const dV = new Float64Array(Tk * H * dv);
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < Tq; i++) {
      const r = softmaxRow(s, h, i);
      const ob = (i * H + h) * dv;
      // dP_ij = dO_i·v_j; dS_ij = p_ij (dP_ij − Σ_l p_il dP_il)
      const dP = new Float64Array(r.p.length);
      let Di = 0;
      for (let j = r.first; j < r.keys; j++) {
        let acc = 0;
        for (let d = 0; d < dv; d++) acc += dO[ob + d]! * s.v[(j * H + h) * dv + d]!;
        dP[j - r.first] = acc;
        Di += r.p[j - r.first]! * acc;
      }
      for (let j = r.first; j < r.keys; j++) {
        const p = r.p[j - r.first]!;
        for (let d = 0; d < dv; d++) dV[(j * H + h) * dv + d] = dV[(j * H + h) * dv + d]! + p * dO[ob + d]!;
        const dS = p * (dP[j - r.first]! - Di) * scale;
        for (let d = 0; d < dk; d++) {
          dq[(i * H + h) * dk + d] = dq[(i * H + h) * dk + d]! + dS * s.k[(j * H + h) * dk + d]!;
          dK[(j * H + h) * dk + d] = dK[(j * H + h) * dk + d]! + dS * s.q[(i * H + h) * dk + d]!;
        }
      }
    }
  }
  return { dq, dk: dK, dv: dV };
}

/** Finite-difference gradient of L = Σ dO⊙o (softmax reference) w.r.t. q, k or v. */
export function fdSoftmaxGrad(s: RefSoftmaxSpec, dO: Arr, field: 'q' | 'k' | 'v'): Float64Array {
  const c: RefSoftmaxSpec & { q: Float64Array; k: Float64Array; v: Float64Array } = {
    ...s,
    q: Float64Array.from(s.q),
    k: Float64Array.from(s.k),
    v: Float64Array.from(s.v),
  };
  const x = c[field];
  const loss = () => {
    const { o } = refSoftmaxForward(c);
    let L = 0;
    for (let i = 0; i < o.length; i++) L += dO[i]! * o[i]!;
    return L;
  };
  const grad = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const x0 = x[i]!;
    const step = 1e-6 * Math.max(1, Math.abs(x0));
    const xp = x0 + step;
    const xm = x0 - step;
    x[i] = xp;
    const Lp = loss();
    x[i] = xm;
    const Lm = loss();
    x[i] = x0;
    grad[i] = (Lp - Lm) / (xp - xm);
  }
  return grad;
}

// ---------------------------------------------------------------------------------------------
// GEMM

/** C = alpha·op(A)·op(B) + beta·C0 in float64; op(A) M×K stored [M,K] or [K,M] (transA). beta=0 ignores C0. */
export function refGemm(
  transA: boolean,
  transB: boolean,
  M: number,
  N: number,
  K: number,
  alpha: number,
  A: Arr,
  B: Arr,
  beta: number,
  C0: Arr | undefined,
): { c: Float64Array; absBound: Float64Array } {
  const c = new Float64Array(M * N);
  // absBound = |alpha|·|op(A)|·|op(B)| + |beta|·|C0| elementwise: the scale of the rounding error.
  const absBound = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = 0;
      let accAbs = 0;
      for (let kk = 0; kk < K; kk++) {
        const a = transA ? A[kk * M + m]! : A[m * K + kk]!;
        const b = transB ? B[n * K + kk]! : B[kk * N + n]!;
        acc += a * b;
        accAbs += Math.abs(a * b);
      }
      let val = alpha * acc;
      let bound = Math.abs(alpha) * accAbs;
      if (beta !== 0 && C0) {
        val += beta * C0[m * N + n]!;
        bound += Math.abs(beta * C0[m * N + n]!);
      }
      c[m * N + n] = val;
      absBound[m * N + n] = bound;
    }
  }
  return { c, absBound };
}

// ---------------------------------------------------------------------------------------------
// Random inputs

export type GateStrength = 'mild' | 'strong' | 'extreme';

export interface GenOptions {
  kind: Kind;
  T: number;
  H: number;
  dk: number;
  dv: number;
  chunkSize?: number | undefined;
  initialState?: boolean | undefined;
  causal?: boolean | undefined;
  /**
   * mild: g = logsigmoid(x), x ~ N(3,1): e^g mostly in (0.8, 1).
   * strong: x ~ U(-3, 3): g down to about -3.05.
   * extreme: x ~ U(-5, 3): g down to about -5 per token (cumulative sums reach hundreds).
   */
  gates?: GateStrength | undefined;
}

/** log(sigmoid(x)), stable for either sign. */
export function logSigmoid(x: number): number {
  return x >= 0 ? -Math.log1p(Math.exp(-x)) : x - Math.log1p(Math.exp(x));
}

export function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

/**
 * Random spec of the given kind. q,k ~ N(0,1)/sqrt(dk); v ~ N(0,1); for delta kinds k is
 * L2-normalised per token and head and beta = sigmoid(N(0,1)) ∈ (0,1); initial state ~ N(0, 0.5²).
 */
export function randomSpec(rng: Rng, o: GenOptions): AttentionSpec {
  const { kind, T, H, dk, dv } = o;
  const sc = 1 / Math.sqrt(dk);
  const q = rng.normals(T * H * dk, sc);
  const k = rng.normals(T * H * dk, sc);
  if (isDeltaKind(kind)) {
    for (let th = 0; th < T * H; th++) {
      let n2 = 0;
      for (let i = 0; i < dk; i++) n2 += k[th * dk + i]! ** 2;
      const inv = 1 / Math.sqrt(n2);
      for (let i = 0; i < dk; i++) k[th * dk + i] = k[th * dk + i]! * inv;
    }
  }
  const v = rng.normals(T * H * dv);
  const spec: AttentionSpec = { kind, T, H, dk, dv, q, k, v };
  const gLen = kind === 'vector_gate' ? T * H * dk : hasScalarGate(kind) ? T * H : 0;
  if (gLen > 0) {
    const strength = o.gates ?? 'mild';
    const draw = strength === 'mild' ? () => 3 + rng.normal() : strength === 'strong' ? () => rng.uniform(-3, 3) : () => rng.uniform(-5, 3);
    spec.g = rng.f32(gLen, () => logSigmoid(draw()));
  }
  if (isDeltaKind(kind)) spec.beta = rng.f32(T * H, () => sigmoid(rng.normal()));
  if (o.initialState) spec.initialState = rng.normals(H * dk * dv, 0.5);
  if (o.chunkSize !== undefined) spec.chunkSize = o.chunkSize;
  if (o.causal !== undefined) spec.causal = o.causal;
  return spec;
}

/** Slice tokens [t0, t1) of a spec (q,k,v,g,beta); the initial state is dropped. */
export function sliceSpec(s: AttentionSpec, t0: number, t1: number): AttentionSpec {
  const { H, dk, dv } = s;
  const gw = s.kind === 'vector_gate' ? H * dk : H;
  const out: AttentionSpec = {
    kind: s.kind,
    T: t1 - t0,
    H,
    dk,
    dv,
    q: s.q.slice(t0 * H * dk, t1 * H * dk),
    k: s.k.slice(t0 * H * dk, t1 * H * dk),
    v: s.v.slice(t0 * H * dv, t1 * H * dv),
  };
  if (s.g) out.g = s.g.slice(t0 * gw, t1 * gw);
  if (s.beta) out.beta = s.beta.slice(t0 * H, t1 * H);
  if (s.chunkSize !== undefined) out.chunkSize = s.chunkSize;
  return out;
}

/** Slice rows [t0,t1) of a [T, width] tensor. */
export function sliceRows(a: Float32Array, width: number, t0: number, t1: number): Float32Array {
  return a.slice(t0 * width, t1 * width);
}

export function concatF32(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
