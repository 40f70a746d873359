// How one logical message is cut into pieces (one Deliver call each) and where every piece lies.
// The layout is canonical — piece i of n covers [i·s, min((i+1)·s, total)) with s = ceil(total / n)
// — so a receiver can check each piece's offset and length exactly, whatever piece size the sender
// was configured with, and a complete set of distinct piece indices covers the message exactly.

/** Every field of a PeerMessage except the payload, as numbers (proto-loader `longs: Number`). */
export interface PieceHeader {
  jobId: string;
  generation: number;
  fromRank: number;
  step: number;
  layer: number;
  op: string;
  piece: number;
  pieces: number;
  totalBytes: number;
  offset: number;
}

/** Number of pieces for a message of `totalBytes` with pieces of at most `pieceBytes` (an empty message is one empty piece). */
export function pieceCount(totalBytes: number, pieceBytes: number): number {
  return totalBytes === 0 ? 1 : Math.ceil(totalBytes / pieceBytes);
}

/** Byte range of piece `piece` of `pieces` in a message of `totalBytes` (canonical layout). */
export function pieceSpan(totalBytes: number, pieces: number, piece: number): { offset: number; length: number } {
  if (totalBytes === 0) return { offset: 0, length: 0 };
  const size = Math.ceil(totalBytes / pieces);
  const offset = piece * size;
  return { offset, length: Math.max(0, Math.min(size, totalBytes - offset)) };
}

/** Why `pieces` cannot describe a message of `totalBytes` (some piece would be empty), or undefined when it can. */
export function pieceCountError(totalBytes: number, pieces: number): string | undefined {
  if (!Number.isSafeInteger(pieces) || pieces < 1) return `pieces must be >= 1, got ${pieces}`;
  if (totalBytes === 0) return pieces === 1 ? undefined : `pieces must be 1 for an empty message, got ${pieces}`;
  if (pieceSpan(totalBytes, pieces, pieces - 1).length === 0) {
    return `pieces=${pieces} is inconsistent with total_bytes=${totalBytes} (the last piece would be empty)`;
  }
  return undefined;
}
