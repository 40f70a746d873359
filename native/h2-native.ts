// Typed facade over the addon's HTTP/2 connection classes (native/src/h2_conn.h, h2_addon.cc): the
// socket work of the 'native' peer transport on threads of the addon. Events arrive on the event
// loop, one per HEADERS, gRPC message, stream end or reset, and connection close; bytes lent to
// H2Client.send stay referenced until the addon's writer thread is done with them.
import { addon, type H2ClientHandle, type H2ListenerHandle, type H2NativeOptions } from './binding.js';

export type { H2NativeOptions };

/** What the addon reports (the `kind` numbers of h2_conn.h Event::Kind). */
export type H2Event =
  | { kind: 'established'; connId: number }
  | { kind: 'headers'; connId: number; streamId: number; fields: Map<string, string>; endStream: boolean }
  | { kind: 'message'; connId: number; streamId: number; body: Buffer }
  | { kind: 'stream-end'; connId: number; streamId: number; insideMessage: boolean }
  | { kind: 'reset'; connId: number; streamId: number; code: number }
  | { kind: 'stream-error'; connId: number; streamId: number; reason: string }
  | { kind: 'closed'; connId: number; reason: string; goawayCode: number };

function toEvent(kind: number, connId: number, streamId: number, a: unknown, b: unknown): H2Event {
  switch (kind) {
    case 0:
      return { kind: 'established', connId };
    case 1: {
      const flat = a as string[];
      const fields = new Map<string, string>();
      for (let i = 0; i + 1 < flat.length; i += 2) fields.set(flat[i]!, flat[i + 1]!);
      return { kind: 'headers', connId, streamId, fields, endStream: b === true };
    }
    case 2:
      return { kind: 'message', connId, streamId, body: a as Buffer };
    case 3:
      return { kind: 'stream-end', connId, streamId, insideMessage: a === true };
    case 4:
      return { kind: 'reset', connId, streamId, code: a as number };
    case 5:
      return { kind: 'stream-error', connId, streamId, reason: a as string };
    default:
      return { kind: 'closed', connId, reason: a as string, goawayCode: b as number };
  }
}

function flatten(fields: readonly [string, string][]): string[] {
  return fields.flat();
}

/** One outgoing HTTP/2 connection (connects in the background; 'established' when the peer's SETTINGS arrive). */
export class H2NativeClient {
  private readonly h: H2ClientHandle;

  constructor(host: string, port: number, opts: H2NativeOptions, onEvent: (e: H2Event) => void) {
    const A = addon().H2Client;
    this.h = new A(host, port, opts, (k, c, s, a, b) => onEvent(toEvent(k, c, s, a, b)));
  }

  /** HEADERS opening stream `streamId` (odd). False when the connection is over. */
  request(streamId: number, fields: [string, string][]): boolean {
    return this.h.request(streamId, flatten(fields), false);
  }

  /**
   * One DATA payload `head` + `data`. 'written': every byte is in the socket already, the arrays may
   * change; 'queued': they must not change until the peer has answered; 'over': the connection is
   * over (its 'closed' event follows or came).
   */
  send(streamId: number, head: Uint8Array, data: Uint8Array | undefined): 'written' | 'queued' | 'over' {
    const r = this.h.send(streamId, head, data, false);
    return r === 2 ? 'written' : r === 1 ? 'queued' : 'over';
  }

  reset(streamId: number, code: number): boolean {
    return this.h.reset(streamId, code);
  }

  /** Stops the connection's threads and closes the socket (idempotent); no event follows. */
  close(): void {
    this.h.close();
  }
}

/** A listening socket; its connections are numbered (connId) in the events. */
export class H2NativeListener {
  private readonly h: H2ListenerHandle;

  /** Binds `host`, port 0 (a free one); throws when it cannot. */
  constructor(host: string, opts: H2NativeOptions, onEvent: (e: H2Event) => void) {
    const L = addon().H2Listener;
    this.h = new L(host, opts, (k, c, s, a, b) => onEvent(toEvent(k, c, s, a, b)));
  }

  get port(): number {
    return this.h.port;
  }

  respond(connId: number, streamId: number, fields: readonly [string, string][], endStream: boolean): boolean {
    return this.h.respond(connId, streamId, flatten(fields), endStream);
  }

  /** DATA on a stream (the bytes are copied). */
  send(connId: number, streamId: number, bytes: Uint8Array): boolean {
    return this.h.send(connId, streamId, bytes);
  }

  reset(connId: number, streamId: number, code: number): boolean {
    return this.h.reset(connId, streamId, code);
  }

  /** Closes one connection (if still open) and forgets it. */
  release(connId: number): void {
    this.h.release(connId);
  }

  /** Stops accepting and closes every connection; no event follows. */
  close(): void {
    this.h.close();
  }
}
