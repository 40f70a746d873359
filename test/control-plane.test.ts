// The control plane with real processes: a local cluster of 3 workers (heartbeats every 200 ms,
// dead after 3 misses) registers, forms groups, runs tasks, survives a coordinator restart and
// notices a SIGKILLed worker. The steps share one cluster and run in order.
import { after, before, test } from 'node:test';
import { once } from 'node:events';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { startLocalCluster, type LocalCluster } from '../cluster/local-cluster.js';
import { RpcError } from '../coordinator/grpc-call.js';
import { TaskError, type Group } from '../coordinator/rendezvous.js';
import { WorkerClient } from '../coordinator/worker-client.js';
import { Coordinator } from '../coordinator/coordinator.js';
import { startWorker } from '../worker/main.js';
import { healthCheck, waitUntil } from './helpers/control-wait.js';

const INTERVAL_MS = 200;
const MISSES = 3;
let cluster: LocalCluster;

before(async () => {
  cluster = await startLocalCluster({ workers: 3, threadsPerWorker: 1, heartbeatIntervalMs: INTERVAL_MS, missesAllowed: MISSES });
});

after(async () => {
  await cluster?.stop();
});

const stateOf = (id: string) => cluster.coordinator.registry.get(id)?.state;

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => assert.fail('expected a rejection'),
    (e: unknown) => e,
  );
}

test('3 workers register with address, pid and threads; health answers SERVING', async () => {
  const ws = cluster.coordinator.workers().sort((a, b) => a.id.localeCompare(b.id));
  assert.deepEqual(
    ws.map((w) => [w.id, w.state, w.threads, w.device]),
    [
      ['local-0', 'idle', 1, 'cpu'],
      ['local-1', 'idle', 1, 'cpu'],
      ['local-2', 'idle', 1, 'cpu'],
    ],
  );
  for (const w of ws) {
    assert.equal(w.pid, cluster.workers.find((x) => x.id === w.id)?.pid);
    assert.match(w.address, /^127\.0\.0\.1:\d+$/);
  }
  assert.equal(await healthCheck(cluster.coordinator.address), 'SERVING');
  assert.equal(await healthCheck(cluster.coordinator.address, 'lasp.v1.Coordinator'), 'SERVING');
  assert.equal(await healthCheck(ws[0]!.address, 'lasp.v1.WorkerControl'), 'SERVING');
  await assert.rejects(healthCheck(ws[0]!.address, 'nope'), /NOT_FOUND|unknown service/);
});

let group1: Group;

test('formGroup assigns ranks 0..2 in id order and generation 1; members are busy', async () => {
  group1 = await cluster.formGroup('job-a', 3);
  assert.equal(group1.generation, 1);
  assert.equal(group1.world, 3);
  assert.deepEqual(
    group1.members.map((m) => [m.rank, m.workerId]),
    [
      [0, 'local-0'],
      [1, 'local-1'],
      [2, 'local-2'],
    ],
  );
  for (const m of group1.members) assert.equal(cluster.coordinator.registry.get(m.workerId)?.rank, m.rank);
  assert.equal(cluster.coordinator.registry.count('busy'), 3);
  await assert.rejects(cluster.coordinator.formGroup('job-b', { min: 1, max: 1 }), /need at least 1 idle workers, 0 available/);
  // Workers report their group in heartbeats.
  await waitUntil(
    () => cluster.coordinator.workers().every((w) => w.reported?.state === 'busy' && w.reported.generation === 1),
    'busy heartbeats',
  );
});

test('runTask "echo" returns every rank, with tensors as float32 bytes', async () => {
  const replies = await cluster.runTask(group1, 'echo', { hello: 'x', tensor: [1, 2, 3] }, { timeoutMs: 5000 });
  assert.equal(replies.length, 3);
  for (const [rank, r] of replies.entries()) {
    assert.equal(r.rank, rank);
    assert.deepEqual(r.result, { jobId: 'job-a', generation: 1, rank, world: 3, config: { hello: 'x', tensor: [1, 2, 3] } });
    assert.deepEqual(r.tensors[0]?.shape, [3]);
    assert.deepEqual([...(r.tensors[0]?.data ?? [])], [1 + rank, 2 + rank, 3 + rank]);
  }
  const unknown = await rejection(cluster.runTask(group1, 'no-such-task', {}));
  assert.ok(unknown instanceof TaskError);
  assert.equal(unknown.code, grpc.status.INVALID_ARGUMENT);
  assert.match(unknown.message, /unknown task type "no-such-task" \(known: .*echo/);
});

test('a task of an old generation is refused with FAILED_PRECONDITION', async () => {
  const group2 = await cluster.formGroup('job-a', 3);
  assert.equal(group2.generation, 2, 'generations are monotonic per job');
  const m = group1.members[1]!;
  const client = new WorkerClient(m.workerId, m.address);
  try {
    const err = await rejection(client.runTask({ jobId: 'job-a', generation: 1, type: 'echo', config: {} }, 2000));
    assert.ok(err instanceof RpcError);
    assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
    assert.match(err.message, /worker local-1 .*task is for job "job-a" generation 1, but this worker is in job "job-a" generation 2/);
  } finally {
    client.close();
  }
  const viaCoordinator = await rejection(cluster.runTask(group1, 'echo', {}));
  assert.ok(viaCoordinator instanceof TaskError);
  assert.equal(viaCoordinator.code, grpc.status.FAILED_PRECONDITION);
  assert.match(viaCoordinator.message, /job job-a generation 1 failed on rank \d/);
  // Aborting generation 1 did not disturb generation 2.
  const replies = await cluster.runTask(group2, 'echo', {});
  assert.deepEqual(
    replies.map((r) => (r.result as { generation: number }).generation),
    [2, 2, 2],
  );
  // A failing rank aborts the generation everywhere: the next task on it is refused.
  const failed = await rejection(cluster.runTask(group2, 'echo', { failOnRank: 2 }));
  assert.ok(failed instanceof TaskError);
  assert.equal(failed.rank, 2);
  assert.equal(failed.code, grpc.status.INTERNAL);
  assert.match(failed.message, /echo: asked to fail on rank 2/);
  const refused = await rejection(cluster.runTask(group2, 'echo', {}));
  assert.ok(refused instanceof TaskError);
  assert.match(refused.message, /FAILED_PRECONDITION: .*generation 2 of job job-a was aborted: rank 2 failed/);
  await cluster.releaseGroup(group2);
  assert.equal(cluster.coordinator.registry.count('idle'), 3);
  await waitUntil(() => cluster.coordinator.workers().every((w) => w.reported?.state === 'idle'), 'idle heartbeats');
});

test('coordinator restarted on the same port: the workers re-register', async () => {
  const old = cluster.coordinator;
  const coordinator = await cluster.restartCoordinator();
  assert.notEqual(coordinator, old);
  assert.equal(coordinator.port, old.port);
  await coordinator.waitForWorkers(3, 5000);
  assert.deepEqual(
    coordinator
      .workers()
      .map((w) => w.id)
      .sort(),
    ['local-0', 'local-1', 'local-2'],
  );
  // Workers report their last generation of job-a, so the new coordinator continues after it.
  await waitUntil(() => coordinator.workers().every((w) => w.reported !== undefined), 'first heartbeats');
  const g = await cluster.formGroup('job-a', 3);
  assert.equal(g.generation, 3);
  const replies = await cluster.runTask(g, 'echo', { after: 'restart' });
  assert.deepEqual(
    replies.map((r) => r.rank),
    [0, 1, 2],
  );
});

test('a SIGKILLed worker is dead after the missed heartbeats; its group is aborted', async () => {
  const g = await cluster.formGroup('job-a', 3);
  const victim = cluster.workers[2]!;
  const t0 = Date.now();
  victim.process.kill('SIGKILL');
  await waitUntil(() => stateOf(victim.id) === 'dead', `${victim.id} dead`, 5000, 10);
  const elapsed = Date.now() - t0;
  assert.ok(elapsed >= (MISSES - 1) * INTERVAL_MS, `dead after ${elapsed} ms: too early for ${MISSES} misses of ${INTERVAL_MS} ms`);
  assert.ok(elapsed <= (MISSES + 3) * INTERVAL_MS, `dead after ${elapsed} ms: too late`);
  assert.match(cluster.coordinator.registry.get(victim.id)?.deadReason ?? '', /missed 3 heartbeats/);
  assert.equal(stateOf('local-0'), 'busy');
  // The survivors' generation was aborted when the worker died.
  const err = await rejection(cluster.runTask(g, 'echo', {}, { timeoutMs: 3000 }));
  assert.ok(err instanceof TaskError);
  await assert.rejects(cluster.coordinator.formGroup('job-c', { min: 3, max: 3 }), /need at least 3 idle workers/);
  await cluster.releaseGroup(g);
  const small = await cluster.coordinator.formGroup('job-c', { min: 2, max: 3 });
  assert.equal(small.world, 2);
  assert.deepEqual(
    (await cluster.runTask(small, 'echo', {})).map((r) => r.workerId),
    ['local-0', 'local-1'],
  );
});

test('SIGTERM: a worker drains (tells the coordinator) and exits 0', async () => {
  const w = cluster.workers[1]!;
  const exit = once(w.process, 'exit');
  w.process.kill('SIGTERM');
  const [code] = (await exit) as [number | null];
  assert.equal(code, 0);
  assert.equal(stateOf(w.id), 'draining', 'the last heartbeat said draining (dead comes after the misses)');
});

test('a worker may start before the coordinator: it registers once the coordinator is up', async () => {
  const probe = await Coordinator.start();
  const port = probe.port;
  await probe.stop();
  const worker = await startWorker({ coordinator: `127.0.0.1:${port}`, id: 'early', threads: 1 });
  try {
    await new Promise((r) => setTimeout(r, 300));
    const coordinator = await Coordinator.start({ port, heartbeatIntervalMs: INTERVAL_MS });
    try {
      await coordinator.waitForWorkers(1, 5000);
      assert.equal(coordinator.registry.get('early')?.address, worker.address);
      await worker.registered;
      assert.equal(worker.link.heartbeatIntervalMs, INTERVAL_MS, 'the worker heartbeats at the interval the coordinator asked for');
    } finally {
      await coordinator.stop();
    }
  } finally {
    await worker.stop();
  }
});
