// `lasp bench kernels`: GEMM rate against OpenBLAS, forward/backward time and FLOP rate of each
// attention kind, and time per token as the sequence grows (flat for linear kinds, growing for
// softmax attention).
import { kernels, KINDS, type AttentionSpec, type ForwardResult, type Kind } from '../native/kernels.js';
import { openblasGflops } from './openblas.js';
import { fmt, formatTable } from './table.js';
import { interleavedMedians, medianMs } from './timing.js';
import { randomSpec } from './random-inputs.js';

export interface KernelBenchOptions {
  /** Tokens for the per-kind table. Default 16384. */
  T?: number;
  /** Heads. Default 4. */
  H?: number;
  /** Head dimension (dk = dv). Default 64. */
  d?: number;
  /** Sequence lengths for the time-per-token table. Default 4K..256K. */
  sweep?: number[];
  /** Longest softmax sequence actually run (it is quadratic). Default 32768. */
  maxSoftmaxT?: number;
  /** Print progress lines to stderr. Default true. */
  progress?: boolean;
}

/**
 * Matmul FLOPs per token and head of the chunked algorithms as implemented (chunk c, every
 * GEMM counted at its full size, masked or not). The forward of the gate path is
 * QK^T, AV (2c(dk+dv)) and QS, K^T V (4 dk dv); the backward recomputes the states and A and
 * adds dO V^T, dA K, dA^T Q, A^T dO, dO S^T, V dS^T, Kr dS, Q^T dO. The delta path adds the WY
 * matrices (KK^T, T K, T V, W S) and, backward, their adjoints (and the c^3 triangular terms).
 */
export function flopsPerToken(kind: Kind | 'softmax', pass: 'fwd' | 'bwd', c: number, dk: number, dv: number, T = 0): number {
  if (kind === 'softmax') {
    // Causal: on average T/2 keys per query; QK^T and PV forward, 2.5x that backward.
    const fwd = 2 * (T / 2) * (dk + dv);
    return pass === 'fwd' ? fwd : 2.5 * fwd;
  }
  if (kind === 'delta' || kind === 'gated_delta') {
    const fwd = 2 * c * (3 * dk + 2 * dv) + (c * c) / 3 + 6 * dk * dv;
    // backward: recompute (fwd without output: KK^T, TK, TV, WS, K^T U' + P) + adjoints:
    // dP, dU', dQt(2), dKn, dWt, dKr, dT(2), dKb, dv, dN N^T, N^T(.), dL K(2), dSx(2)
    const bwd = fwd + 2 * c * (4 * dv + 7 * dk) + (4 * c * c) / 3 + 2 * 6 * dk * dv;
    return pass === 'fwd' ? fwd : bwd;
  }
  const fwd = 2 * c * (dk + dv) + 4 * dk * dv;
  const bwd = 2 * c * (3 * dk + 2 * dv) + 10 * dk * dv;
  return pass === 'fwd' ? fwd : bwd;
}

export interface KernelBenchResult {
  gemm: { n: number; laspGflops: number; openblasGflops: number | null }[];
  kinds: {
    kind: string;
    /** Forward that keeps its chunk states for the backward (saveForBackward, buffers reused). */
    fwdMs: number;
    /** Backward given the saved chunk states (the training path). */
    bwdMs: number;
    /** Backward that recomputes the chunk states (standalone call). */
    bwdStandaloneMs: number;
    fwdGflops: number;
    bwdGflops: number;
    bwdOverFwd: number;
    bwdStandaloneOverFwd: number;
  }[];
  sweep: { kind: string; T: number; fwdNsPerToken: number | null }[];
  isa: string;
  threads: number;
}

function log(on: boolean, msg: string) {
  if (on) process.stderr.write(`${msg}\n`);
}

export async function runKernelBench(opts: KernelBenchOptions = {}): Promise<KernelBenchResult> {
  const T = opts.T ?? 16384;
  const H = opts.H ?? 4;
  const d = opts.d ?? 64;
  const sweep = opts.sweep ?? [4096, 16384, 65536, 262144];
  const maxSoftmaxT = opts.maxSoftmaxT ?? 32768;
  const progress = opts.progress ?? true;
  const { isa, threads } = kernels.info();
  const result: KernelBenchResult = { gemm: [], kinds: [], sweep: [], isa, threads };

  // 1. GEMM against OpenBLAS.
  const sizes = [1024, 2048, 4096];
  log(progress, 'bench: GEMM (lasp sgemm_mt vs numpy OpenBLAS) ...');
  const ref = openblasGflops(sizes);
  for (const n of sizes) {
    const A = Float32Array.from({ length: n * n }, () => Math.random());
    const B = Float32Array.from({ length: n * n }, () => Math.random());
    const C = new Float32Array(n * n);
    const ms = await medianMs(() => kernels.gemm({ M: n, N: n, K: n, A, B, C }), { repeat: 5, warmup: 2 });
    result.gemm.push({ n, laspGflops: (2 * n ** 3) / ms / 1e6, openblasGflops: ref ? (ref[n] ?? null) : null });
  }

  // 2. Each kind at T, H, d.
  const chunk = 64;
  for (const kind of KINDS) {
    log(progress, `bench: ${kind} forward/backward T=${T} H=${H} d=${d} ...`);
    const spec: AttentionSpec = { ...randomSpec(kind, T, H, d, d), chunkSize: chunk };
    const dO = Float32Array.from({ length: T * H * d }, () => Math.random() - 0.5);
    // Outputs are preallocated and reused, as a training step does: this times the kernels,
    // not the page faults of fresh 16 MB arrays.
    const fo: ForwardResult = { o: new Float32Array(T * H * d), finalState: new Float32Array(H * d * d) };
    const bo = kernels.backwardOutputs(spec);
    // The three calls are interleaved round by round, so machine noise hits them alike.
    const [fwdMs = NaN, bwdMs = NaN, bwdStandaloneMs = NaN] = await interleavedMedians(
      [
        () => kernels.forwardInto(spec, fo, { saveForBackward: true }),
        () => kernels.backwardInto(spec, dO, undefined, bo, fo.saved),
        () => kernels.backwardInto(spec, dO, undefined, bo),
      ],
      9,
    );
    const tokensHeads = T * H;
    result.kinds.push({
      kind,
      fwdMs,
      bwdMs,
      bwdStandaloneMs,
      fwdGflops: (flopsPerToken(kind, 'fwd', chunk, d, d) * tokensHeads) / fwdMs / 1e6,
      bwdGflops: (flopsPerToken(kind, 'bwd', chunk, d, d) * tokensHeads) / bwdStandaloneMs / 1e6,
      bwdOverFwd: bwdMs / fwdMs,
      bwdStandaloneOverFwd: bwdStandaloneMs / fwdMs,
    });
  }
  {
    log(progress, `bench: softmax forward/backward T=${T} ...`);
    const s = randomSpec('linear', T, H, d, d);
    const sm = { Tq: T, H, dk: d, dv: d, q: s.q, k: s.k, v: s.v };
    const dO = Float32Array.from({ length: T * H * d }, () => Math.random() - 0.5);
    const fwd = await kernels.softmax.forward(sm);
    const fwdMs = await medianMs(() => kernels.softmax.forward(sm), { repeat: 3 });
    const bwdMs = await medianMs(() => kernels.softmax.backward(sm, fwd, dO), { repeat: 3 });
    result.kinds.push({
      kind: 'softmax',
      fwdMs,
      bwdMs,
      bwdStandaloneMs: bwdMs,
      fwdGflops: (flopsPerToken('softmax', 'fwd', 0, d, d, T) * T * H) / fwdMs / 1e6,
      bwdGflops: (flopsPerToken('softmax', 'bwd', 0, d, d, T) * T * H) / bwdMs / 1e6,
      bwdOverFwd: bwdMs / fwdMs,
      bwdStandaloneOverFwd: bwdMs / fwdMs,
    });
  }

  // 3. Time per token as T grows.
  for (const kind of [...KINDS, 'softmax' as const]) {
    for (const t of sweep) {
      if (kind === 'softmax' && t > maxSoftmaxT) {
        result.sweep.push({ kind, T: t, fwdNsPerToken: null });
        continue;
      }
      log(progress, `bench: ${kind} forward T=${t} ...`);
      const s = randomSpec(kind === 'softmax' ? 'linear' : kind, t, H, d, d);
      const fo = { o: new Float32Array(t * H * d), finalState: new Float32Array(H * d * d) };
      const ms =
        kind === 'softmax'
          ? await medianMs(() => kernels.softmax.forward({ Tq: t, H, dk: d, dv: d, q: s.q, k: s.k, v: s.v }), { repeat: 1, warmup: 0 })
          : await medianMs(() => kernels.forwardInto(s, fo), { repeat: 3, warmup: 1 });
      result.sweep.push({ kind, T: t, fwdNsPerToken: (ms * 1e6) / t });
    }
  }
  return result;
}

export function printKernelBench(r: KernelBenchResult, opts: KernelBenchOptions = {}): string {
  const T = opts.T ?? 16384;
  const H = opts.H ?? 4;
  const d = opts.d ?? 64;
  const out: string[] = [];
  out.push(`Native kernels: GEMM path ${r.isa}, ${r.threads} threads`);
  out.push('');
  out.push('GEMM (square, float32, median of 5)');
  out.push(
    formatTable(
      ['n', 'lasp GFLOP/s', 'OpenBLAS GFLOP/s', 'lasp / OpenBLAS'],
      r.gemm.map((g) => [
        g.n,
        fmt(g.laspGflops),
        g.openblasGflops === null ? 'n/a' : fmt(g.openblasGflops),
        g.openblasGflops ? `${((100 * g.laspGflops) / g.openblasGflops).toFixed(0)}%` : 'n/a',
      ]),
    ),
  );
  out.push('');
  out.push(`Attention kernels, T=${T}, H=${H}, dk=dv=${d}, chunk 64 (medians of 9 interleaved rounds, outputs preallocated)`);
  out.push('fwd keeps its chunk states (saveForBackward); bwd uses them; bwd standalone recomputes them.');
  out.push('GFLOP/s from the matmul FLOPs of the chunked algorithm (bwd: the standalone count).');
  out.push(
    formatTable(
      ['kind', 'fwd ms', 'bwd ms', 'bwd standalone ms', 'fwd GFLOP/s', 'bwd GFLOP/s', 'bwd/fwd', 'standalone/fwd'],
      r.kinds.map((k) => [
        k.kind,
        fmt(k.fwdMs),
        fmt(k.bwdMs),
        fmt(k.bwdStandaloneMs),
        fmt(k.fwdGflops),
        fmt(k.bwdGflops),
        fmt(k.bwdOverFwd),
        fmt(k.bwdStandaloneOverFwd),
      ]),
    ),
  );
  out.push('');
  const ts = [...new Set(r.sweep.map((s) => s.T))];
  out.push(`Forward time per token (ns), H=${H}, d=${d}`);
  const kindsInSweep = [...new Set(r.sweep.map((s) => s.kind))];
  out.push(
    formatTable(
      ['kind', ...ts.map((t) => `T=${t >= 1024 ? `${t / 1024}K` : t}`)],
      kindsInSweep.map((kind) => [
        kind,
        ...ts.map((t) => {
          const e = r.sweep.find((s) => s.kind === kind && s.T === t);
          return e && e.fwdNsPerToken !== null ? fmt(e.fwdNsPerToken) : 'not run';
        }),
      ]),
    ),
  );
  return out.join('\n');
}
