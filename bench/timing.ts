// Timing helpers: median of repeated runs after a warm-up.
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
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] ?? NaN;
}
