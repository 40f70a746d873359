// Ring topology helpers: neighbours and the segment layout of the ring reduce-scatter.

export function nextRank(rank: number, world: number): number {
  return (rank + 1) % world;
}

export function prevRank(rank: number, world: number): number {
  return (rank + world - 1) % world;
}

/** (x mod w) in [0, w) for any integer x. */
export function mod(x: number, w: number): number {
  return ((x % w) + w) % w;
}

/**
 * Split `n` elements into `world` contiguous segments of nearly equal length (the first
 * `n mod world` segments get one more element). Returns [start, end) element indices per segment.
 */
export function ringSegments(n: number, world: number): { start: number; end: number }[] {
  const base = Math.floor(n / world);
  const extra = n % world;
  const out: { start: number; end: number }[] = [];
  let start = 0;
  for (let c = 0; c < world; c++) {
    const len = base + (c < extra ? 1 : 0);
    out.push({ start, end: start + len });
    start += len;
  }
  return out;
}
