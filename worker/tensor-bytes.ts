// Tensors on the wire: little-endian float32, row-major bytes (never `repeated float`).
import { endianness } from 'node:os';
import type { Tensor, Tensor__Output } from '../proto/generated/lasp/v1/Tensor.js';

export interface NamedTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

const LITTLE_ENDIAN = endianness() === 'LE';

/** The bytes of a Float32Array (a view, no copy). Little-endian hosts only, like every tensor on the wire. */
export function f32Bytes(a: Float32Array): Uint8Array {
  if (!LITTLE_ENDIAN) throw new Error('lasp: tensors travel as little-endian float32; big-endian hosts are not supported');
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** A Float32Array over received bytes; copies only when the bytes are not 4-byte aligned. */
export function bytesF32(b: Uint8Array, what = 'message'): Float32Array {
  if (!LITTLE_ENDIAN) throw new Error('lasp: tensors travel as little-endian float32; big-endian hosts are not supported');
  if (b.byteLength % 4 !== 0) throw new RangeError(`${what}: ${b.byteLength} bytes is not a whole number of float32 values`);
  if (b.byteOffset % 4 === 0) return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  const copy = new Uint8Array(b.byteLength);
  copy.set(b);
  return new Float32Array(copy.buffer);
}

function elements(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function encodeTensor(t: NamedTensor): Tensor {
  const n = elements(t.shape);
  if (n !== t.data.length)
    throw new Error(`tensor ${t.name}: shape [${t.shape.join(', ')}] holds ${n} elements, data has ${t.data.length}`);
  if (LITTLE_ENDIAN) return { name: t.name, shape: t.shape, data: Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength) };
  const buf = Buffer.alloc(t.data.byteLength);
  t.data.forEach((x, i) => buf.writeFloatLE(x, 4 * i));
  return { name: t.name, shape: t.shape, data: buf };
}

/** Decodes into a fresh, aligned Float32Array (the received Buffer may be unaligned). */
export function decodeTensor(t: Tensor__Output): NamedTensor {
  const n = elements(t.shape);
  if (t.data.byteLength !== 4 * n)
    throw new Error(`tensor ${t.name}: shape [${t.shape.join(', ')}] needs ${4 * n} bytes, got ${t.data.byteLength}`);
  const data = new Float32Array(n);
  if (LITTLE_ENDIAN) new Uint8Array(data.buffer).set(t.data);
  else for (let i = 0; i < n; i++) data[i] = t.data.readFloatLE(4 * i);
  return { name: t.name, shape: [...t.shape], data };
}
