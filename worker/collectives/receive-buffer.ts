// Where received messages land. A message that spans several socket reads is copied into one
// buffer of its size; freshly mapped memory costs ~3 µs per KiB to first touch on the VMs this
// runs on (native/src/buffer_pool.h), which made that copy most of a 1 MiB AllGather (2.3 ms of
// ~8 ms). The buffers come from the addon's pool instead: the collectives of a training step
// repeat the same sizes, so after the first steps every receive lands on warm pages. A buffer is
// handed to the receiver as is (no further copy) and returns to the pool when collected.
import { pooledBytes } from '../../native/kernels.js';

/** A buffer of `n` bytes for an incoming message (contents unspecified). */
export function receiveBuffer(n: number): Uint8Array {
  return pooledBytes(n);
}
