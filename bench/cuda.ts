// `lasp bench cuda`: the CUDA kernels' benchmark (docs/cuda.md, "Performance") from the lasp CLI.
// It runs build-cuda/la_bench — the standalone program scripts/build-cuda.sh builds next to the
// addon, which times the kernels with CUDA events on device-resident inputs (no host copies) —
// reads the JSON lines it writes and prints them against the Triton reference times of issue 8.
// `--check` runs la_bench's float64-reference checks first and stops when one fails.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { intList } from '../cli/args.js';
import { CUDA_BUILD_DIR } from '../native/cuda.js';
import { fmt, formatTable } from './table.js';

/** Where scripts/build-cuda.sh puts the benchmark program. */
export const LA_BENCH_PATH = join(CUDA_BUILD_DIR, 'la_bench');

/** The measured bf16 tensor-core rate of the H200 the targets were taken on (TFLOP/s). */
export const H200_BF16_TFLOPS = 790;

export interface CudaBenchOptions {
  /** Sequence lengths T. Default [32768, 131072] (the targets' lengths). */
  seqLens?: number[];
  /** Also time the tuning variants (la_bench `variants`). Default false. */
  variants?: boolean;
  /** Run la_bench's float64-reference checks first. Default false. */
  check?: boolean;
  /** The la_bench program. Default LA_BENCH_PATH. */
  binary?: string;
}

/** One timed configuration, as la_bench writes it (LASP_CUDA_JSON). */
export interface CudaBenchRow {
  kind: string;
  T: number;
  variant: string;
  fwdMs: number;
  fwdBwdMs: number;
  /** Triton reference times on the same H200 (0: none for this T). */
  targetFwdMs: number;
  targetFwdBwdMs: number;
  fwdFlop: number;
  bwdFlop: number;
  /** The fewest bytes a pass must move: fwd reads q, k, v and writes o; fwd+bwd also dO, dq, dk, dv. */
  bytesFwd: number;
  bytesFwdBwd: number;
}

export interface CudaBenchResult {
  device: string;
  check?: { passed: boolean; summary: string };
  rows: CudaBenchRow[];
}

function run(binary: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(binary, args, { env, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') {
        reject(new Error(`lasp bench cuda: could not run ${binary}: ${err.message}`));
        return;
      }
      resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
    });
  });
}

function num(o: Record<string, unknown>, key: string, line: number): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new Error(`lasp bench cuda: la_bench output line ${line}: field ${key} should be a finite number, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Parse la_bench's JSON lines (LASP_CUDA_JSON), checking every field. */
export function parseCudaBenchLines(text: string): CudaBenchRow[] {
  const rows: CudaBenchRow[] = [];
  text.split('\n').forEach((raw, i) => {
    const lineText = raw.trim();
    if (lineText === '') return;
    let o: unknown;
    try {
      o = JSON.parse(lineText);
    } catch {
      throw new Error(`lasp bench cuda: la_bench output line ${i + 1} is not JSON: ${lineText.slice(0, 80)}`);
    }
    if (o === null || typeof o !== 'object') throw new Error(`lasp bench cuda: la_bench output line ${i + 1} is not an object`);
    const r = o as Record<string, unknown>;
    const kind = r.bench,
      variant = r.variant;
    if (typeof kind !== 'string' || typeof variant !== 'string') {
      throw new Error(`lasp bench cuda: la_bench output line ${i + 1}: fields bench and variant should be strings`);
    }
    rows.push({
      kind,
      T: num(r, 'T', i + 1),
      variant,
      fwdMs: num(r, 'fwd_ms', i + 1),
      fwdBwdMs: num(r, 'fb_ms', i + 1),
      targetFwdMs: num(r, 'target_fwd', i + 1),
      targetFwdBwdMs: num(r, 'target_fb', i + 1),
      fwdFlop: num(r, 'fwd_flop', i + 1),
      bwdFlop: num(r, 'bwd_flop', i + 1),
      bytesFwd: num(r, 'bytes_fwd', i + 1),
      bytesFwdBwd: num(r, 'bytes_fb', i + 1),
    });
  });
  return rows;
}

/** Runs la_bench (checks, then the benchmark) and returns its rows. */
export async function runCudaBench(o: CudaBenchOptions = {}): Promise<CudaBenchResult> {
  const binary = o.binary ?? LA_BENCH_PATH;
  if (!existsSync(binary)) {
    throw new Error(
      `lasp bench cuda: ${binary} is not built; run scripts/build-cuda.sh where nvcc is (npm run build does where it finds nvcc)`,
    );
  }
  const seqLens = o.seqLens ?? [32768, 131072];
  // la_bench exits 3 with "no CUDA device: <the CUDA runtime's reason>".
  const noDevice = (stdout: string) =>
    new Error(`lasp bench cuda: ${/^no CUDA device.*$/m.exec(stdout)?.[0] ?? 'no CUDA device (la_bench exited 3)'}`);
  let check: CudaBenchResult['check'];
  if (o.check === true) {
    const t = await run(binary, ['test'], process.env);
    if (t.code === 3) throw noDevice(t.stdout);
    const summary = /\d+ of \d+ cases failed/.exec(t.stdout)?.[0] ?? `la_bench test exited ${t.code}`;
    check = { passed: t.code === 0, summary };
    if (t.code !== 0) {
      const failed = t.stdout.split('\n').filter((l) => / FAIL | ERROR /.test(l));
      throw new Error(`lasp bench cuda: the float64-reference checks failed (${summary}):\n${failed.join('\n')}`);
    }
  }
  const dir = mkdtempSync(join(tmpdir(), 'lasp-cuda-bench-'));
  try {
    const json = join(dir, 'bench.jsonl');
    const b = await run(binary, [o.variants === true ? 'variants' : 'bench', ...seqLens.map(String)], {
      ...process.env,
      LASP_CUDA_JSON: json,
    });
    if (b.code === 3) throw noDevice(b.stdout);
    if (b.code !== 0) throw new Error(`lasp bench cuda: la_bench exited ${b.code}: ${(b.stderr || b.stdout).trim().slice(-400)}`);
    const device = /^device: (.*)$/m.exec(b.stdout)?.[1] ?? 'unknown';
    return { device, ...(check !== undefined ? { check } : {}), rows: parseCudaBenchLines(readFileSync(json, 'utf8')) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function printCudaBench(r: CudaBenchResult): string {
  const target = (ms: number, t: number) => (t > 0 ? `${fmt(t)} (${ms <= t ? 'met' : `${fmt(ms / t)}×`})` : '—');
  const rows = r.rows.map((x) => {
    const tf = x.fwdFlop / (x.fwdMs * 1e9),
      tfb = (x.fwdFlop + x.bwdFlop) / (x.fwdBwdMs * 1e9);
    return [
      x.kind,
      x.T,
      x.variant,
      fmt(x.fwdMs),
      target(x.fwdMs, x.targetFwdMs),
      fmt(x.fwdBwdMs),
      target(x.fwdBwdMs, x.targetFwdBwdMs),
      `${fmt(x.fwdFlop / 1e9)}; ${fmt((x.fwdFlop + x.bwdFlop) / 1e9)}`,
      `${fmt(tf)} (${fmt((100 * tf) / H200_BF16_TFLOPS, 2)}%)`,
      `${fmt(tfb)} (${fmt((100 * tfb) / H200_BF16_TFLOPS, 2)}%)`,
      `${fmt(x.bytesFwd / 1e9)}; ${fmt(x.bytesFwdBwd / 1e9)}`,
    ];
  });
  // la_bench lists each kind's default kernels first for every T; the other variants are tuning
  // knobs that are off by default, so only the first row of each (kind, T) counts towards the targets.
  const seen = new Set<string>();
  const defaults = r.rows.filter((x) => {
    const key = `${x.kind} ${x.T}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  const met = defaults.filter((x) => x.targetFwdMs > 0);
  const reached = met.filter((x) => x.fwdMs <= x.targetFwdMs).length + met.filter((x) => x.fwdBwdMs <= x.targetFwdBwdMs).length;
  return [
    `CUDA kernels on ${r.device}: bf16, B=1, H=16, dk=dv=128, CUDA events, medians; targets: the best public Triton kernels on an H200; TFLOP/s against ${H200_BF16_TFLOPS}`,
    ...(r.check !== undefined ? [`float64-reference checks: ${r.check.summary}`] : []),
    formatTable(
      [
        'kind',
        'T',
        'variant',
        'fwd ms',
        'target',
        'fwd+bwd ms',
        'target',
        'GFLOP (fwd; f+b)',
        'fwd TFLOP/s',
        'f+b TFLOP/s',
        'GB (fwd; f+b)',
      ],
      rows,
    ),
    `targets reached by the default kernels (the first row of each kind and T): ${reached} of ${2 * met.length}`,
  ].join('\n');
}

export function registerCudaBench(bench: Command): void {
  bench
    .command('cuda')
    .description(
      "the CUDA kernels' speed (build-cuda/la_bench: linear, scalar_gate, delta; bf16, fwd and fwd+bwd) against the Triton reference times",
    )
    .option('--seq-len <list>', 'sequence lengths T', intList('--seq-len'), [32768, 131072])
    .option('--variants', 'also time the tuning variants')
    .option('--check', "run la_bench's float64-reference checks first (stops when one fails)")
    .option('--json', 'print one JSON object {device, check?, rows}')
    .action(async (f: { seqLen: number[]; variants?: boolean; check?: boolean; json?: boolean }) => {
      const r = await runCudaBench({ seqLens: f.seqLen, variants: f.variants === true, check: f.check === true });
      process.stdout.write(f.json === true ? `${JSON.stringify(r)}\n` : `${printCudaBench(r)}\n`);
    });
}
