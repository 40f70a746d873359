// Seeded random numbers for the tests. Every run draws one base seed (or takes LASP_TEST_SEED from
// the environment) and prints it; each test case derives its own seed from the base seed and the
// case's name, so a failure is reproduced by re-running with LASP_TEST_SEED=<printed seed>.
import { randomInt } from 'node:crypto';

function parseSeed(text: string | undefined): number | undefined {
  if (text === undefined || text.trim() === '') return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new Error(`LASP_TEST_SEED must be an integer in [0, 2^32), got ${JSON.stringify(text)}`);
  }
  return n;
}

/** The run's base seed: LASP_TEST_SEED when set, else a fresh random one. Printed once per file. */
export const BASE_SEED: number = parseSeed(process.env.LASP_TEST_SEED) ?? randomInt(0, 0xffffffff);
process.stdout.write(`# lasp tests: base seed ${BASE_SEED} (reproduce with LASP_TEST_SEED=${BASE_SEED})\n`);

/** 32-bit FNV-1a of a string, mixed with the base seed. */
export function caseSeed(name: string, base: number = BASE_SEED): number {
  let h = (0x811c9dc5 ^ base) >>> 0;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  // One splitmix32 round so nearby names give unrelated seeds.
  h = (h + 0x9e3779b9) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** mulberry32: small, fast, good enough for test data. */
export class Rng {
  private state: number;
  private spare: number | undefined;
  readonly seed: number;

  constructor(seed: number) {
    this.seed = seed >>> 0;
    this.state = this.seed;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Integer in [lo, hi] inclusive. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** Standard normal (Box–Muller). */
  normal(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    let u = this.next();
    while (u <= 1e-300) u = this.next();
    const w = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * w);
    return r * Math.cos(2 * Math.PI * w);
  }

  /** Float32Array of n values drawn by f (rounded to float32). */
  f32(n: number, f: () => number): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = f();
    return out;
  }

  /** Float32Array of n values ~ N(0, scale²). */
  normals(n: number, scale = 1): Float32Array {
    return this.f32(n, () => scale * this.normal());
  }
}

/** A fresh Rng for a named test case; the seed goes into every assertion message. */
export function rngFor(name: string): Rng {
  return new Rng(caseSeed(name));
}
