// Pre-tokenised token files: a flat array of uint16 little-endian token ids, no header. The
// vocabulary is the given vocabSize, else (max id in the file) + 1, found by one chunked scan at
// open. Sampling is the same as for byte text (see FileSamplingOptions).
import type { FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';
import { FileSource, type FileSamplingOptions, openChecked, readExactly, resolveSampling } from './file-source.js';
import { checkInt, ConfigError } from './validate.js';

const LITTLE_ENDIAN = endianness() === 'LE';
const SCAN_CHUNK_BYTES = 4 << 20;

export interface TokenFileOptions extends FileSamplingOptions {
  /**
   * Vocabulary size in [1, 65536]. Every id read must be below it (checked per sequence). Default:
   * max id in the file + 1 (one scan of the whole file at open).
   */
  vocabSize?: number;
}

/** Largest token id in a uint16 LE file of `bytes` bytes, reading 4 MiB at a time. */
export async function maxTokenId(fh: FileHandle, bytes: number, path: string): Promise<number> {
  let max = 0;
  const buf = new Uint8Array(Math.min(SCAN_CHUNK_BYTES, bytes));
  for (let pos = 0; pos < bytes; pos += buf.length) {
    const chunk = buf.subarray(0, Math.min(buf.length, bytes - pos));
    await readExactly(fh, chunk, pos, path);
    if (!LITTLE_ENDIAN) Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length).swap16();
    const ids = new Uint16Array(chunk.buffer, chunk.byteOffset, chunk.length / 2);
    for (let i = 0; i < ids.length; i++) if (ids[i]! > max) max = ids[i]!;
  }
  return max;
}

export class TokenFileSource extends FileSource {
  readonly type = 'tokens';

  /** Opens the file; `field` prefixes the names in error messages (the factory passes e.g. "data"). */
  static async open(opts: TokenFileOptions, field = 'tokens'): Promise<TokenFileSource> {
    const s = resolveSampling(opts, field);
    const given = opts.vocabSize === undefined ? undefined : checkInt(`${field}.vocabSize`, opts.vocabSize, 1, 65536);
    const [fh, [numTokens, vocabSize]] = await openChecked(s.path, field, async (fh, bytes): Promise<[number, number]> => {
      const name = JSON.stringify(s.path);
      if (bytes % 2 !== 0) {
        throw new ConfigError(
          `${field}.path`,
          `${field}.path: token file ${name} has ${bytes} bytes, an odd number (uint16 tokens need an even size)`,
        );
      }
      if (bytes / 2 < s.seqLen + 1) {
        throw new ConfigError(
          `${field}.path`,
          `${field}.path: token file ${name} has ${bytes / 2} tokens, but a sequence needs seqLen+1 = ${s.seqLen + 1}`,
        );
      }
      return [bytes / 2, given ?? (await maxTokenId(fh, bytes, s.path)) + 1];
    });
    return new TokenFileSource(fh, s, numTokens, 2, vocabSize, 'tokens');
  }

  protected decode(bytes: Uint8Array, out: Int32Array, tokenOffset: number): void {
    if (!LITTLE_ENDIAN) Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).swap16();
    out.set(new Uint16Array(bytes.buffer, bytes.byteOffset, out.length)); // native widening copy
    let max = 0;
    let at = 0;
    for (let i = 0; i < out.length; i++) {
      if (out[i]! > max) {
        max = out[i]!;
        at = i;
      }
    }
    if (max >= this.vocabSize) {
      throw new RangeError(`${this.path}: token ${max} at token offset ${tokenOffset + at} is not below vocabSize ${this.vocabSize}`);
    }
  }
}
