// Starts W collectives test workers (collectives-worker.ts) as real processes on loopback, hands
// them a group assignment, and runs steps on them.
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { GroupAssignment } from '../../worker/collectives/communicator.js';
import type { FromWorker, Step, ToWorker, WorkerOptions } from './collectives-protocol.js';

const WORKER = fileURLToPath(new URL('./collectives-worker.js', import.meta.url));

export type RunResult = Extract<FromWorker, { type: 'result' }>;

export class Cluster {
  private nextId = 0;
  private readonly waiting = new Map<string, (m: FromWorker) => void>();

  private constructor(
    readonly children: ChildProcess[],
    readonly ports: number[],
    readonly jobId: string,
    readonly generation: number,
  ) {
    children.forEach((c, rank) =>
      c.on('message', (raw) => {
        const m = raw as FromWorker;
        const key = m.type === 'result' ? `${rank}:result:${m.id}` : `${rank}:${m.type}`;
        const w = this.waiting.get(key);
        if (w) {
          this.waiting.delete(key);
          w(m);
        }
      }),
    );
  }

  get world(): number {
    return this.children.length;
  }

  get peers(): string[] {
    return this.ports.map((p) => `127.0.0.1:${p}`);
  }

  assignment(rank: number, generation = this.generation): GroupAssignment {
    return { jobId: this.jobId, generation, rank, world: this.world, peers: this.peers };
  }

  /** Start `world` workers with `opts` and join them into one group. */
  static async start(world: number, opts: WorkerOptions = {}, jobId = 'job-test', generation = 1): Promise<Cluster> {
    const children = Array.from({ length: world }, () =>
      fork(WORKER, [], {
        env: { ...process.env, LASP_COLLECTIVES_TEST_OPTS: JSON.stringify(opts) },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      }),
    );
    const ports = await Promise.all(
      children.map(
        (c, rank) =>
          new Promise<number>((resolve, reject) => {
            c.once('error', reject);
            c.once('exit', (code) => reject(new Error(`worker ${rank} exited with ${code} before it was ready`)));
            c.once('message', (m) => resolve((m as Extract<FromWorker, { type: 'ready' }>).port));
          }),
      ),
    );
    const cluster = new Cluster(children, ports, jobId, generation);
    await Promise.all(children.map((_, r) => cluster.join(r)));
    return cluster;
  }

  /** (Re)join rank `rank` with its assignment (optionally another generation). */
  async join(rank: number, generation = this.generation): Promise<void> {
    const joined = this.expect(rank, `${rank}:joined`);
    this.send(rank, { type: 'join', assignment: this.assignment(rank, generation) });
    await joined;
  }

  /** Run `steps` on `rank`; resolves with its report (ok or not). */
  run(rank: number, steps: Step[]): Promise<RunResult> {
    const id = this.nextId++;
    const p = this.expect(rank, `${rank}:result:${id}`) as Promise<RunResult>;
    this.send(rank, { type: 'run', id, steps });
    return p;
  }

  /** Run `stepsOf(rank)` on every rank at once. */
  runAll(stepsOf: (rank: number) => Step[]): Promise<RunResult[]> {
    return Promise.all(this.children.map((_, r) => this.run(r, stepsOf(r))));
  }

  abort(rank: number, reason: string): void {
    this.send(rank, { type: 'abort', jobId: this.jobId, generation: this.generation, reason });
  }

  kill(rank: number): void {
    this.children[rank]!.kill('SIGKILL');
  }

  async close(): Promise<void> {
    await Promise.all(
      this.children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            const t = setTimeout(() => c.kill('SIGKILL'), 2000);
            c.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
            if (c.connected) c.send({ type: 'exit' } satisfies ToWorker);
            else c.kill('SIGKILL');
          }),
      ),
    );
  }

  private send(rank: number, m: ToWorker): void {
    this.children[rank]!.send(m);
  }

  private expect(rank: number, key: string): Promise<FromWorker> {
    return new Promise((resolve, reject) => {
      const child = this.children[rank]!;
      const onExit = (code: number | null, signal: string | null) => {
        this.waiting.delete(key);
        reject(new Error(`worker ${rank} exited (code ${code}, signal ${signal}) while waiting for ${key}`));
      };
      child.once('exit', onExit);
      this.waiting.set(key, (m) => {
        child.off('exit', onExit);
        resolve(m);
      });
    });
  }
}
