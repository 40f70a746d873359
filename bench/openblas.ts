// The reference GEMM rate of this machine: numpy's OpenBLAS sgemm, measured in the same run
// (median of 5 after a warm-up, like ours).
// OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for this child only (they pin older kernels).
import { spawnSync } from 'node:child_process';

const SCRIPT = `
import json, sys, time
import numpy as np
out = {}
for n in [int(x) for x in sys.argv[1:]]:
    a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32)
    a @ b
    ts = []
    for _ in range(5):
        t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
    out[n] = 2 * n ** 3 / sorted(ts)[2] / 1e9
print(json.dumps(out))
`;

/** GFLOP/s of numpy's sgemm per size, or null when python3/numpy is not available. */
export function openblasGflops(sizes: number[]): Record<number, number> | null {
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const r = spawnSync('python3', ['-c', SCRIPT, ...sizes.map(String)], { env, encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0 || !r.stdout) return null;
  try {
    return JSON.parse(r.stdout) as Record<number, number>;
  } catch {
    return null;
  }
}
