// Training presentation helpers: the loss-curve SVG (well-formed, escaped, bounded vertex count,
// spikes survive downsampling, atomic write), the JSON-lines metrics log (ordered concurrent
// writes, truncated-last-line tolerance, corrupt-line errors) and the terminal progress bar.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { lossCurveSvg, MAX_VERTICES, writeLossCurve, type LossPoint } from '../train/loss-curve.js';
import { MetricsLog, MetricsParseError, readMetrics } from '../train/metrics-log.js';
import { formatDuration, formatRate, ProgressBar } from '../train/progress.js';

let root: string;
let n = 0;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'lasp-presentation-test-'));
});
after(async () => rm(root, { recursive: true, force: true }));
/** A path `name` in a new empty directory. */
async function freshPath(name: string): Promise<string> {
  const dir = join(root, `case-${++n}`);
  await mkdir(dir);
  return join(dir, name);
}

// ---------------------------------------------------------------------------------------------
// SVG helpers

const ENTITY = /&(?:amp|lt|gt|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);/y;

/** Checks `text` has no raw '<' and only valid entity references. */
function checkText(text: string, where: string): void {
  assert.ok(!text.includes('<'), `raw '<' in ${where}: ${text}`);
  for (let i = text.indexOf('&'); i >= 0; i = text.indexOf('&', i + 1)) {
    ENTITY.lastIndex = i;
    assert.ok(ENTITY.test(text), `bad entity in ${where} at ${i}: ${text.slice(i, i + 12)}`);
  }
}

/** A small XML well-formedness check: one root <svg>, balanced tags, quoted attributes, escaped text. */
function assertWellFormed(svg: string): void {
  const tag = /<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"]*")*)\s*(\/?)>/y;
  const stack: string[] = [];
  let roots = 0;
  let i = 0;
  while (i < svg.length) {
    const lt = svg.indexOf('<', i);
    const text = svg.slice(i, lt < 0 ? svg.length : lt);
    if (stack.length === 0) assert.match(text, /^\s*$/, 'text outside the root element');
    else checkText(text, `<${stack.at(-1)}> content`);
    if (lt < 0) break;
    tag.lastIndex = lt;
    const m = tag.exec(svg);
    assert.ok(m, `malformed tag at ${lt}: ${svg.slice(lt, lt + 60)}`);
    const [whole, close, name, attrs, selfClose] = m as unknown as [string, string, string, string, string];
    for (const a of attrs.matchAll(/="([^"]*)"/g)) checkText(a[1] as string, `<${name}> attribute`);
    if (close) {
      assert.equal(selfClose, '', `</${name}/>`);
      assert.equal(stack.pop(), name, `unbalanced </${name}>`);
    } else {
      if (stack.length === 0) roots++;
      if (!selfClose) stack.push(name);
    }
    i = lt + whole.length;
  }
  assert.deepEqual(stack, [], 'unclosed tags');
  assert.equal(roots, 1, 'exactly one root element');
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
}

type Vertex = [number, number];

function polylineVertices(svg: string, cls = 'loss'): Vertex[] {
  const m = new RegExp(`<polyline class="${cls}"[^>]* points="([^"]*)"`).exec(svg);
  assert.ok(m, `no ${cls} polyline`);
  return (m[1] as string)
    .trim()
    .split(/\s+/)
    .map((p) => p.split(',').map(Number) as Vertex);
}

function tickValue(label: string): number {
  const m = /^(-?[\d.]+)([kM]?)$/.exec(label);
  assert.ok(m, `tick label ${label}`);
  return Number(m[1]) * (m[2] === 'k' ? 1e3 : m[2] === 'M' ? 1e6 : 1);
}

/** Maps a pixel coordinate back to data through the first and last ticks of an axis group. */
function axisMapper(svg: string, group: 'x-ticks' | 'y-ticks'): (px: number) => number {
  const g = new RegExp(`<g class="${group}"[^>]*>([\\s\\S]*?)</g>`).exec(svg);
  assert.ok(g, `no ${group}`);
  const ticks = [...(g[1] as string).matchAll(/<text x="([^"]+)" y="([^"]+)">([^<]+)<\/text>/g)].map((t) => ({
    px: Number(group === 'x-ticks' ? t[1] : t[2]) - (group === 'y-ticks' ? 4 : 0),
    v: tickValue(t[3] as string),
  }));
  assert.ok(ticks.length >= 2);
  const a = ticks[0] as { px: number; v: number };
  const b = ticks.at(-1) as { px: number; v: number };
  return (px) => a.v + ((px - a.px) / (b.px - a.px)) * (b.v - a.v);
}

describe('lossCurveSvg', () => {
  test('a small run: well-formed, title, axes, nice ticks, no legend', () => {
    const points = Array.from({ length: 50 }, (_, i) => ({ step: i * 10, loss: 4 / (1 + i / 10) }));
    const svg = lossCurveSvg(points, { title: 'MQAR run 1' });
    assertWellFormed(svg);
    assert.match(svg, /<title>MQAR run 1<\/title>/);
    assert.match(svg, /<text class="title"[^>]*>MQAR run 1<\/text>/);
    assert.match(svg, /width="720" height="360"/);
    assert.equal(polylineVertices(svg).length, 50);
    assert.ok(!svg.includes('class="legend"'));
    assert.ok(!svg.includes('class="note"'));
    // Nice round ticks: 1, 2 or 5 × 10^k apart, covering the data.
    const y = /<g class="y-ticks"[^>]*>([\s\S]*?)<\/g>/.exec(svg)?.[1] ?? '';
    const labels = [...y.matchAll(/>([^<]+)<\/text>/g)].map((m) => tickValue(m[1] as string));
    assert.ok(labels.length >= 3, `y ticks ${labels}`);
    const d = (labels[1] as number) - (labels[0] as number);
    assert.ok(
      [0.1, 0.2, 0.5, 1, 2, 5].some((s) => Math.abs(d - s) < 1e-9),
      `tick step ${d}`,
    );
    assert.ok((labels[0] as number) <= 4 / 5.9 && (labels.at(-1) as number) >= 4);
  });

  test('default title, and size options', () => {
    const svg = lossCurveSvg([{ step: 1, loss: 1 }], { width: 400, height: 200 });
    assertWellFormed(svg);
    assert.match(svg, /<title>Training loss<\/title>/);
    assert.match(svg, /width="400" height="200" viewBox="0 0 400 200"/);
    assert.throws(() => lossCurveSvg([], { width: 10 }), RangeError);
    assert.throws(() => lossCurveSvg([], { height: Number.NaN }), RangeError);
  });

  test('escapes text for XML (title, eval labels) and drops forbidden characters', () => {
    const title = `Loss <run "a&b"> it's\u0001`;
    const svg = lossCurveSvg([{ step: 0, loss: 1 }], {
      title,
      evalPoints: [{ step: 0, value: 0.5, label: '<recall & acc>' }],
    });
    assertWellFormed(svg);
    assert.ok(svg.includes('Loss &lt;run &quot;a&amp;b&quot;&gt; it&apos;s\ufffd'));
    assert.ok(svg.includes('&lt;recall &amp; acc&gt;'));
    assert.ok(!svg.includes('<run') && !svg.includes('<recall') && !svg.includes('\u0001'));
  });

  test('one point, and no points', () => {
    const one = lossCurveSvg([{ step: 0, loss: 2.5 }]);
    assertWellFormed(one);
    assert.equal(polylineVertices(one).length, 1);
    assert.match(one, /<circle class="loss-point"/);
    // Integer steps get integer x ticks around the single step (1..3 for step 2), not fractions.
    const oneAt2 = lossCurveSvg([{ step: 2, loss: 2.5 }]);
    const xTicks = [.../<g class="x-ticks"[^>]*>([\s\S]*?)<\/g>/.exec(oneAt2)![1]!.matchAll(/>([^<]+)<\/text>/g)].map((m) => m[1]);
    assert.deepEqual(xTicks, ['1', '2', '3']);
    const none = lossCurveSvg([]);
    assertWellFormed(none);
    assert.match(none, /no data/);
    assert.ok(!none.includes('<polyline'));
  });

  test('non-finite points are skipped and a note says so', () => {
    const points = [
      { step: 0, loss: 3 },
      { step: 1, loss: Number.NaN },
      { step: 2, loss: 2 },
      { step: 3, loss: Infinity },
      { step: Number.NaN, loss: 1 },
      { step: 4, loss: 1.5 },
    ];
    const svg = lossCurveSvg(points);
    assertWellFormed(svg);
    assert.equal(polylineVertices(svg).length, 3);
    assert.match(svg, /<text class="note"[^>]*>3 non-finite loss points skipped<\/text>/);
    const one = lossCurveSvg([{ step: 0, loss: 1 }], { evalPoints: [{ step: 0, value: Number.NaN, label: 'acc' }] });
    assert.match(one, /1 non-finite eval point skipped/);
  });

  test('unsorted input is drawn in step order', () => {
    const svg = lossCurveSvg([
      { step: 30, loss: 1 },
      { step: 10, loss: 3 },
      { step: 20, loss: 2 },
    ]);
    const xs = polylineVertices(svg).map((v) => v[0]);
    assert.deepEqual(
      xs,
      [...xs].sort((a, b) => a - b),
    );
  });

  test('10^5 points: bounded vertex count, an up spike and a down dip survive downsampling', () => {
    const N = 100_000;
    const spikeAt = 54_321;
    const dipAt = 12_345;
    const points: LossPoint[] = new Array(N);
    for (let i = 0; i < N; i++) points[i] = { step: i, loss: 2 + 0.05 * Math.sin(i / 7) };
    points[spikeAt] = { step: spikeAt, loss: 40 };
    points[dipAt] = { step: dipAt, loss: 0.5 };
    const svg = lossCurveSvg(points, { title: 'long run' });
    assertWellFormed(svg);
    const vs = polylineVertices(svg);
    assert.ok(vs.length <= MAX_VERTICES, `${vs.length} vertices`);
    assert.ok(vs.length >= 200, `${vs.length} vertices: too coarse`);
    const toStep = axisMapper(svg, 'x-ticks');
    const toLoss = axisMapper(svg, 'y-ticks');
    const top = vs.reduce((a, b) => (b[1] < a[1] ? b : a));
    const bottom = vs.reduce((a, b) => (b[1] > a[1] ? b : a));
    assert.ok(Math.abs(toLoss(top[1]) - 40) < 0.2, `spike drawn at loss ${toLoss(top[1])}`);
    assert.ok(Math.abs(toStep(top[0]) - spikeAt) < 300, `spike drawn at step ${toStep(top[0])}`);
    assert.ok(Math.abs(toLoss(bottom[1]) - 0.5) < 0.2, `dip drawn at loss ${toLoss(bottom[1])}`);
    assert.ok(Math.abs(toStep(bottom[0]) - dipAt) < 300, `dip drawn at step ${toStep(bottom[0])}`);
    // Large x tick labels are compact.
    assert.match(svg, />100k<\/text>/);
    // A wide chart still stays under the bound.
    assert.ok(polylineVertices(lossCurveSvg(points, { width: 8000 })).length <= MAX_VERTICES);
  });

  test('eval points: right axis 0..1, one dashed series per label, legend', () => {
    const points = Array.from({ length: 100 }, (_, i) => ({ step: i, loss: 3 - i / 50 }));
    const evalPoints = [
      { step: 0, value: 0.1, label: 'recall' },
      { step: 50, value: 0.6, label: 'recall' },
      { step: 99, value: 0.95, label: 'recall' },
      { step: 50, value: 0.3, label: 'exact' },
      { step: 99, value: 1.4, label: 'exact' }, // clamped to the axis
    ];
    const svg = lossCurveSvg(points, { evalPoints });
    assertWellFormed(svg);
    assert.match(svg, /<g class="y2-ticks"[\s\S]*>0\.0<\/text>[\s\S]*>1\.0<\/text>/);
    assert.match(svg, /<g class="legend">[\s\S]*>loss<\/text>[\s\S]*>recall<\/text>[\s\S]*>exact<\/text>/);
    assert.equal((svg.match(/<g class="eval"/g) ?? []).length, 2);
    const recall = /<g class="eval" data-label="recall"[\s\S]*?<\/g>/.exec(svg)?.[0] ?? '';
    assert.equal((recall.match(/<circle/g) ?? []).length, 3);
    const ys = [...svg.matchAll(/<g class="eval" data-label="exact"[\s\S]*?<\/g>/g)]
      .flatMap((m) => [...(m[0] as string).matchAll(/cy="([^"]+)"/g)])
      .map((m) => Number(m[1]));
    assert.ok(Math.min(...ys) >= 40 - 0.05, 'clamped to the top of the plot');
    // The legend goes to the corner the lines cross least: here the data fill the top right.
    const legendX = Number(/<g class="legend">\s*<rect x="([^"]+)"/.exec(svg)?.[1]);
    assert.ok(legendX < 720 / 2, `legend at x=${legendX}`);
  });

  test('writeLossCurve writes atomically and leaves no temp file', async () => {
    const path = await freshPath('loss.svg');
    const points = [
      { step: 0, loss: 3 },
      { step: 1, loss: 2 },
    ];
    await writeLossCurve(path, points, { title: 'first' });
    assert.equal(await readFile(path, 'utf8'), lossCurveSvg(points, { title: 'first' }));
    await writeLossCurve(path, points, { title: 'second' });
    assert.match(await readFile(path, 'utf8'), /<title>second<\/title>/);
    assert.deepEqual(await readdir(join(path, '..')), ['loss.svg']);
    await assert.rejects(writeLossCurve(path, points, { width: 1 }), RangeError);
    assert.deepEqual(await readdir(join(path, '..')), ['loss.svg']);
  });
});

// ---------------------------------------------------------------------------------------------

describe('MetricsLog / readMetrics', () => {
  test('round trip, one JSON line per record', async () => {
    const path = await freshPath('metrics.jsonl');
    const log = await MetricsLog.open(path);
    const records = [{ step: 1, loss: 2.5 }, { step: 2, loss: 2.25, note: 'line\nbreak "quoted"' }, { eval: { recall: 0.5 } }];
    for (const r of records) await log.write(r);
    await log.close();
    const text = await readFile(path, 'utf8');
    assert.equal(text.split('\n').length, 4);
    assert.ok(text.endsWith('\n'));
    assert.deepEqual(await readMetrics(path), records);
  });

  test('concurrent writes keep call order', async () => {
    const path = await freshPath('metrics.jsonl');
    const log = await MetricsLog.open(path);
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 2000; i++) {
      writes.push(log.write({ i, pad: 'x'.repeat(i % 97) }));
      if (i % 300 === 0) await new Promise((r) => setImmediate(r));
    }
    await Promise.all(writes);
    await log.close();
    const back = (await readMetrics(path)) as { i: number }[];
    assert.deepEqual(
      back.map((r) => r.i),
      Array.from({ length: 2000 }, (_, i) => i),
    );
  });

  test('close() flushes pending writes; write after close rejects; close twice is fine', async () => {
    const path = await freshPath('metrics.jsonl');
    const log = await MetricsLog.open(path);
    const pending = [log.write({ a: 1 }), log.write({ a: 2 })];
    await log.close();
    await Promise.all(pending);
    await log.close();
    await assert.rejects(log.write({ a: 3 }), /write after close/);
    assert.deepEqual(await readMetrics(path), [{ a: 1 }, { a: 2 }]);
  });

  test('a record that is not a JSON object is rejected and the log keeps working', async () => {
    const path = await freshPath('metrics.jsonl');
    const log = await MetricsLog.open(path);
    await assert.rejects(log.write({ big: 1n }), TypeError);
    await assert.rejects(log.write([1, 2]), TypeError);
    await assert.rejects(log.write(new Date(0)), /does not serialise to a JSON object/);
    await log.write({ ok: true });
    await log.close();
    assert.deepEqual(await readMetrics(path), [{ ok: true }]);
  });

  test('open truncates by default and appends with { append: true }', async () => {
    const path = await freshPath('metrics.jsonl');
    let log = await MetricsLog.open(path);
    await log.write({ run: 1 });
    await log.close();
    log = await MetricsLog.open(path, { append: true });
    await log.write({ run: 2 });
    await log.close();
    assert.deepEqual(await readMetrics(path), [{ run: 1 }, { run: 2 }]);
    log = await MetricsLog.open(path);
    await log.write({ run: 3 });
    await log.close();
    assert.deepEqual(await readMetrics(path), [{ run: 3 }]);
    // append to a file that does not exist yet creates it
    const fresh = await freshPath('new.jsonl');
    log = await MetricsLog.open(fresh, { append: true });
    await log.write({ x: 1 });
    await log.close();
    assert.deepEqual(await readMetrics(fresh), [{ x: 1 }]);
  });

  test('a truncated last line (crash mid-write) is skipped by readMetrics and cut off by append', async () => {
    const path = await freshPath('metrics.jsonl');
    const log = await MetricsLog.open(path);
    await log.write({ step: 1 });
    await log.write({ step: 2 });
    await log.close();
    await writeFile(path, (await readFile(path, 'utf8')) + '{"step":3,"lo', { flag: 'w' });
    assert.deepEqual(await readMetrics(path), [{ step: 1 }, { step: 2 }]);
    // A complete last record merely missing its newline is kept.
    const noNewline = await freshPath('b.jsonl');
    await writeFile(noNewline, '{"a":1}\n\n{"b":2}');
    assert.deepEqual(await readMetrics(noNewline), [{ a: 1 }, { b: 2 }]);
    // Appending after a crash drops the partial record instead of gluing onto it.
    const resumed = await MetricsLog.open(path, { append: true });
    await resumed.write({ step: 3 });
    await resumed.close();
    assert.deepEqual(await readMetrics(path), [{ step: 1 }, { step: 2 }, { step: 3 }]);
    // A file that is only a partial line.
    await writeFile(path, '{"st');
    assert.deepEqual(await readMetrics(path), []);
    await writeFile(path, '');
    assert.deepEqual(await readMetrics(path), []);
  });

  test('a corrupt line in the middle throws an error naming the line', async () => {
    const path = await freshPath('metrics.jsonl');
    const log = await MetricsLog.open(path);
    await log.close();
    await writeFile(path, '{"a":1}\n{"a":2}\n{"a":\n{"a":4}\n');
    await assert.rejects(readMetrics(path), (err: unknown) => {
      assert.ok(err instanceof MetricsParseError);
      assert.equal(err.line, 3);
      assert.equal(err.path, path);
      assert.ok(err.message.startsWith(`${path}:3: corrupt metrics line`), err.message);
      return true;
    });
    // A terminated last line is complete, so a corrupt one is an error too; so is a non-object.
    await writeFile(path, '{"a":1}\n{"a":\n');
    await assert.rejects(readMetrics(path), /:2: corrupt metrics line/);
    await writeFile(path, '{"a":1}\n[1,2]\n{"a":3}\n');
    await assert.rejects(readMetrics(path), /:2: corrupt metrics line: expected a JSON object, got an array/);
  });
});

// ---------------------------------------------------------------------------------------------

class FakeStream {
  writes: string[] = [];
  constructor(
    public isTTY: boolean,
    public columns = 200,
  ) {}
  write(chunk: string): boolean {
    this.writes.push(chunk);
    return true;
  }
  get text(): string {
    return this.writes.join('');
  }
}

function bar(opts: { total: number; isTTY?: boolean; columns?: number; width?: number; initialStep?: number }) {
  const stream = new FakeStream(opts.isTTY ?? true, opts.columns);
  const clock = { t: 0 };
  const pb = new ProgressBar({
    total: opts.total,
    stream: stream as unknown as NodeJS.WriteStream,
    width: opts.width,
    initialStep: opts.initialStep,
    now: () => clock.t,
  });
  return { stream, clock, pb };
}

// eslint-disable-next-line no-control-regex
const strip = (s: string) => s.replace(/\r|\x1b\[K/g, '');

describe('ProgressBar', () => {
  test('draws bar, step/total, percent, fields, elapsed and ETA on one line with \\r', () => {
    const { stream, clock, pb } = bar({ total: 1000, width: 10 });
    clock.t = 10_000;
    pb.update(250, { loss: '2.314', 'tok/s': formatRate(12_345) });
    assert.equal(stream.writes.length, 1);
    const w = stream.writes[0] as string;
    assert.ok(w.startsWith('\r'));
    assert.ok(!w.includes('\n'));
    assert.equal(strip(w), '[==>       ]  250/1000   25.0%  loss 2.314  tok/s 12.3K  elapsed 10s  eta 30s');
  });

  test('throttles to ~10 redraws/s but always draws the final step', () => {
    const { stream, clock, pb } = bar({ total: 1000 });
    for (let s = 1; s <= 1000; s++) {
      clock.t = s; // one step per millisecond: 1 s in all
      pb.update(s, { loss: (3 - s / 1000).toFixed(3) });
    }
    assert.ok(stream.writes.length >= 10 && stream.writes.length <= 12, `${stream.writes.length} redraws`);
    const last = strip(stream.writes.at(-1) as string);
    assert.match(last, /1000\/1000 +100\.0%/);
    assert.match(last, /loss 2\.000/);
    assert.match(last, /eta 0s/);
    // The final step is drawn even right after another redraw.
    const b = bar({ total: 10 });
    b.pb.update(9);
    b.pb.update(10);
    assert.equal(b.stream.writes.length, 2);
    assert.match(strip(b.stream.writes[1] as string), /10\/10/);
  });

  test('log() clears the bar, prints the line and redraws the bar', () => {
    const { stream, pb } = bar({ total: 100 });
    pb.update(5, { loss: '1.5' });
    stream.writes.length = 0;
    pb.log('checkpoint saved');
    assert.equal(stream.writes[0], '\r\x1b[Kcheckpoint saved\n');
    assert.equal(stream.writes.length, 2);
    assert.match(strip(stream.writes[1] as string), /^\[.*\] +5\/100 .*loss 1\.5/);
    // Before anything is drawn, log() just prints.
    const b = bar({ total: 1 });
    b.pb.log('hello');
    assert.deepEqual(b.stream.writes, ['hello\n']);
  });

  test('done() redraws the latest state (even if throttled) and ends the line; later updates are ignored', () => {
    const { stream, pb } = bar({ total: 100 });
    pb.update(1);
    pb.update(2, { loss: '0.9' }); // throttled: same clock time
    assert.equal(stream.writes.length, 1);
    pb.done();
    assert.match(strip(stream.writes[1] as string), /2\/100.*loss 0\.9/);
    assert.equal(stream.writes[2], '\n');
    pb.update(3);
    pb.done();
    assert.equal(stream.writes.length, 3);
  });

  test('a non-TTY stream gets nothing from update() and done(); log() prints plain lines', () => {
    const { stream, clock, pb } = bar({ total: 10, isTTY: false });
    for (let s = 1; s <= 10; s++) {
      clock.t = s * 1000;
      pb.update(s, { loss: '1' });
    }
    pb.log('plain line');
    pb.done();
    assert.deepEqual(stream.writes, ['plain line\n']);
  });

  test('stays under the terminal width; control characters in fields are flattened', () => {
    const { stream, pb } = bar({ total: 10, columns: 40 });
    pb.update(1, { note: 'a\nb', loss: '2.0' });
    const line = strip(stream.writes[0] as string);
    assert.ok(line.length <= 39, line);
    assert.ok(!line.includes('\n'));
    assert.throws(() => new ProgressBar({ total: -1 }), RangeError);
    assert.throws(() => new ProgressBar({ total: 1, width: 0 }), RangeError);
  });

  test('ETA counts only the steps done since initialStep', () => {
    const { stream, clock, pb } = bar({ total: 2000, initialStep: 1000 });
    clock.t = 60_000;
    pb.update(1100);
    assert.match(strip(stream.writes[0] as string), /elapsed 1m00s {2}eta 9m00s/);
  });
});

describe('formatRate / formatDuration', () => {
  test('formatRate', () => {
    const cases: [number, string][] = [
      [0, '0'],
      [7, '7'],
      [950, '950'],
      [12.34, '12.3'],
      [999.96, '1.00K'],
      [1000, '1.00K'],
      [12_345, '12.3K'],
      [123_456, '123K'],
      [999_999, '1.00M'],
      [2.5e6, '2.50M'],
      [3.21e9, '3.21G'],
      [-1500, '-1.50K'],
      [Number.NaN, 'NaN'],
    ];
    for (const [n, s] of cases) assert.equal(formatRate(n), s, `formatRate(${n})`);
  });

  test('formatDuration', () => {
    const cases: [number, string][] = [
      [0, '0s'],
      [45_000, '45s'],
      [59_400, '59s'],
      [59_600, '1m00s'],
      [185_000, '3m05s'],
      [3_599_000, '59m59s'],
      [3_600_000, '1h00m'],
      [3_720_000, '1h02m'],
      [27 * 3_600_000, '1d03h'],
      [-5, '0s'],
      [Number.NaN, '?'],
      [Infinity, '?'],
    ];
    for (const [ms, s] of cases) assert.equal(formatDuration(ms), s, `formatDuration(${ms})`);
  });
});
