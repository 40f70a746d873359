// Float32 tensors on the wire: little-endian bytes, row-major (DESIGN.md §1). Several tensors
// of known lengths travel as one message, back to back.
import { output } from '../../native/kernels.js';
import { bytesF32, f32Bytes } from '../tensor-bytes.js';

export { bytesF32, f32Bytes };

/** The tensors one after another, in one (pooled) array. */
export function concatF32(parts: Float32Array[]): Float32Array {
  const out = output(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Concatenates tensors into one message. */
export function pack(parts: Float32Array[]): Uint8Array {
  return f32Bytes(concatF32(parts));
}

/** Splits a message into tensors of the given lengths; the total must match exactly. */
export function unpack(b: Uint8Array, lengths: number[], what = 'message'): Float32Array[] {
  const all = bytesF32(b, what);
  const want = lengths.reduce((s, n) => s + n, 0);
  if (all.length !== want) throw new Error(`${what}: expected ${want} float32 values (${lengths.join('+')}), got ${all.length}`);
  const out: Float32Array[] = [];
  let o = 0;
  for (const n of lengths) {
    out.push(all.subarray(o, o + n));
    o += n;
  }
  return out;
}
