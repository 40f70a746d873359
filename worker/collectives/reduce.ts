// Elementwise arithmetic of the reductions: the native addon's vectorised add, off the event loop.
import { kernels } from '../../native/kernels.js';
import { bytesF32, f32Bytes } from '../tensor-bytes.js';

/** dst[i] += src[i] for every i (float32 rounding after each add). Lengths must match. */
export async function addInto(dst: Float32Array, src: Float32Array): Promise<void> {
  if (dst.length !== src.length) throw new RangeError(`addInto: length mismatch, dst has ${dst.length} elements, src has ${src.length}`);
  await kernels.addInto(dst, src);
}

/** A Float32Array over the bytes of `u8` (copied when the bytes are not 4-byte aligned). */
export const asFloat32 = (u8: Uint8Array): Float32Array => bytesF32(u8, 'reduction operand');

/** The bytes of `f` (a view, no copy). */
export const bytesOf = f32Bytes;
