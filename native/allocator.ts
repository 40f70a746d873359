// Process-wide allocator settings for worker processes (native/src/buffer_pool.h). On the VMs this
// runs on, the first touch of freshly mapped memory costs ~3 µs per KiB; glibc by default returns
// freed memory to the kernel as soon as 128 KiB are free at the top of the heap, so buffers the
// addon does not pool — Node's 64 KiB socket reads above all — keep landing on fresh pages. Tuned,
// glibc keeps up to `trimThresholdBytes` of freed heap and serves blocks below
// `mmapThresholdBytes` from it. Measured in docs/collectives.md ("Receive buffers and the allocator").
import { addon } from './binding.js';

export interface AllocatorTuning {
  /** Blocks below this many bytes come from the heap rather than a fresh mapping. Default 32 MiB. */
  mmapThresholdBytes: number;
  /** Free bytes kept at the top of the heap before any is returned to the kernel. Default 256 MiB. */
  trimThresholdBytes: number;
}

export const DEFAULT_ALLOCATOR_TUNING: AllocatorTuning = { mmapThresholdBytes: 32 << 20, trimThresholdBytes: 256 << 20 };

/**
 * Applies the tuning to this process (glibc's mallopt). Returns whether it was applied and, if not,
 * why (e.g. a C library without mallopt); a value out of range throws.
 */
export function tuneAllocator(t: AllocatorTuning = DEFAULT_ALLOCATOR_TUNING): { applied: boolean; reason: string } {
  return addon().tuneAllocator(t.mmapThresholdBytes, t.trimThresholdBytes);
}
