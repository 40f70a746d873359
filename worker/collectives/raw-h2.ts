// The small part of HTTP/2 (RFC 9113) and HPACK (RFC 7541) that the 'raw' peer transport needs,
// written by hand for both of its ends (raw-peer-server.ts, raw-peer-stream.ts): frame headers, a
// frame parser that hands DATA payloads on as views of the socket's chunks (no reassembly), and an
// HPACK subset — literal fields and static-table references, no Huffman coding. Both ends are ours,
// so the subset is what they send; anything else is refused with a connection error naming it.
// Every length read from the network is checked before anything is allocated for it.

/** The client connection preface. */
export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export const FRAME_HEADER_BYTES = 9;

export const FrameType = {
  DATA: 0,
  HEADERS: 1,
  PRIORITY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PUSH_PROMISE: 5,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
} as const;

export const Flag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const;

export const Setting = {
  HEADER_TABLE_SIZE: 1,
  ENABLE_PUSH: 2,
  MAX_CONCURRENT_STREAMS: 3,
  INITIAL_WINDOW_SIZE: 4,
  MAX_FRAME_SIZE: 5,
  MAX_HEADER_LIST_SIZE: 6,
} as const;

export const ErrorCode = {
  NO_ERROR: 0,
  PROTOCOL_ERROR: 1,
  INTERNAL_ERROR: 2,
  FLOW_CONTROL_ERROR: 3,
  STREAM_CLOSED: 5,
  FRAME_SIZE_ERROR: 6,
  REFUSED_STREAM: 7,
  CANCEL: 8,
  COMPRESSION_ERROR: 9,
} as const;

/** The HTTP/2 defaults, before the peer's SETTINGS arrive. */
export const DEFAULT_WINDOW = 65_535;
export const DEFAULT_MAX_FRAME_SIZE = 16_384;
export const MAX_FRAME_SIZE_LIMIT = (1 << 24) - 1;
export const MAX_WINDOW = 0x7fffffff;

/** A connection error: the connection is closed with GOAWAY(code) and `message` as the reason. */
export class H2Error extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
    this.name = 'H2Error';
  }
}

/** A 9-byte frame header. */
export function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const b = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  b[0] = (length >>> 16) & 0xff;
  b[1] = (length >>> 8) & 0xff;
  b[2] = length & 0xff;
  b[3] = type;
  b[4] = flags;
  b.writeUInt32BE(streamId & MAX_WINDOW, 5);
  return b;
}

/** A whole frame with a small payload. */
export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([frameHeader(payload.length, type, flags, streamId), payload]);
}

export function settingsFrame(settings: [id: number, value: number][]): Buffer {
  const p = Buffer.allocUnsafe(6 * settings.length);
  settings.forEach(([id, v], i) => {
    p.writeUInt16BE(id, 6 * i);
    p.writeUInt32BE(v, 6 * i + 2);
  });
  return frame(FrameType.SETTINGS, 0, 0, p);
}

export function windowUpdateFrame(streamId: number, increment: number): Buffer {
  const p = Buffer.allocUnsafe(4);
  p.writeUInt32BE(increment, 0);
  return frame(FrameType.WINDOW_UPDATE, 0, streamId, p);
}

export function rstStreamFrame(streamId: number, code: number): Buffer {
  const p = Buffer.allocUnsafe(4);
  p.writeUInt32BE(code, 0);
  return frame(FrameType.RST_STREAM, 0, streamId, p);
}

export function goawayFrame(lastStreamId: number, code: number, reason: string): Buffer {
  const debug = Buffer.from(reason.slice(0, 200), 'utf8');
  const p = Buffer.allocUnsafe(8 + debug.length);
  p.writeUInt32BE(lastStreamId & MAX_WINDOW, 0);
  p.writeUInt32BE(code, 4);
  debug.copy(p, 8);
  return frame(FrameType.GOAWAY, 0, 0, p);
}

/** Parsed SETTINGS entries, checked (RFC 9113 §6.5.2). */
export function parseSettings(payload: Buffer): Map<number, number> {
  if (payload.length % 6 !== 0) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, `SETTINGS of ${payload.length} bytes (not a multiple of 6)`);
  const out = new Map<number, number>();
  for (let i = 0; i < payload.length; i += 6) {
    const id = payload.readUInt16BE(i);
    const v = payload.readUInt32BE(i + 2);
    if (id === Setting.INITIAL_WINDOW_SIZE && v > MAX_WINDOW)
      throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, `SETTINGS_INITIAL_WINDOW_SIZE ${v} is above 2^31-1`);
    if (id === Setting.MAX_FRAME_SIZE && (v < DEFAULT_MAX_FRAME_SIZE || v > MAX_FRAME_SIZE_LIMIT))
      throw new H2Error(ErrorCode.PROTOCOL_ERROR, `SETTINGS_MAX_FRAME_SIZE ${v} is outside [2^14, 2^24-1]`);
    if (id === Setting.ENABLE_PUSH && v > 1) throw new H2Error(ErrorCode.PROTOCOL_ERROR, `SETTINGS_ENABLE_PUSH ${v}`);
    out.set(id, v);
  }
  return out;
}

/** The increment of a WINDOW_UPDATE payload, checked. */
export function parseWindowUpdate(payload: Buffer): number {
  if (payload.length !== 4) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, `WINDOW_UPDATE of ${payload.length} bytes`);
  const inc = payload.readUInt32BE(0) & MAX_WINDOW;
  if (inc === 0) throw new H2Error(ErrorCode.PROTOCOL_ERROR, 'WINDOW_UPDATE with increment 0');
  return inc;
}

export interface FrameSink {
  /** A whole frame other than DATA. */
  frame(type: number, flags: number, streamId: number, payload: Buffer): void;
  /** A DATA frame starts: `length` payload bytes follow through data() (none when 0), then dataEnd(). */
  dataBegin(streamId: number, flags: number, length: number): void;
  /** Part of the current DATA frame's payload (a view of the socket's chunk). */
  data(chunk: Buffer): void;
  dataEnd(): void;
}

/**
 * Cuts a byte stream into HTTP/2 frames. Non-DATA frames are collected whole (at most
 * `maxControlBytes`); DATA payloads are passed on as they arrive. Throws H2Error on a malformed
 * stream (the owner closes the connection); nothing is read after an error.
 */
export class FrameParser {
  private head = Buffer.alloc(FRAME_HEADER_BYTES);
  private headHave = 0;
  private type = 0;
  private flags = 0;
  private streamId = 0;
  private remaining = -1; // payload bytes left of the current frame; -1: reading a header
  private control: Buffer | undefined;
  private controlHave = 0;
  private failed = false;

  constructor(
    private readonly sink: FrameSink,
    /** Largest frame accepted (our SETTINGS_MAX_FRAME_SIZE). */
    private readonly maxFrameSize: number,
    /** Largest non-DATA frame accepted. */
    private readonly maxControlBytes: number,
  ) {}

  push(chunk: Buffer): void {
    if (this.failed) return;
    try {
      this.parse(chunk);
    } catch (err) {
      this.failed = true;
      throw err;
    }
  }

  private parse(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      if (this.remaining < 0) {
        const take = Math.min(FRAME_HEADER_BYTES - this.headHave, chunk.length - pos);
        chunk.copy(this.head, this.headHave, pos, pos + take);
        this.headHave += take;
        pos += take;
        if (this.headHave < FRAME_HEADER_BYTES) return;
        this.headHave = 0;
        this.beginFrame();
        continue;
      }
      const take = Math.min(this.remaining, chunk.length - pos);
      if (this.control !== undefined) {
        chunk.copy(this.control, this.controlHave, pos, pos + take);
        this.controlHave += take;
      } else if (take > 0) this.sink.data(chunk.subarray(pos, pos + take));
      pos += take;
      this.remaining -= take;
      if (this.remaining === 0) this.endFrame();
    }
  }

  private beginFrame(): void {
    const h = this.head;
    const length = (h[0]! << 16) | (h[1]! << 8) | h[2]!;
    this.type = h[3]!;
    this.flags = h[4]!;
    this.streamId = h.readUInt32BE(5) & MAX_WINDOW;
    if (length > this.maxFrameSize)
      throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, `frame of ${length} bytes exceeds SETTINGS_MAX_FRAME_SIZE ${this.maxFrameSize}`);
    if (this.type === FrameType.DATA) {
      if (this.flags & Flag.PADDED) throw new H2Error(ErrorCode.PROTOCOL_ERROR, 'padded DATA frames are not accepted');
      this.control = undefined;
      this.sink.dataBegin(this.streamId, this.flags, length);
    } else {
      if (length > this.maxControlBytes)
        throw new H2Error(
          ErrorCode.FRAME_SIZE_ERROR,
          `frame of type ${this.type} and ${length} bytes exceeds the limit of ${this.maxControlBytes}`,
        );
      this.control = Buffer.allocUnsafe(length);
      this.controlHave = 0;
    }
    this.remaining = length;
    if (length === 0) this.endFrame();
  }

  private endFrame(): void {
    this.remaining = -1;
    if (this.control === undefined) this.sink.dataEnd();
    else {
      const payload = this.control;
      this.control = undefined;
      this.sink.frame(this.type, this.flags, this.streamId, payload);
    }
  }
}

/** Remove the first `n` bytes from `queue` (views, no copy). */
export function takeBytes(queue: Buffer[], n: number): Buffer[] {
  const out: Buffer[] = [];
  while (n > 0) {
    const head = queue[0]!;
    if (head.length <= n) {
      out.push(head);
      queue.shift();
      n -= head.length;
    } else {
      out.push(head.subarray(0, n));
      queue[0] = head.subarray(n);
      n = 0;
    }
  }
  return out;
}

/** The HEADERS payload's header block, without padding and priority fields. */
export function headerBlock(flags: number, payload: Buffer): Buffer {
  let start = 0;
  let end = payload.length;
  if (flags & Flag.PADDED) {
    if (payload.length < 1) throw new H2Error(ErrorCode.PROTOCOL_ERROR, 'HEADERS: padding length missing');
    start = 1;
    end -= payload[0]!;
  }
  if (flags & Flag.PRIORITY) start += 5;
  if (end < start) throw new H2Error(ErrorCode.PROTOCOL_ERROR, 'HEADERS: padding or priority longer than the frame');
  return payload.subarray(start, end);
}

// HPACK static table (RFC 7541 Appendix A), index 1..61.
const STATIC_TABLE: readonly [string, string][] = [
  [':authority', ''],
  [':method', 'GET'],
  [':method', 'POST'],
  [':path', '/'],
  [':path', '/index.html'],
  [':scheme', 'http'],
  [':scheme', 'https'],
  [':status', '200'],
  [':status', '204'],
  [':status', '206'],
  [':status', '304'],
  [':status', '400'],
  [':status', '404'],
  [':status', '500'],
  ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'],
  ['accept-language', ''],
  ['accept-ranges', ''],
  ['accept', ''],
  ['access-control-allow-origin', ''],
  ['age', ''],
  ['allow', ''],
  ['authorization', ''],
  ['cache-control', ''],
  ['content-disposition', ''],
  ['content-encoding', ''],
  ['content-language', ''],
  ['content-length', ''],
  ['content-location', ''],
  ['content-range', ''],
  ['content-type', ''],
  ['cookie', ''],
  ['date', ''],
  ['etag', ''],
  ['expect', ''],
  ['expires', ''],
  ['from', ''],
  ['host', ''],
  ['if-match', ''],
  ['if-modified-since', ''],
  ['if-none-match', ''],
  ['if-range', ''],
  ['if-unmodified-since', ''],
  ['last-modified', ''],
  ['link', ''],
  ['location', ''],
  ['max-forwards', ''],
  ['proxy-authenticate', ''],
  ['proxy-authorization', ''],
  ['range', ''],
  ['referer', ''],
  ['refresh', ''],
  ['retry-after', ''],
  ['server', ''],
  ['set-cookie', ''],
  ['strict-transport-security', ''],
  ['transfer-encoding', ''],
  ['user-agent', ''],
  ['vary', ''],
  ['via', ''],
  ['www-authenticate', ''],
];

/** Largest header list accepted (decoded name + value bytes). */
export const MAX_HEADER_LIST_BYTES = 16 << 10;

/**
 * HPACK decoder of one connection: literal fields (with incremental indexing, without indexing,
 * never indexed; names literal or indexed), indexed fields, and a dynamic table (entries added by
 * incremental indexing, evicted by size; table size updates are applied up to the 4096-byte
 * default). Huffman-coded strings are refused (COMPRESSION_ERROR): our encoder never uses them.
 */
export class HpackDecoder {
  private dynamic: [string, string][] = []; // newest first
  private dynamicSize = 0;
  private maxSize = 4096;

  decode(block: Buffer): Map<string, string> {
    const out = new Map<string, string>();
    let listBytes = 0;
    let pos = 0;
    const int = (prefixBits: number): number => {
      const mask = (1 << prefixBits) - 1;
      if (pos >= block.length) throw this.error('truncated integer');
      let v = block[pos++]! & mask;
      if (v < mask) return v;
      let shift = 0;
      for (;;) {
        if (pos >= block.length) throw this.error('truncated integer');
        const b = block[pos++]!;
        v += (b & 127) * 2 ** shift;
        shift += 7;
        if (v > 1 << 24) throw this.error('integer too large');
        if (b < 128) return v;
      }
    };
    const str = (): string => {
      if (pos >= block.length) throw this.error('truncated string');
      if (block[pos]! & 0x80) throw this.error('Huffman-coded strings are not accepted by the raw peer transport');
      const n = int(7);
      if (n > block.length - pos) throw this.error(`string of ${n} bytes but ${block.length - pos} remain`);
      const s = block.toString('latin1', pos, pos + n);
      pos += n;
      return s;
    };
    const add = (name: string, value: string) => {
      listBytes += name.length + value.length + 32;
      if (listBytes > MAX_HEADER_LIST_BYTES) throw this.error(`header list larger than ${MAX_HEADER_LIST_BYTES} bytes`);
      // Repeated fields are joined as HTTP does; only single-valued ones are read here.
      const prev = out.get(name);
      out.set(name, prev === undefined ? value : `${prev}, ${value}`);
    };
    while (pos < block.length) {
      const b = block[pos]!;
      if (b & 0x80) {
        const [name, value] = this.entry(int(7));
        add(name, value);
      } else if (b & 0x40) {
        const idx = int(6);
        const name = idx === 0 ? str() : this.entry(idx)[0];
        const value = str();
        this.insert(name, value);
        add(name, value);
      } else if (b & 0x20) {
        const size = int(5);
        if (size > 4096) throw this.error(`dynamic table size update to ${size} above the 4096 allowed`);
        this.maxSize = size;
        this.evict();
      } else {
        const idx = int(4);
        const name = idx === 0 ? str() : this.entry(idx)[0];
        add(name, str());
      }
    }
    return out;
  }

  private entry(idx: number): [string, string] {
    if (idx === 0) throw this.error('index 0');
    if (idx <= STATIC_TABLE.length) return STATIC_TABLE[idx - 1]!;
    const e = this.dynamic[idx - STATIC_TABLE.length - 1];
    if (e === undefined) throw this.error(`index ${idx} is not in the table`);
    return e;
  }

  private insert(name: string, value: string): void {
    this.dynamic.unshift([name, value]);
    this.dynamicSize += name.length + value.length + 32;
    this.evict();
  }

  private evict(): void {
    while (this.dynamicSize > this.maxSize && this.dynamic.length > 0) {
      const [n, v] = this.dynamic.pop()!;
      this.dynamicSize -= n.length + v.length + 32;
    }
  }

  private error(what: string): H2Error {
    return new H2Error(ErrorCode.COMPRESSION_ERROR, `HPACK: ${what}`);
  }
}

function hpackInt(out: number[], first: number, prefixBits: number, v: number): void {
  const mask = (1 << prefixBits) - 1;
  if (v < mask) {
    out.push(first | v);
    return;
  }
  out.push(first | mask);
  v -= mask;
  while (v >= 128) {
    out.push((v % 128) | 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

/** A header block of literal fields without indexing, literal names, no Huffman coding. */
export function encodeHeaders(fields: readonly [string, string][]): Buffer {
  const out: number[] = [];
  for (const [name, value] of fields) {
    const n = Buffer.from(name, 'latin1');
    const v = Buffer.from(value, 'latin1');
    out.push(0);
    hpackInt(out, 0, 7, n.length);
    for (const c of n) out.push(c);
    hpackInt(out, 0, 7, v.length);
    for (const c of v) out.push(c);
  }
  return Buffer.from(out);
}
