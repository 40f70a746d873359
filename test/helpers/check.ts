// Comparison helpers. The error metric used throughout the suite is the relative max error
//   err(x, ref) = max_i |x_i − ref_i| / max(max_i |ref_i|, 1e-30)
// i.e. the largest deviation measured against the largest reference magnitude of that tensor.
// Optionally the scale has a floor (see assertClose): a tensor whose exact value is zero (e.g. dg
// of a single token from a zero state, dq of softmax over a single key) is computed by the kernel
// as a cancellation of O(1) terms and comes out as float32 rounding noise, so it is measured
// against the magnitude of its sibling tensors (the largest reference gradient of the same case).
// A non-finite x_i fails outright. Messages carry the case description (including its seed).
import assert from 'node:assert/strict';

type Arr = ArrayLike<number>;

export interface ErrReport {
  err: number;
  maxDiff: number;
  at: number;
  scale: number;
}

export function relMaxErr(x: Arr, ref: Arr, floor = 0): ErrReport {
  let scale = floor;
  for (let i = 0; i < ref.length; i++) scale = Math.max(scale, Math.abs(ref[i]!));
  let maxDiff = 0;
  let at = -1;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(x[i]! - ref[i]!);
    if (!(d <= maxDiff)) {
      // also catches NaN
      maxDiff = Number.isNaN(d) ? Infinity : d;
      at = i;
      if (maxDiff === Infinity) break;
    }
  }
  return { err: maxDiff / Math.max(scale, 1e-30), maxDiff, at, scale };
}

// LASP_TEST_MARGINS=1 prints, per test file, the worst err/bound ratio seen for each quantity
// (how close the kernels come to their bounds).
const margins = new Map<string, { ratio: number; ctx: string }>();
if (process.env.LASP_TEST_MARGINS) {
  process.on('exit', () => {
    for (const [what, m] of [...margins].sort((a, b) => b[1].ratio - a[1].ratio)) {
      process.stdout.write(`# margin ${what}: worst err/bound ${m.ratio.toExponential(2)} (${m.ctx})\n`);
    }
  });
}

/** Largest |value| over several tensors (the floor for assertClose). */
export function maxAbs(...arrays: Arr[]): number {
  let m = 0;
  for (const a of arrays) for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** Asserts same length, all finite, and relMaxErr(x, ref, floor) < bound. */
export function assertClose(x: Arr | undefined, ref: Arr, bound: number, what: string, ctx: string, floor = 0): void {
  assert.ok(x !== undefined, `${what} missing (${ctx})`);
  assert.equal(x.length, ref.length, `${what}: length ${x.length}, expected ${ref.length} (${ctx})`);
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i]!)) assert.fail(`${what}[${i}] = ${x[i]} is not finite (ref ${ref[i]}) (${ctx})`);
  }
  const r = relMaxErr(x, ref, floor);
  if (process.env.LASP_TEST_MARGINS && bound > 1e-20) {
    const key = what.replace(/_\d+|\[\d+\]/g, '');
    const prev = margins.get(key);
    if (!prev || r.err / bound > prev.ratio) margins.set(key, { ratio: r.err / bound, ctx });
  }
  assert.ok(
    r.err < bound,
    `${what}: relative max error ${r.err.toExponential(3)} >= ${bound} (max |diff| ${r.maxDiff.toExponential(3)} at [${r.at}]: got ${x[r.at]}, ref ${ref[r.at]}; scale ${r.scale.toExponential(3)}) (${ctx})`,
  );
}

/** Describes a spec-like object for messages: kind, shapes, options, seed. */
export function describeCase(o: Record<string, unknown>, seed: number): string {
  const parts = Object.entries(o)
    .filter(([, v]) => v !== undefined && !(ArrayBuffer.isView(v) || Array.isArray(v)))
    .map(([k, v]) => `${k}=${String(v)}`);
  return `${parts.join(' ')} seed=${seed}`;
}

/**
 * The relative L2 error ‖x − ref‖ / max(‖ref‖, floor) used by the GPU-against-CPU tests (where
 * per-element maxima would be dominated by the few largest values); with a zero scale (floor 0 and
 * ref all zero) the absolute ‖x − ref‖. NaN (a failure against any bound) when the lengths differ,
 * x has a non-finite entry, or ref has one — unless `nonFiniteMustMatch`, where a non-finite
 * reference entry (e.g. lse = −∞ of a row that sees no key) must be matched exactly.
 */
export function relL2Err(x: Arr, ref: Arr, floor = 0, nonFiniteMustMatch = false): number {
  if (x.length !== ref.length) return Number.NaN;
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const r = ref[i]!;
    const v = x[i]!;
    if (!Number.isFinite(r)) {
      if (nonFiniteMustMatch && v === r) continue;
      return Number.NaN;
    }
    if (!Number.isFinite(v)) return Number.NaN;
    num += (v - r) * (v - r);
    den += r * r;
  }
  const scale = Math.max(Math.sqrt(den), floor);
  return scale === 0 ? Math.sqrt(num) : Math.sqrt(num) / scale;
}
