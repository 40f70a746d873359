// Package root: the public API of lasp.
export { kernels, KINDS, DEFAULT_CHUNK, SavedForward } from './native/kernels.js';
export type {
  Kind,
  AttentionSpec,
  ForwardOptions,
  ForwardResult,
  BackwardResult,
  BlockSummary,
  SoftmaxSpec,
  GemmArgs,
} from './native/kernels.js';
export { ops } from './native/ops.js';
export type { RmsNormSpec, EmbeddingSpec, CrossEntropySpec, CrossEntropyResult, AdamWState, AdamWHyper } from './native/ops.js';
