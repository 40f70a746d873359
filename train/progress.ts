// A one-line terminal progress bar for training runs:
//
//   [=========>          ] 4500/10000   45.0%  loss 2.314  tok/s 12.3K  elapsed 3m05s  eta 3m46s
//
// redrawn in place with '\r', at most ~10 times a second (the final step always). On a stream that
// is not a TTY (a log file, CI) update() prints nothing: the caller prints plain lines instead.

export interface ProgressBarOptions {
  /** Last step of the run (≥ 0); the bar is full at this step. */
  total: number;
  /** Where to draw. Default process.stderr. */
  stream?: NodeJS.WriteStream;
  /** Width of the bar itself in characters, brackets excluded (≥ 1). Default 30. */
  width?: number;
  /** Step the run starts from (a resumed run), so the rate and ETA count only steps done here. Default 0. */
  initialStep?: number;
  /** Minimum milliseconds between redraws (the final step and done() always redraw). Default 100 (~10/s). */
  minIntervalMs?: number;
  /** Clock in milliseconds (a test hook). Default Date.now. */
  now?: () => number;
}

export const DEFAULT_BAR_WIDTH = 30;
export const DEFAULT_MIN_INTERVAL_MS = 100;

const CLEAR_LINE = '\r\x1b[K';

/** A rate with 3 significant digits and a K/M/G/T/P suffix: 950 → "950", 12345 → "12.3K", 2.5e6 → "2.50M". */
export function formatRate(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  const sign = n < 0 ? '-' : '';
  let a = Math.abs(n);
  if (a < 1000 && Number.isInteger(a)) return `${sign}${a}`;
  const units = ['', 'K', 'M', 'G', 'T', 'P'];
  let u = 0;
  while (a >= 1000 && u < units.length - 1) {
    a /= 1000;
    u++;
  }
  let s = a.toPrecision(3);
  // Rounding can carry into the next unit (999.96 → "1.00e+3").
  if (Number(s) >= 1000 && u < units.length - 1) {
    a /= 1000;
    u++;
    s = a.toPrecision(3);
  }
  return `${sign}${s}${units[u]}`;
}

/** A duration rounded to the second: "45s", "3m05s", "1h02m", "2d03h" ("?" when not finite; negative counts as 0). */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return '?';
  const s = Math.round(Math.max(0, ms) / 1000);
  const pad = (v: number) => String(v).padStart(2, '0');
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  const m = Math.floor(s / 60);
  if (m < 24 * 60) return `${Math.floor(m / 60)}h${pad(m % 60)}m`;
  const h = Math.floor(m / 60);
  return `${Math.floor(h / 24)}d${pad(h % 24)}h`;
}

/** Replaces line breaks and other control characters, which would break an in-place redraw. */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const oneLine = (s: string) => s.replace(/[\u0000-\u001f\u007f]/g, ' ');

export class ProgressBar {
  private readonly total: number;
  private readonly stream: NodeJS.WriteStream;
  private readonly width: number;
  private readonly initialStep: number;
  private readonly minIntervalMs: number;
  private readonly now: () => number;
  private readonly startedAt: number;
  private step: number | undefined;
  private fields: Record<string, string> = {};
  private lastDrawAt = -Infinity;
  /** A bar line is on screen (the cursor is on it). */
  private shown = false;
  private finished = false;

  constructor(opts: ProgressBarOptions) {
    if (!Number.isFinite(opts.total) || opts.total < 0)
      throw new RangeError(`ProgressBar: total must be a finite number ≥ 0, got ${opts.total}`);
    const width = opts.width ?? DEFAULT_BAR_WIDTH;
    if (!Number.isInteger(width) || width < 1) throw new RangeError(`ProgressBar: width must be an integer ≥ 1, got ${width}`);
    this.total = opts.total;
    this.stream = opts.stream ?? process.stderr;
    this.width = width;
    this.initialStep = opts.initialStep ?? 0;
    this.minIntervalMs = opts.minIntervalMs ?? DEFAULT_MIN_INTERVAL_MS;
    this.now = opts.now ?? Date.now;
    this.startedAt = this.now();
  }

  private get tty(): boolean {
    return this.stream.isTTY === true;
  }

  /** Records progress and redraws the line, unless the last redraw was under minIntervalMs ago (the final step always redraws). */
  update(step: number, fields: Record<string, string> = {}): void {
    if (this.finished) return;
    this.step = step;
    this.fields = fields;
    if (!this.tty) return;
    const t = this.now();
    if (step < this.total && t - this.lastDrawAt < this.minIntervalMs) return;
    this.draw(t);
  }

  /** Prints `line` above the bar: clears the bar, prints the line, redraws the bar. On a non-TTY stream it just prints the line. */
  log(line: string): void {
    if (!this.tty || !this.shown) {
      this.stream.write(`${line}\n`);
      return;
    }
    this.stream.write(`${CLEAR_LINE}${line}\n`);
    this.shown = false;
    this.draw(this.now());
  }

  /** Draws the latest state one last time and ends the line. Further update() calls are ignored. */
  done(): void {
    if (this.finished) return;
    this.finished = true;
    if (!this.tty || this.step === undefined) return;
    this.draw(this.now());
    this.stream.write('\n');
    this.shown = false;
  }

  /** The bar line for the current state at clock time `t` (no control characters). Default t: now. */
  render(t: number = this.now()): string {
    const step = this.step ?? this.initialStep;
    const frac = this.total > 0 ? Math.min(1, Math.max(0, step / this.total)) : 1;
    const filled = Math.floor(frac * this.width);
    const bar = filled >= this.width ? '='.repeat(this.width) : `${'='.repeat(filled)}>${' '.repeat(this.width - filled - 1)}`;
    const parts = [`[${bar}]`, `${step}/${this.total}`, `${(frac * 100).toFixed(1).padStart(5)}%`];
    for (const [k, v] of Object.entries(this.fields)) parts.push(oneLine(`${k} ${v}`));
    const elapsed = t - this.startedAt;
    const done = step - this.initialStep;
    const left = this.total - step;
    let eta = '?';
    if (left <= 0) eta = '0s';
    else if (done > 0 && elapsed > 0) eta = formatDuration((elapsed / done) * left);
    parts.push(`elapsed ${formatDuration(elapsed)}`, `eta ${eta}`);
    return parts.join('  ');
  }

  private draw(t: number): void {
    let line = this.render(t);
    const cols = this.stream.columns;
    // A line that wraps cannot be redrawn in place with '\r': keep it under the terminal width.
    if (typeof cols === 'number' && cols > 1 && line.length >= cols) line = line.slice(0, cols - 1);
    this.stream.write(`${CLEAR_LINE}${line}`);
    this.lastDrawAt = t;
    this.shown = true;
  }
}
