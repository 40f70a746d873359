// Training metrics as JSON lines: one JSON object per line, appended in call order. A crash can
// leave at most a truncated last line; readMetrics skips it, and MetricsLog.open with append
// cuts it off before appending so it never becomes a corrupt line in the middle.
import { mkdir, open, readFile, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

export interface MetricsLogOptions {
  /** Keep the file's existing records and append after them (a resumed run). Default false: truncate the file. */
  append?: boolean;
}

/** A line of a metrics file that is not a JSON object (and is not a truncated last line). */
export class MetricsParseError extends Error {
  override name = 'MetricsParseError';
  constructor(
    readonly path: string,
    /** 1-based line number. */
    readonly line: number,
    reason: string,
  ) {
    super(`${path}:${line}: corrupt metrics line: ${reason}`);
  }
}

interface Pending {
  bytes: Buffer;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** How far back open({ append: true }) looks for the last newline at a time. */
const TAIL_CHUNK = 64 << 10;

/** Length of the file up to and including its last '\n' (0 when it has none). */
async function completeLength(fh: FileHandle, size: number): Promise<number> {
  const buf = Buffer.alloc(Math.min(TAIL_CHUNK, size));
  for (let end = size; end > 0;) {
    const start = Math.max(0, end - buf.length);
    const { bytesRead } = await fh.read(buf, 0, end - start, start);
    const at = buf.subarray(0, bytesRead).lastIndexOf(0x0a);
    if (at >= 0) return start + at + 1;
    end = start;
  }
  return 0;
}

/**
 * Append-only JSON-lines writer. write() serializes the record at call time and writes records
 * in call order even when calls overlap (concurrent writes are batched into one write). Records
 * are not fsynced; close() flushes everything pending and closes the file.
 */
export class MetricsLog {
  private queue: Pending[] = [];
  private draining: Promise<void> | undefined;
  private failed: Error | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
  ) {}

  /** Opens (creating it and its directory if needed) a metrics file for writing. */
  static async open(path: string, opts: MetricsLogOptions = {}): Promise<MetricsLog> {
    const append = opts.append ?? false;
    await mkdir(dirname(path), { recursive: true });
    if (!append) return new MetricsLog(path, await open(path, 'w'));
    // 'a+' creates the file if missing; the tail check reads it, positional reads ignore O_APPEND.
    const fh = await open(path, 'a+');
    try {
      const { size } = await fh.stat();
      if (size > 0) {
        const keep = await completeLength(fh, size);
        // A truncated last record (a crash mid-write): drop it so the next record starts a line.
        if (keep < size) await fh.truncate(keep);
      }
    } catch (err) {
      await fh.close();
      throw err;
    }
    return new MetricsLog(path, fh);
  }

  /** Appends `record` as one JSON line. Resolves once it is written to the file. */
  write(record: object): Promise<void> {
    if (this.closed) return Promise.reject(new Error(`MetricsLog ${this.path}: write after close`));
    if (this.failed) return Promise.reject(this.failed);
    if (typeof record !== 'object' || record === null || Array.isArray(record)) {
      return Promise.reject(
        new TypeError(
          `MetricsLog ${this.path}: a record must be a plain object, got ${Array.isArray(record) ? 'an array' : String(record)}`,
        ),
      );
    }
    let line: string | undefined;
    try {
      line = JSON.stringify(record) as string | undefined;
    } catch (err) {
      return Promise.reject(new TypeError(`MetricsLog ${this.path}: record is not JSON-serialisable: ${(err as Error).message}`));
    }
    // A toJSON() may turn the record into something else; readMetrics accepts objects only.
    if (line === undefined || !line.startsWith('{')) {
      return Promise.reject(new TypeError(`MetricsLog ${this.path}: record does not serialise to a JSON object (got ${String(line)})`));
    }
    // JSON.stringify never emits a raw newline (they are escaped inside strings), so this is one line.
    const bytes = Buffer.from(`${line}\n`, 'utf8');
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ bytes, resolve, reject });
      this.draining ??= this.drain();
    });
  }

  private async drain(): Promise<void> {
    // Start on a later tick: writes issued in the same tick go out in one batch, and this.draining
    // is always assigned before the loop can finish and clear it.
    await null;
    while (this.queue.length > 0) {
      const batch = this.queue;
      this.queue = [];
      if (this.failed) {
        for (const p of batch) p.reject(this.failed);
        continue;
      }
      try {
        const data = batch.length === 1 ? (batch[0] as Pending).bytes : Buffer.concat(batch.map((p) => p.bytes));
        for (let off = 0; off < data.length;) {
          const { bytesWritten } = await this.fh.write(data, off, data.length - off);
          off += bytesWritten;
        }
        for (const p of batch) p.resolve();
      } catch (err) {
        this.failed = new Error(`MetricsLog ${this.path}: write failed: ${(err as Error).message}`, { cause: err });
        for (const p of batch) p.reject(this.failed);
      }
    }
    this.draining = undefined;
  }

  /** Waits for pending writes and closes the file. Later write() calls reject; calling close() again is a no-op. */
  close(): Promise<void> {
    this.closed = true;
    this.closing ??= (async () => {
      while (this.draining) await this.draining;
      await this.fh.close();
    })();
    return this.closing;
  }
}

/**
 * Reads a JSON-lines metrics file: one object per line, blank lines ignored. A last line without
 * a terminating newline that does not parse (a crash mid-write) is skipped; any other line that is
 * not a JSON object throws a MetricsParseError naming its 1-based line number.
 */
export async function readMetrics(path: string): Promise<object[]> {
  let text = await readFile(path, 'utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const lines = text.split('\n');
  // After the last '\n' comes either '' (a complete file) or an unterminated, possibly truncated line.
  const unterminated = lines.length - 1;
  const out: object[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).replace(/\r$/, '');
    if (line.trim() === '') continue;
    let value: unknown;
    let reason: string | undefined;
    try {
      value = JSON.parse(line);
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        reason = `expected a JSON object, got ${Array.isArray(value) ? 'an array' : value === null ? 'null' : typeof value}`;
      }
    } catch (err) {
      reason = (err as Error).message;
    }
    if (reason === undefined) {
      out.push(value as object);
      continue;
    }
    if (i === unterminated) break; // truncated last line
    const excerpt = line.length > 80 ? `${line.slice(0, 80)}…` : line;
    throw new MetricsParseError(path, i + 1, `${reason} (${JSON.stringify(excerpt)})`);
  }
  return out;
}
