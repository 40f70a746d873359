// Sending one logical message: split into pieces (message-pieces.ts), several pieces in flight at
// once (on the peer's Stream call, or as unary Deliver calls with the op's deadline; peer-clients.ts). A piece refused with FAILED_PRECONDITION is
// retried until the deadline (the peer may not have joined this generation yet); any other error
// fails the send at once (UNAVAILABLE: the peer is down).
import * as grpc from '@grpc/grpc-js';
import { pieceCount, pieceSpan } from './message-pieces.js';
import type { PeerClients } from './peer-clients.js';
import type { PeerMessage } from '../../proto/generated/lasp/v1/PeerMessage.js';

export interface SendTarget {
  clients: PeerClients;
  address: string;
  /** Rank of the receiver, for error messages. */
  toRank: number;
}

export interface SendOptions {
  /** Largest piece in bytes. */
  pieceBytes: number;
  /** Pieces of one message in flight at once. */
  maxInFlight: number;
  /** Absolute deadline (ms since the epoch) of every call. */
  deadline: number;
}

/** Header fields of the message; piece, pieces, total_bytes, offset and data are filled in per piece. */
export type MessageHeader = Required<Pick<PeerMessage, 'jobId' | 'generation' | 'fromRank' | 'step' | 'layer' | 'op'>>;

function statusName(code: number): string {
  return grpc.status[code] ?? String(code);
}

/**
 * Send `data` as one message. Returns the completion promise and a cancel function (cancels the
 * calls in flight and issues no more).
 */
export function sendMessage(
  target: SendTarget,
  header: MessageHeader,
  data: Uint8Array,
  opts: SendOptions,
): { promise: Promise<void>; cancel: () => void } {
  const total = data.byteLength;
  const pieces = pieceCount(total, opts.pieceBytes);
  const inFlight = new Set<() => void>();
  const timers = new Set<NodeJS.Timeout>();
  let cancelled = false;
  const cancel = () => {
    cancelled = true;
    for (const c of inFlight) c();
    inFlight.clear();
    for (const t of timers) clearTimeout(t);
    timers.clear();
  };

  const promise = new Promise<void>((resolve, reject) => {
    let next = 0;
    let done = 0;
    let failed = false;
    const fail = (err: Error) => {
      if (failed) return;
      failed = true;
      cancel();
      reject(err);
    };
    const sendPiece = (piece: number, attempt: number) => {
      if (cancelled) return;
      const span = pieceSpan(total, pieces, piece);
      const msg: PeerMessage = {
        ...header,
        piece,
        pieces,
        totalBytes: total,
        offset: span.offset,
        data: data.subarray(span.offset, span.offset + span.length),
      };
      let settled = false;
      const call = target.clients.deliver(target.address, msg, opts.deadline, (err) => {
        settled = true;
        inFlight.delete(call);
        if (cancelled) return;
        if (err) {
          const retryable = err.code === grpc.status.FAILED_PRECONDITION && Date.now() < opts.deadline - 5;
          if (retryable) {
            const delay = Math.min(200, 5 * 2 ** Math.min(attempt, 6), Math.max(0, opts.deadline - Date.now() - 5));
            const t = setTimeout(() => {
              timers.delete(t);
              sendPiece(piece, attempt + 1);
            }, delay);
            timers.add(t);
            return;
          }
          fail(
            new Error(
              `send to rank ${target.toRank} (${target.address}) failed: op=${JSON.stringify(header.op)} step=${header.step} ` +
                `layer=${header.layer} piece ${piece + 1}/${pieces}: ${statusName(err.code)}: ${err.details}`,
            ),
          );
          return;
        }
        done++;
        if (done === pieces) resolve();
        else if (next < pieces) sendPiece(next++, 0);
      });
      if (!settled) inFlight.add(call);
    };
    while (next < pieces && next < opts.maxInFlight) sendPiece(next++, 0);
  });
  return { promise, cancel };
}
