// Checkpoint file names in a directory: ckpt-<step, 12 digits>.lasp, and the temp files a write
// goes through (.ckpt-<step>.lasp.tmp-<pid>-<random>), which readers never look at.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { MAX_STEP } from './format.js';

const FINAL = /^ckpt-(\d{12})\.lasp$/;
const TEMP = /^\.ckpt-(\d{12})\.lasp\.tmp-/;

export function checkpointName(step: number): string {
  if (!Number.isSafeInteger(step) || step < 0 || step > MAX_STEP)
    throw new RangeError(`step must be an integer in [0, ${MAX_STEP}], got ${step}`);
  return `ckpt-${String(step).padStart(12, '0')}.lasp`;
}

export function tempName(step: number): string {
  return `.${checkpointName(step)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

export interface CheckpointFile {
  step: number;
  path: string;
}

/** Checkpoint files in `dir`, newest (highest step) first; [] when the directory does not exist. */
export async function listCheckpoints(dir: string): Promise<CheckpointFile[]> {
  return (await entries(dir, FINAL)).sort((a, b) => b.step - a.step);
}

/** Leftover temp files of interrupted writes in `dir`. */
export async function listTempFiles(dir: string): Promise<CheckpointFile[]> {
  return entries(dir, TEMP);
}

async function entries(dir: string, pattern: RegExp): Promise<CheckpointFile[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: CheckpointFile[] = [];
  for (const name of names) {
    const m = pattern.exec(name);
    if (m) out.push({ step: Number(m[1]), path: join(dir, name) });
  }
  return out;
}
