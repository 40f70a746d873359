// Synthetic multi-query associative recall (MQAR; Arora et al. 2023, "Zoology"), the standard
// recall test for linear attention. A sequence is a context of N key→value pairs followed by a
// query region in which some of the keys appear again; at each query the model must predict the
// value paired with that key. Only query positions count: every other target is IGNORE.
//
//   inputs   k1 v1 k2 v2 … kN vN  0 0 k2 0 0 0 kN 0 k1 0 …      (0 = filler)
//   targets  -1 -1 -1 …        -1 -1 -1 v2 -1 …   vN -1 v1 -1 …
//
// Vocabulary: token 0 is filler, keys are [1, 1+K), values [1+K, vocabSize), K = ⌊(vocabSize-1)/2⌋.
// Keys of a sequence are distinct; values are drawn independently (they may repeat). Sequence i of
// a source seeded s depends on (s, i) only.
import { type Cursor, checkCursor, IGNORE, resolveWindow, type Sample, type Window } from './sample.js';
import { identityOf, MAX_SEED, sampleDistinct, SequenceRng } from './rng.js';
import type { SequenceSource } from './source.js';
import { checkInt, ConfigError, MAX_SEQ_LEN } from './validate.js';

export interface MqarOptions {
  /** T, input positions per sequence (a sequence holds T+1 tokens). Default 256. */
  seqLen?: number;
  /** Whole vocabulary: filler 0, keys, values. At least 3. Default 8192. */
  vocabSize?: number;
  /** N, key→value pairs in the context (the first 2N positions). Default 16. */
  numKvPairs?: number;
  /** Keys queried after the context, each at most once; in [1, N]. Default N. */
  numQueries?: number;
  /** Unsigned 32-bit seed. Default 0. */
  seed?: number;
}

/** Token ranges of an MQAR vocabulary. */
export interface MqarVocab {
  filler: 0;
  /** Keys are [keyStart, keyStart + numKeys). */
  keyStart: number;
  numKeys: number;
  /** Values are [valueStart, valueStart + numValues). */
  valueStart: number;
  numValues: number;
}

export function mqarVocab(vocabSize: number): MqarVocab {
  const numKeys = Math.floor((vocabSize - 1) / 2);
  return { filler: 0, keyStart: 1, numKeys, valueStart: 1 + numKeys, numValues: vocabSize - 1 - numKeys };
}

export class MqarSource implements SequenceSource {
  readonly type = 'mqar';
  readonly seqLen: number;
  readonly vocabSize: number;
  readonly numKvPairs: number;
  readonly numQueries: number;
  readonly seed: number;
  readonly vocab: MqarVocab;
  private readonly id: string;
  private index = 0;

  /** `field` prefixes the names in error messages (the factory passes e.g. "data"). */
  constructor(opts: MqarOptions = {}, field = 'mqar') {
    this.seqLen = checkInt(`${field}.seqLen`, opts.seqLen ?? 256, 3, MAX_SEQ_LEN);
    this.vocabSize = checkInt(`${field}.vocabSize`, opts.vocabSize ?? 8192, 3, 0x7fffffff);
    this.vocab = mqarVocab(this.vocabSize);
    this.numKvPairs = checkInt(`${field}.numKvPairs`, opts.numKvPairs ?? 16, 1, this.vocab.numKeys);
    this.numQueries = checkInt(`${field}.numQueries`, opts.numQueries ?? this.numKvPairs, 1, this.numKvPairs);
    this.seed = checkInt(`${field}.seed`, opts.seed ?? 0, 0, MAX_SEED);
    if (2 * this.numKvPairs + this.numQueries > this.seqLen) {
      throw new ConfigError(
        `${field}.seqLen`,
        `${field}.seqLen must be at least 2·numKvPairs + numQueries = ${2 * this.numKvPairs + this.numQueries} (context + queries), got ${this.seqLen}`,
      );
    }
    this.id = identityOf(['mqar', this.seqLen, this.vocabSize, this.numKvPairs, this.numQueries, this.seed]);
  }

  /** Sequence `index` in full (synchronous; O(T) time, no file I/O). */
  generate(index: number): Sample {
    const T = this.seqLen;
    const N = this.numKvPairs;
    const Q = this.numQueries;
    const { keyStart, numKeys, valueStart, numValues } = this.vocab;
    const rng = new SequenceRng(this.seed, index);
    const tokens = new Int32Array(T + 1); // zero = filler
    const targets = new Int32Array(T).fill(IGNORE);
    const keys = sampleDistinct(rng, numKeys, N);
    const values = new Int32Array(N);
    for (let i = 0; i < N; i++) {
      values[i] = valueStart + rng.below(numValues);
      tokens[2 * i] = keyStart + keys[i]!;
      tokens[2 * i + 1] = values[i]!;
    }
    const queried = sampleDistinct(rng, N, Q); // which pairs, in query order
    const positions = sampleDistinct(rng, T - 2 * N, Q).sort(); // where, ascending
    for (let j = 0; j < Q; j++) {
      const p = 2 * N + positions[j]!;
      const pair = queried[j]!;
      tokens[p] = keyStart + keys[pair]!;
      targets[p] = values[pair]!;
    }
    return { index, start: 0, tokens, targets };
  }

  async at(index: number, window?: Window): Promise<Sample> {
    if (!Number.isSafeInteger(index) || index < 0) throw new RangeError(`index must be a non-negative safe integer, got ${index}`);
    const w = resolveWindow(window, this.seqLen);
    const s = this.generate(index);
    if (w.start === 0 && w.end === this.seqLen) return s;
    return { index, start: w.start, tokens: s.tokens.subarray(w.start, w.end + 1), targets: s.targets.subarray(w.start, w.end) };
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

  async close(): Promise<void> {}
}

export interface RecallAccuracy {
  /** Positions whose target is not IGNORE. */
  total: number;
  /** Of those, positions where the prediction equals the target. */
  correct: number;
  /** correct / total (NaN when total is 0). */
  accuracy: number;
}

/**
 * Recall accuracy from predicted ids (argmax of the logits) against targets: only positions with a
 * target other than IGNORE count. `predicted` and `targets` have one entry per input position
 * (any batch layout, as long as both agree).
 */
export function recallAccuracy(predicted: ArrayLike<number>, targets: ArrayLike<number>): RecallAccuracy {
  if (predicted.length !== targets.length) {
    throw new RangeError(`predicted must have one id per target (length ${targets.length}), got length ${predicted.length}`);
  }
  let total = 0;
  let correct = 0;
  for (let i = 0; i < targets.length; i++) {
    const t = targets[i]!;
    if (t === IGNORE) continue;
    total++;
    if (predicted[i] === t) correct++;
  }
  return { total, correct, accuracy: total === 0 ? NaN : correct / total };
}
