// The peer side of one worker process: serves Stream and Deliver (incoming pieces of collective
// messages) on the worker's gRPC server, and owns the worker's current group (joinGroup → Communicator).
// Every incoming piece is checked — token, job, generation, sender rank, piece layout, sizes —
// before anything is allocated or applied; a bad piece is answered with a status and changes
// nothing, so the worker keeps serving.
import * as grpc from '@grpc/grpc-js';
import { timingSafeEqual } from 'node:crypto';
import { clampDetails, quoteUntrusted } from '../coordinator/status-details.js';
import { protos } from '../proto/load.js';
import type { PeerHandlers } from '../proto/generated/lasp/v1/Peer.js';
import type { PeerMessage__Output } from '../proto/generated/lasp/v1/PeerMessage.js';
import type { DeliverReply } from '../proto/generated/lasp/v1/DeliverReply.js';
import type { Communicator, GroupAssignment } from './collectives/communicator.js';
import { DEFAULT_COLLECTIVE_OPTIONS, GrpcCommunicator, type CollectiveOptions } from './collectives/grpc-communicator.js';
import { DeliverError, Mailbox } from './collectives/mailbox.js';
import { DEFAULT_STREAM_TRANSPORT, movesToAnnouncedListener, PeerClients, type StreamTransport } from './collectives/peer-clients.js';
import { tuneIncomingSession, tuneServerSettings, tuneSession } from './collectives/session-tuning.js';
import { installStreamFastPath, PEER_STREAM_PATH, servePeerStream } from './collectives/h2-peer-server.js';
import { RawPeerServer } from './collectives/raw-peer-server.js';
import { NativePeerServer } from './collectives/native-peer-server.js';
import type { WirePeerMessage } from './collectives/peer-wire.js';
import type { PieceOrigin } from './collectives/native-peer-stream.js';
import type { PieceStatus } from './collectives/peer-stream.js';

export interface PeerEndpointOptions {
  /** Largest logical message accepted (and sent), in bytes. Default 1 GiB. */
  maxMessageBytes?: number;
  /** Largest piece (one Deliver call) sent, in bytes. Default 1 MiB. The server's 'grpc.max_receive_message_length' must allow it (see peerServerOptions). */
  pieceBytes?: number;
  /** Deadline of every collective op, in ms. Default 30000. */
  timeoutMs?: number;
  /** Cluster token: incoming Deliver calls must carry metadata 'authorization: Bearer <token>'; sent on outgoing calls. Default: none (no check). */
  token?: string;
  /** Bound on bytes buffered for messages whose receive is not posted yet. Default 2 × maxMessageBytes. */
  maxBufferedBytes?: number;
  /** Pieces of one message in flight at once. Default 4. */
  maxInFlight?: number;
  /** AllGather blocks up to this size go directly to every peer, larger ones around the ring. Default 256 KiB. */
  gatherDirectMaxBytes?: number;
  /** AllReduce buffers up to this size use AllGather + local sum, larger ones the ring. Default 64 KiB. */
  reduceDirectMaxBytes?: number;
  /** Channel options of the outgoing peer channels. Default PEER_CHANNEL_OPTIONS (peer-clients.ts). */
  channelOptions?: grpc.ChannelOptions;
  /** Raise the HTTP/2 receive windows and frame size of incoming peer connections (session-tuning.ts). Default true. */
  tuneSessions?: boolean;
  /** Send pieces on one long-lived Stream call per peer (default true); false: one unary Deliver call per piece. */
  useStreams?: boolean;
  /**
   * What carries the Stream calls, both directions. Default 'native' (DEFAULT_STREAM_TRANSPORT):
   * the call starts on http2, the endpoint serves Stream also on a listener of the addon whose
   * threads do the socket work (native-peer-server.ts), announced in the http2 response headers, and
   * a 'native' client moves to the announced listener (native-peer-stream.ts). 'raw' is the same with
   * the HTTP/2 framing in JavaScript (raw-peer-server.ts, raw-peer-stream.ts); 'raw' and 'native'
   * peers use each other's listeners. 'http2' frames and encodes pieces by hand on node:http2
   * (peer-wire.ts: no copies of the payload), 'grpc-js' uses the generic stack. All speak the same
   * protocol, so peers with different settings interoperate. With `tls`, 'raw' and 'native' behave
   * as 'http2' (the second listener is plaintext only).
   */
  streamTransport?: StreamTransport;
  /**
   * TLS material of the outgoing Stream calls on the 'http2' transport (this worker's certificate
   * and key, presented as client certificate, and the CA that peers' certificates must chain to;
   * cluster/tls.ts TlsConfig fits). Default none: plaintext. The grpc-js channels take theirs
   * through `channelOptions` (cluster/tls.ts withChannelCredentials).
   */
  tls?: { cert: Buffer; key: Buffer; ca?: Buffer };
}

/** The piece header and payload as the endpoint checks them (grpc-js decoded, or peer-wire.ts). */
type IncomingPiece = Pick<
  PeerMessage__Output,
  'jobId' | 'generation' | 'fromRank' | 'step' | 'layer' | 'op' | 'piece' | 'pieces' | 'totalBytes' | 'offset'
> & { data: Uint8Array | null };

/** gRPC server options a worker's server needs for pieces of `pieceBytes` (default 1 MiB). */
export function peerServerOptions(pieceBytes: number = DEFAULT_COLLECTIVE_OPTIONS.pieceBytes): grpc.ServerOptions {
  return {
    'grpc.max_receive_message_length': Math.max(4 << 20, pieceBytes + (64 << 10)),
    'grpc.default_compression_algorithm': 0,
  };
}

interface Group {
  assignment: GroupAssignment;
  mailbox: Mailbox;
  comm: GrpcCommunicator;
}

/** The gRPC status a refused piece is answered with. */
function statusOf(err: unknown): { code: grpc.status; details: string } {
  if (err instanceof DeliverError) return { code: err.code, details: clampDetails(err.message) };
  return { code: grpc.status.INTERNAL, details: clampDetails(err instanceof Error ? err.message : String(err)) };
}

function fail(code: grpc.status, message: string): never {
  throw new DeliverError(code, message);
}

function positive(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`${name} must be a positive integer, got ${v}`);
  return v;
}

export class PeerEndpoint {
  private group: Group | undefined;
  private lastEnded: string | undefined;
  private readonly clients: PeerClients;
  private readonly opts: CollectiveOptions;
  private readonly maxBufferedBytes: number;
  private readonly expectedAuth: Buffer | undefined;
  private readonly tuneSessions: boolean;
  private readonly streamTransport: StreamTransport;
  /** streamTransport 'raw' or 'native': the listener per local address (started on the first call that comes in on it). */
  private readonly rawServers = new Map<string, Promise<RawPeerServer | NativePeerServer | undefined>>();
  private readonly rawPorts = new Map<string, number>();
  private rawClosed = false;
  /** streamTransport 'raw' or 'native' without TLS. */
  private readonly rawEnabled: boolean;

  constructor(opts: PeerEndpointOptions = {}) {
    const d = DEFAULT_COLLECTIVE_OPTIONS;
    this.opts = {
      pieceBytes: positive('pieceBytes', opts.pieceBytes, d.pieceBytes),
      maxInFlight: positive('maxInFlight', opts.maxInFlight, d.maxInFlight),
      timeoutMs: positive('timeoutMs', opts.timeoutMs, d.timeoutMs),
      maxMessageBytes: positive('maxMessageBytes', opts.maxMessageBytes, d.maxMessageBytes),
      gatherDirectMaxBytes: opts.gatherDirectMaxBytes ?? d.gatherDirectMaxBytes,
      reduceDirectMaxBytes: opts.reduceDirectMaxBytes ?? d.reduceDirectMaxBytes,
    };
    this.maxBufferedBytes = positive('maxBufferedBytes', opts.maxBufferedBytes, 2 * this.opts.maxMessageBytes);
    this.expectedAuth = opts.token === undefined ? undefined : Buffer.from(`Bearer ${opts.token}`);
    this.streamTransport = opts.streamTransport ?? DEFAULT_STREAM_TRANSPORT;
    this.clients = new PeerClients(
      opts.token,
      opts.channelOptions,
      opts.useStreams ?? true,
      this.streamTransport,
      opts.tls,
      (address, piece, s) => this.onLateFailure(address, piece, s),
    );
    this.tuneSessions = opts.tuneSessions ?? true;
    this.rawEnabled = movesToAnnouncedListener(this.streamTransport, opts.tls !== undefined);
  }

  /** The resolved collective options (defaults filled in). */
  get options(): Readonly<CollectiveOptions> {
    return this.opts;
  }

  /**
   * Register the Peer service on the worker's gRPC server. Call it before the server is bound: the
   * HTTP/2 settings of its connections are raised then (session-tuning.ts).
   */
  addTo(server: grpc.Server): void {
    if (this.tuneSessions) tuneServerSettings(server);
    if (this.streamTransport !== 'grpc-js') {
      installStreamFastPath(server, PEER_STREAM_PATH, (stream, headers) =>
        servePeerStream(stream, headers, {
          maxMessageBytes: Math.max(4 << 20, this.opts.pieceBytes + (64 << 10)),
          checkAuth: (authorization) => this.checkAuthorization(authorization),
          deliver: (m) => this.deliver(m),
          statusOf,
          onSession: (session) => {
            if (this.tuneSessions && session !== undefined) tuneSession(session);
          },
          ...(this.rawEnabled ? { rawPort: (localAddress: string | undefined) => this.rawPortFor(localAddress) } : {}),
        }),
      );
    }
    const handlers: PeerHandlers = {
      Deliver: (call, callback) => {
        if (this.tuneSessions) tuneIncomingSession(call);
        try {
          this.checkToken(call.metadata);
          this.deliver(call.request);
          callback(null, {} satisfies DeliverReply);
        } catch (err) {
          const s = statusOf(err);
          callback({ code: s.code, details: s.details });
        }
      },
      Stream: (call) => {
        if (this.tuneSessions) tuneIncomingSession(call);
        call.on('error', () => {}); // the sender went away; nothing is pending here
        try {
          this.checkToken(call.metadata);
        } catch (err) {
          call.emit('error', statusOf(err));
          return;
        }
        call.on('data', (m: PeerMessage__Output) => {
          let reply: DeliverReply;
          try {
            this.deliver(m);
            reply = { seq: m.seq, code: grpc.status.OK };
          } catch (err) {
            reply = { seq: m.seq, ...statusOf(err) };
          }
          call.write(reply);
        });
        call.on('end', () => call.end());
      },
    };
    server.addService(protos().peer.lasp.v1.Peer.service, handlers);
  }

  /** Leave the current group (aborting it) and join `a`'s. */
  joinGroup(a: GroupAssignment): Communicator {
    if (!Number.isInteger(a.world) || a.world < 1) throw new RangeError(`world must be a positive integer, got ${a.world}`);
    if (!Number.isInteger(a.rank) || a.rank < 0 || a.rank >= a.world)
      throw new RangeError(`rank must be in [0, ${a.world}), got ${a.rank}`);
    if (a.peers.length !== a.world) throw new RangeError(`peers must list world=${a.world} addresses, got ${a.peers.length}`);
    if (!Number.isSafeInteger(a.generation) || a.generation < 0)
      throw new RangeError(`generation must be a non-negative integer, got ${a.generation}`);
    if (this.group !== undefined) this.endGroup(`replaced by job ${a.jobId} generation ${a.generation}`);
    const mailbox = new Mailbox({ maxMessageBytes: this.opts.maxMessageBytes, maxBufferedBytes: this.maxBufferedBytes });
    const comm = new GrpcCommunicator({ ...a, peers: [...a.peers] }, mailbox, this.clients, this.opts);
    this.group = { assignment: { ...a, peers: [...a.peers] }, mailbox, comm };
    return comm;
  }

  /** Abort the group if it is (jobId, generation): its pending and future ops fail with `reason`. Returns whether it was. */
  abortGroup(jobId: string, generation: number, reason: string): boolean {
    const g = this.group;
    if (g === undefined || g.assignment.jobId !== jobId || g.assignment.generation !== generation) return false;
    this.endGroup(reason);
    return true;
  }

  /** Leave the current group (its pending ops fail). */
  leaveGroup(): void {
    if (this.group !== undefined) this.endGroup('left the group');
  }

  /** Leave the group and close the peer channels (and the raw listeners). */
  close(): void {
    this.leaveGroup();
    this.clients.close();
    this.rawClosed = true;
    for (const p of this.rawServers.values()) void p.then((s) => s?.close());
    this.rawServers.clear();
    this.rawPorts.clear();
  }

  /**
   * The port of the raw listener on `localAddress` (the address an http2 Stream call came in on, so
   * the caller can reach it there), started on first use; a promise while it starts.
   */
  private rawPortFor(localAddress: string | undefined): number | Promise<number | undefined> | undefined {
    if (this.rawClosed || localAddress === undefined || localAddress === '') return undefined;
    const host = localAddress.startsWith('::ffff:') ? localAddress.slice(7) : localAddress;
    const port = this.rawPorts.get(host);
    if (port !== undefined) return port;
    let p = this.rawServers.get(host);
    if (p === undefined) {
      const deps = {
        maxMessageBytes: Math.max(4 << 20, this.opts.pieceBytes + (64 << 10)),
        checkAuth: (authorization: string | undefined) => this.checkAuthorization(authorization),
        deliver: (m: WirePeerMessage) => this.deliver(m),
        statusOf,
      };
      p = (this.streamTransport === 'native' ? NativePeerServer.listen(host, deps) : RawPeerServer.listen(host, deps)).then(
        (s) => {
          if (this.rawClosed) {
            s.close();
            return undefined;
          }
          this.rawPorts.set(host, s.port);
          return s;
        },
        () => undefined, // e.g. the address cannot be bound: stay on http2
      );
      this.rawServers.set(host, p);
    }
    return p.then((s) => s?.port);
  }

  /**
   * A piece to `address` that completed when written (NativePeerStream.send) was refused later, or
   * its call ended unanswered: the receiver lacks it, so the op that sent it did not really succeed.
   * The group of that piece is aborted (its pending and later ops fail at once, as after any failed
   * op); nothing happens when that group is no longer current.
   */
  private onLateFailure(address: string, piece: PieceOrigin, s: PieceStatus): void {
    const g = this.group;
    if (g === undefined || g.assignment.jobId !== piece.jobId || g.assignment.generation !== piece.generation) return;
    const rank = g.assignment.peers.indexOf(address);
    g.comm.abort(
      `a piece sent to ${rank >= 0 ? `rank ${rank} (${address})` : address} (op ${JSON.stringify(piece.op)} step ${piece.step} layer ${piece.layer} piece ${piece.piece + 1}/${piece.pieces}) ` +
        `completed when written but then failed: ${grpc.status[s.code] ?? s.code}: ${s.details}`,
    );
  }

  private endGroup(reason: string): void {
    const g = this.group!;
    this.group = undefined;
    this.lastEnded = `job ${g.assignment.jobId} generation ${g.assignment.generation} ended: ${reason}`;
    g.comm.abort(reason);
  }

  private checkToken(md: grpc.Metadata): void {
    const got = md.get('authorization')[0];
    this.checkAuthorization(got === undefined ? undefined : String(got));
  }

  private checkAuthorization(got: string | undefined): void {
    if (this.expectedAuth === undefined) return;
    if (got === undefined) fail(grpc.status.UNAUTHENTICATED, 'missing authorization metadata (expected "Bearer <cluster token>")');
    const g = Buffer.from(got);
    if (g.length !== this.expectedAuth.length || !timingSafeEqual(g, this.expectedAuth))
      fail(grpc.status.UNAUTHENTICATED, 'wrong cluster token');
  }

  /** Check and apply one piece (the token was checked by the caller). Throws DeliverError. */
  private deliver(m: IncomingPiece): void {
    const g = this.group;
    if (g === undefined) {
      fail(
        grpc.status.FAILED_PRECONDITION,
        `no current group (got job ${quoteUntrusted(m.jobId)} generation ${m.generation})${this.lastEnded ? `; ${this.lastEnded}` : ''}`,
      );
    }
    const a = g.assignment;
    if (m.jobId !== a.jobId)
      fail(grpc.status.FAILED_PRECONDITION, `job_id must be ${JSON.stringify(a.jobId)} (current group), got ${quoteUntrusted(m.jobId)}`);
    if (m.generation !== a.generation)
      fail(grpc.status.FAILED_PRECONDITION, `generation must be ${a.generation} (current), got ${m.generation}`);
    if (m.fromRank >= a.world || m.fromRank === a.rank) {
      fail(grpc.status.INVALID_ARGUMENT, `from_rank must be in [0, ${a.world}) and not the receiver's rank ${a.rank}, got ${m.fromRank}`);
    }
    const data = m.data ?? new Uint8Array(0);
    g.mailbox.deliver(
      {
        jobId: m.jobId,
        generation: m.generation,
        fromRank: m.fromRank,
        step: m.step,
        layer: m.layer,
        op: m.op,
        piece: m.piece,
        pieces: m.pieces,
        totalBytes: m.totalBytes,
        offset: m.offset,
      },
      data,
    );
    g.comm.countReceived(data.length);
  }
}
