// Byte-level text: any file, one token per byte (vocabulary 256). Sequence i is T+1 consecutive
// bytes at a seeded random or a sequential offset (see FileSamplingOptions); only the bytes a
// sequence (or a rank's window of it) needs are read, so files may be larger than memory.
import { FileSource, type FileSamplingOptions, openChecked, resolveSampling } from './file-source.js';
import { ConfigError } from './validate.js';

export type ByteTextOptions = FileSamplingOptions;

export class ByteTextSource extends FileSource {
  readonly type = 'bytes';

  /** Opens the file; `field` prefixes the names in error messages (the factory passes e.g. "data"). */
  static async open(opts: ByteTextOptions, field = 'bytes'): Promise<ByteTextSource> {
    const s = resolveSampling(opts, field);
    const [fh, size] = await openChecked(s.path, field, async (_fh, bytes) => {
      if (bytes < s.seqLen + 1) {
        throw new ConfigError(
          `${field}.path`,
          `${field}.path: ${JSON.stringify(s.path)} has ${bytes} bytes, but a sequence needs seqLen+1 = ${s.seqLen + 1}`,
        );
      }
      return bytes;
    });
    return new ByteTextSource(fh, s, size, 1, 256, 'bytes');
  }

  protected decode(bytes: Uint8Array, out: Int32Array): void {
    out.set(bytes); // native widening copy
  }
}
