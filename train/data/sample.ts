// What a source yields: one sequence of T+1 tokens (inputs + next-token targets), or the part of it
// a rank needs. Shared by every source.
import { ConfigError, show } from './validate.js';

/** Target value of a position that does not count in the loss or accuracy. */
export const IGNORE = -1;

/** Input positions [start, end) of a sequence: what one rank of a sequence-parallel group owns. */
export interface Window {
  start: number;
  end: number;
}

export interface Sample {
  /** Position of this sequence in the source's stream (0, 1, 2, ...). */
  index: number;
  /** First input position covered (0 for a whole sequence). */
  start: number;
  /**
   * Tokens start..end of the sequence (end - start + 1 of them; T+1 for a whole sequence). The
   * inputs are tokens[0 .. end-start); token i+1 follows input i.
   */
  tokens: Int32Array;
  /**
   * end - start targets: targets[i] is what the model should predict after inputs[i], or IGNORE.
   * For text it is tokens.subarray(1) (a view); MQAR ignores every position but the queries.
   */
  targets: Int32Array;
}

/** The inputs of a sample (a view, no copy). */
export function inputsOf(s: Sample): Int32Array {
  return s.tokens.subarray(0, s.targets.length);
}

/** The part of a whole-sequence sample that a window covers (views, no copy). */
export function sliceSample(s: Sample, w: Window): Sample {
  const n = s.targets.length;
  const from = w.start - s.start;
  const to = w.end - s.start;
  if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to > n || from >= to) {
    throw new RangeError(`window [${w.start}, ${w.end}) is not inside the sample's positions [${s.start}, ${s.start + n})`);
  }
  return { index: s.index, start: w.start, tokens: s.tokens.subarray(from, to + 1), targets: s.targets.subarray(from, to) };
}

/** The window of a whole sequence of length T when none is given; validates one that is. */
export function resolveWindow(w: Window | undefined, T: number): Window {
  if (w === undefined) return { start: 0, end: T };
  const ok = Number.isInteger(w.start) && Number.isInteger(w.end) && w.start >= 0 && w.start < w.end && w.end <= T;
  if (!ok) throw new RangeError(`window must satisfy 0 <= start < end <= T=${T} (integers), got [${show(w.start)}, ${show(w.end)})`);
  return w;
}

/** Rank r of W's window of a sequence of length T: contiguous blocks, the first T mod W one longer. */
export function rankWindow(T: number, rank: number, world: number): Window {
  if (!Number.isInteger(world) || world < 1 || world > T) throw new RangeError(`world must be an integer in [1, T=${T}], got ${world}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= world)
    throw new RangeError(`rank must be an integer in [0, ${world - 1}], got ${rank}`);
  const base = Math.floor(T / world);
  const extra = T % world;
  const start = rank * base + Math.min(rank, extra);
  return { start, end: start + base + (rank < extra ? 1 : 0) };
}

/** Where a source is in its stream: JSON-serialisable, a few bytes. */
export interface Cursor {
  /** The source type that wrote it. */
  type: string;
  /** Identity of the source's stream (a hash of its sampling options and, for files, the size). */
  id: string;
  /** Index of the next sequence next() returns. */
  index: number;
}

/** Validates a cursor for a source of `type` and `id`; returns the index to continue from. */
export function checkCursor(c: unknown, type: string, id: string): number {
  if (typeof c !== 'object' || c === null) throw new ConfigError('cursor', `cursor must be an object {type, id, index}, got ${show(c)}`);
  const o = c as Record<string, unknown>;
  if (o.type !== type)
    throw new ConfigError('cursor.type', `cursor.type must be ${JSON.stringify(type)} for this source, got ${show(o.type)}`);
  if (o.id !== id) {
    throw new ConfigError(
      'cursor.id',
      `cursor.id ${show(o.id)} does not match this source (${JSON.stringify(id)}): it was saved by a source with other options or another file`,
    );
  }
  const index = o.index;
  if (typeof index !== 'number' || !Number.isSafeInteger(index) || index < 0) {
    throw new ConfigError('cursor.index', `cursor.index must be a non-negative safe integer, got ${show(index)}`);
  }
  return index;
}
