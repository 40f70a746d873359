// A worker's compute device: "cpu", or "cuda:N" (the N-th GPU this process may see). The
// device picks the kernel set the model replica runs on (native/kernel-set.ts).
import { cpuKernels, PRECISIONS, type KernelSet, type Precision } from './kernel-set.js';

export type Device = { kind: 'cpu' } | { kind: 'cuda'; index: number };

/** Parses "cpu" or "cuda:N"; the error names the field and what arrived. */
export function parseDevice(s: string, field = 'device'): Device {
  if (s === 'cpu') return { kind: 'cpu' };
  const m = /^cuda:(\d{1,3})$/.exec(s);
  if (m) return { kind: 'cuda', index: Number(m[1]) };
  throw new Error(`${field} must be "cpu" or "cuda:N" (N = GPU index, e.g. cuda:0), got ${JSON.stringify(s)}`);
}

export function deviceName(d: Device): string {
  return d.kind === 'cpu' ? 'cpu' : `cuda:${d.index}`;
}

/**
 * Makes GPU `index` the only one the CUDA runtime of this process sees (it reads
 * CUDA_VISIBLE_DEVICES when it starts, i.e. when the CUDA addon first runs): index N counts within
 * an existing CUDA_VISIBLE_DEVICES list, as CUDA itself would. Call before any CUDA work.
 */
export function restrictToGpu(index: number, env: NodeJS.ProcessEnv = process.env): void {
  const visible = env.CUDA_VISIBLE_DEVICES;
  if (visible !== undefined && visible.trim() !== '') {
    const list = visible.split(',').map((x) => x.trim());
    const chosen = list[index];
    if (chosen === undefined)
      throw new Error(`device cuda:${index}: CUDA_VISIBLE_DEVICES=${visible} lists ${list.length} GPU${list.length === 1 ? '' : 's'}`);
    env.CUDA_VISIBLE_DEVICES = chosen;
  } else {
    env.CUDA_VISIBLE_DEVICES = String(index);
  }
}

/** Checks a precision name; the error names the field and what arrived. */
export function parsePrecision(s: string, field = 'precision'): Precision {
  if ((PRECISIONS as readonly string[]).includes(s)) return s as Precision;
  throw new Error(`${field} must be one of ${PRECISIONS.join(', ')}, got ${JSON.stringify(s)}`);
}

/**
 * The kernel set of `device` at `precision` (default fp32). For a GPU: restricts the process to it
 * and loads the CUDA kernels, failing with the reason when they cannot run (addon not built, no
 * device, driver error). bf16 exists only on CUDA.
 */
export async function kernelsFor(device: Device, precision: Precision = 'fp32'): Promise<KernelSet> {
  if (device.kind === 'cpu') {
    if (precision !== 'fp32')
      throw new Error(`precision ${precision} needs a cuda device: the CPU kernels are float32 (use --precision fp32)`);
    return cpuKernels;
  }
  restrictToGpu(device.index);
  const { cudaKernelSet } = await import('./cuda-kernel-set.js');
  return cudaKernelSet({ precision });
}
