// The CUDA kernels (native/cuda/, docs/cuda.md) from TypeScript. The addon build-cuda/lasp_cuda.node
// is built only by scripts/build-cuda.sh (it needs nvcc) and runs only where a CUDA device is;
// it is loaded on first use, and every entry point rejects with the reason when it is absent.
// A first step: each call takes host Float32Arrays, copies them to the device (as bf16 or
// float32) and returns host Float32Arrays; layouts as the CPU kernels' with a leading batch.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { adoptOutput } from './kernels.js';

export type CudaKind = 'linear' | 'scalar_gate' | 'delta';
/** bf16 inputs with float32 accumulation and state chain, or float32 throughout (for checking). */
export type CudaPrecision = 'bf16' | 'f32';

const KIND_CODE: Record<CudaKind, number> = { linear: 0, scalar_gate: 1, delta: 3 };
const PREC_CODE: Record<CudaPrecision, number> = { bf16: 0, f32: 1 };

export interface CudaSpec {
  kind: CudaKind;
  /** Default 'bf16'. */
  precision?: CudaPrecision;
  /** Sequences in the batch. Default 1. */
  B?: number;
  T: number;
  H: number;
  /** 64 or 128 (64 in float32 mode); delta needs dk = dv. */
  dk: number;
  dv: number;
  /** [B,T,H,dk] */
  q: Float32Array;
  /** [B,T,H,dk] */
  k: Float32Array;
  /** [B,T,H,dv] */
  v: Float32Array;
  /** scalar_gate: per-token log gates (≤ 0) [B,T,H] … */
  g?: Float32Array;
  /** … or one log decay per head [H]. */
  gconst?: Float32Array;
  /** delta: [B,T,H] */
  beta?: Float32Array;
  /** [B,H,dk,dv]; zero when absent. */
  initialState?: Float32Array;
}

export interface CudaForwardResult {
  o: Float32Array;
  finalState: Float32Array;
}

export interface CudaBackwardResult {
  dq: Float32Array;
  dk: Float32Array;
  dv: Float32Array;
  /** scalar_gate with per-token gates. */
  dg?: Float32Array;
  /** scalar_gate with per-head constant gates: the gradient of each head's log decay. */
  dgconst?: Float32Array;
  /** delta. */
  dbeta?: Float32Array;
  dInitialState: Float32Array;
}

export type CudaStatus =
  { available: true; device: string; multiprocessors: number; computeCapability: string } | { available: false; reason: string };

type F32OrNull = Float32Array | null;
/** Memory of this process's CUDA device (cudaMemGetInfo), bytes. */
export interface CudaMemInfo {
  freeBytes: number;
  totalBytes: number;
}

/** Counters of one of the addon's memory caches (native/cuda/addon_memory.cc). */
export interface CudaCacheCounters {
  /** Bytes on the free lists. */
  idleBytes: number;
  capBytes: number;
  /** Blocks asked for, and how many of them came from the free lists. */
  takes: number;
  hits: number;
}

export interface CudaMemCacheStats {
  device: CudaCacheCounters;
  pinned: CudaCacheCounters;
}

interface CudaAddon {
  info(): { device: string; multiprocessors: number; computeCapability: string };
  memInfo(): CudaMemInfo;
  memCacheStats?(): CudaMemCacheStats;
  forward(...args: (number | F32OrNull)[]): Promise<CudaForwardResult>;
  backward(...args: (number | F32OrNull)[]): Promise<CudaBackwardResult>;
}

/** Where scripts/build-cuda.sh puts its outputs (the addon, la_bench). */
export const CUDA_BUILD_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'build-cuda');
/** Where scripts/build-cuda.sh puts the addon. */
export const CUDA_ADDON_PATH = join(CUDA_BUILD_DIR, 'lasp_cuda.node');

let loaded: { addon: CudaAddon; status: CudaStatus } | { addon: null; status: CudaStatus } | undefined;

function load(): { addon: CudaAddon | null; status: CudaStatus } {
  if (loaded) return loaded;
  if (!existsSync(CUDA_ADDON_PATH)) {
    loaded = {
      addon: null,
      status: { available: false, reason: `the CUDA addon is not built (${CUDA_ADDON_PATH}; run scripts/build-cuda.sh where nvcc is)` },
    };
    return loaded;
  }
  let addon: CudaAddon;
  try {
    addon = createRequire(import.meta.url)(CUDA_ADDON_PATH) as CudaAddon;
  } catch (e) {
    loaded = { addon: null, status: { available: false, reason: `the CUDA addon did not load: ${(e as Error).message}` } };
    return loaded;
  }
  try {
    loaded = { addon: scoped(addon), status: { available: true, ...addon.info() } };
  } catch (e) {
    loaded = { addon: null, status: { available: false, reason: (e as Error).message } };
  }
  return loaded;
}

/**
 * The addon with every call's result arrays put into the caller's output scope (adoptOutput,
 * native/kernels.ts): their pinned host blocks (native/cuda/addon_memory.cc) go back to the
 * addon's cache when a training step ends rather than whenever the collector runs.
 */
function scoped<T extends object>(raw: T): T {
  const adopt = <R>(r: R): R => {
    if (r instanceof Float32Array) adoptOutput(r);
    else if (r !== null && typeof r === 'object') for (const v of Object.values(r)) if (v instanceof Float32Array) adoptOutput(v);
    return r;
  };
  const out: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(raw)) {
    out[name] =
      typeof f !== 'function'
        ? f
        : (...args: unknown[]) => {
            const r: unknown = (f as (...a: unknown[]) => unknown).apply(raw, args);
            return r instanceof Promise ? r.then(adopt) : r;
          };
  }
  return out as T;
}

/** Whether the CUDA kernels can run here, and if not, why. Never throws. */
export function cudaStatus(): CudaStatus {
  return load().status;
}

/**
 * Free and total memory of the device this process uses (device 0 of what it sees: a worker started
 * with --device cuda:N sees only GPU N). Free counts every process's allocations on that GPU, so
 * total − free is the whole GPU's usage. Throws when CUDA is unavailable.
 */
export function cudaMemInfo(): CudaMemInfo {
  return addonOrThrow().memInfo();
}

/** The addon's device and pinned-host memory caches. Throws when CUDA is unavailable or the addon predates them. */
export function cudaMemCacheStats(): CudaMemCacheStats {
  const a = addonOrThrow();
  if (!a.memCacheStats) throw new Error('lasp cuda: the CUDA addon has no memory caches; rebuild it with scripts/build-cuda.sh');
  return a.memCacheStats();
}

function addonOrThrow(): CudaAddon {
  const { addon, status } = load();
  if (!addon) throw new Error(`lasp cuda: unavailable: ${(status as { reason: string }).reason}`);
  return addon;
}

/**
 * The loaded addon seen as one of its parts `T` (the model ops, the general attention kernels),
 * or a throw naming why it cannot run here. `probe` is an export the part must have: an addon
 * built before the part existed lacks it.
 */
export function cudaAddonPart<T>(probe: string, what: string): T {
  const a = addonOrThrow() as unknown as Record<string, unknown>;
  if (typeof a[probe] !== 'function')
    throw new Error(`lasp cuda: unavailable: the CUDA addon (${CUDA_ADDON_PATH}) has no ${what}; rebuild it with scripts/build-cuda.sh`);
  return a as T;
}

function fail(message: string): never {
  throw new Error(`lasp cuda: ${message}`);
}

function checkArray(name: string, a: unknown, n: number, shape: string): Float32Array {
  if (!(a instanceof Float32Array)) fail(`${name} must be a Float32Array ${shape}`);
  if (a.length !== n) fail(`${name} must have length ${n} (${shape}), got ${a.length}`);
  return a;
}

function args(spec: CudaSpec): (number | F32OrNull)[] {
  const { kind, T, H, dk, dv } = spec;
  const B = spec.B ?? 1;
  const precision = spec.precision ?? 'bf16';
  if (!(kind in KIND_CODE)) fail(`kind must be one of ${Object.keys(KIND_CODE).join(', ')}, got ${String(kind)}`);
  if (!(precision in PREC_CODE)) fail(`precision must be 'bf16' or 'f32', got ${String(precision)}`);
  for (const [name, x] of Object.entries({ B, T, H })) {
    if (!Number.isInteger(x) || x < 1) fail(`${name} must be a positive integer, got ${x}`);
  }
  const dims = precision === 'f32' ? [64] : [64, 128];
  if (!dims.includes(dk) || !dims.includes(dv)) fail(`dk and dv must be in {${dims.join(', ')}} for ${precision}, got ${dk}, ${dv}`);
  if (kind === 'delta' && dk !== dv) fail(`delta needs dk = dv, got ${dk}, ${dv}`);
  const tok = B * T * H;
  const q = checkArray('q', spec.q, tok * dk, '[B,T,H,dk]');
  const k = checkArray('k', spec.k, tok * dk, '[B,T,H,dk]');
  const v = checkArray('v', spec.v, tok * dv, '[B,T,H,dv]');
  let g: F32OrNull = null;
  let gconst: F32OrNull = null;
  let beta: F32OrNull = null;
  if (kind === 'scalar_gate') {
    if (spec.g) g = checkArray('g', spec.g, tok, '[B,T,H]');
    else if (spec.gconst) gconst = checkArray('gconst', spec.gconst, H, '[H]');
    else fail('scalar_gate needs g [B,T,H] or gconst [H]');
  }
  if (kind === 'delta') beta = checkArray('beta', spec.beta, tok, '[B,T,H]');
  const s0 = spec.initialState ? checkArray('initialState', spec.initialState, B * H * dk * dv, '[B,H,dk,dv]') : null;
  return [KIND_CODE[kind], PREC_CODE[precision], B, T, H, dk, dv, q, k, v, g, gconst, beta, s0];
}

/** o [B,T,H,dv] and the final state [B,H,dk,dv] (bf16 outputs come back widened to float32). */
export async function cudaForward(spec: CudaSpec): Promise<CudaForwardResult> {
  const a = args(spec);
  return addonOrThrow().forward(...a);
}

/** Gradients for dO [B,T,H,dv] and dFinalState [B,H,dk,dv] (zero when absent); runs the forward too. */
export async function cudaBackward(spec: CudaSpec, dO: Float32Array, dFinalState?: Float32Array): Promise<CudaBackwardResult> {
  const a = args(spec);
  const B = spec.B ?? 1;
  checkArray('dO', dO, B * spec.T * spec.H * spec.dv, '[B,T,H,dv]');
  if (dFinalState) checkArray('dFinalState', dFinalState, B * spec.H * spec.dk * spec.dv, '[B,H,dk,dv]');
  return addonOrThrow().backward(...a, dO, dFinalState ?? null);
}
