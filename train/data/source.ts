// The interface every sequence source implements, and the factory that builds one from a config
// object (e.g. the `data` section of a training job), validating it field by field.
import { ByteTextSource, type ByteTextOptions } from './byte-text.js';
import { ORDERS } from './file-source.js';
import { MqarSource, type MqarOptions } from './mqar.js';
import { MAX_SEED } from './rng.js';
import type { Cursor, Sample, Window } from './sample.js';
import { TokenFileSource, type TokenFileOptions } from './token-file.js';
import { checkEnum, checkInt, checkKnownFields, checkObject, checkString, MAX_SEQ_LEN } from './validate.js';

/**
 * A deterministic stream of sequences of T+1 tokens. Sequence i depends only on the source's
 * options (and file contents) and i: every rank of a group computes the same sequence i.
 */
export interface SequenceSource {
  readonly type: SourceConfig['type'];
  /** Token ids are in [0, vocabSize). */
  readonly vocabSize: number;
  /** T: input positions per sequence; a whole sequence holds T+1 tokens. */
  readonly seqLen: number;
  /**
   * Sequence at the cursor, then advances the cursor (synchronously, at the call: concurrent calls
   * get consecutive indices). With a window, only input positions [start, end) (and their
   * targets) are produced; file sources then read only those tokens.
   */
  next(window?: Window): Promise<Sample>;
  /** Sequence `index` (random access; the cursor does not move). */
  at(index: number, window?: Window): Promise<Sample>;
  /** The cursor: JSON-serialisable; restore() of it continues with the identical sequences. */
  state(): Cursor;
  /** Continues from a cursor saved by state() of a source with the same options (and file). */
  restore(cursor: unknown): void;
  /** Releases the file handle (a no-op for MQAR). */
  close(): Promise<void>;
}

export type SourceConfig =
  ({ type: 'mqar' } & MqarOptions) | ({ type: 'bytes' } & ByteTextOptions) | ({ type: 'tokens' } & TokenFileOptions);

export const SOURCE_TYPES = ['mqar', 'bytes', 'tokens'] as const;

const FIELDS: Record<SourceConfig['type'], readonly string[]> = {
  mqar: ['type', 'seqLen', 'vocabSize', 'numKvPairs', 'numQueries', 'seed'],
  bytes: ['type', 'path', 'seqLen', 'order', 'seed'],
  tokens: ['type', 'path', 'seqLen', 'order', 'seed', 'vocabSize'],
};

/**
 * Validates a config object (parsed JSON, CLI flags ...): the type, unknown fields, and each
 * field's type and range. Errors are ConfigErrors naming the field, e.g. `data.seqLen`.
 * Cross-field limits (MQAR's seqLen ≥ 2·numKvPairs + numQueries, file length) are checked when
 * the source is built.
 */
export function parseSourceConfig(raw: unknown, field = 'data'): SourceConfig {
  const o = checkObject(field, raw);
  const type = checkEnum(`${field}.type`, o.type, SOURCE_TYPES);
  checkKnownFields(field, o, FIELDS[type], `a '${type}' source`);
  const opt = (name: string, check: (f: string, v: unknown) => unknown): void => {
    if (o[name] !== undefined) check(`${field}.${name}`, o[name]);
  };
  const int = (min: number, max: number) => (f: string, v: unknown) => checkInt(f, v, min, max);
  opt('seqLen', int(1, MAX_SEQ_LEN));
  opt('seed', int(0, MAX_SEED));
  if (type === 'mqar') {
    opt('vocabSize', int(3, 0x7fffffff));
    opt('numKvPairs', int(1, 0x7fffffff));
    opt('numQueries', int(1, 0x7fffffff));
  } else {
    checkString(`${field}.path`, o.path);
    opt('order', (f, v) => checkEnum(f, v, ORDERS));
    if (type === 'tokens') opt('vocabSize', int(1, 65536));
  }
  return { ...o } as unknown as SourceConfig;
}

/** Builds a source from a config (validated with parseSourceConfig). */
export async function createSource(raw: unknown, field = 'data'): Promise<SequenceSource> {
  const c = parseSourceConfig(raw, field);
  switch (c.type) {
    case 'mqar':
      return new MqarSource(c, field);
    case 'bytes':
      return ByteTextSource.open(c, field);
    case 'tokens':
      return TokenFileSource.open(c, field);
  }
}
