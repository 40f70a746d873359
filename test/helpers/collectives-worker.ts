// A worker process for the multi-process collectives tests: a gRPC server on 127.0.0.1:0 with a
// PeerEndpoint; reports its port, joins the group the parent sends, runs the requested steps on
// deterministic data (collectives-data.ts) and reports checksums, all over IPC.
import * as grpc from '@grpc/grpc-js';
import type { Communicator } from '../../worker/collectives/communicator.js';
import { bytesOf } from '../../worker/collectives/reduce.js';
import { PeerEndpoint, peerServerOptions } from '../../worker/peer-endpoint.js';
import { rankBytes, rankFloats, sha256 } from './collectives-data.js';
import type { FromWorker, Step, StepResult, ToWorker, WorkerOptions } from './collectives-protocol.js';

const opts = JSON.parse(process.env.LASP_COLLECTIVES_TEST_OPTS ?? '{}') as WorkerOptions;
const endpoint = new PeerEndpoint(opts);
const server = new grpc.Server(peerServerOptions(endpoint.options.pieceBytes));
endpoint.addTo(server);
let comm: Communicator | undefined;

function reply(m: FromWorker): void {
  process.send!(m);
}

/** `s` with its tag's step advanced by `i`. */
function withStep(s: Step, i: number): Step {
  return 'tag' in s ? { ...s, tag: { ...s.tag, step: s.tag.step + i } } : s;
}

async function runStep(c: Communicator, step: Step): Promise<StepResult> {
  switch (step.kind) {
    case 'allGather': {
      const out = await c.allGather(step.tag, rankBytes(step.seed, c.rank, step.sizes[c.rank]!));
      return { kind: 'allGather', hashes: out.map(sha256), lengths: out.map((b) => b.byteLength) };
    }
    case 'allReduce': {
      const data = rankFloats(step.seed, c.rank, step.n);
      await c.allReduceSum(step.tag, data);
      return { kind: 'allReduce', hash: sha256(bytesOf(data)), head: [...data.subarray(0, 4)] };
    }
    case 'send':
      await c.send(step.tag, step.to, rankBytes(step.seed, c.rank, step.size));
      return { kind: 'send' };
    case 'recv': {
      const b = await c.recv(step.tag, step.from);
      return { kind: 'recv', hash: sha256(b), length: b.byteLength };
    }
    case 'parallel':
      return { kind: 'parallel', results: await Promise.all(step.steps.map((s) => runStep(c, s))) };
    case 'repeat': {
      for (let i = 0; i < step.count; i++) await runStep(c, withStep(step.step, i));
      return { kind: 'repeat', count: step.count };
    }
  }
}

process.on('message', (raw) => {
  const m = raw as ToWorker;
  switch (m.type) {
    case 'join':
      comm = endpoint.joinGroup(m.assignment);
      reply({ type: 'joined' });
      break;
    case 'abort':
      endpoint.abortGroup(m.jobId, m.generation, m.reason);
      break;
    case 'run': {
      const t0 = performance.now();
      const c = comm;
      const run = async () => {
        if (c === undefined) throw new Error('no group joined');
        const results: StepResult[] = [];
        for (const s of m.steps) results.push(await runStep(c, s));
        return results;
      };
      run().then(
        (results) => reply({ type: 'result', id: m.id, ok: true, results, elapsedMs: performance.now() - t0, stats: c!.stats }),
        (err: unknown) =>
          reply({
            type: 'result',
            id: m.id,
            ok: false,
            error: err instanceof Error ? err.message : String(err),
            elapsedMs: performance.now() - t0,
          }),
      );
      break;
    }
    case 'exit':
      endpoint.close();
      server.forceShutdown();
      process.disconnect();
      break;
  }
});

server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    process.stderr.write(`collectives-worker: bind failed: ${err.message}\n`);
    process.exit(1);
  }
  reply({ type: 'ready', port });
});
