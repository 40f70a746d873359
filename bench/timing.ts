// Timing helpers: median of repeated runs after a warm-up.

/** The median (upper middle) of `xs`; NaN when empty. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

export async function medianMs(
  run: () => Promise<unknown>,
  opts: { repeat?: number; warmup?: number; budgetMs?: number } = {},
): Promise<number> {
  const repeat = opts.repeat ?? 5; // runs measured
  const warmup = opts.warmup ?? 1; // runs discarded
  const budget = opts.budgetMs ?? 20_000; // stop repeating once this much time is spent
  for (let i = 0; i < warmup; i++) await run();
  const times: number[] = [];
  const start = performance.now();
  for (let i = 0; i < repeat; i++) {
    const t0 = performance.now();
    await run();
    times.push(performance.now() - t0);
    if (performance.now() - start > budget) break;
  }
  return median(times);
}

/**
 * Medians of several calls measured round-robin (one of each per round, after a warm-up round),
 * so that slow phases of a noisy machine hit every call alike.
 */
export async function interleavedMedians(runs: (() => Promise<unknown>)[], rounds: number): Promise<number[]> {
  for (const run of runs) await run();
  const times: number[][] = runs.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (const [i, run] of runs.entries()) {
      const t0 = performance.now();
      await run();
      times[i]?.push(performance.now() - t0);
    }
  }
  return times.map((t) => {
    t.sort((a, b) => a - b);
    return t[Math.floor(t.length / 2)] ?? NaN;
  });
}
