// Receiving side of one group: assembles incoming pieces into messages and hands them to the
// receives that wait for them. Messages may arrive before their receive is posted (a faster peer);
// those are buffered, with the total buffered bytes bounded. Every piece is validated before
// anything is allocated or copied; a bad piece throws a DeliverError (a gRPC status) and leaves
// the mailbox as it was.
import * as grpc from '@grpc/grpc-js';
import { pieceCountError, pieceSpan, type PieceHeader } from './message-pieces.js';
import { receiveBuffer } from './receive-buffer.js';

/** A refused piece: the gRPC status code and a message naming the field, the expected and the actual value. */
export class DeliverError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
    this.name = 'DeliverError';
  }
}

export interface MailboxOptions {
  /** Largest logical message accepted, in bytes. */
  maxMessageBytes: number;
  /** Bound on the bytes of messages that arrived before their receive was posted. */
  maxBufferedBytes: number;
  /** Longest accepted `op` string. Default 256. */
  maxOpLength?: number;
}

/** Identifies one logical message inside a group. */
export interface MessageKey {
  step: number;
  layer: number;
  op: string;
  from: number;
}

interface Waiter {
  expectedBytes: number | undefined;
  resolve: (data: Uint8Array) => void;
  reject: (err: Error) => void;
}

interface Incoming {
  totalBytes: number;
  pieces: number;
  received: Set<number>;
  /** The assembled bytes: allocated once at totalBytes (or the single piece itself). */
  buffer: Uint8Array | undefined;
  /** Bytes counted against maxBufferedBytes (0 when a receive was posted before the first piece). */
  counted: number;
}

interface Slot {
  waiter?: Waiter;
  message?: Incoming;
}

function keyString(k: MessageKey): string {
  return `${k.step}\u0000${k.layer}\u0000${k.op}\u0000${k.from}`;
}

export function describeKey(k: MessageKey): string {
  return `step=${k.step} layer=${k.layer} op=${JSON.stringify(k.op)} from rank ${k.from}`;
}

function invalid(message: string): DeliverError {
  return new DeliverError(grpc.status.INVALID_ARGUMENT, message);
}

export class Mailbox {
  private readonly slots = new Map<string, Slot>();
  private buffered = 0;
  private closedReason: string | undefined;
  private readonly maxOpLength: number;

  constructor(private readonly opts: MailboxOptions) {
    this.maxOpLength = opts.maxOpLength ?? 256;
  }

  /** Bytes currently held for messages whose receive is not posted yet. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /**
   * Accept one piece (header already checked for job, generation and sender rank by the endpoint).
   * Throws DeliverError when the piece is refused; nothing is changed in that case.
   */
  deliver(h: PieceHeader, data: Uint8Array): void {
    if (this.closedReason !== undefined) throw new DeliverError(grpc.status.FAILED_PRECONDITION, `group closed: ${this.closedReason}`);
    if (h.op.length === 0 || h.op.length > this.maxOpLength) {
      throw invalid(`op must have 1..${this.maxOpLength} characters, got ${h.op.length}`);
    }
    const countErr = pieceCountError(h.totalBytes, h.pieces);
    if (h.pieces === 0) throw invalid(`pieces must be >= 1, got 0`);
    if (h.piece >= h.pieces) throw invalid(`piece must be < pieces=${h.pieces}, got ${h.piece}`);
    if (h.totalBytes > this.opts.maxMessageBytes) {
      throw invalid(`total_bytes must be <= ${this.opts.maxMessageBytes} (max message size), got ${h.totalBytes}`);
    }
    if (h.offset + data.length > h.totalBytes) {
      throw invalid(`offset + data length must be <= total_bytes=${h.totalBytes}, got ${h.offset} + ${data.length}`);
    }
    if (countErr !== undefined) throw invalid(countErr);
    const span = pieceSpan(h.totalBytes, h.pieces, h.piece);
    if (h.offset !== span.offset || data.length !== span.length) {
      throw invalid(
        `piece ${h.piece} of ${h.pieces} (total_bytes=${h.totalBytes}) must cover offset ${span.offset} length ${span.length}, ` +
          `got offset ${h.offset} length ${data.length}`,
      );
    }
    const key: MessageKey = { step: h.step, layer: h.layer, op: h.op, from: h.fromRank };
    const ks = keyString(key);
    const slot = this.slots.get(ks);
    const msg = slot?.message;
    if (msg !== undefined) {
      if (msg.pieces !== h.pieces)
        throw invalid(`pieces must be ${msg.pieces} as in an earlier piece of ${describeKey(key)}, got ${h.pieces}`);
      if (msg.totalBytes !== h.totalBytes) {
        throw invalid(`total_bytes must be ${msg.totalBytes} as in an earlier piece of ${describeKey(key)}, got ${h.totalBytes}`);
      }
      if (msg.received.has(h.piece)) throw invalid(`duplicate piece ${h.piece} of ${h.pieces} for ${describeKey(key)}`);
    }
    const expected = slot?.waiter?.expectedBytes;
    if (expected !== undefined && expected !== h.totalBytes) {
      const err = invalid(`total_bytes must be ${expected} (the size the receiver expects for ${describeKey(key)}), got ${h.totalBytes}`);
      this.failSlot(ks, err);
      throw err;
    }
    let incoming = msg;
    if (incoming === undefined) {
      const counted = slot?.waiter === undefined ? h.totalBytes : 0;
      if (this.buffered + counted > this.opts.maxBufferedBytes) {
        throw new DeliverError(
          grpc.status.RESOURCE_EXHAUSTED,
          `receive buffer full: ${this.buffered} bytes held for messages not yet received, ${h.totalBytes} more would exceed the bound of ${this.opts.maxBufferedBytes}`,
        );
      }
      incoming = { totalBytes: h.totalBytes, pieces: h.pieces, received: new Set(), buffer: undefined, counted };
      this.buffered += counted;
      if (slot === undefined) this.slots.set(ks, { message: incoming });
      else slot.message = incoming;
    }
    // Validated: apply.
    if (h.pieces === 1) {
      incoming.buffer = new Uint8Array(data.buffer, data.byteOffset, data.byteLength); // a plain view, not a Buffer
    } else {
      if (incoming.buffer === undefined) {
        incoming.buffer = receiveBuffer(h.totalBytes);
      }
      incoming.buffer.set(data, h.offset);
    }
    incoming.received.add(h.piece);
    if (incoming.received.size === incoming.pieces) {
      const s = this.slots.get(ks)!;
      if (s.waiter !== undefined) {
        this.take(ks, s);
        s.waiter.resolve(incoming.buffer ?? new Uint8Array(0));
      }
    }
  }

  /**
   * Wait for the message `key`. `expectedBytes`, when given, is checked against the sender's
   * total_bytes. Returns the promise and a cancel function (drops the wait and any partial message).
   */
  expect(key: MessageKey, expectedBytes?: number): { promise: Promise<Uint8Array>; cancel: () => void } {
    const ks = keyString(key);
    let cancel = () => {};
    const promise = new Promise<Uint8Array>((resolve, reject) => {
      if (this.closedReason !== undefined) return reject(new Error(`group closed: ${this.closedReason}`));
      let slot = this.slots.get(ks);
      if (slot?.waiter !== undefined) return reject(new Error(`a receive for ${describeKey(key)} is already pending`));
      const msg = slot?.message;
      if (msg !== undefined && expectedBytes !== undefined && msg.totalBytes !== expectedBytes) {
        this.take(ks, slot!);
        return reject(new Error(`rank ${key.from} sent ${msg.totalBytes} bytes for ${describeKey(key)}, expected ${expectedBytes}`));
      }
      if (msg !== undefined && msg.received.size === msg.pieces) {
        this.take(ks, slot!);
        return resolve(msg.buffer ?? new Uint8Array(0));
      }
      const waiter: Waiter = { expectedBytes, resolve, reject };
      if (slot === undefined) {
        slot = { waiter };
        this.slots.set(ks, slot);
      } else slot.waiter = waiter;
      cancel = () => {
        const s = this.slots.get(ks);
        if (s?.waiter === waiter) this.take(ks, s);
      };
    });
    return { promise, cancel: () => cancel() };
  }

  /** Reject every pending receive with `reason`, drop every buffered message, refuse everything after. */
  close(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    const err = new Error(reason);
    for (const [, slot] of this.slots) slot.waiter?.reject(err);
    this.slots.clear();
    this.buffered = 0;
  }

  private take(ks: string, slot: Slot): void {
    this.slots.delete(ks);
    if (slot.message !== undefined) this.buffered -= slot.message.counted;
  }

  private failSlot(ks: string, err: Error): void {
    const slot = this.slots.get(ks);
    if (slot === undefined) return;
    this.take(ks, slot);
    slot.waiter?.reject(err);
  }
}
