// Random inputs of the right shape and range for each attention kind (benchmarks and demos).
import type { AttentionSpec, Kind } from '../native/kernels.js';

function gaussian(n: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.random() || 1e-12;
    const v = Math.random();
    const r = Math.sqrt(-2 * Math.log(u)) * scale;
    a[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) a[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return a;
}

/** q, k ~ N(0, 1/dk) (k L2-normalised for delta kinds), v ~ N(0,1), gates e^g in (0.9, 1), beta in (0,1). */
export function randomSpec(kind: Kind, T: number, H: number, dk: number, dv: number): AttentionSpec {
  const spec: AttentionSpec = {
    kind,
    T,
    H,
    dk,
    dv,
    q: gaussian(T * H * dk, 1 / Math.sqrt(dk)),
    k: gaussian(T * H * dk, 1 / Math.sqrt(dk)),
    v: gaussian(T * H * dv, 1),
  };
  if (kind === 'delta' || kind === 'gated_delta') {
    for (let r = 0; r < T * H; r++) {
      let n = 0;
      for (let d = 0; d < dk; d++) n += (spec.k[r * dk + d] ?? 0) ** 2;
      const inv = 1 / Math.sqrt(n || 1);
      for (let d = 0; d < dk; d++) spec.k[r * dk + d] = (spec.k[r * dk + d] ?? 0) * inv;
    }
    spec.beta = Float32Array.from({ length: T * H }, () => 0.05 + 0.9 * Math.random());
  }
  if (kind === 'scalar_gate' || kind === 'gated_delta')
    spec.g = Float32Array.from({ length: T * H }, () => Math.log(0.9 + 0.1 * Math.random()));
  if (kind === 'vector_gate') spec.g = Float32Array.from({ length: T * H * dk }, () => Math.log(0.9 + 0.1 * Math.random()));
  return spec;
}
