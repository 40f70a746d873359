// The checkpoint file layout and its header. One file holds everything needed to resume training:
//
//   offset 0        "LASPCKPT"                 8-byte magic
//   8               uint32 LE version (1)
//   12              uint32 LE H                header length in bytes
//   16              header, H bytes of UTF-8 JSON (CheckpointHeader)
//   16+H            zero padding up to blobStart = the next multiple of 64
//   blobStart       blob, header.blobBytes bytes: little-endian float32 tensors, each at its
//                   byteOffset (multiples of 64) from blobStart, zero padding between
//   blobStart+blob  sha256 (32 bytes) of every byte before it (magic .. end of blob)
//
// A reader validates every size against the file's real size before it allocates anything.

export const MAGIC = 'LASPCKPT';
export const VERSION = 1;
/** Bytes before the header: magic, version, header length. */
export const PREFIX_BYTES = 16;
export const CHECKSUM_BYTES = 32;
/** Alignment of the blob and of every tensor in it. */
export const ALIGN = 64;
/** Largest header accepted (the header is metadata; a larger one means a corrupt file). */
export const MAX_HEADER_BYTES = 64 << 20;
/** Largest tensor rank accepted. */
export const MAX_RANK = 16;
/** Largest step number (the file name holds 12 digits). */
export const MAX_STEP = 999_999_999_999;

export interface TensorEntry {
  name: string;
  /** Row-major; the product is the element count. */
  shape: number[];
  dtype: 'float32';
  /** Byte offset from the start of the blob; a multiple of 64. */
  byteOffset: number;
  /** 4 × elements. */
  byteLength: number;
}

export interface CheckpointHeader {
  format: 'lasp-checkpoint';
  version: 1;
  /** Training step the checkpoint was taken after. */
  step: number;
  /** ISO time of writing (informational). */
  createdAt: string;
  /** Training config (JSON). */
  config: unknown;
  /** Data source cursor (JSON), e.g. SequenceSource.state(). */
  data: unknown;
  /** RNG state(s) of the trainer (JSON). */
  rng: unknown;
  /** Bytes of the blob (tensors and their padding). */
  blobBytes: number;
  tensors: TensorEntry[];
}

/** A checkpoint that is truncated, corrupt or not a checkpoint; `path` is the file. */
export class CheckpointError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(`${path}: ${message}`);
    this.name = 'CheckpointError';
  }
}

export function alignUp(n: number, a = ALIGN): number {
  return Math.ceil(n / a) * a;
}

export function blobStartFor(headerBytes: number): number {
  return alignUp(PREFIX_BYTES + headerBytes);
}

/** The 16-byte prefix: magic, version, header length. */
export function encodePrefix(headerBytes: number): Uint8Array {
  const b = Buffer.alloc(PREFIX_BYTES);
  b.write(MAGIC, 0, 'latin1');
  b.writeUInt32LE(VERSION, 8);
  b.writeUInt32LE(headerBytes, 12);
  return b;
}

/** Header length from a prefix, or a CheckpointError. `fileBytes` bounds it. */
export function decodePrefix(b: Uint8Array, fileBytes: number, path: string): number {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (buf.toString('latin1', 0, 8) !== MAGIC)
    throw new CheckpointError(path, `not a lasp checkpoint (magic ${JSON.stringify(buf.toString('latin1', 0, 8))})`);
  const version = buf.readUInt32LE(8);
  if (version !== VERSION) throw new CheckpointError(path, `unsupported checkpoint version ${version} (expected ${VERSION})`);
  const h = buf.readUInt32LE(12);
  const room = fileBytes - PREFIX_BYTES - CHECKSUM_BYTES;
  if (h < 2 || h > MAX_HEADER_BYTES || h > room) {
    throw new CheckpointError(
      path,
      `header length ${h} is impossible for a ${fileBytes}-byte file (max ${Math.min(MAX_HEADER_BYTES, room)}): truncated or corrupt`,
    );
  }
  return h;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Validates a parsed header against the blob size the file actually has (`blobBytes` = file size
 * minus prefix, header, padding and checksum) and `maxBlobBytes`. Every tensor must lie inside the
 * blob, 64-aligned, without overlap, with byteLength = 4 × product(shape). Nothing is allocated.
 */
export function validateHeader(h: unknown, blobBytes: number, maxBlobBytes: number, path: string): CheckpointHeader {
  const bad = (msg: string): never => {
    throw new CheckpointError(path, `bad header: ${msg}`);
  };
  if (!isObject(h)) return bad('not a JSON object');
  if (h.format !== 'lasp-checkpoint') bad(`format must be "lasp-checkpoint", got ${JSON.stringify(h.format)}`);
  if (h.version !== VERSION) bad(`version must be ${VERSION}, got ${JSON.stringify(h.version)}`);
  if (!isCount(h.step) || h.step > MAX_STEP) bad(`step must be an integer in [0, ${MAX_STEP}], got ${JSON.stringify(h.step)}`);
  if (typeof h.createdAt !== 'string') bad('createdAt must be a string');
  if (!isCount(h.blobBytes)) bad(`blobBytes must be a non-negative integer, got ${JSON.stringify(h.blobBytes)}`);
  if (h.blobBytes !== blobBytes) {
    bad(`blobBytes ${h.blobBytes} does not match the file (room for ${blobBytes} bytes between header and checksum): truncated or corrupt`);
  }
  if (blobBytes > maxBlobBytes) bad(`blob of ${blobBytes} bytes exceeds maxBlobBytes ${maxBlobBytes}`);
  if (!Array.isArray(h.tensors)) return bad('tensors must be an array');
  const names = new Set<string>();
  const spans: [number, number, string][] = [];
  h.tensors.forEach((t: unknown, i) => {
    if (!isObject(t)) return bad(`tensors[${i}] must be an object`);
    const name = t.name;
    if (typeof name !== 'string' || name === '') return bad(`tensors[${i}].name must be a non-empty string`);
    const what = `tensor ${JSON.stringify(name)}`;
    if (names.has(name)) bad(`${what} appears twice`);
    names.add(name);
    if (t.dtype !== 'float32') bad(`${what}: dtype must be "float32", got ${JSON.stringify(t.dtype)}`);
    const shape = t.shape;
    if (!Array.isArray(shape) || shape.length > MAX_RANK || !shape.every(isCount)) {
      return bad(`${what}: shape must be an array of at most ${MAX_RANK} non-negative integers, got ${JSON.stringify(shape)}`);
    }
    let elements = 1;
    for (const d of shape as number[]) {
      elements *= d;
      if (elements * 4 > blobBytes)
        return bad(`${what}: shape [${shape.join(', ')}] needs more bytes than the ${blobBytes}-byte blob holds`);
    }
    if (!isCount(t.byteOffset) || t.byteOffset % ALIGN !== 0)
      bad(`${what}: byteOffset must be a non-negative multiple of ${ALIGN}, got ${JSON.stringify(t.byteOffset)}`);
    if (t.byteLength !== 4 * elements)
      bad(`${what}: byteLength must be 4 × ${elements} elements = ${4 * elements}, got ${JSON.stringify(t.byteLength)}`);
    const off = t.byteOffset as number;
    if (off + 4 * elements > blobBytes) bad(`${what}: bytes [${off}, ${off + 4 * elements}) lie outside the ${blobBytes}-byte blob`);
    if (elements > 0) spans.push([off, off + 4 * elements, name]);
  });
  spans.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < spans.length; i++) {
    const [, prevEnd, prev] = spans[i - 1]!;
    const [start, , name] = spans[i]!;
    if (start < prevEnd) bad(`tensors ${JSON.stringify(prev)} and ${JSON.stringify(name)} overlap`);
  }
  return h as unknown as CheckpointHeader;
}
