// `lasp bench collectives`: AllGather latency and bandwidth between W real worker processes on
// loopback (gRPC PeerEndpoint), against the same exchange over raw TCP sockets (node:net) and over
// plain node:http2 streams (one long-lived stream per peer, the peer windows and frame size of
// session-tuning.ts, no gRPC framing, no acknowledgements) between the same kind of processes: TCP
// is the goal's reference, http2 what Node's HTTP/2 itself costs. Bandwidth = bytes received per
// rank ((W−1) × size) / time.
//
// By default the references run in the AllGather's own processes, hot, in alternating rounds
// (`referenceProcesses: 'shared'`); with 'separate' they run in W processes of their own, idle
// while the AllGather's run and the other way round, so that each side's heap, buffer pool and
// allocator state are its own. Every process tunes its allocator as `lasp worker` does by default.
//
// The processes are this module itself, forked with CHILD_FLAG.
import { fork, type ChildProcess } from 'node:child_process';
import { createServer, connect, type Socket } from 'node:net';
import * as http2 from 'node:http2';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { Command, InvalidArgumentError, Option } from 'commander';
import { DEFAULT_STREAM_TRANSPORT, type StreamTransport } from '../worker/collectives/peer-clients.js';
import { nonNegativeInt, positiveInt } from '../cli/args.js';
import type { Communicator, GroupAssignment } from '../worker/collectives/communicator.js';
import { PeerEndpoint, peerServerOptions, type PeerEndpointOptions } from '../worker/peer-endpoint.js';
import { fmt, formatTable } from './table.js';
import { median } from './timing.js';
import { withWorkerNodeFlags } from '../cluster/worker-node-flags.js';
import { tuneAllocator } from '../native/allocator.js';
import { PEER_MAX_FRAME_SIZE, PEER_RECEIVE_WINDOW } from '../worker/collectives/session-tuning.js';

const CHILD_FLAG = '--lasp-collectives-bench-child';
const THIS_FILE = fileURLToPath(import.meta.url);
const KiB = 1024;
/** Iterations of one transport before switching to the other. */
const ROUND = 10;
const MiB = 1024 * KiB;

export const DEFAULT_BENCH_SIZES = [KiB, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB, 16 * MiB];

export interface CollectivesBenchOptions {
  /** Worker processes. Default 2. */
  workers?: number;
  /** Message sizes per rank in bytes. Default 1 KiB … 16 MiB (DEFAULT_BENCH_SIZES). */
  sizes?: number[];
  /** Measured iterations per size (median reported); fewer for large sizes, see itersFor. Default 21. */
  iterations?: number;
  /** Options of every worker's PeerEndpoint. Default: PeerEndpoint's defaults with timeoutMs 60000. */
  endpoint?: PeerEndpointOptions;
  /** Progress lines on stderr. Default true. */
  progress?: boolean;
  /**
   * Where the raw TCP and plain http2 references run: 'separate' — W processes of their own,
   * alternating with the AllGather's; 'shared' — in the AllGather's processes. Default 'shared'.
   */
  referenceProcesses?: ReferenceProcesses;
  /** Unmeasured iterations of every size (each transport) before any is measured. Default 5. */
  warmup?: number;
  /** Every process's allocator, as `lasp worker --allocator`. Default 'tuned'. */
  allocator?: 'tuned' | 'default';
}

export type ReferenceProcesses = 'separate' | 'shared';
type Mode = 'grpc' | 'tcp' | 'h2';

export interface CollectivesBenchRow {
  bytes: number;
  allGatherMs: number;
  allGatherGBps: number;
  tcpMs: number;
  tcpGBps: number;
  /** allGatherGBps / tcpGBps. */
  ratio: number;
  /** The same exchange over plain node:http2 streams. */
  http2Ms: number;
  http2GBps: number;
  /** allGatherGBps / http2GBps: the share of Node's own HTTP/2 throughput the gRPC path keeps. */
  ratioToHttp2: number;
}

export interface CollectivesBenchResult {
  workers: number;
  pieceBytes: number;
  /** What carried the Stream calls. */
  transport: StreamTransport;
  referenceProcesses: ReferenceProcesses;
  rows: CollectivesBenchRow[];
}

type ToChild =
  | { type: 'join'; assignment: GroupAssignment; tcpPeers: number[]; h2Peers: number[] }
  | { type: 'run'; size: number; iters: number; modes: Mode[] }
  | { type: 'exit' };
type FromChild =
  | { type: 'ready'; grpcPort: number; tcpPort: number; h2Port: number; pieceBytes: number }
  | { type: 'joined' }
  | { type: 'times'; grpc: number[]; tcp: number[]; h2: number[] }
  | { type: 'error'; message: string };

/** Iterations for a size: at least 3, at most `base`, about 256 MiB received per rank at most. */
function itersFor(size: number, base: number): number {
  return Math.max(3, Math.min(base, Math.floor((256 * MiB) / size)));
}

class ChildLink {
  private queue: FromChild[] = [];
  private waiter: ((m: FromChild) => void) | undefined;
  constructor(readonly proc: ChildProcess) {
    proc.on('message', (m) => {
      const msg = m as FromChild;
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w(msg);
      } else this.queue.push(msg);
    });
  }
  next(): Promise<FromChild> {
    const m = this.queue.shift();
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`bench worker exited with code ${code}`));
      this.proc.once('exit', onExit);
      this.waiter = (m) => {
        this.proc.off('exit', onExit);
        resolve(m);
      };
    });
  }
  send(m: ToChild): void {
    this.proc.send(m);
  }
}

async function expectMsg<T extends FromChild['type']>(link: ChildLink, type: T): Promise<Extract<FromChild, { type: T }>> {
  const m = await link.next();
  if (m.type === 'error') throw new Error(`bench worker: ${m.message}`);
  if (m.type !== type) throw new Error(`bench worker: expected ${type}, got ${m.type}`);
  return m as Extract<FromChild, { type: T }>;
}

export async function runCollectivesBench(opts: CollectivesBenchOptions = {}): Promise<CollectivesBenchResult> {
  const W = opts.workers ?? 2;
  const sizes = opts.sizes ?? DEFAULT_BENCH_SIZES;
  const base = opts.iterations ?? 21;
  const progress = opts.progress ?? true;
  const endpoint: PeerEndpointOptions = { timeoutMs: 60_000, ...opts.endpoint };
  if (W < 2) throw new RangeError(`workers must be >= 2, got ${W}`);
  const referenceProcesses = opts.referenceProcesses ?? 'shared';
  const warmup = opts.warmup ?? 5;
  const spawn = () =>
    new ChildLink(
      fork(THIS_FILE, [CHILD_FLAG], {
        execArgv: withWorkerNodeFlags(process.execArgv),
        env: { ...process.env, LASP_BENCH_ENDPOINT: JSON.stringify(endpoint), LASP_BENCH_ALLOCATOR: opts.allocator ?? 'tuned' },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      }),
    );
  const gathers = Array.from({ length: W }, spawn);
  const references = referenceProcesses === 'separate' ? Array.from({ length: W }, spawn) : gathers;
  const links = referenceProcesses === 'separate' ? [...gathers, ...references] : gathers;
  try {
    const join = async (set: ChildLink[]) => {
      const ready = await Promise.all(set.map((l) => expectMsg(l, 'ready')));
      const peers = ready.map((r) => `127.0.0.1:${r.grpcPort}`);
      const tcpPeers = ready.map((r) => r.tcpPort);
      const h2Peers = ready.map((r) => r.h2Port);
      set.forEach((l, rank) =>
        l.send({ type: 'join', assignment: { jobId: 'bench', generation: 1, rank, world: W, peers }, tcpPeers, h2Peers }),
      );
      await Promise.all(set.map((l) => expectMsg(l, 'joined')));
      return ready[0]!.pieceBytes;
    };
    const pieceBytes = await join(gathers);
    if (references !== gathers) await join(references);
    const rows: CollectivesBenchRow[] = [];
    // Rounds of ROUND iterations of the AllGather, then of raw TCP, then of http2, alternating, so
    // that all see the same machine load; in each round a process drops its first iteration.
    const run = async (set: ChildLink[], size: number, iters: number, modes: Mode[]) => {
      set.forEach((l) => l.send({ type: 'run', size, iters, modes }));
      return Promise.all(set.map((l) => expectMsg(l, 'times')));
    };
    // `iters` iterations of every mode: in the AllGather's processes, or the AllGather there and
    // the references in theirs.
    const round = async (size: number, iters: number) =>
      references === gathers
        ? [await run(gathers, size, iters, ['grpc', 'tcp', 'h2'])]
        : [await run(gathers, size, iters, ['grpc']), await run(references, size, iters, ['tcp', 'h2'])];
    const measure = async (size: number): Promise<{ allGatherMs: number; tcpMs: number; http2Ms: number }> => {
      const iters = itersFor(size, base) + 2; // the first two of each transport are warm-up
      const per: Record<Mode, number[][]> = { grpc: [], tcp: [], h2: [] };
      const add = (times: { grpc: number[]; tcp: number[]; h2: number[] }[]) =>
        times.forEach((t, rank) => {
          for (const mode of ['grpc', 'tcp', 'h2'] as const) (per[mode][rank] ??= []).push(...t[mode]);
        });
      for (let done = 0; done < iters; done += ROUND) {
        for (const times of await round(size, Math.min(ROUND, iters - done))) add(times);
      }
      // Per iteration the slowest rank's time; the median over iterations.
      const slowest = (p: number[][]) => median(p[0]!.map((_, i) => Math.max(...p.map((t) => t[i]!))));
      return {
        allGatherMs: slowest(per.grpc.map((t) => t.slice(2))),
        tcpMs: slowest(per.tcp.map((t) => t.slice(2))),
        http2Ms: slowest(per.h2.map((t) => t.slice(2))),
      };
    };
    // A first, unmeasured pass over every size (each transport, `warmup` iterations): without it the
    // sizes measured first also paid for JIT compilation and cold buffer pools (a 64 KiB AllGather
    // measured 1.6–2.4 ms first in the table and 0.7–0.8 ms after the larger sizes).
    if (warmup > 0) for (const size of sizes) await round(size, warmup);
    for (const size of sizes) {
      const { allGatherMs, tcpMs, http2Ms } = await measure(size);
      const received = (W - 1) * size;
      const allGatherGBps = received / (allGatherMs * 1e6);
      const tcpGBps = received / (tcpMs * 1e6);
      const http2GBps = received / (http2Ms * 1e6);
      rows.push({
        bytes: size,
        allGatherMs,
        allGatherGBps,
        tcpMs,
        tcpGBps,
        ratio: allGatherGBps / tcpGBps,
        http2Ms,
        http2GBps,
        ratioToHttp2: allGatherGBps / http2GBps,
      });
      if (progress)
        process.stderr.write(
          `collectives bench: ${size} B per rank: allGather ${fmt(allGatherMs)} ms, raw TCP ${fmt(tcpMs)} ms, plain http2 ${fmt(http2Ms)} ms\n`,
        );
    }
    return { workers: W, pieceBytes, transport: endpoint.streamTransport ?? DEFAULT_STREAM_TRANSPORT, referenceProcesses, rows };
  } finally {
    for (const l of links) {
      if (l.proc.connected) l.send({ type: 'exit' });
      const t = setTimeout(() => l.proc.kill('SIGKILL'), 3000);
      l.proc.once('exit', () => clearTimeout(t));
    }
  }
}

function formatBytes(n: number): string {
  if (n >= MiB && n % MiB === 0) return `${n / MiB} MiB`;
  if (n >= KiB && n % KiB === 0) return `${n / KiB} KiB`;
  return `${n} B`;
}

export function printCollectivesBench(r: CollectivesBenchResult): string {
  const head =
    `AllGather between ${r.workers} processes on loopback (gRPC over ${r.transport}, pieces of ${formatBytes(r.pieceBytes)}) vs the same exchange ` +
    `over raw TCP and over plain node:http2 streams (${r.referenceProcesses === 'separate' ? 'in processes of their own' : 'in the same processes'}); GB/s = bytes received per rank / time; ratio = allgather GB/s / raw TCP GB/s`;
  const table = formatTable(
    ['size per rank', 'allgather ms', 'allgather GB/s', 'raw TCP ms', 'raw TCP GB/s', 'ratio', 'http2 ms', 'allgather / http2'],
    r.rows.map((x) => [
      formatBytes(x.bytes),
      fmt(x.allGatherMs),
      fmt(x.allGatherGBps),
      fmt(x.tcpMs),
      fmt(x.tcpGBps),
      fmt(x.ratio, 2),
      fmt(x.http2Ms),
      fmt(x.ratioToHttp2, 2),
    ]),
  );
  return `${head}\n${table}`;
}

function sizeList(value: string): number[] {
  return value.split(',').map((x) => {
    const m = /^\s*(\d+)\s*([kKmM]?)(i?[bB])?\s*$/.exec(x);
    const n = m ? Number(m[1]) * (m[2]?.toLowerCase() === 'k' ? KiB : m[2]?.toLowerCase() === 'm' ? MiB : 1) : NaN;
    if (!Number.isInteger(n) || n < 1)
      throw new InvalidArgumentError(`--sizes must be a comma-separated list of sizes like 1k,64k,1m, got ${JSON.stringify(value)}`);
    return n;
  });
}

/** Adds `lasp bench collectives [--workers W] [--sizes list] [--json]` to the `bench` command. */
export function registerCollectivesBench(bench: Command): void {
  bench
    .command('collectives')
    .description('AllGather latency and bandwidth between worker processes on loopback (gRPC) vs raw TCP')
    .option('--workers <W>', 'worker processes', positiveInt('--workers'), 2)
    .option('--sizes <list>', 'bytes per rank, e.g. 1k,64k,1m,16m', sizeList, DEFAULT_BENCH_SIZES)
    .option('--iterations <n>', 'measured iterations per size (fewer for large sizes)', positiveInt('--iterations'), 21)
    .option('--warmup <n>', 'unmeasured iterations of every size before any is measured', nonNegativeInt('--warmup'), 5)
    .option('--piece-bytes <n>', 'largest piece of a message', positiveInt('--piece-bytes'))
    .option('--in-flight <n>', 'pieces of one message in flight at once', positiveInt('--in-flight'))
    .addOption(
      new Option('--transport <t>', 'what carries the Stream calls')
        .choices(['http2', 'grpc-js', 'raw', 'native'])
        .default(DEFAULT_STREAM_TRANSPORT),
    )
    .addOption(
      new Option(
        '--reference-processes <where>',
        'run the raw TCP and http2 references in W processes of their own, or in the AllGather ones',
      )
        .choices(['shared', 'separate'])
        .default('shared'),
    )
    .addOption(
      new Option('--allocator <mode>', 'every process tunes its allocator as lasp worker does, or not')
        .choices(['tuned', 'default'])
        .default('tuned'),
    )
    .option('--json', 'print one JSON object instead of a table')
    .action(
      async (o: {
        workers: number;
        sizes: number[];
        iterations: number;
        warmup: number;
        pieceBytes?: number;
        inFlight?: number;
        transport: StreamTransport;
        referenceProcesses: ReferenceProcesses;
        allocator: 'tuned' | 'default';
        json?: boolean;
      }) => {
        const endpoint: PeerEndpointOptions = { timeoutMs: 60_000, streamTransport: o.transport };
        if (o.pieceBytes !== undefined) endpoint.pieceBytes = o.pieceBytes;
        if (o.inFlight !== undefined) endpoint.maxInFlight = o.inFlight;
        const r = await runCollectivesBench({
          workers: o.workers,
          sizes: o.sizes,
          iterations: o.iterations,
          warmup: o.warmup,
          endpoint,
          referenceProcesses: o.referenceProcesses,
          allocator: o.allocator,
        });
        process.stdout.write(o.json ? `${JSON.stringify(r)}\n` : `${printCollectivesBench(r)}\n`);
      },
    );
}

// ---- worker process side ----------------------------------------------------------------------

/** A writable the meshes send on (a socket or an HTTP/2 stream). */
interface Outgoing {
  write(chunk: Uint8Array): boolean;
  once(event: 'drain', listener: () => void): unknown;
}

/**
 * Every rank streams its block to every other rank over `out`; incoming connections count the bytes
 * they delivered, and an exchange ends when every one has delivered all blocks so far.
 */
abstract class CountingMesh<In> {
  protected readonly out: Outgoing[] = [];
  protected readonly received = new Map<In, number>();
  private onData: (() => void) | undefined;
  /** Bytes every incoming connection must have delivered by the end of the current exchange. */
  protected expected = 0;

  /** Counts `n` more bytes from `from`. */
  protected count(from: In, n: number): void {
    this.received.set(from, (this.received.get(from) ?? 0) + n);
    this.onData?.();
  }

  /** One exchange of `block` with every peer (peers may already be sending their next block). */
  async exchange(block: Uint8Array): Promise<void> {
    const writes = this.out.map((s) => new Promise<void>((resolve) => (s.write(block) ? resolve() : s.once('drain', () => resolve()))));
    this.expected += block.byteLength;
    const done = () => [...this.received.values()].every((n) => n >= this.expected);
    const arrived = done()
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          this.onData = () => {
            if (done()) {
              this.onData = undefined;
              resolve();
            }
          };
        });
    await Promise.all([...writes, arrived]);
  }
}

/**
 * Raw TCP sockets. Each rank connects to every other rank and receives on that client socket into
 * one reused buffer (`onread`, offered only on the connecting side: no fresh Buffer and 'data' event
 * per read, which made the 1 MiB exchange 2–10× slower here); it sends on the sockets its server
 * accepted.
 */
class TcpMesh extends CountingMesh<Socket> {
  private readonly sockets: Socket[] = [];
  private readonly readBuffer = Buffer.allocUnsafe(1 << 20);

  constructor(private readonly server: ReturnType<typeof createServer>) {
    super();
    server.on('connection', (s) => {
      s.setNoDelay(true);
      this.sockets.push(s);
      this.out.push(s);
    });
  }

  async connect(rank: number, ports: number[]): Promise<void> {
    await Promise.all(
      ports.map(
        (port, r) =>
          r === rank ||
          new Promise<void>((resolve, reject) => {
            const s: Socket = connect({
              port,
              host: '127.0.0.1',
              noDelay: true,
              onread: { buffer: this.readBuffer, callback: (n: number) => (this.count(s, n), true) },
            });
            s.once('connect', () => resolve());
            s.once('error', reject);
            this.received.set(s, 0);
            this.sockets.push(s);
          }),
      ),
    );
    const expected = ports.length - 1;
    while (this.out.length < expected) await new Promise((r) => setTimeout(r, 5));
  }

  close(): void {
    for (const s of this.sockets) s.destroy();
    this.server.close();
  }
}

/**
 * Plain node:http2: one long-lived POST stream to every peer carrying raw bytes (no gRPC framing,
 * no replies), with the receive windows and frame size the peer endpoint asks for.
 */
class H2Mesh extends CountingMesh<http2.ServerHttp2Stream> {
  private readonly sessions: http2.ClientHttp2Session[] = [];
  static readonly SETTINGS: http2.Settings = { initialWindowSize: PEER_RECEIVE_WINDOW, maxFrameSize: PEER_MAX_FRAME_SIZE };

  constructor(private readonly server: http2.Http2Server) {
    super();
    server.on('session', (session) => session.setLocalWindowSize(PEER_RECEIVE_WINDOW));
    server.on('stream', (stream) => {
      stream.respond({ ':status': 200 });
      this.received.set(stream, 0);
      stream.on('data', (chunk: Buffer) => this.count(stream, chunk.length));
    });
  }

  async connect(rank: number, ports: number[]): Promise<void> {
    for (const [r, port] of ports.entries()) {
      if (r === rank) continue;
      const session = http2.connect(`http://127.0.0.1:${port}`, {
        settings: H2Mesh.SETTINGS,
        createConnection: () => connect({ port, host: '127.0.0.1', noDelay: true }),
      });
      session.on('error', () => {});
      await new Promise<void>((resolve) => session.once('connect', () => resolve()));
      session.setLocalWindowSize(PEER_RECEIVE_WINDOW);
      this.sessions.push(session);
      this.out.push(session.request({ ':method': 'POST', ':path': '/bench' }, { endStream: false }));
    }
    // A first byte on every stream makes the peers' server see it.
    for (const s of this.out) s.write(new Uint8Array(1));
    this.expected = 1;
    const expected = ports.length - 1;
    while (this.received.size < expected || [...this.received.values()].some((n) => n < 1)) await new Promise((r) => setTimeout(r, 5));
  }

  close(): void {
    for (const s of this.sessions) s.destroy();
    this.server.close();
  }
}

async function child(): Promise<void> {
  // As `lasp worker` does by default (--allocator tuned); the references run with the same setting.
  if (process.env.LASP_BENCH_ALLOCATOR !== 'default') tuneAllocator();
  const endpointOpts = JSON.parse(process.env.LASP_BENCH_ENDPOINT ?? '{}') as PeerEndpointOptions;
  const endpoint = new PeerEndpoint(endpointOpts);
  const server = new grpc.Server(peerServerOptions(endpoint.options.pieceBytes));
  endpoint.addTo(server);
  const grpcPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
  const tcpServer = createServer();
  const mesh = new TcpMesh(tcpServer);
  const tcpPort = await new Promise<number>((resolve) =>
    tcpServer.listen(0, '127.0.0.1', () => resolve((tcpServer.address() as { port: number }).port)),
  );
  const h2Server = http2.createServer({ settings: H2Mesh.SETTINGS });
  const h2 = new H2Mesh(h2Server);
  const h2Port = await new Promise<number>((resolve) =>
    h2Server.listen(0, '127.0.0.1', () => resolve((h2Server.address() as { port: number }).port)),
  );
  const send = (m: FromChild) => process.send!(m);
  let comm: Communicator | undefined;
  let step = 0;
  send({ type: 'ready', grpcPort, tcpPort, h2Port, pieceBytes: endpoint.options.pieceBytes });
  process.on('message', (raw) => {
    const m = raw as ToChild;
    const handle = async () => {
      if (m.type === 'join') {
        comm = endpoint.joinGroup(m.assignment);
        await mesh.connect(m.assignment.rank, m.tcpPeers);
        await h2.connect(m.assignment.rank, m.h2Peers);
        send({ type: 'joined' });
      } else if (m.type === 'run') {
        const block = new Uint8Array(m.size).fill(m.size & 0xff);
        // m.iters + 1 iterations of each mode in turn, the first dropped (it may still share the
        // machine with the previous mode's last one).
        const times = { grpc: [] as number[], tcp: [] as number[], h2: [] as number[] };
        for (const mode of m.modes) {
          for (let i = 0; i <= m.iters; i++) {
            const t0 = performance.now();
            if (mode === 'grpc') await comm!.allGather({ step: step++, layer: 0, op: 'bench' }, block);
            else if (mode === 'tcp') await mesh.exchange(block);
            else await h2.exchange(block);
            if (i > 0) times[mode].push(performance.now() - t0);
          }
        }
        send({ type: 'times', ...times });
      } else {
        endpoint.close();
        mesh.close();
        h2.close();
        server.forceShutdown();
        process.disconnect();
      }
    };
    handle().catch((err: unknown) => send({ type: 'error', message: err instanceof Error ? err.message : String(err) }));
  });
}

if (process.argv[1] === THIS_FILE && process.argv.includes(CHILD_FLAG)) {
  child().catch((err: unknown) => {
    process.stderr.write(`collectives bench worker: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  });
}
