// Training checkpoints: atomic writes, verified reads (see docs/training-data.md).
export { writeCheckpoint, type CheckpointInput, type CheckpointTensor, type WriteOptions, type WriteResult } from './write.js';
export { readCheckpoint, readCheckpointHeader, type Checkpoint, type LoadedTensor, type ReadOptions } from './read.js';
export { latestValid, type LatestValid, type LatestValidOptions, type SkippedCheckpoint } from './latest.js';
export { checkpointName, listCheckpoints, type CheckpointFile } from './names.js';
export { CheckpointError, validateHeader, type CheckpointHeader, type TensorEntry } from './format.js';
