// A training-loss chart as a self-contained SVG (no dependencies, no scripts, no external fonts):
// step on x, loss on y (linear, nice round ticks), optional eval series (e.g. recall accuracy) on a
// secondary right axis fixed to 0..1. Long runs are downsampled to at most ~2000 drawn vertices
// by keeping the min and the max of every pixel column, so a single-step loss spike stays visible.
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export interface LossPoint {
  step: number;
  loss: number;
}

export interface EvalPoint {
  step: number;
  /** Plotted on the right axis, 0..1; values outside it are drawn clamped to the axis. */
  value: number;
  /** Series name shown in the legend; points with the same label form one line. */
  label: string;
}

export interface LossCurveOptions {
  /** Chart title. Default 'Training loss'. */
  title?: string;
  /** SVG width in px (≥ 200). Default 720. */
  width?: number;
  /** SVG height in px (≥ 150). Default 360. */
  height?: number;
  /** Eval results on a secondary right axis 0..1, with a legend. Default none (no right axis, no legend). */
  evalPoints?: EvalPoint[];
}

export const DEFAULT_TITLE = 'Training loss';
export const DEFAULT_WIDTH = 720;
export const DEFAULT_HEIGHT = 360;
/** Upper bound on the vertices of one drawn line (two per pixel column at most). */
export const MAX_VERTICES = 2000;

const MIN_WIDTH = 200;
const MIN_HEIGHT = 150;
/** Eval points of one series are drawn as markers only up to this many. */
const MAX_MARKERS = 200;
const LOSS_COLOR = '#1f77b4';
const EVAL_COLORS = ['#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22'];
const FONT = 'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"';

/** Escapes text for XML element content and attribute values; drops characters XML 1.0 forbids. */
export function escapeXml(text: string): string {
  return (
    text
      // Control characters other than tab/LF/CR, lone surrogates, U+FFFE/U+FFFF are not allowed in XML 1.0.
      .replace(
        // eslint-disable-next-line no-control-regex -- matching control characters is the point
        /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g,
        '\ufffd',
      )
      .replace(/&/g, '&amp;')
      .replace(/</g, '&lt;')
      .replace(/>/g, '&gt;')
      .replace(/"/g, '&quot;')
      .replace(/'/g, '&apos;')
  );
}

interface Ticks {
  lo: number;
  hi: number;
  values: number[];
  step: number;
}

/** 1, 2 or 5 × 10^k, the smallest such ≥ raw. */
function niceStep(raw: number): number {
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

/**
 * Widens a degenerate range by `pad` each side (default 10% of the value, or 1 at 0); `nonNegative`
 * keeps a range of non-negative values from going below 0.
 */
function widen(lo: number, hi: number, nonNegative: boolean, pad = lo !== 0 ? Math.abs(lo) * 0.1 : 1): [number, number] {
  if (hi > lo) return [lo, hi];
  let a = lo - pad;
  let b = hi + pad;
  if (nonNegative && lo >= 0 && a < 0) {
    a = 0;
    b = Math.max(b, 1);
  }
  return [a, b];
}

/** About `target` nice round ticks at least `minStep` apart covering [lo, hi]; the domain is extended to the outermost ticks. */
function niceTicks(lo: number, hi: number, target: number, minStep = 0): Ticks {
  const range = hi - lo;
  if (!Number.isFinite(range) || range <= 0) return { lo, hi, values: [lo, hi], step: range };
  const step = Math.max(minStep, niceStep(range / Math.max(1, target)));
  const k0 = Math.floor(lo / step);
  const k1 = Math.ceil(hi / step);
  if (!Number.isFinite(step) || step <= 0 || !(k1 > k0) || k1 - k0 > 100) {
    return { lo, hi, values: [lo, hi], step: range };
  }
  const values: number[] = [];
  for (let k = k0; k <= k1; k++) values.push(k * step);
  return { lo: k0 * step, hi: k1 * step, values, step };
}

/** A tick label: decimals from the tick spacing, k/M suffixes for large round values. */
function tickLabel(v: number, step: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  const decimals = (s: number) => (s > 0 && Number.isFinite(s) ? Math.max(0, Math.min(12, -Math.floor(Math.log10(s) + 1e-9))) : 2);
  if (a >= 1e6 && step >= 1e5) return `${(v / 1e6).toFixed(decimals(step / 1e6))}M`;
  if (a >= 1e4 && step >= 1e3) return `${(v / 1e3).toFixed(decimals(step / 1e3))}k`;
  if (a >= 1e15 || a < 1e-6) return v.toExponential(2);
  return v.toFixed(decimals(step));
}

const num = (v: number) => (Math.round(v * 10) / 10).toString();

/**
 * Indices of the points to draw, in order: all of them when there are few, otherwise the first
 * minimum and the first maximum of y in every one of `buckets` equal x columns (xs ascending).
 */
function downsample(xs: number[], ys: number[], x0: number, x1: number, buckets: number): number[] {
  const n = xs.length;
  if (n <= MAX_VERTICES) return xs.map((_, i) => i);
  const out: number[] = [];
  const scale = x1 > x0 ? buckets / (x1 - x0) : 0;
  let cur = -1;
  let minI = 0;
  let maxI = 0;
  const flush = () => {
    if (cur < 0) return;
    if (minI === maxI) out.push(minI);
    else out.push(Math.min(minI, maxI), Math.max(minI, maxI));
  };
  for (let i = 0; i < n; i++) {
    const b = Math.min(buckets - 1, Math.max(0, Math.floor(((xs[i] as number) - x0) * scale)));
    if (b !== cur) {
      flush();
      cur = b;
      minI = i;
      maxI = i;
    } else {
      const y = ys[i] as number;
      if (y < (ys[minI] as number)) minI = i;
      if (y > (ys[maxI] as number)) maxI = i;
    }
  }
  flush();
  return out;
}

/** Whether the segment (x0,y0)-(x1,y1) meets the rectangle [rx, rx+rw] × [ry, ry+rh] (Liang–Barsky clipping). */
function segmentMeetsRect(x0: number, y0: number, x1: number, y1: number, rx: number, ry: number, rw: number, rh: number): boolean {
  let t0 = 0;
  let t1 = 1;
  const dx = x1 - x0;
  const dy = y1 - y0;
  const edges: [number, number][] = [
    [-dx, x0 - rx],
    [dx, rx + rw - x0],
    [-dy, y0 - ry],
    [dy, ry + rh - y0],
  ];
  for (const [p, q] of edges) {
    if (p === 0) {
      if (q < 0) return false;
    } else {
      const t = q / p;
      if (p < 0) t0 = Math.max(t0, t);
      else t1 = Math.min(t1, t);
      if (t0 > t1) return false;
    }
  }
  return true;
}

/** How many segments (or single points) of the flat [x, y, x, y, ...] lines meet the rectangle. */
function crossings(lines: number[][], rx: number, ry: number, rw: number, rh: number): number {
  let hits = 0;
  for (const l of lines) {
    if (l.length === 2) {
      if (segmentMeetsRect(l[0] as number, l[1] as number, l[0] as number, l[1] as number, rx, ry, rw, rh)) hits++;
      continue;
    }
    for (let i = 2; i < l.length; i += 2) {
      if (segmentMeetsRect(l[i - 2] as number, l[i - 1] as number, l[i] as number, l[i + 1] as number, rx, ry, rw, rh)) hits++;
    }
  }
  return hits;
}

function sortedByStep<T extends { step: number }>(items: T[]): T[] {
  for (let i = 1; i < items.length; i++) {
    if ((items[i] as T).step < (items[i - 1] as T).step) return [...items].sort((a, b) => a.step - b.step);
  }
  return items;
}

function checkSize(name: string, v: number, min: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min)
    throw new RangeError(`lossCurveSvg: ${name} must be a number ≥ ${min}, got ${v}`);
  return Math.round(v);
}

/** Renders the loss curve (and optional eval series) as a standalone SVG document string. */
export function lossCurveSvg(points: LossPoint[], opts: LossCurveOptions = {}): string {
  const W = checkSize('width', opts.width ?? DEFAULT_WIDTH, MIN_WIDTH);
  const H = checkSize('height', opts.height ?? DEFAULT_HEIGHT, MIN_HEIGHT);
  const title = opts.title ?? DEFAULT_TITLE;

  const loss = sortedByStep(points.filter((p) => Number.isFinite(p.step) && Number.isFinite(p.loss)));
  const skippedLoss = points.length - loss.length;
  const rawEval = opts.evalPoints ?? [];
  const evals = sortedByStep(rawEval.filter((p) => Number.isFinite(p.step) && Number.isFinite(p.value)));
  const skippedEval = rawEval.length - evals.length;
  const hasEval = rawEval.length > 0;

  const notes: string[] = [];
  if (skippedLoss > 0) notes.push(`${skippedLoss} non-finite loss point${skippedLoss === 1 ? '' : 's'} skipped`);
  if (skippedEval > 0) notes.push(`${skippedEval} non-finite eval point${skippedEval === 1 ? '' : 's'} skipped`);

  const left = 64;
  const right = hasEval ? 60 : 20;
  const top = 40;
  const bottom = notes.length > 0 ? 62 : 48;
  const pw = W - left - right;
  const ph = H - top - bottom;

  // Domains.
  let sMin = Infinity;
  let sMax = -Infinity;
  for (const p of loss) {
    if (p.step < sMin) sMin = p.step;
    if (p.step > sMax) sMax = p.step;
  }
  for (const p of evals) {
    if (p.step < sMin) sMin = p.step;
    if (p.step > sMax) sMax = p.step;
  }
  let lMin = Infinity;
  let lMax = -Infinity;
  for (const p of loss) {
    if (p.loss < lMin) lMin = p.loss;
    if (p.loss > lMax) lMax = p.loss;
  }
  if (sMin > sMax) [sMin, sMax] = [0, 1];
  if (lMin > lMax) [lMin, lMax] = [0, 1];
  // Integer steps (the usual case) get integer ticks: a single point at step 3 spans 2..4, not 2.7..3.3.
  const intSteps = loss.every((p) => Number.isInteger(p.step)) && evals.every((p) => Number.isInteger(p.step));
  const xt = niceTicks(...widen(sMin, sMax, true, intSteps ? 1 : undefined), Math.max(2, Math.floor(pw / 90)), intSteps ? 1 : 0);
  const yt = niceTicks(...widen(lMin, lMax, true), Math.max(2, Math.floor(ph / 45)));
  const sx = (s: number) => left + (xt.hi > xt.lo ? ((s - xt.lo) / (xt.hi - xt.lo)) * pw : pw / 2);
  const sy = (l: number) => top + ph - (yt.hi > yt.lo ? ((l - yt.lo) / (yt.hi - yt.lo)) * ph : ph / 2);
  const sy2 = (v: number) => top + ph - Math.min(1, Math.max(0, v)) * ph;

  const o: string[] = [];
  o.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ${FONT} font-size="11" role="img" aria-label="${escapeXml(title)}">`,
  );
  o.push(`<title>${escapeXml(title)}</title>`);
  o.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`);
  o.push(
    `<text class="title" x="${num(W / 2)}" y="24" text-anchor="middle" font-size="15" font-weight="600" fill="#222">${escapeXml(title)}</text>`,
  );

  // Grid and ticks.
  o.push('<g class="grid" stroke="#e6e6e6" stroke-width="1">');
  for (const v of yt.values) o.push(`<line x1="${left}" y1="${num(sy(v))}" x2="${left + pw}" y2="${num(sy(v))}"/>`);
  for (const v of xt.values) o.push(`<line x1="${num(sx(v))}" y1="${top}" x2="${num(sx(v))}" y2="${top + ph}"/>`);
  o.push('</g>');
  o.push('<g class="axes" stroke="#444" stroke-width="1" fill="none">');
  o.push(`<line x1="${left}" y1="${top + ph}" x2="${left + pw}" y2="${top + ph}"/>`);
  o.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + ph}"/>`);
  if (hasEval) o.push(`<line x1="${left + pw}" y1="${top}" x2="${left + pw}" y2="${top + ph}"/>`);
  o.push('</g>');
  o.push('<g class="x-ticks" fill="#444" text-anchor="middle">');
  for (const v of xt.values) o.push(`<text x="${num(sx(v))}" y="${top + ph + 16}">${escapeXml(tickLabel(v, xt.step))}</text>`);
  o.push('</g>');
  o.push('<g class="y-ticks" fill="#444" text-anchor="end">');
  for (const v of yt.values) o.push(`<text x="${left - 6}" y="${num(sy(v) + 4)}">${escapeXml(tickLabel(v, yt.step))}</text>`);
  o.push('</g>');
  o.push(`<text class="x-label" x="${num(left + pw / 2)}" y="${top + ph + 34}" text-anchor="middle" fill="#222">step</text>`);
  o.push(`<text class="y-label" transform="translate(16 ${num(top + ph / 2)}) rotate(-90)" text-anchor="middle" fill="#222">loss</text>`);

  // Eval axis and series.
  const seriesLabels: string[] = [];
  if (hasEval) {
    o.push('<g class="y2-ticks" fill="#444" text-anchor="start">');
    for (let i = 0; i <= 5; i++) o.push(`<text x="${left + pw + 6}" y="${num(sy2(i / 5) + 4)}">${(i / 5).toFixed(1)}</text>`);
    o.push('</g>');
    for (const p of rawEval) if (!seriesLabels.includes(String(p.label))) seriesLabels.push(String(p.label));
    const y2Label = seriesLabels.length === 1 ? (seriesLabels[0] as string) : 'eval';
    o.push(
      `<text class="y2-label" transform="translate(${W - 12} ${num(top + ph / 2)}) rotate(90)" text-anchor="middle" fill="#222">${escapeXml(y2Label)}</text>`,
    );
  }

  /** The drawn lines, to place the legend where it covers the least of them. */
  const drawn: number[][] = [];

  // Loss line.
  if (loss.length > 0) {
    const xs = loss.map((p) => sx(p.step));
    const ys = loss.map((p) => sy(p.loss));
    const idx = downsample(xs, ys, left, left + pw, Math.min(Math.max(1, Math.floor(pw)), MAX_VERTICES / 2));
    drawn.push(idx.flatMap((i) => [xs[i] as number, ys[i] as number]));
    const pts = idx.map((i) => `${num(xs[i] as number)},${num(ys[i] as number)}`).join(' ');
    o.push(
      `<polyline class="loss" fill="none" stroke="${LOSS_COLOR}" stroke-width="1.5" stroke-linejoin="round" stroke-linecap="round" points="${pts}"/>`,
    );
    if (loss.length === 1)
      o.push(`<circle class="loss-point" cx="${num(xs[0] as number)}" cy="${num(ys[0] as number)}" r="3" fill="${LOSS_COLOR}"/>`);
  } else {
    o.push(`<text class="no-data" x="${num(left + pw / 2)}" y="${num(top + ph / 2)}" text-anchor="middle" fill="#888">no data</text>`);
  }

  seriesLabels.forEach((label, si) => {
    const color = EVAL_COLORS[si % EVAL_COLORS.length] as string;
    const series = evals.filter((p) => String(p.label) === label);
    if (series.length === 0) return;
    const xs = series.map((p) => sx(p.step));
    const ys = series.map((p) => sy2(p.value));
    const idx = downsample(xs, ys, left, left + pw, Math.min(Math.max(1, Math.floor(pw)), MAX_VERTICES / 2));
    drawn.push(idx.flatMap((i) => [xs[i] as number, ys[i] as number]));
    const pts = idx.map((i) => `${num(xs[i] as number)},${num(ys[i] as number)}`).join(' ');
    o.push(`<g class="eval" data-label="${escapeXml(label)}" stroke="${color}" fill="${color}">`);
    o.push(`<polyline fill="none" stroke-width="1.5" stroke-dasharray="5 3" points="${pts}"/>`);
    if (series.length <= MAX_MARKERS) {
      for (let i = 0; i < xs.length; i++) o.push(`<circle cx="${num(xs[i] as number)}" cy="${num(ys[i] as number)}" r="2.5"/>`);
    }
    o.push('</g>');
  });

  // Legend (only with eval series: a single loss line needs none).
  if (hasEval) {
    const entries = [{ label: 'loss', color: LOSS_COLOR, dashed: false }].concat(
      seriesLabels.map((label, i) => ({ label, color: EVAL_COLORS[i % EVAL_COLORS.length] as string, dashed: true })),
    );
    const longest = Math.max(...entries.map((e) => e.label.length));
    const lw = Math.min(pw - 8, 34 + Math.min(longest, 40) * 6.5);
    const lh = 8 + entries.length * 16;
    // The corner (top-right first) whose box the drawn lines cross least often.
    const corners: [number, number][] = [
      [left + pw - lw - 6, top + 6],
      [left + 6, top + 6],
      [left + pw - lw - 6, top + ph - lh - 6],
      [left + 6, top + ph - lh - 6],
    ];
    let best = corners[0] as [number, number];
    let bestHits = Infinity;
    for (const c of corners) {
      const hits = crossings(drawn, c[0], c[1], lw, lh);
      if (hits < bestHits) [best, bestHits] = [c, hits];
    }
    const [lx, ly] = best;
    o.push(`<g class="legend">`);
    o.push(`<rect x="${num(lx)}" y="${ly}" width="${num(lw)}" height="${lh}" fill="#ffffff" fill-opacity="0.85" stroke="#cccccc"/>`);
    entries.forEach((e, i) => {
      const y = ly + 12 + i * 16;
      const dash = e.dashed ? ' stroke-dasharray="5 3"' : '';
      o.push(`<line x1="${num(lx + 6)}" y1="${y}" x2="${num(lx + 26)}" y2="${y}" stroke="${e.color}" stroke-width="2"${dash}/>`);
      const text = e.label.length > 40 ? `${e.label.slice(0, 39)}…` : e.label;
      o.push(`<text x="${num(lx + 32)}" y="${y + 4}" fill="#222">${escapeXml(text)}</text>`);
    });
    o.push('</g>');
  }

  if (notes.length > 0) {
    o.push(`<text class="note" x="${left}" y="${H - 8}" font-size="10" fill="#a33">${escapeXml(notes.join('; '))}</text>`);
  }
  o.push('</svg>');
  return o.join('\n') + '\n';
}

/**
 * Renders the chart and writes it to `path` atomically: a temp file in the same directory, then a
 * rename over `path`, so a reader (or a crash) never sees a half-written SVG. Creates the directory.
 */
export async function writeLossCurve(path: string, points: LossPoint[], opts: LossCurveOptions = {}): Promise<void> {
  const svg = lossCurveSvg(points, opts);
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(svg, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
