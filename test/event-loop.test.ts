// The kernels run off the JavaScript thread: a large forward must not block the event loop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { kernels } from '../native/kernels.js';
import { rngFor } from './helpers/rng.js';

test('a large forward (T=65536, H=4, d=64, linear) leaves the event loop free: a 5 ms interval keeps ticking', async (t) => {
  const [T, H, d] = [65536, 4, 64];
  const rng = rngFor('event-loop');
  const n = T * H * d;
  // Cheap uniform fill (the values only need to be ordinary numbers, not zeros).
  const fill = () => rng.f32(n, () => (rng.next() - 0.5) * 0.25);
  const q = fill();
  const k = fill();
  const v = fill();
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  try {
    const t0 = performance.now();
    const p = kernels.forward({ kind: 'linear', T, H, dk: d, dv: d, q, k, v });
    const syncMs = performance.now() - t0; // time the caller's thread was held by the call itself
    const ticksAtReturn = ticks;
    const { o } = await p;
    const totalMs = performance.now() - t0;
    const ctx = `ticks=${ticks} sync=${syncMs.toFixed(1)}ms total=${totalMs.toFixed(1)}ms seed=${rng.seed}`;
    assert.equal(ticksAtReturn, 0, `no tick can run during a synchronous call (${ctx})`);
    assert.ok(syncMs < Math.max(20, 0.25 * totalMs), `the call must return its promise at once, not after computing (${ctx})`);
    // If the kernel ran on the main thread, no interval callback could run before resolution.
    // Require several ticks whenever the kernel took long enough to allow them.
    const expected = Math.min(3, Math.floor((totalMs - syncMs) / 5 / 3));
    assert.ok(ticks >= expected, `expected at least ${expected} interval ticks before the forward resolved (${ctx})`);
    assert.ok(totalMs - syncMs < 25 || ticks >= 1, `interval never ticked while the kernel ran (${ctx})`);
    t.diagnostic(ctx);
    for (const i of [0, 1, o.length >> 1, o.length - 1]) assert.ok(Number.isFinite(o[i]!), `o[${i}] finite (${ctx})`);
  } finally {
    clearInterval(timer);
  }
});
