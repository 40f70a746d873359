// Writing a checkpoint atomically: write a temp file in the same directory (hashing as it goes),
// fsync it, rename it over the final name, fsync the directory. A crash at any point leaves
// either the previous set of checkpoints or the new one complete, never a half-written
// ckpt-*.lasp. Afterwards older checkpoints beyond the last `keep` are deleted.
import { createHash, type Hash } from 'node:crypto';
import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';
import { join } from 'node:path';
import {
  ALIGN,
  alignUp,
  blobStartFor,
  type CheckpointHeader,
  encodePrefix,
  MAX_HEADER_BYTES,
  MAX_RANK,
  MAX_STEP,
  type TensorEntry,
} from './format.js';
import { checkpointName, listCheckpoints, listTempFiles, tempName } from './names.js';

const LITTLE_ENDIAN = endianness() === 'LE';
/** Largest single write (fs calls are limited to 2 GiB). */
const WRITE_CHUNK = 256 << 20;
const ZEROS = new Uint8Array(ALIGN);

export interface CheckpointTensor {
  name: string;
  /** Row-major shape; its product must equal data.length. */
  shape: number[];
  data: Float32Array;
}

export interface CheckpointInput {
  /** Training step the checkpoint is taken after: an integer in [0, 999999999999]. */
  step: number;
  /** Training config (JSON-serialisable). Default null. */
  config?: unknown;
  /** Data cursor, e.g. SequenceSource.state() (JSON-serialisable). Default null. */
  data?: unknown;
  /** Trainer RNG state (JSON-serialisable). Default null. */
  rng?: unknown;
  /** Weights, AdamW m and v, ... (unique names). */
  tensors: CheckpointTensor[];
}

export interface WriteOptions {
  /** Checkpoints to keep, the new one included (≥ 1). Default 3. */
  keep?: number;
  /**
   * Test hook: runs after the temp file is written and fsynced, before the rename. Throwing from
   * it simulates a crash there (the temp file is left behind, as a crash would).
   */
  beforeRename?: (tempPath: string) => Promise<void> | void;
}

export interface WriteResult {
  path: string;
  step: number;
  /** File size. */
  bytes: number;
  /** Hex sha256 stored in the file. */
  sha256: string;
  /** Files deleted afterwards: older checkpoints beyond `keep`, checkpoints of steps after this one (an abandoned run), leftover temp files. */
  removed: string[];
}

function layout(tensors: CheckpointTensor[]): { entries: TensorEntry[]; blobBytes: number } {
  const names = new Set<string>();
  let at = 0;
  const entries = tensors.map((t, i): TensorEntry => {
    if (typeof t.name !== 'string' || t.name === '')
      throw new TypeError(`tensors[${i}].name must be a non-empty string, got ${JSON.stringify(t.name)}`);
    if (names.has(t.name)) throw new Error(`tensors[${i}].name ${JSON.stringify(t.name)} is used twice`);
    names.add(t.name);
    if (!(t.data instanceof Float32Array))
      throw new TypeError(`tensor ${JSON.stringify(t.name)}: data must be a Float32Array, got ${Object.prototype.toString.call(t.data)}`);
    const ok = Array.isArray(t.shape) && t.shape.length <= MAX_RANK && t.shape.every((d) => Number.isSafeInteger(d) && d >= 0);
    if (!ok)
      throw new TypeError(
        `tensor ${JSON.stringify(t.name)}: shape must be at most ${MAX_RANK} non-negative integers, got ${JSON.stringify(t.shape)}`,
      );
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length)
      throw new RangeError(
        `tensor ${JSON.stringify(t.name)}: shape [${t.shape.join(', ')}] holds ${n} elements, data has ${t.data.length}`,
      );
    const entry: TensorEntry = { name: t.name, shape: [...t.shape], dtype: 'float32', byteOffset: at, byteLength: t.data.byteLength };
    at = alignUp(at + t.data.byteLength);
    return entry;
  });
  return { entries, blobBytes: at };
}

function json(field: string, v: unknown): unknown {
  if (v === undefined) return null;
  try {
    return JSON.parse(JSON.stringify(v)) as unknown;
  } catch (err) {
    throw new TypeError(`${field} must be JSON-serialisable: ${(err as Error).message}`);
  }
}

async function writeAll(fh: FileHandle, hash: Hash, bytes: Uint8Array): Promise<void> {
  hash.update(bytes);
  for (let off = 0; off < bytes.length;) {
    const n = Math.min(WRITE_CHUNK, bytes.length - off);
    const { bytesWritten } = await fh.write(bytes, off, n);
    off += bytesWritten;
  }
}

/** fsync a directory so a rename in it is durable (best effort where directories cannot be opened). */
async function syncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EPERM' && code !== 'EINVAL' && code !== 'EBADF') throw err;
  } finally {
    await fh?.close();
  }
}

/** Writes `ckpt` atomically to dir/ckpt-<step>.lasp (creating dir), then prunes (see WriteOptions.keep). */
export async function writeCheckpoint(dir: string, ckpt: CheckpointInput, opts: WriteOptions = {}): Promise<WriteResult> {
  if (!LITTLE_ENDIAN) throw new Error('lasp: checkpoints hold little-endian float32; big-endian hosts are not supported');
  const keep = opts.keep ?? 3;
  if (!Number.isInteger(keep) || keep < 1) throw new RangeError(`keep must be an integer >= 1, got ${keep}`);
  const step = ckpt.step;
  if (!Number.isSafeInteger(step) || step < 0 || step > MAX_STEP)
    throw new RangeError(`step must be an integer in [0, ${MAX_STEP}], got ${step}`);
  if (!Array.isArray(ckpt.tensors)) throw new TypeError('tensors must be an array');
  const { entries, blobBytes } = layout(ckpt.tensors);
  const header: CheckpointHeader = {
    format: 'lasp-checkpoint',
    version: 1,
    step,
    createdAt: new Date().toISOString(),
    config: json('config', ckpt.config),
    data: json('data', ckpt.data),
    rng: json('rng', ckpt.rng),
    blobBytes,
    tensors: entries,
  };
  const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
  if (headerBytes.length > MAX_HEADER_BYTES)
    throw new RangeError(`checkpoint header is ${headerBytes.length} bytes, more than ${MAX_HEADER_BYTES}`);
  const blobStart = blobStartFor(headerBytes.length);

  await mkdir(dir, { recursive: true });
  const finalPath = join(dir, checkpointName(step));
  const tempPath = join(dir, tempName(step));
  const hash = createHash('sha256');
  const fh = await open(tempPath, 'wx');
  let sha256: string;
  try {
    await writeAll(fh, hash, encodePrefix(headerBytes.length));
    await writeAll(fh, hash, headerBytes);
    await writeAll(fh, hash, ZEROS.subarray(0, blobStart - 16 - headerBytes.length));
    let at = 0;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      const data = ckpt.tensors[i]!.data;
      await writeAll(fh, hash, ZEROS.subarray(0, e.byteOffset - at));
      await writeAll(fh, hash, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      at = e.byteOffset + e.byteLength;
    }
    await writeAll(fh, hash, ZEROS.subarray(0, blobBytes - at));
    const digest = hash.digest();
    sha256 = digest.toString('hex');
    for (let off = 0; off < digest.length;) off += (await fh.write(digest, off, digest.length - off)).bytesWritten;
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await rm(tempPath, { force: true });
    throw err;
  }
  await fh.close();
  await opts.beforeRename?.(tempPath);
  await rename(tempPath, finalPath);
  await syncDir(dir);
  const removed = await prune(dir, step, keep, tempPath);
  return { path: finalPath, step, bytes: blobStart + blobBytes + 32, sha256, removed };
}

/**
 * After a durable write of `step`: deletes checkpoints of later steps (left by a run that was
 * abandoned when training resumed from an earlier one; resuming must not jump back to them),
 * all but the newest `keep` of the rest, and leftover temp files (one writer per directory).
 */
async function prune(dir: string, step: number, keep: number, ownTemp: string): Promise<string[]> {
  const doomed: string[] = [];
  let kept = 0;
  for (const f of await listCheckpoints(dir)) {
    if (f.step > step || (f.step <= step && ++kept > keep)) doomed.push(f.path);
  }
  for (const f of await listTempFiles(dir)) if (f.path !== ownTemp) doomed.push(f.path);
  for (const p of doomed) await rm(p, { force: true });
  return doomed;
}
