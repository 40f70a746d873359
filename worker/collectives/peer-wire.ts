// The bytes of the Peer service on the wire, written and read by hand for the fast path
// (h2-peer-stream.ts, h2-peer-server.ts): gRPC length-prefixed framing and the protobuf encoding of
// PeerMessage and DeliverReply (proto/lasp/v1/peer.proto). The encoding is standard protobuf, so
// either side can talk to a stock gRPC peer; what it saves is the copies and allocations of a
// generic encoder: a piece goes out as one small header buffer plus the caller's data, untouched.
//
// Decoding checks every length against the bytes present and refuses what it cannot represent
// (wrong wire types, 64-bit values above 2^53, groups) with a message naming the field.

import type { PieceHeader } from './message-pieces.js';
import { receiveBuffer } from './receive-buffer.js';

/** Bytes of the gRPC message prefix: 1 compressed flag + 4 length (big-endian). */
export const GRPC_PREFIX_BYTES = 5;

/** The header fields of one piece plus its payload (a view; no copy) and its stream sequence number. */
export interface WirePeerMessage extends PieceHeader {
  data: Uint8Array;
  seq: number;
}

export interface WireDeliverReply {
  seq: number;
  code: number;
  details: string;
}

/** A message that could not be decoded (names the field and what was wrong). */
export class WireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WireError';
  }
}

const WT_VARINT = 0;
const WT_FIXED64 = 1;
const WT_LEN = 2;
const WT_FIXED32 = 5;

function varintSize(v: number): number {
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function writeVarint(buf: Buffer, pos: number, v: number): number {
  while (v >= 128) {
    buf[pos++] = (v % 128) | 128;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

function checkUint(name: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${name} must be a non-negative safe integer, got ${v}`);
}

type HeaderField = [field: number, value: number | string];

/**
 * One gRPC message holding a PeerMessage, as a list of buffers to write in order: the prefix and
 * every field but the payload in one small buffer, then `data` itself (omitted when empty).
 */
export function encodePeerMessage(m: WirePeerMessage): Buffer[] {
  const fields: HeaderField[] = [
    [1, m.jobId],
    [2, m.generation],
    [3, m.fromRank],
    [4, m.step],
    [5, m.layer],
    [6, m.op],
    [7, m.piece],
    [8, m.pieces],
    [9, m.totalBytes],
    [10, m.offset],
    [12, m.seq],
  ];
  const strings = new Map<number, Buffer>();
  let headerBytes = 0;
  for (const [f, v] of fields) {
    if (typeof v === 'string') {
      const b = Buffer.from(v, 'utf8');
      strings.set(f, b);
      if (b.length > 0) headerBytes += 1 + varintSize(b.length) + b.length;
    } else {
      checkUint(`PeerMessage field ${f}`, v);
      if (v !== 0) headerBytes += 1 + varintSize(v);
    }
  }
  const dataLen = m.data.byteLength;
  const dataTag = dataLen > 0 ? 1 + varintSize(dataLen) : 0;
  const messageBytes = headerBytes + dataTag + dataLen;
  if (messageBytes > 0xffffffff) throw new RangeError(`a PeerMessage must fit in 4 GiB, got ${messageBytes} bytes`);
  const head = Buffer.allocUnsafe(GRPC_PREFIX_BYTES + headerBytes + dataTag);
  head[0] = 0;
  head.writeUInt32BE(messageBytes, 1);
  let pos = GRPC_PREFIX_BYTES;
  for (const [f, v] of fields) {
    if (typeof v === 'string') {
      const b = strings.get(f)!;
      if (b.length === 0) continue;
      head[pos++] = (f << 3) | WT_LEN;
      pos = writeVarint(head, pos, b.length);
      pos += b.copy(head, pos);
    } else if (v !== 0) {
      head[pos++] = (f << 3) | WT_VARINT;
      pos = writeVarint(head, pos, v);
    }
  }
  if (dataLen === 0) return [head];
  head[pos++] = (11 << 3) | WT_LEN;
  pos = writeVarint(head, pos, dataLen);
  return [head, Buffer.from(m.data.buffer, m.data.byteOffset, dataLen)];
}

/** One gRPC message holding a DeliverReply. */
export function encodeDeliverReply(r: WireDeliverReply): Buffer {
  checkUint('DeliverReply.seq', r.seq);
  checkUint('DeliverReply.code', r.code);
  const details = Buffer.from(r.details, 'utf8');
  let n = 0;
  if (r.seq !== 0) n += 1 + varintSize(r.seq);
  if (r.code !== 0) n += 1 + varintSize(r.code);
  if (details.length > 0) n += 1 + varintSize(details.length) + details.length;
  const out = Buffer.allocUnsafe(GRPC_PREFIX_BYTES + n);
  out[0] = 0;
  out.writeUInt32BE(n, 1);
  let pos = GRPC_PREFIX_BYTES;
  if (r.seq !== 0) {
    out[pos++] = (1 << 3) | WT_VARINT;
    pos = writeVarint(out, pos, r.seq);
  }
  if (r.code !== 0) {
    out[pos++] = (2 << 3) | WT_VARINT;
    pos = writeVarint(out, pos, r.code);
  }
  if (details.length > 0) {
    out[pos++] = (3 << 3) | WT_LEN;
    pos = writeVarint(out, pos, details.length);
    details.copy(out, pos);
  }
  return out;
}

/** Reads protobuf fields from one message body. */
class FieldReader {
  pos = 0;
  constructor(
    private readonly buf: Uint8Array,
    private readonly type: string,
  ) {}

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  varint(what: string): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw new WireError(`${this.type}: ${what} is truncated`);
      const b = this.buf[this.pos++]!;
      result += (b & 127) * scale;
      if (b < 128) {
        if (!Number.isSafeInteger(result)) throw new WireError(`${this.type}: ${what} must be at most 2^53 - 1`);
        return result;
      }
      scale *= 128;
    }
    throw new WireError(`${this.type}: ${what} is not a valid varint (more than 10 bytes)`);
  }

  bytes(what: string): Uint8Array {
    const n = this.varint(`length of ${what}`);
    if (n > this.buf.length - this.pos) {
      throw new WireError(`${this.type}: ${what} declares ${n} bytes but only ${this.buf.length - this.pos} remain`);
    }
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  string(what: string): string {
    const b = this.bytes(what);
    return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('utf8');
  }

  skip(field: number, wireType: number): void {
    const what = `unknown field ${field}`;
    if (wireType === WT_VARINT) this.varint(what);
    else if (wireType === WT_LEN) this.bytes(what);
    else if (wireType === WT_FIXED64 || wireType === WT_FIXED32) {
      const n = wireType === WT_FIXED64 ? 8 : 4;
      if (this.pos + n > this.buf.length) throw new WireError(`${this.type}: ${what} is truncated`);
      this.pos += n;
    } else throw new WireError(`${this.type}: field ${field} has unsupported wire type ${wireType}`);
  }

  /** The next field number and wire type. */
  tag(): [number, number] {
    const t = this.varint('field tag');
    const field = Math.floor(t / 8);
    if (field === 0) throw new WireError(`${this.type}: field number 0 is invalid`);
    return [field, t % 8];
  }
}

const PEER_NUMERIC: Record<number, keyof WirePeerMessage> = {
  2: 'generation',
  3: 'fromRank',
  4: 'step',
  5: 'layer',
  7: 'piece',
  8: 'pieces',
  9: 'totalBytes',
  10: 'offset',
  12: 'seq',
};
const UINT32_FIELDS = new Set([3, 5, 7, 8]);

function expectWireType(type: string, field: number, got: number, want: number): void {
  if (got !== want) throw new WireError(`${type}: field ${field} must have wire type ${want}, got ${got}`);
}

/** Decode one PeerMessage body (without the gRPC prefix). `data` is a view into `body`. */
export function decodePeerMessage(body: Uint8Array): WirePeerMessage {
  const m: WirePeerMessage = {
    jobId: '',
    generation: 0,
    fromRank: 0,
    step: 0,
    layer: 0,
    op: '',
    piece: 0,
    pieces: 0,
    totalBytes: 0,
    offset: 0,
    data: new Uint8Array(0),
    seq: 0,
  };
  const r = new FieldReader(body, 'PeerMessage');
  while (!r.done) {
    const [field, wt] = r.tag();
    const numeric = PEER_NUMERIC[field];
    if (numeric !== undefined) {
      expectWireType('PeerMessage', field, wt, WT_VARINT);
      const v = r.varint(numeric);
      if (UINT32_FIELDS.has(field) && v > 0xffffffff) throw new WireError(`PeerMessage: ${numeric} must fit in 32 bits, got ${v}`);
      (m as unknown as Record<string, number>)[numeric] = v;
    } else if (field === 1) {
      expectWireType('PeerMessage', field, wt, WT_LEN);
      m.jobId = r.string('job_id');
    } else if (field === 6) {
      expectWireType('PeerMessage', field, wt, WT_LEN);
      m.op = r.string('op');
    } else if (field === 11) {
      expectWireType('PeerMessage', field, wt, WT_LEN);
      m.data = r.bytes('data');
    } else r.skip(field, wt);
  }
  return m;
}

/** Decode one DeliverReply body (without the gRPC prefix). */
export function decodeDeliverReply(body: Uint8Array): WireDeliverReply {
  const out: WireDeliverReply = { seq: 0, code: 0, details: '' };
  const r = new FieldReader(body, 'DeliverReply');
  while (!r.done) {
    const [field, wt] = r.tag();
    if (field === 1 || field === 2) {
      expectWireType('DeliverReply', field, wt, WT_VARINT);
      const v = r.varint(field === 1 ? 'seq' : 'code');
      if (field === 1) out.seq = v;
      else out.code = v;
    } else if (field === 3) {
      expectWireType('DeliverReply', field, wt, WT_LEN);
      out.details = r.string('details');
    } else r.skip(field, wt);
  }
  return out;
}

/**
 * Cuts a byte stream (chunks as they arrive on an HTTP/2 stream) into gRPC messages. A message that
 * lies inside one chunk is handed on as a view of it; one spread over chunks is copied once into a
 * buffer of exactly its size, allocated only after its declared length passed `maxMessageBytes`.
 */
export class GrpcFrameReader {
  private prefix = Buffer.alloc(GRPC_PREFIX_BYTES);
  private prefixHave = 0;
  private body: Uint8Array | undefined;
  private bodyHave = 0;
  private failed = false;

  /**
   * @param maxMessageBytes largest message body accepted
   * @param onMessage called with each complete body (a view: valid as long as the caller keeps it)
   * @param onError called once with the reason when the stream is malformed; nothing is read after it
   */
  constructor(
    private readonly maxMessageBytes: number,
    private readonly onMessage: (body: Uint8Array) => void,
    private readonly onError: (err: WireError) => void,
  ) {}

  push(chunk: Uint8Array): void {
    let pos = 0;
    while (pos < chunk.length && !this.failed) {
      if (this.body === undefined) {
        // Fast path: the whole message is in this chunk.
        if (this.prefixHave === 0 && chunk.length - pos >= GRPC_PREFIX_BYTES) {
          const len = this.checkPrefix(chunk[pos]!, readUint32BE(chunk, pos + 1));
          if (len < 0) return;
          if (chunk.length - pos - GRPC_PREFIX_BYTES >= len) {
            const start = pos + GRPC_PREFIX_BYTES;
            pos = start + len;
            this.onMessage(chunk.subarray(start, pos));
            continue;
          }
          this.body = receiveBuffer(len);
          this.bodyHave = 0;
          pos += GRPC_PREFIX_BYTES;
          continue;
        }
        const take = Math.min(GRPC_PREFIX_BYTES - this.prefixHave, chunk.length - pos);
        this.prefix.set(chunk.subarray(pos, pos + take), this.prefixHave);
        this.prefixHave += take;
        pos += take;
        if (this.prefixHave < GRPC_PREFIX_BYTES) return;
        this.prefixHave = 0;
        const len = this.checkPrefix(this.prefix[0]!, this.prefix.readUInt32BE(1));
        if (len < 0) return;
        if (len === 0) {
          this.onMessage(new Uint8Array(0));
          continue;
        }
        this.body = receiveBuffer(len);
        this.bodyHave = 0;
        continue;
      }
      const take = Math.min(this.body.length - this.bodyHave, chunk.length - pos);
      this.body.set(chunk.subarray(pos, pos + take), this.bodyHave);
      this.bodyHave += take;
      pos += take;
      if (this.bodyHave === this.body.length) {
        const b = this.body;
        this.body = undefined;
        this.onMessage(b);
      }
    }
  }

  /** Whether the stream ended between messages (not inside one). */
  get atBoundary(): boolean {
    return this.body === undefined && this.prefixHave === 0;
  }

  private checkPrefix(flag: number, len: number): number {
    if (flag !== 0) return this.fail(`compressed gRPC messages are not accepted (flag ${flag}); send with compression off`);
    if (len > this.maxMessageBytes) return this.fail(`gRPC message of ${len} bytes exceeds the limit of ${this.maxMessageBytes}`);
    return len;
  }

  private fail(message: string): number {
    this.failed = true;
    this.onError(new WireError(message));
    return -1;
  }
}

function readUint32BE(b: Uint8Array, pos: number): number {
  return ((b[pos]! << 24) >>> 0) + (b[pos + 1]! << 16) + (b[pos + 2]! << 8) + b[pos + 3]!;
}
