// Finding the checkpoint to resume from: the newest one that reads back with a valid checksum.
// Corrupt or truncated ones (a disk fault, a copy cut short) are skipped and reported; temp files
// of interrupted writes are never considered.
import { CheckpointError } from './format.js';
import { listCheckpoints } from './names.js';
import { type Checkpoint, readCheckpoint, type ReadOptions } from './read.js';

export interface SkippedCheckpoint {
  path: string;
  step: number;
  reason: string;
}

export interface LatestValid {
  /** The newest valid checkpoint, loaded and verified; undefined when there is none. */
  checkpoint: Checkpoint | undefined;
  /** Newer checkpoints that failed to verify, newest first. */
  skipped: SkippedCheckpoint[];
}

export interface LatestValidOptions extends ReadOptions {
  /** Called once per skipped checkpoint. Default: discard (the result lists them too). */
  log?: (line: string) => void;
}

export async function latestValid(dir: string, opts: LatestValidOptions = {}): Promise<LatestValid> {
  const skipped: SkippedCheckpoint[] = [];
  for (const f of await listCheckpoints(dir)) {
    try {
      const checkpoint = await readCheckpoint(f.path, opts);
      if (checkpoint.header.step !== f.step)
        throw new CheckpointError(f.path, `header step ${checkpoint.header.step} does not match the file name`);
      return { checkpoint, skipped };
    } catch (err) {
      const reason = (err as Error).message;
      skipped.push({ path: f.path, step: f.step, reason });
      opts.log?.(`skipping checkpoint of step ${f.step}: ${reason}`);
    }
  }
  return { checkpoint: undefined, skipped };
}
