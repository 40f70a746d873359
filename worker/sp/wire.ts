// Float32 tensors on the wire: little-endian bytes, row-major (DESIGN.md §1). Several tensors
// of known lengths travel as one message, back to back.
import { endianness } from 'node:os';

if (endianness() !== 'LE') throw new Error('lasp: tensors travel as little-endian float32; big-endian hosts are not supported');

/** The bytes of a Float32Array (a view, no copy). */
export function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** A Float32Array over received bytes; copies only when the bytes are not 4-byte aligned. */
export function bytesF32(b: Uint8Array, what = 'message'): Float32Array {
  if (b.byteLength % 4 !== 0) throw new Error(`${what}: ${b.byteLength} bytes is not a whole number of float32 values`);
  if (b.byteOffset % 4 === 0) return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  return new Float32Array(b.slice().buffer);
}

/** Concatenates tensors into one message. */
export function pack(parts: Float32Array[]): Uint8Array {
  const n = parts.reduce((s, p) => s + p.length, 0);
  const out = new Float32Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return f32Bytes(out);
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
