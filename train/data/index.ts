// Training data: deterministic, resumable sequence sources (see docs/training-data.md).
export { createSource, parseSourceConfig, SOURCE_TYPES, type SequenceSource, type SourceConfig } from './source.js';
export { MqarSource, mqarVocab, recallAccuracy, type MqarOptions, type MqarVocab, type RecallAccuracy } from './mqar.js';
export { ByteTextSource, type ByteTextOptions } from './byte-text.js';
export { TokenFileSource, maxTokenId, type TokenFileOptions } from './token-file.js';
export { ORDERS, type Order, type FileSamplingOptions } from './file-source.js';
export { IGNORE, inputsOf, rankWindow, sliceSample, type Cursor, type Sample, type Window } from './sample.js';
export { ConfigError } from './validate.js';
