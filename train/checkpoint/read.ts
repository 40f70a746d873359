// Reading a checkpoint: every size in the file is checked against the file's real size (and
// maxBlobBytes) before anything is allocated, the sha256 is checked over the bytes as they are
// read, and tensors come back as Float32Array views of one aligned buffer.
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';
import {
  blobStartFor,
  CHECKSUM_BYTES,
  type CheckpointHeader,
  CheckpointError,
  decodePrefix,
  PREFIX_BYTES,
  validateHeader,
} from './format.js';

const LITTLE_ENDIAN = endianness() === 'LE';
/** Largest single read (fs calls are limited to 2 GiB). */
const READ_CHUNK = 256 << 20;

export interface ReadOptions {
  /** Refuse blobs larger than this many bytes. Default 64 GiB. */
  maxBlobBytes?: number;
}

export interface LoadedTensor {
  shape: number[];
  data: Float32Array;
}

export interface Checkpoint {
  path: string;
  header: CheckpointHeader;
  /** By name, in file order. */
  tensors: Map<string, LoadedTensor>;
  /** Hex sha256 (verified). */
  sha256: string;
}

async function readAt(fh: FileHandle, buf: Uint8Array, position: number, path: string): Promise<void> {
  for (let done = 0; done < buf.length;) {
    const { bytesRead } = await fh.read(buf, done, Math.min(READ_CHUNK, buf.length - done), position + done);
    if (bytesRead === 0) throw new CheckpointError(path, `truncated: end of file at byte ${position + done}`);
    done += bytesRead;
  }
}

interface Opened {
  fh: FileHandle;
  size: number;
  headerRaw: Uint8Array;
  prefix: Uint8Array;
  header: CheckpointHeader;
  blobStart: number;
}

async function openAndValidate(path: string, opts: ReadOptions): Promise<Opened> {
  const maxBlobBytes = opts.maxBlobBytes ?? 64 * 2 ** 30;
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    if (size < PREFIX_BYTES + CHECKSUM_BYTES) throw new CheckpointError(path, `truncated: ${size} bytes is smaller than any checkpoint`);
    const prefix = new Uint8Array(PREFIX_BYTES);
    await readAt(fh, prefix, 0, path);
    const headerLen = decodePrefix(prefix, size, path);
    const headerRaw = new Uint8Array(headerLen);
    await readAt(fh, headerRaw, PREFIX_BYTES, path);
    const blobStart = blobStartFor(headerLen);
    const blobBytes = size - blobStart - CHECKSUM_BYTES;
    if (blobBytes < 0) throw new CheckpointError(path, `truncated: ${size} bytes cannot hold a ${headerLen}-byte header and a checksum`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(headerRaw.buffer, headerRaw.byteOffset, headerRaw.length).toString('utf8'));
    } catch (err) {
      throw new CheckpointError(path, `header is not valid JSON (${(err as Error).message}): corrupt`);
    }
    const header = validateHeader(parsed, blobBytes, maxBlobBytes, path);
    return { fh, size, headerRaw, prefix, header, blobStart };
  } catch (err) {
    await fh.close();
    throw err;
  }
}

/** The header of a checkpoint, validated against the file size; the checksum is NOT verified (cheap). */
export async function readCheckpointHeader(path: string, opts: ReadOptions = {}): Promise<CheckpointHeader> {
  const o = await openAndValidate(path, opts);
  await o.fh.close();
  return o.header;
}

/** Reads and verifies a whole checkpoint; throws CheckpointError when it is truncated or corrupt. */
export async function readCheckpoint(path: string, opts: ReadOptions = {}): Promise<Checkpoint> {
  if (!LITTLE_ENDIAN) throw new Error('lasp: checkpoints hold little-endian float32; big-endian hosts are not supported');
  const { fh, header, headerRaw, prefix, blobStart } = await openAndValidate(path, opts);
  try {
    const hash = createHash('sha256');
    hash.update(prefix);
    hash.update(headerRaw);
    const pad = new Uint8Array(blobStart - PREFIX_BYTES - headerRaw.length);
    await readAt(fh, pad, PREFIX_BYTES + headerRaw.length, path);
    hash.update(pad);
    // Safe to allocate now: blobBytes equals what the file really holds and is ≤ maxBlobBytes.
    const blob = new Uint8Array(header.blobBytes);
    for (let off = 0; off < blob.length; off += READ_CHUNK) {
      const part = blob.subarray(off, Math.min(blob.length, off + READ_CHUNK));
      await readAt(fh, part, blobStart + off, path);
      hash.update(part);
    }
    const stored = new Uint8Array(CHECKSUM_BYTES);
    await readAt(fh, stored, blobStart + blob.length, path);
    const actual = hash.digest();
    if (!actual.equals(stored)) {
      throw new CheckpointError(
        path,
        `checksum mismatch: stored sha256 ${Buffer.from(stored).toString('hex')}, computed ${actual.toString('hex')}: corrupt`,
      );
    }
    const tensors = new Map<string, LoadedTensor>();
    for (const e of header.tensors) {
      tensors.set(e.name, { shape: e.shape, data: new Float32Array(blob.buffer, e.byteOffset, e.byteLength / 4) });
    }
    return { path, header, tensors, sha256: actual.toString('hex') };
  } finally {
    await fh.close();
  }
}
