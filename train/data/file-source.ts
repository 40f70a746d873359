// Shared part of the file-backed sources (byte text, uint16 token files): where sequence i starts
// in the file, and reading just the window of it a rank needs. Files may be larger than memory:
// each sequence reads only its own bytes with one positioned read.
import { open, type FileHandle } from 'node:fs/promises';
import { type Cursor, checkCursor, resolveWindow, type Sample, type Window } from './sample.js';
import { identityOf, MAX_SEED, SequenceRng } from './rng.js';
import type { SequenceSource } from './source.js';
import { checkEnum, checkInt, checkString, ConfigError, MAX_SEQ_LEN } from './validate.js';

export const ORDERS = ['random', 'sequential'] as const;
export type Order = (typeof ORDERS)[number];

export interface FileSamplingOptions {
  /** File to read. Required. */
  path: string;
  /** T, input positions per sequence (a sequence holds T+1 tokens). Default 256. */
  seqLen?: number;
  /**
   * 'random': sequence i starts at an offset drawn uniformly from [0, N-T-1] by (seed, i), N tokens
   * in the file. 'sequential': sequence i starts at (i mod M)·T, M = ⌊(N-1)/T⌋, so consecutive
   * sequences tile the file (each one's last token is the next one's first) and wrap around.
   * Default 'random'.
   */
  order?: Order;
  /** Unsigned 32-bit seed (used by 'random'). Default 0. */
  seed?: number;
}

export interface ResolvedSampling {
  path: string;
  seqLen: number;
  order: Order;
  seed: number;
}

export function resolveSampling(opts: FileSamplingOptions, field: string): ResolvedSampling {
  return {
    path: checkString(`${field}.path`, opts.path),
    seqLen: checkInt(`${field}.seqLen`, opts.seqLen ?? 256, 1, MAX_SEQ_LEN),
    order: checkEnum(`${field}.order`, opts.order ?? 'random', ORDERS),
    seed: checkInt(`${field}.seed`, opts.seed ?? 0, 0, MAX_SEED),
  };
}

/** Opens `path`, closing it again if `check` throws. */
export async function openChecked<T>(
  path: string,
  field: string,
  check: (fh: FileHandle, bytes: number) => Promise<T>,
): Promise<[FileHandle, T]> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw new ConfigError(`${field}.path`, `${field}.path: cannot open ${JSON.stringify(path)}: ${(err as Error).message}`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new ConfigError(`${field}.path`, `${field}.path: ${JSON.stringify(path)} is not a regular file`);
    return [fh, await check(fh, st.size)];
  } catch (err) {
    await fh.close();
    throw err;
  }
}

/** Reads exactly buf.length bytes at `position`, or throws naming the file (it shrank). */
export async function readExactly(fh: FileHandle, buf: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) {
      throw new Error(
        `${path}: unexpected end of file at byte ${position + done} (wanted ${buf.length} bytes at ${position}); did the file shrink?`,
      );
    }
    done += bytesRead;
  }
}

/** A source of T+1-token windows of a file of `numTokens` tokens, `unitBytes` bytes each. */
export abstract class FileSource implements SequenceSource {
  abstract readonly type: 'bytes' | 'tokens';
  readonly seqLen: number;
  readonly order: Order;
  readonly seed: number;
  readonly path: string;
  /** Number of distinct sequence starts: N-T for 'random', ⌊(N-1)/T⌋ for 'sequential'. */
  readonly numWindows: number;
  private readonly id: string;
  private index = 0;
  private closed = false;

  protected constructor(
    private readonly fh: FileHandle,
    s: ResolvedSampling,
    readonly numTokens: number,
    private readonly unitBytes: number,
    readonly vocabSize: number,
    type: string,
  ) {
    this.seqLen = s.seqLen;
    this.order = s.order;
    this.seed = s.seed;
    this.path = s.path;
    this.numWindows = s.order === 'random' ? numTokens - s.seqLen : Math.floor((numTokens - 1) / s.seqLen);
    this.id = identityOf([type, s.seqLen, s.order, s.seed, numTokens, vocabSize]);
  }

  /** Decodes `n + 1` tokens from `bytes` (exactly (n+1)·unitBytes long, offset 0) into Int32 ids. */
  protected abstract decode(bytes: Uint8Array, out: Int32Array, tokenOffset: number): void;

  /** Token offset in the file where sequence `index` starts. */
  offsetOf(index: number): number {
    if (this.order === 'sequential') return (index % this.numWindows) * this.seqLen;
    return new SequenceRng(this.seed, index).below(this.numWindows);
  }

  async at(index: number, window?: Window): Promise<Sample> {
    if (!Number.isSafeInteger(index) || index < 0) throw new RangeError(`index must be a non-negative safe integer, got ${index}`);
    if (this.closed) throw new Error(`${this.type} source ${this.path}: read after close()`);
    const w = resolveWindow(window, this.seqLen);
    const first = this.offsetOf(index) + w.start;
    const count = w.end - w.start + 1;
    const bytes = new Uint8Array(count * this.unitBytes);
    await readExactly(this.fh, bytes, first * this.unitBytes, this.path);
    const tokens = new Int32Array(count);
    this.decode(bytes, tokens, first);
    return { index, start: w.start, tokens, targets: tokens.subarray(1) };
  }

  next(window?: Window): Promise<Sample> {
    resolveWindow(window, this.seqLen);
    return this.at(this.index++, window);
  }

  state(): Cursor {
    return { type: this.type, id: this.id, index: this.index };
  }

  restore(cursor: unknown): void {
    this.index = checkCursor(cursor, this.type, this.id);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}
