// Control plane pieces alone: heartbeat monitor (fake clock), registry, rendezvous (fake worker
// clients), tensor bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { HeartbeatMonitor, type MonitoredRegistry } from '../coordinator/heartbeat-monitor.js';
import { WorkerRegistry } from '../coordinator/registry.js';
import { Rendezvous, TaskError } from '../coordinator/rendezvous.js';
import { RpcError } from '../coordinator/grpc-call.js';
import { decodeTensor, encodeTensor } from '../worker/tensor-bytes.js';
import { FakeClock, fakeClientFactory, type FakeCall } from './helpers/control-fakes.js';

function register(reg: WorkerRegistry, id: string, host = 'h1') {
  return reg.register({ id, address: `addr-${id}`, host, pid: 1, device: 'cpu', threads: 1 });
}

test('heartbeat monitor: dead only after missesAllowed × interval of silence', () => {
  const clock = new FakeClock();
  const last = new Map<string, number>([
    ['a', clock.now()],
    ['b', clock.now()],
  ]);
  const dead: string[] = [];
  const reg: MonitoredRegistry = {
    liveWorkers: () => [...last].filter(([id]) => !dead.includes(id)).map(([id, lastHeartbeat]) => ({ id, lastHeartbeat })),
    markDead: (id) => dead.push(id),
  };
  const monitor = new HeartbeatMonitor(reg, { heartbeatIntervalMs: 1000, missesAllowed: 3, clock });
  monitor.start();
  for (let i = 0; i < 5; i++) {
    clock.advance(1000);
    last.set('a', clock.now()); // a keeps heartbeating, b is silent
  }
  assert.deepEqual(dead, ['b']);
  monitor.stop();
  clock.advance(10_000);
  assert.deepEqual(dead, ['b'], 'a stopped monitor marks nobody');
  assert.deepEqual(new HeartbeatMonitor(reg, { heartbeatIntervalMs: 1000, missesAllowed: 3, clock }).check(), ['a']);
});

test('heartbeat monitor: exactly at the limit is alive, just past it is dead', () => {
  const clock = new FakeClock();
  const start = clock.now();
  const dead: string[] = [];
  const reg: MonitoredRegistry = { liveWorkers: () => [{ id: 'w', lastHeartbeat: start }], markDead: (id) => dead.push(id) };
  const monitor = new HeartbeatMonitor(reg, { heartbeatIntervalMs: 200, missesAllowed: 3, clock });
  clock.advance(600);
  assert.deepEqual(monitor.check(), []);
  clock.advance(1);
  assert.deepEqual(monitor.check(), ['w']);
  assert.throws(() => new HeartbeatMonitor(reg, { heartbeatIntervalMs: 0 }), /heartbeatIntervalMs/);
});

test('registry: unknown and dead workers must re-register; draining is kept', () => {
  const clock = new FakeClock();
  const reg = new WorkerRegistry(clock);
  const hb = (id: string, state = 'idle') => reg.heartbeat({ id, state, jobId: '', generation: 0, step: 0 });
  assert.equal(hb('x'), false);
  register(reg, 'x');
  clock.advance(50);
  assert.equal(hb('x'), true);
  assert.equal(reg.get('x')?.lastHeartbeat, clock.now());
  reg.markDead('x', 'test');
  assert.equal(hb('x'), false, 'a dead worker is told to register again');
  register(reg, 'x');
  assert.equal(reg.get('x')?.state, 'idle');
  assert.equal(hb('x', 'draining'), true);
  assert.equal(reg.get('x')?.state, 'draining');
  assert.deepEqual(reg.available(), []);
});

test('rendezvous: deterministic ranks, monotonic generations, busy members', async () => {
  const reg = new WorkerRegistry(new FakeClock());
  for (const [id, host] of [
    ['w3', 'h1'],
    ['w1', 'h2'],
    ['w2', 'h1'],
  ] as const)
    register(reg, id, host);
  const calls: FakeCall[] = [];
  const rdv = new Rendezvous(reg, fakeClientFactory(calls));
  const g1 = await rdv.formGroup('job', { min: 2, max: 3 });
  assert.equal(g1.generation, 1);
  assert.deepEqual(
    g1.members.map((m) => m.workerId),
    ['w2', 'w3', 'w1'],
    'sorted by host, then id',
  );
  const assigns = calls.filter((c) => c.method === 'assign').map((c) => c.arg as { rank: number; peers: string[] });
  assert.deepEqual(assigns.map((a) => a.rank).sort(), [0, 1, 2]);
  assert.deepEqual(assigns[0]?.peers, ['addr-w2', 'addr-w3', 'addr-w1']);
  assert.deepEqual(
    reg.list().map((w) => w.state),
    ['busy', 'busy', 'busy'],
  );
  await assert.rejects(rdv.formGroup('other', { min: 1, max: 1 }), /need at least 1 idle workers, 0 available/);
  const g2 = await rdv.formGroup('job', { min: 1, max: 2 });
  assert.equal(g2.generation, 2, 'members of the same job may re-form it, with a new generation');
  assert.equal(reg.get('w1')?.state, 'idle', 'a member left out of the new generation is released');
  const replies = await rdv.runTask(g2, 'echo', { x: 1 });
  assert.deepEqual(
    replies.map((r) => [r.rank, r.workerId]),
    [
      [0, 'w2'],
      [1, 'w3'],
    ],
  );
  await rdv.releaseGroup(g2);
  assert.equal(reg.count('idle'), 3);
  await assert.rejects(rdv.formGroup('job', { min: 3, max: 2 }), /1 <= min <= max/);
});

test('rendezvous: a failing rank aborts the generation on every member and names the rank', async () => {
  const reg = new WorkerRegistry(new FakeClock());
  for (const id of ['a', 'b', 'c']) register(reg, id);
  const calls: FakeCall[] = [];
  const rdv = new Rendezvous(
    reg,
    fakeClientFactory(calls, (c) =>
      c.method === 'runTask' && c.workerId === 'b' ? new RpcError('worker b', 'RunTask echo', grpc.status.INTERNAL, 'boom') : undefined,
    ),
  );
  const g = await rdv.formGroup('job', { min: 3, max: 3 });
  const err = await rdv.runTask(g, 'echo', {}).then(
    () => assert.fail('runTask should reject'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof TaskError);
  assert.equal(err.rank, 1);
  assert.equal(err.code, grpc.status.INTERNAL);
  assert.match(err.message, /failed on rank 1: worker b: RunTask echo failed: INTERNAL: boom/);
  const aborts = calls.filter((c) => c.method === 'abort');
  assert.deepEqual(aborts.map((c) => c.workerId).sort(), ['a', 'b', 'c']);
  assert.deepEqual(aborts[0]?.arg, { jobId: 'job', generation: 1, reason: 'rank 1 failed: worker b: RunTask echo failed: INTERNAL: boom' });
});

test(
  'rendezvous: a member declared dead while its task is outstanding fails the task at once (the others already replied)',
  { timeout: 10_000 },
  async () => {
    const reg = new WorkerRegistry(new FakeClock());
    for (const id of ['a', 'b']) register(reg, id);
    const calls: FakeCall[] = [];
    const fakes = fakeClientFactory(calls);
    // Worker b hangs: its RunTask never settles (a stopped process on an open connection).
    const clientFor = (id: string) => (id === 'b' ? { ...fakes(id), runTask: () => new Promise<never>(() => {}) } : fakes(id));
    const rdv = new Rendezvous(reg, clientFor as typeof fakes);
    reg.subscribe((event, w) => {
      if (event === 'dead') void rdv.onWorkerDead(w);
    });
    const g = await rdv.formGroup('job', { min: 2, max: 2 });
    const task = rdv.runTask(g, 'echo', {});
    let settled = false;
    void task.then(
      () => (settled = true),
      () => (settled = true),
    );
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(settled, false, 'rank 0 replied, rank 1 is still running');
    reg.markDead('b', 'missed 3 heartbeats (interval 500 ms)');
    const err = await task.then(
      () => assert.fail('runTask should reject'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof TaskError);
    assert.equal(err.rank, 1);
    assert.equal(err.code, grpc.status.UNAVAILABLE);
    assert.match(err.message, /failed on rank 1: worker b is dead: missed 3 heartbeats/);
    const aborts = calls.filter((c) => c.method === 'abort').map((c) => c.workerId);
    assert.ok(aborts.includes('a') && !aborts.includes('b'), `aborts sent to ${aborts.join(', ')}`);
  },
);

test('rendezvous: a failed Assign releases the group and names the worker', async () => {
  const reg = new WorkerRegistry(new FakeClock());
  for (const id of ['a', 'b']) register(reg, id);
  const calls: FakeCall[] = [];
  const rdv = new Rendezvous(
    reg,
    fakeClientFactory(calls, (c) =>
      c.method === 'assign' && c.workerId === 'b'
        ? new RpcError('worker b', 'Assign', grpc.status.UNAVAILABLE, 'connection refused')
        : undefined,
    ),
  );
  await assert.rejects(
    rdv.formGroup('job', { min: 2, max: 2 }),
    /assigning generation 1 failed: rank 1: worker b: Assign failed: UNAVAILABLE/,
  );
  assert.equal(reg.get('a')?.state, 'idle');
  assert.equal(reg.get('b')?.state, 'dead', 'an unreachable worker is dead');
});

test('tensor bytes: little-endian float32 round trip, size checks', () => {
  const data = Float32Array.from([1.5, -2, 3.25, 1e-30, 7, 8]);
  const wire = encodeTensor({ name: 't', shape: [2, 3], data });
  assert.equal((wire.data as Buffer).readFloatLE(4), -2);
  const back = decodeTensor({ name: 't', shape: [2, 3], data: Buffer.concat([Buffer.alloc(1), wire.data as Buffer]).subarray(1) });
  assert.deepEqual(back.data, data);
  assert.throws(() => encodeTensor({ name: 't', shape: [4], data }), /holds 4 elements, data has 6/);
  assert.throws(() => decodeTensor({ name: 't', shape: [5], data: wire.data as Buffer }), /needs 20 bytes, got 24/);
});
