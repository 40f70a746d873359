// The typed, validated facade over the native kernels. Every entry point checks its arguments
// (names the argument, the expected value and what arrived) before any native code runs, then
// runs the kernel off the JavaScript thread and resolves with freshly allocated outputs.
import { AsyncLocalStorage } from 'node:async_hooks';
import { addon, KIND_CODES } from './binding.js';

/** The linear-attention families of DESIGN.md §2. */
export type Kind = keyof typeof KIND_CODES;
export const KINDS = Object.keys(KIND_CODES) as Kind[];

export interface AttentionSpec {
  kind: Kind;
  /** Tokens. */
  T: number;
  /** Heads. */
  H: number;
  /** Key/query head dimension. */
  dk: number;
  /** Value head dimension. */
  dv: number;
  /** [T,H,dk] */
  q: Float32Array;
  /** [T,H,dk] */
  k: Float32Array;
  /** [T,H,dv] */
  v: Float32Array;
  /** Log gates (≤ 0): [T,H] for scalar_gate and gated_delta, [T,H,dk] for vector_gate. */
  g?: Float32Array;
  /** Delta-rule step sizes: [T,H] for delta and gated_delta. */
  beta?: Float32Array;
  /** [H,dk,dv]; zero when absent. */
  initialState?: Float32Array;
  /** Default true. false (bidirectional) only for 'linear'. */
  causal?: boolean;
  /** Tokens per chunk of the chunked kernels. Default 64. */
  chunkSize?: number;
}

export interface ForwardResult {
  /** [T,H,dv] */
  o: Float32Array;
  /** [H,dk,dv] */
  finalState: Float32Array;
  /**
   * With `saveForBackward`: the chunk states, for backward() of the same inputs. forwardInto
   * refills the native buffers of an `out.saved` left by an earlier call (a training loop then
   * allocates them once).
   */
  saved?: SavedForward;
}

export interface ForwardOptions {
  /**
   * Keep the state at every chunk start (T/chunk · H · dk · dv floats, held natively) so that a
   * backward of the same inputs skips recomputing them. Causal only. Default false.
   */
  saveForBackward?: boolean;
}

/** Chunk states a forward kept for the backward of the same input arrays (opaque). */
export class SavedForward {
  /** @internal */
  constructor(
    readonly handle: unknown,
    readonly inputs: readonly (Float32Array | null)[],
  ) {}
}

export interface BackwardResult {
  dq: Float32Array;
  dk: Float32Array;
  dv: Float32Array;
  dg?: Float32Array;
  dbeta?: Float32Array;
  dInitialState?: Float32Array;
}

/**
 * A block's state summary (DESIGN.md §2.2): S_end = A·S_start + U.
 * `a` is compact: empty for linear, [H] for scalar_gate (e^{Σg}), [H,dk] for vector_gate,
 * [H,dk,dk] for delta kinds. `u` is [H,dk,dv].
 */
export interface BlockSummary {
  a: Float32Array;
  u: Float32Array;
}

export const DEFAULT_CHUNK = 64;

const MAX_DIM = 1 << 30;

/**
 * A Float32Array for a kernel to fill (contents unspecified: every kernel writes every element of
 * its outputs). It comes from the addon's buffer pool (native/src/buffer_pool.h): a training step
 * allocates the same shapes every step, and pooled blocks keep their pages, where fresh memory
 * costs ~3 µs per KiB to first touch on this VM (a 50 MB output: ~150 ms against ~2 ms).
 */
export function output(n: number): Float32Array {
  const a = addon().allocF32(n);
  scopes.getStore()?.push(a);
  return a;
}

const scopes = new AsyncLocalStorage<Float32Array[]>();

/**
 * Runs `fn`, then hands every output allocated inside it (in its async context) back to the pool
 * at once, instead of waiting for garbage collection: V8 counts pooled blocks as external memory,
 * and left to the collector a training step's hundreds of megabytes of activations forced several
 * full collections per step (a quarter of a worker's time). Only for work whose outputs are all
 * dead at the end (a training step: activations and gradients, with the gradients summed into the
 * parameter store); an array used after its scope has length 0.
 */
export async function withOutputScope<T>(fn: () => Promise<T>): Promise<T> {
  const list: Float32Array[] = [];
  try {
    return await scopes.run(list, fn);
  } finally {
    const release = addon().releaseF32;
    for (const a of list) release(a);
  }
}

/**
 * `n` bytes over a pooled block (contents unspecified), returned to the pool when garbage
 * collected — never released by withOutputScope, so it may outlive any step: for buffers whose
 * owner is not a step, such as received messages (worker/collectives/receive-buffer.ts).
 */
export function pooledBytes(n: number): Uint8Array {
  const a = addon().allocF32(Math.ceil(n / 4));
  return new Uint8Array(a.buffer, a.byteOffset, n);
}

/**
 * Puts an array made elsewhere (e.g. a CUDA result over a pinned block, native/cuda.ts) into the
 * current output scope, if any: withOutputScope then releases it with the step's own outputs.
 */
export function adoptOutput(a: Float32Array): void {
  scopes.getStore()?.push(a);
}

/** A zero-filled pooled Float32Array (for accumulators). */
export function zeros(n: number): Float32Array {
  return addon().allocF32(n).fill(0);
}

/** Pool counters: idle and live bytes, hits and misses (see output()). */
export function poolStats(): { idleBytes: number; liveBytes: number; hits: number; misses: number; capBytes: number } {
  return addon().poolStats();
}

export function fail(message: string): never {
  throw new Error(`lasp kernels: ${message}`);
}

export function checkInt(name: string, value: unknown, min: number, max = MAX_DIM): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(`${name} must be an integer in [${min}, ${max}], got ${describe(value)}`);
  }
  return value;
}

export function describe(value: unknown): string {
  if (value instanceof Float32Array) return `Float32Array(${value.length})`;
  if (ArrayBuffer.isView(value)) return `${value.constructor.name}(${(value as unknown as { length: number }).length})`;
  if (Array.isArray(value)) return `Array(${value.length})`;
  if (typeof value === 'string') return JSON.stringify(value);
  return String(value);
}

export function checkArray(name: string, value: unknown, length: number, shape: string): Float32Array {
  if (!(value instanceof Float32Array)) {
    fail(`${name} must be a Float32Array of length ${length} (${shape}), got ${describe(value)}`);
  }
  if (value.length !== length) {
    fail(`${name} must have length ${length} (${shape}), got ${value.length}`);
  }
  return value;
}

function checkKind(kind: unknown): Kind {
  if (typeof kind !== 'string' || !(kind in KIND_CODES)) {
    fail(`kind must be one of ${KINDS.join(', ')}, got ${describe(kind)}`);
  }
  return kind as Kind;
}

export function gateLength(kind: Kind, T: number, H: number, dk: number): number {
  if (kind === 'vector_gate') return T * H * dk;
  if (kind === 'scalar_gate' || kind === 'gated_delta') return T * H;
  return 0;
}

export function summaryALength(kind: Kind, H: number, dk: number): number {
  switch (kind) {
    case 'linear':
      return 0;
    case 'scalar_gate':
      return H;
    case 'vector_gate':
      return H * dk;
    default:
      return H * dk * dk;
  }
}

interface Checked {
  kind: Kind;
  code: number;
  causal: boolean;
  T: number;
  H: number;
  dk: number;
  dv: number;
  chunk: number;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  g: Float32Array | null;
  beta: Float32Array | null;
  s0: Float32Array | null;
}

/** Validates a spec; throws an Error naming the offending field. */
export function checkSpec(spec: AttentionSpec): Checked {
  if (spec === null || typeof spec !== 'object') fail(`spec must be an object, got ${describe(spec)}`);
  const kind = checkKind(spec.kind);
  const T = checkInt('T', spec.T, 1);
  const H = checkInt('H', spec.H, 1, 4096);
  const dk = checkInt('dk', spec.dk, 1, 4096);
  const dv = checkInt('dv', spec.dv, 1, 4096);
  const chunk = spec.chunkSize === undefined ? DEFAULT_CHUNK : checkInt('chunkSize', spec.chunkSize, 1, 1024);
  if (T * H * Math.max(dk, dv) > 2 ** 31 - 1) fail(`T*H*max(dk,dv) must be < 2^31, got ${T * H * Math.max(dk, dv)}`);
  const causal = spec.causal === undefined ? true : spec.causal;
  if (typeof causal !== 'boolean') fail(`causal must be a boolean, got ${describe(causal)}`);
  if (!causal && kind !== 'linear') fail(`causal=false is only defined for kind 'linear', got kind ${JSON.stringify(kind)}`);
  const q = checkArray('q', spec.q, T * H * dk, '[T,H,dk]');
  const k = checkArray('k', spec.k, T * H * dk, '[T,H,dk]');
  const v = checkArray('v', spec.v, T * H * dv, '[T,H,dv]');
  const gLen = gateLength(kind, T, H, dk);
  let g: Float32Array | null = null;
  if (gLen > 0) {
    if (spec.g === undefined) fail(`g (log gates) is required for kind ${kind}: Float32Array of length ${gLen}`);
    g = checkArray('g', spec.g, gLen, kind === 'vector_gate' ? '[T,H,dk]' : '[T,H]');
  } else if (spec.g !== undefined) {
    fail(`g is not used by kind ${kind}; leave it undefined`);
  }
  let beta: Float32Array | null = null;
  if (kind === 'delta' || kind === 'gated_delta') {
    if (spec.beta === undefined) fail(`beta is required for kind ${kind}: Float32Array of length ${T * H} ([T,H])`);
    beta = checkArray('beta', spec.beta, T * H, '[T,H]');
  } else if (spec.beta !== undefined) {
    fail(`beta is not used by kind ${kind}; leave it undefined`);
  }
  const s0 = spec.initialState === undefined ? null : checkArray('initialState', spec.initialState, H * dk * dv, '[H,dk,dv]');
  return { kind, code: KIND_CODES[kind], causal, T, H, dk, dv, chunk, q, k, v, g, beta, s0 };
}

async function forward(spec: AttentionSpec, opts?: ForwardOptions): Promise<ForwardResult> {
  const c = checkSpec(spec);
  const out: ForwardResult = { o: output(c.T * c.H * c.dv), finalState: output(c.H * c.dk * c.dv) };
  await runForward(c, out, opts);
  return out;
}

/** forward() into caller-owned outputs (reused buffers: no allocation per call). */
async function forwardInto(spec: AttentionSpec, out: ForwardResult, opts?: ForwardOptions): Promise<ForwardResult> {
  const c = checkSpec(spec);
  checkArray('out.o', out?.o, c.T * c.H * c.dv, '[T,H,dv]');
  checkArray('out.finalState', out.finalState, c.H * c.dk * c.dv, '[H,dk,dv]');
  await runForward(c, out, opts);
  return out;
}

/** opts.saveForBackward, checked: a boolean (default false), and only for causal attention. */
export function checkSaveOption(c: Checked, opts: ForwardOptions | undefined): boolean {
  const save = opts?.saveForBackward ?? false;
  if (typeof save !== 'boolean') fail(`opts.saveForBackward must be a boolean, got ${describe(save)}`);
  if (save && !c.causal) fail('saveForBackward is for causal attention (the non-causal backward keeps no chunk states)');
  return save;
}

/**
 * backward()'s dO and dFinalState (the dFinalState array, or null when absent) and `saved`, checked
 * as the device facades take them: `saved` must come from a forward with saveForBackward (they
 * accept and ignore it; the CPU backward checks more of it).
 */
export function checkBackwardArgs(c: Checked, dO: unknown, dFinalState: unknown, saved: unknown): Float32Array | null {
  checkArray('dO', dO, c.T * c.H * c.dv, '[T,H,dv]');
  const dS = dFinalState === undefined ? null : checkArray('dFinalState', dFinalState, c.H * c.dk * c.dv, '[H,dk,dv]');
  if (saved !== undefined && !(saved instanceof SavedForward)) {
    fail(`saved must be the 'saved' of a forward with saveForBackward, got ${describe(saved)}`);
  }
  return dS;
}

async function runForward(c: Checked, out: ForwardResult, opts: ForwardOptions | undefined): Promise<void> {
  const save = checkSaveOption(c, opts);
  // forwardInto with an earlier `saved` refills its native buffers instead of allocating.
  const reuse = save && out.saved instanceof SavedForward ? out.saved.handle : null;
  const { code, causal, T, H, dk, dv, chunk, q, k, v, g, beta, s0 } = c;
  const handle = await addon().laForward(code, causal, T, H, dk, dv, chunk, q, k, v, g, beta, s0, out.o, out.finalState, save, reuse);
  if (save) out.saved = new SavedForward(reuse ?? handle, [q, k, v, g, beta, s0]);
  else delete out.saved;
}

/** The gradient arrays backward() returns for this spec, allocated (not zeroed: every element is written). */
function backwardOutputs(c: Checked): BackwardResult {
  const out: BackwardResult = { dq: output(c.q.length), dk: output(c.k.length), dv: output(c.v.length) };
  if (c.g) out.dg = output(c.g.length);
  if (c.beta) out.dbeta = output(c.beta.length);
  if (c.s0) out.dInitialState = output(c.s0.length);
  return out;
}

/**
 * Gradients of L = <dO, o> + <dFinalState, finalState>. `saved` (from a forward with
 * saveForBackward on the same arrays) skips recomputing the chunk states.
 */
async function backward(spec: AttentionSpec, dO: Float32Array, dFinalState?: Float32Array, saved?: SavedForward): Promise<BackwardResult> {
  const c = checkSpec(spec);
  const out = backwardOutputs(c);
  await runBackward(c, dO, dFinalState, out, saved);
  return out;
}

/**
 * backward() into caller-owned gradient arrays. `out` must hold dq, dk, dv, and dg / dbeta /
 * dInitialState exactly when the spec has g / beta / initialState.
 */
async function backwardInto(
  spec: AttentionSpec,
  dO: Float32Array,
  dFinalState: Float32Array | undefined,
  out: BackwardResult,
  saved?: SavedForward,
): Promise<BackwardResult> {
  const c = checkSpec(spec);
  if (out === null || typeof out !== 'object') fail(`out must be an object of gradient arrays, got ${describe(out)}`);
  checkArray('out.dq', out.dq, c.q.length, '[T,H,dk]');
  checkArray('out.dk', out.dk, c.k.length, '[T,H,dk]');
  checkArray('out.dv', out.dv, c.v.length, '[T,H,dv]');
  for (const [name, need, len, shape] of [
    ['dg', c.g, c.g?.length ?? 0, c.kind === 'vector_gate' ? '[T,H,dk]' : '[T,H]'],
    ['dbeta', c.beta, c.beta?.length ?? 0, '[T,H]'],
    ['dInitialState', c.s0, c.s0?.length ?? 0, '[H,dk,dv]'],
  ] as const) {
    const have = out[name];
    if (need) checkArray(`out.${name}`, have, len, shape);
    else if (have !== undefined)
      fail(`out.${name} must be absent for this spec (no ${name === 'dg' ? 'g' : name === 'dbeta' ? 'beta' : 'initialState'})`);
  }
  await runBackward(c, dO, dFinalState, out, saved);
  return out;
}

function runBackward(
  c: Checked,
  dO: Float32Array,
  dFinalState: Float32Array | undefined,
  out: BackwardResult,
  saved: SavedForward | undefined,
): Promise<void> {
  checkArray('dO', dO, c.T * c.H * c.dv, '[T,H,dv]');
  if (saved !== undefined) {
    if (!(saved instanceof SavedForward)) fail(`saved must be the 'saved' of a forward with saveForBackward, got ${describe(saved)}`);
    const mine = [c.q, c.k, c.v, c.g, c.beta, c.s0];
    const names = ['q', 'k', 'v', 'g', 'beta', 'initialState'];
    mine.forEach((a, i) => {
      if (a !== saved.inputs[i]) fail(`saved belongs to a forward on other arrays: ${names[i]} is not the same array`);
    });
  }
  const dS = dFinalState === undefined ? null : checkArray('dFinalState', dFinalState, c.H * c.dk * c.dv, '[H,dk,dv]');
  return addon().laBackward(
    c.code,
    c.causal,
    c.T,
    c.H,
    c.dk,
    c.dv,
    c.chunk,
    c.q,
    c.k,
    c.v,
    c.g,
    c.beta,
    c.s0,
    dO,
    dS,
    out.dq,
    out.dk,
    out.dv,
    out.dg ?? null,
    out.dbeta ?? null,
    out.dInitialState ?? null,
    saved?.handle ?? null,
  );
}

/**
 * Block summary (A, U) of a run of tokens: S_end = A·S_start + U. The spec's initialState is ignored.
 * For non-causal linear attention, U = K^T V (the block's share of the common state) and A is empty.
 */
async function summary(spec: AttentionSpec): Promise<BlockSummary> {
  const c = checkSpec(spec);
  const a = new Float32Array(summaryALength(c.kind, c.H, c.dk));
  const u = new Float32Array(c.H * c.dk * c.dv);
  await addon().laSummary(c.code, c.causal, c.T, c.H, c.dk, c.dv, c.chunk, c.q, c.k, c.v, c.g, c.beta, a, u);
  return { a, u };
}

/**
 * D = ∂L/∂S_start of a block's own outputs (no gradient arriving at its end). [H,dk,dv].
 * For non-causal linear attention, D = Q^T dO (the gradient w.r.t. the common state).
 */
async function stateGrad(spec: AttentionSpec, dO: Float32Array): Promise<Float32Array> {
  const c = checkSpec(spec);
  checkArray('dO', dO, c.T * c.H * c.dv, '[T,H,dv]');
  const d = new Float32Array(c.H * c.dk * c.dv);
  await addon().laStateGrad(c.code, c.causal, c.T, c.H, c.dk, c.dv, c.chunk, c.q, c.k, c.v, c.g, c.beta, dO, d);
  return d;
}

/**
 * Adds an incoming state's contribution to outputs computed from a zero state, in place:
 * o_t += (e^{G_t} ⊙ q_t)^T P (G_t: cumulative log gate from the block start). Causal linear,
 * scalar_gate and vector_gate only (their output is separable in the incoming state).
 */
async function addStateTerm(spec: AttentionSpec, state: Float32Array, o: Float32Array): Promise<void> {
  const c = checkSpec(spec);
  if (!c.causal || c.kind === 'delta' || c.kind === 'gated_delta') {
    fail(`addStateTerm needs causal linear, scalar_gate or vector_gate, got kind ${c.kind}${c.causal ? '' : ' (non-causal)'}`);
  }
  checkArray('state', state, c.H * c.dk * c.dv, '[H,dk,dv]');
  checkArray('o', o, c.T * c.H * c.dv, '[T,H,dv]');
  await addon().laAddStateTerm(c.code, c.T, c.H, c.dk, c.dv, c.chunk, c.q, c.k, c.v, c.g, c.beta, state, o);
}

interface FoldShape {
  kind: Kind;
  H: number;
  dk: number;
  dv: number;
}

function checkFoldShape(shape: FoldShape): { code: number; H: number; dk: number; dv: number; kind: Kind } {
  if (shape === null || typeof shape !== 'object') fail(`shape must be an object {kind,H,dk,dv}, got ${describe(shape)}`);
  const kind = checkKind(shape.kind);
  return {
    kind,
    code: KIND_CODES[kind],
    H: checkInt('H', shape.H, 1, 4096),
    dk: checkInt('dk', shape.dk, 1, 4096),
    dv: checkInt('dv', shape.dv, 1, 4096),
  };
}

function concat(name: string, parts: Float32Array[], each: number, shape: string): Float32Array {
  const out = new Float32Array(parts.length * each);
  parts.forEach((p, i) => out.set(checkArray(`${name}[${i}]`, p, each, shape), i * each));
  return out;
}

function split(all: Float32Array, n: number, each: number): Float32Array[] {
  return Array.from({ length: n }, (_, i) => all.slice(i * each, (i + 1) * each));
}

/**
 * Incoming states of W consecutive blocks: P_0 = S_init, P_{r+1} = A_r P_r + U_r.
 * Returns W+1 states [H,dk,dv]; the last is the end state of the whole sequence.
 */
async function foldStates(shape: FoldShape, summaries: BlockSummary[], initialState?: Float32Array): Promise<Float32Array[]> {
  const s = checkFoldShape(shape);
  if (!Array.isArray(summaries) || summaries.length < 1) fail(`summaries must be a non-empty array, got ${describe(summaries)}`);
  const W = summaries.length;
  const aLen = summaryALength(s.kind, s.H, s.dk);
  const sLen = s.H * s.dk * s.dv;
  const a = concat(
    'summaries.a',
    summaries.map((x) => x.a),
    aLen,
    'compact A',
  );
  const u = concat(
    'summaries.u',
    summaries.map((x) => x.u),
    sLen,
    '[H,dk,dv]',
  );
  const s0 = initialState === undefined ? null : checkArray('initialState', initialState, sLen, '[H,dk,dv]');
  const states = new Float32Array((W + 1) * sLen);
  await addon().laFoldStates(s.code, W, s.H, s.dk, s.dv, a, u, s0, states);
  return split(states, W + 1, sLen);
}

/**
 * Gradients at the end of each of W blocks: E_{W-1} = dFinal (or 0), E_r = D_{r+1} + A_{r+1}^T E_{r+1}.
 * Also returns dInitial = D_0 + A_0^T E_0, the gradient w.r.t. the sequence's initial state.
 */
async function suffixFold(
  shape: FoldShape,
  a: Float32Array[],
  d: Float32Array[],
  dFinalState?: Float32Array,
): Promise<{ e: Float32Array[]; dInitialState: Float32Array }> {
  const s = checkFoldShape(shape);
  if (!Array.isArray(a) || !Array.isArray(d) || a.length < 1 || a.length !== d.length) {
    fail(`a and d must be arrays of the same non-zero length (one per block), got ${describe(a)} and ${describe(d)}`);
  }
  const W = a.length;
  const aLen = summaryALength(s.kind, s.H, s.dk);
  const sLen = s.H * s.dk * s.dv;
  const aAll = concat('a', a, aLen, 'compact A');
  const dAll = concat('d', d, sLen, '[H,dk,dv]');
  const dF = dFinalState === undefined ? null : checkArray('dFinalState', dFinalState, sLen, '[H,dk,dv]');
  const e = new Float32Array((W + 1) * sLen);
  await addon().laSuffixFold(s.code, W, s.H, s.dk, s.dv, aAll, dAll, dF, e);
  const parts = split(e, W + 1, sLen);
  return { e: parts.slice(1), dInitialState: parts[0] as Float32Array };
}

export interface SoftmaxSpec {
  /** Queries. */
  Tq: number;
  /** Keys (defaults to Tq). */
  Tk?: number;
  H: number;
  dk: number;
  dv: number;
  /** [Tq,H,dk] */
  q: Float32Array;
  /** [Tk,H,dk] */
  k: Float32Array;
  /** [Tk,H,dv] */
  v: Float32Array;
  /** Default true. */
  causal?: boolean;
  /** Key position of query 0 (causal: query i sees keys ≤ qOffset+i). Default 0. */
  qOffset?: number;
  /** Default 1/sqrt(dk). */
  scale?: number;
  /**
   * Sliding window (causal only): query i sees the keys j with qOffset+i−window < j ≤ qOffset+i,
   * i.e. the last `window` positions, itself included. Default 0: no limit.
   */
  window?: number;
}

/** The checked fields of a softmax call (defaults filled in); throws naming the first bad argument. */
/** A softmax backward's o and lse (from its forward) and dO, checked against the checked spec. */
export function checkSoftmaxBackward(s: ReturnType<typeof checkSoftmax>, fwd: { o: unknown; lse: unknown }, dO: unknown): void {
  checkArray('o', fwd.o, s.Tq * s.H * s.dv, '[Tq,H,dv]');
  checkArray('lse', fwd.lse, s.H * s.Tq, '[H,Tq]');
  checkArray('dO', dO, s.Tq * s.H * s.dv, '[Tq,H,dv]');
}

export function checkSoftmax(spec: SoftmaxSpec) {
  if (spec === null || typeof spec !== 'object') fail(`spec must be an object, got ${describe(spec)}`);
  const Tq = checkInt('Tq', spec.Tq, 1);
  const Tk = spec.Tk === undefined ? Tq : checkInt('Tk', spec.Tk, 1);
  const H = checkInt('H', spec.H, 1, 4096);
  const dk = checkInt('dk', spec.dk, 1, 4096);
  const dv = checkInt('dv', spec.dv, 1, 4096);
  const qOffset = spec.qOffset === undefined ? 0 : checkInt('qOffset', spec.qOffset, 0);
  const causal = spec.causal === undefined ? true : spec.causal;
  if (typeof causal !== 'boolean') fail(`causal must be a boolean, got ${describe(causal)}`);
  const window = spec.window === undefined ? 0 : checkInt('window', spec.window, 0);
  if (window > 0 && !causal) fail(`window needs causal attention: got window ${window} with causal false`);
  const scale = spec.scale === undefined ? 1 / Math.sqrt(dk) : spec.scale;
  if (typeof scale !== 'number' || !Number.isFinite(scale)) fail(`scale must be a finite number, got ${describe(scale)}`);
  const q = checkArray('q', spec.q, Tq * H * dk, '[Tq,H,dk]');
  const k = checkArray('k', spec.k, Tk * H * dk, '[Tk,H,dk]');
  const v = checkArray('v', spec.v, Tk * H * dv, '[Tk,H,dv]');
  return { Tq, Tk, H, dk, dv, qOffset, causal, window, scale, q, k, v };
}

const softmax = {
  /** o [Tq,H,dv] and lse [H,Tq] (kept for the backward). */
  async forward(spec: SoftmaxSpec): Promise<{ o: Float32Array; lse: Float32Array }> {
    const s = checkSoftmax(spec);
    const o = output(s.Tq * s.H * s.dv);
    const lse = output(s.H * s.Tq);
    await addon().softmaxForward(s.Tq, s.Tk, s.H, s.dk, s.dv, s.qOffset, s.causal, s.window, s.scale, s.q, s.k, s.v, o, lse);
    return { o, lse };
  },
  async backward(
    spec: SoftmaxSpec,
    fwd: { o: Float32Array; lse: Float32Array },
    dO: Float32Array,
  ): Promise<{ dq: Float32Array; dk: Float32Array; dv: Float32Array }> {
    const s = checkSoftmax(spec);
    checkSoftmaxBackward(s, fwd, dO);
    const dq = output(s.q.length);
    const dk = output(s.k.length);
    const dv = output(s.v.length);
    await addon().softmaxBackward(
      s.Tq,
      s.Tk,
      s.H,
      s.dk,
      s.dv,
      s.qOffset,
      s.causal,
      s.window,
      s.scale,
      s.q,
      s.k,
      s.v,
      fwd.o,
      fwd.lse,
      dO,
      dq,
      dk,
      dv,
    );
    return { dq, dk, dv };
  },
};

export interface GemmArgs {
  transA?: boolean;
  transB?: boolean;
  M: number;
  N: number;
  K: number;
  alpha?: number;
  beta?: number;
  /** op(A) is M×K: stored M×K (or K×M when transA), row-major. */
  A: Float32Array;
  B: Float32Array;
  /** Accumulated into when beta ≠ 0; allocated when absent. */
  C?: Float32Array;
  /** Default true: use every pool thread. */
  multiThreaded?: boolean;
}

/** A GEMM's checked sizes, flags, scalars and inputs (defaults filled in); throws naming the first bad argument. */
export function checkGemm(args: GemmArgs) {
  const M = checkInt('M', args.M, 0);
  const N = checkInt('N', args.N, 0);
  const K = checkInt('K', args.K, 0);
  const ta = args.transA ?? false;
  const tb = args.transB ?? false;
  const alpha = args.alpha ?? 1;
  const beta = args.beta ?? 0;
  if (!Number.isFinite(alpha)) fail(`alpha must be finite, got ${alpha}`);
  if (!Number.isFinite(beta)) fail(`beta must be finite, got ${beta}`);
  const A = checkArray('A', args.A, M * K, ta ? '[K,M]' : '[M,K]');
  const B = checkArray('B', args.B, K * N, tb ? '[N,K]' : '[K,N]');
  return { M, N, K, ta, tb, alpha, beta, A, B };
}

/** C = alpha·op(A)·op(B) + beta·C, dense row-major. Resolves with C. */
async function gemm(args: GemmArgs): Promise<Float32Array> {
  const { M, N, K, ta, tb, alpha, beta, A, B } = checkGemm(args);
  // With beta = 0 and K > 0 the kernel writes every element of C without reading it.
  const C = args.C === undefined ? (beta === 0 && K > 0 ? output(M * N) : zeros(M * N)) : checkArray('C', args.C, M * N, '[M,N]');
  await addon().gemm(ta, tb, M, N, K, alpha, A, ta ? M : K, B, tb ? K : N, beta, C, N, args.multiThreaded ?? true);
  return C;
}

/**
 * Fills `out` with counter-based random numbers: element i is draw (offset + i) of stream `seed`,
 * so a slice generated alone equals the same slice of the whole tensor.
 * dist 'normal': scale·N(0,1); 'uniform': [lo, hi).
 */
async function fillRandom(
  out: Float32Array,
  opts: { seed: number; offset?: number } & ({ dist: 'normal'; scale?: number } | { dist: 'uniform'; lo: number; hi: number }),
): Promise<Float32Array> {
  if (!(out instanceof Float32Array)) fail(`out must be a Float32Array, got ${describe(out)}`);
  const seed = checkInt('seed', opts.seed, 0, Number.MAX_SAFE_INTEGER);
  const offset = checkInt('offset', opts.offset ?? 0, 0, Number.MAX_SAFE_INTEGER);
  if (opts.dist === 'normal') await addon().fillRandom(out, seed, offset, 0, opts.scale ?? 1, 0);
  else if (opts.dist === 'uniform') await addon().fillRandom(out, seed, offset, 1, opts.lo, opts.hi);
  else fail(`dist must be 'normal' or 'uniform', got ${describe((opts as { dist: unknown }).dist)}`);
  return out;
}

/** dst += src elementwise, off the JavaScript thread (the reduction step of AllReduce). */
async function addInto(dst: Float32Array, src: Float32Array): Promise<void> {
  if (!(dst instanceof Float32Array)) fail(`dst must be a Float32Array, got ${describe(dst)}`);
  checkArray('src', src, dst.length, 'same length as dst');
  await addon().addInto(dst, src);
}

/** What the native layer runs on: the GEMM's instruction set and the pool's thread count. */
function info(): { isa: string; threads: number } {
  return addon().info();
}

export const kernels = {
  forward,
  forwardInto,
  backward,
  backwardInto,
  backwardOutputs: (spec: AttentionSpec) => backwardOutputs(checkSpec(spec)),
  summary,
  stateGrad,
  addStateTerm,
  foldStates,
  suffixFold,
  softmax,
  gemm,
  fillRandom,
  addInto,
  info,
};
