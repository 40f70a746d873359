// `lasp bench cuda`: la_bench's JSON lines are parsed and checked field by field, the table counts
// the targets reached, and a missing program or a machine without a GPU is a clear error. Where
// build-cuda/la_bench exists the command runs it: on a GPU machine it must return timed rows for
// every kind, elsewhere it must say that there is no CUDA device.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { test } from 'node:test';
import { LA_BENCH_PATH, parseCudaBenchLines, printCudaBench, runCudaBench } from '../bench/cuda.js';

const line = (o: Record<string, unknown>) =>
  JSON.stringify({
    bench: 'linear',
    T: 32768,
    variant: 'bv64',
    fwd_ms: 0.4,
    fb_ms: 2.0,
    target_fwd: 0.435,
    target_fb: 1.85,
    fwd_flop: 5.15e10,
    bwd_flop: 1.546e11,
    bytes_fwd: 5.37e8,
    bytes_fb: 1.48e9,
    ...o,
  });

test('bench cuda: la_bench JSON lines become rows; the table says which targets are reached', () => {
  const rows = parseCudaBenchLines(
    `${line({})}\n\n${line({ bench: 'delta', T: 1024, target_fwd: 0, target_fb: 0 })}\n${line({ variant: 'bv64 parF', fwd_ms: 0.1, fb_ms: 0.1 })}\n`,
  );
  assert.equal(rows.length, 3);
  assert.deepEqual(rows[0], {
    kind: 'linear',
    T: 32768,
    variant: 'bv64',
    fwdMs: 0.4,
    fwdBwdMs: 2.0,
    targetFwdMs: 0.435,
    targetFwdBwdMs: 1.85,
    fwdFlop: 5.15e10,
    bwdFlop: 1.546e11,
    bytesFwd: 5.37e8,
    bytesFwdBwd: 1.48e9,
  });
  const table = printCudaBench({ device: 'NVIDIA H200', rows });
  // linear: forward under its target, forward+backward over it; delta at T=1024 has no target; the
  // second linear row is a variant and does not count.
  assert.match(table, /targets reached by the default kernels \(the first row of each kind and T\): 1 of 2/);
  assert.match(table, /0\.435 \(met\)/);
  assert.match(table, /1\.85 \(1\.08×\)/);
  // 51.5 GFLOP in 0.4 ms: 129 TFLOP/s, 16% of 790.
  assert.match(table, /129 \(16%\)/);
});

test('bench cuda: malformed la_bench output is refused with the line and the field', () => {
  assert.throws(() => parseCudaBenchLines(`${line({})}\nnot json`), /line 2 is not JSON/);
  assert.throws(() => parseCudaBenchLines(line({ fwd_ms: 'fast' })), /line 1: field fwd_ms should be a finite number, got "fast"/);
  assert.throws(() => parseCudaBenchLines(line({ bench: 7 })), /fields bench and variant should be strings/);
});

test('bench cuda: a missing la_bench names the path and how to build it', async () => {
  const binary = join(tmpdir(), `no-such-la-bench-${process.pid}`);
  await assert.rejects(
    runCudaBench({ binary }),
    (err: Error) => err.message.includes(binary) && /scripts\/build-cuda\.sh/.test(err.message),
  );
});

test(
  'bench cuda: with la_bench built, timed rows on a GPU or "no CUDA device" without one',
  { skip: !existsSync(LA_BENCH_PATH) && `${LA_BENCH_PATH} is not built (scripts/build-cuda.sh)` },
  async () => {
    let r;
    try {
      r = await runCudaBench({ seqLens: [512] });
    } catch (err) {
      assert.match((err as Error).message, /no CUDA device/);
      return;
    }
    assert.deepEqual([...new Set(r.rows.map((x) => x.kind))].sort(), ['delta', 'linear', 'scalar_gate']);
    for (const x of r.rows) {
      assert.equal(x.T, 512);
      assert.ok(x.fwdMs > 0 && x.fwdBwdMs > x.fwdMs * 0.5, `${x.kind} ${x.variant}: ${x.fwdMs} / ${x.fwdBwdMs} ms`);
      assert.ok(x.fwdFlop > 0 && x.bwdFlop > 0);
    }
  },
);
