// Loads the compiled addon and declares its raw interface. Only native/ talks to this module;
// everything else goes through the typed, validated facade in kernels.ts.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Attention kinds in the order the addon numbers them. */
export const KIND_CODES = {
  linear: 0,
  scalar_gate: 1,
  vector_gate: 2,
  delta: 3,
  gated_delta: 4,
} as const;

type F32 = Float32Array;
type F32OrNull = Float32Array | null;

/** Options of an HTTP/2 connection of the native peer transport (native/src/h2_conn.h Config). */
export interface H2NativeOptions {
  maxMessageBytes?: number;
  recvWindow?: number;
  windowBatch?: number;
  maxFrame?: number;
  maxStreams?: number;
  establishMs?: number;
}

/** onEvent(kind, connId, streamId, a, b) of the native HTTP/2 classes (native/h2-native.ts). */
export type H2EventCallback = (kind: number, connId: number, streamId: number, a: unknown, b: unknown) => void;

export interface H2ClientHandle {
  request(streamId: number, fields: string[], endStream: boolean): boolean;
  /** 0: the connection is over; 1: queued; 2: all written to the socket already. */
  send(streamId: number, head: Uint8Array, data: Uint8Array | undefined, endStream: boolean): 0 | 1 | 2;
  reset(streamId: number, code: number): boolean;
  close(): void;
}

export interface H2ListenerHandle {
  readonly port: number;
  respond(connId: number, streamId: number, fields: string[], endStream: boolean): boolean;
  send(connId: number, streamId: number, bytes: Uint8Array): boolean;
  reset(connId: number, streamId: number, code: number): boolean;
  release(connId: number): void;
  close(): void;
}

export interface NativeAddon {
  H2Client: new (host: string, port: number, opts: H2NativeOptions, onEvent: H2EventCallback) => H2ClientHandle;
  H2Listener: new (host: string, opts: H2NativeOptions, onEvent: H2EventCallback) => H2ListenerHandle;
  info(): { isa: string; threads: number };
  addInto(dst: F32, src: F32): Promise<void>;
  /** A Float32Array over a pooled block (contents unspecified); the block returns to the pool at GC. */
  allocF32(n: number): F32;
  /** Detaches a pooled array's buffer now (its block returns to the pool). */
  releaseF32(a: F32): void;
  poolStats(): { idleBytes: number; liveBytes: number; hits: number; misses: number; capBytes: number };
  tuneAllocator(mmapThresholdBytes: number, trimThresholdBytes: number): { applied: boolean; reason: string };
  fillRandom(out: F32, seed: number, offset: number, dist: 0 | 1, a: number, b: number): Promise<void>;
  laForward(
    kind: number,
    causal: boolean,
    T: number,
    H: number,
    dk: number,
    dv: number,
    chunk: number,
    q: F32,
    k: F32,
    v: F32,
    g: F32OrNull,
    beta: F32OrNull,
    s0: F32OrNull,
    o: F32,
    sFinal: F32,
    save: boolean,
    reuse: unknown,
  ): Promise<unknown>;
  laBackward(
    kind: number,
    causal: boolean,
    T: number,
    H: number,
    dk: number,
    dv: number,
    chunk: number,
    q: F32,
    k: F32,
    v: F32,
    g: F32OrNull,
    beta: F32OrNull,
    s0: F32OrNull,
    dO: F32,
    dSFinal: F32OrNull,
    dq: F32,
    dkOut: F32,
    dvOut: F32,
    dg: F32OrNull,
    dbeta: F32OrNull,
    ds0: F32OrNull,
    saved: unknown,
  ): Promise<void>;
  laSummary(
    kind: number,
    causal: boolean,
    T: number,
    H: number,
    dk: number,
    dv: number,
    chunk: number,
    q: F32,
    k: F32,
    v: F32,
    g: F32OrNull,
    beta: F32OrNull,
    a: F32,
    u: F32,
  ): Promise<void>;
  laStateGrad(
    kind: number,
    causal: boolean,
    T: number,
    H: number,
    dk: number,
    dv: number,
    chunk: number,
    q: F32,
    k: F32,
    v: F32,
    g: F32OrNull,
    beta: F32OrNull,
    dO: F32,
    d: F32,
  ): Promise<void>;
  laAddStateTerm(
    kind: number,
    T: number,
    H: number,
    dk: number,
    dv: number,
    chunk: number,
    q: F32,
    k: F32,
    v: F32,
    g: F32OrNull,
    beta: F32OrNull,
    states: F32,
    o: F32,
  ): Promise<void>;
  laFoldStates(kind: number, W: number, H: number, dk: number, dv: number, a: F32, u: F32, s0: F32OrNull, states: F32): Promise<void>;
  laSuffixFold(kind: number, W: number, H: number, dk: number, dv: number, a: F32, d: F32, dFinal: F32OrNull, e: F32): Promise<void>;
  softmaxForward(
    Tq: number,
    Tk: number,
    H: number,
    dk: number,
    dv: number,
    qOffset: number,
    causal: boolean,
    window: number,
    scale: number,
    q: F32,
    k: F32,
    v: F32,
    o: F32,
    lse: F32,
  ): Promise<void>;
  softmaxBackward(
    Tq: number,
    Tk: number,
    H: number,
    dk: number,
    dv: number,
    qOffset: number,
    causal: boolean,
    window: number,
    scale: number,
    q: F32,
    k: F32,
    v: F32,
    o: F32,
    lse: F32,
    dO: F32,
    dq: F32,
    dkOut: F32,
    dvOut: F32,
  ): Promise<void>;
  gemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    alpha: number,
    A: F32,
    lda: number,
    B: F32,
    ldb: number,
    beta: number,
    C: F32,
    ldc: number,
    multiThreaded: boolean,
  ): Promise<void>;
  // Model ops (native/src/model_ops.h); the facade is native/ops.ts.
  rmsNormForward(N: number, D: number, eps: number, x: F32, w: F32, y: F32, rstd: F32): Promise<void>;
  rmsNormBackward(N: number, D: number, x: F32, w: F32, rstd: F32, dy: F32, dx: F32, dw: F32): Promise<void>;
  logSigmoidScaled(n: number, z: F32, invTau: number, g: F32): Promise<void>;
  logSigmoidScaledBackward(n: number, z: F32, dg: F32, invTau: number, dz: F32): Promise<void>;
  sigmoidForward(n: number, z: F32, y: F32): Promise<void>;
  sigmoidBackward(n: number, y: F32, dy: F32, dz: F32): Promise<void>;
  l2NormalizeRows(rows: number, d: number, x: F32, eps: number, y: F32, inv: F32): Promise<void>;
  l2NormalizeRowsBackward(rows: number, d: number, y: F32, inv: F32, dy: F32, dx: F32): Promise<void>;
  swigluForward(n: number, a: F32, b: F32, y: F32): Promise<void>;
  swigluBackward(n: number, a: F32, b: F32, dy: F32, da: F32, db: F32): Promise<void>;
  shortConvForward(B: number, T: number, C: number, K: number, silu: boolean, x: F32, halo: F32 | null, w: F32, y: F32): Promise<void>;
  shortConvBackward(
    B: number,
    T: number,
    C: number,
    K: number,
    silu: boolean,
    x: F32,
    halo: F32 | null,
    w: F32,
    dy: F32,
    dx: F32,
    dw: F32,
    dhalo: F32 | null,
  ): Promise<void>;
  embeddingForward(N: number, V: number, D: number, table: F32, ids: Int32Array, y: F32): Promise<void>;
  embeddingBackward(N: number, V: number, D: number, ids: Int32Array, dy: F32, dTable: F32): Promise<void>;
  crossEntropy(
    N: number,
    V: number,
    scale: number,
    logits: F32,
    targets: Int32Array,
    dlogits: F32,
  ): Promise<{ loss: number; count: number }>;
  adamwStep(
    n: number,
    params: F32,
    grads: F32,
    m: F32,
    v: F32,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
    step: number,
  ): Promise<void>;
  sumSquares(arrays: F32[]): Promise<number>;
  scaleInPlace(n: number, x: F32, s: number): Promise<void>;
}

function repoRoot(): string {
  // dist/native/binding.js -> repo root is two levels up.
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

let cached: NativeAddon | undefined;

/** The addon, loaded once. Throws an Error that says how to build it when it is missing. */
export function addon(): NativeAddon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const path = join(repoRoot(), 'build', 'Release', 'lasp_native.node');
  try {
    cached = require(path) as NativeAddon;
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`lasp: native addon not found or not loadable at ${path} (${why}); build it with "npm run build:native"`);
  }
  return cached;
}
