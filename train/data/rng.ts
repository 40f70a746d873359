// Counter-based seeded random numbers for data sources: the stream of sequence `index` of a source
// seeded `seed` depends on (seed, index, salt) only, never on which sequences were drawn before.
// That is what makes every source random-access, trivially resumable (the cursor is one index)
// and identical on every rank.

/** Largest seed accepted by every source: seeds are unsigned 32-bit integers. */
export const MAX_SEED = 0xffffffff;

const TWO_32 = 4294967296;
const TWO_53 = 9007199254740992;

function mix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * sfc32 (Chris Doty-Humphrey's small fast chaotic generator, 128-bit state), seeded by hashing
 * (seed, index, salt). `index` may be any safe non-negative integer.
 */
export class SequenceRng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number, index: number, salt = 0) {
    const lo = (index % TWO_32) >>> 0;
    const hi = Math.floor(index / TWO_32) >>> 0;
    this.a = mix32((seed ^ 0x9e3779b9) >>> 0);
    this.b = mix32((lo + 0x7f4a7c15) ^ this.a);
    this.c = mix32((hi + 0x85ebca6b) ^ this.b);
    this.d = mix32((salt + 0xc2b2ae35) ^ this.c) | 1;
    for (let i = 0; i < 12; i++) this.uint32();
  }

  /** Uniform unsigned 32-bit integer. */
  uint32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** Uniform integer in [0, n), unbiased (rejection sampling); n a safe integer in [1, 2^53]. */
  below(n: number): number {
    if (!(Number.isSafeInteger(n) || n === TWO_53) || n < 1) throw new RangeError(`below(n): n must be an integer in [1, 2^53], got ${n}`);
    if (n <= TWO_32) {
      const limit = TWO_32 - (TWO_32 % n);
      let x = this.uint32();
      while (x >= limit) x = this.uint32();
      return x % n;
    }
    const limit = TWO_53 - (TWO_53 % n);
    let x: number;
    do x = (this.uint32() >>> 11) * TWO_32 + this.uint32();
    while (x >= limit);
    return x % n;
  }
}

/**
 * m distinct integers from [0, n) (Floyd's algorithm: O(m) time and memory, independent of n),
 * in a uniformly random order.
 */
export function sampleDistinct(rng: SequenceRng, n: number, m: number): Int32Array {
  if (m > n) throw new RangeError(`sampleDistinct: cannot draw ${m} distinct values from ${n}`);
  const seen = new Set<number>();
  const out = new Int32Array(m);
  let k = 0;
  for (let j = n - m; j < n; j++) {
    const t = rng.below(j + 1);
    const v = seen.has(t) ? j : t;
    seen.add(v);
    out[k++] = v;
  }
  shuffle(rng, out);
  return out;
}

/** In-place Fisher–Yates shuffle. */
export function shuffle(rng: SequenceRng, a: Int32Array): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    const t = a[i]!;
    a[i] = a[j]!;
    a[j] = t;
  }
}

/** Short stable hex id of a JSON-serialisable value (FNV-1a 32 over its JSON), for cursors. */
export function identityOf(value: unknown): string {
  const text = JSON.stringify(value);
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}
