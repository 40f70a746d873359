// Elementwise arithmetic of the reductions: the native addon's vectorised add, off the event loop.
import { kernels } from '../../native/kernels.js';

/** dst[i] += src[i] for every i (float32 rounding after each add). Lengths must match. */
export async function addInto(dst: Float32Array, src: Float32Array): Promise<void> {
  if (dst.length !== src.length) throw new RangeError(`addInto: length mismatch, dst has ${dst.length} elements, src has ${src.length}`);
  await kernels.addInto(dst, src);
}

/** A Float32Array over the bytes of `u8` (copied when the bytes are not 4-byte aligned). */
export function asFloat32(u8: Uint8Array): Float32Array {
  if (u8.byteLength % 4 !== 0) throw new RangeError(`expected a whole number of float32 values, got ${u8.byteLength} bytes`);
  if (u8.byteOffset % 4 === 0) return new Float32Array(u8.buffer, u8.byteOffset, u8.byteLength / 4);
  const copy = new Uint8Array(u8.byteLength); // (Buffer#slice would be a view, not a copy)
  copy.set(u8);
  return new Float32Array(copy.buffer);
}

/** The bytes of `f` (a view, no copy). */
export function bytesOf(f: Float32Array): Uint8Array {
  return new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
}
