// The cluster token on gRPC (lasp coordinator --token / lasp worker --token, or LASP_TOKEN):
// workers with the token register and run a distributed task (peer messages carry it too); a
// worker with another token is refused (UNAUTHENTICATED, logged without the secret) and never
// joins; calls to a worker's control service without the token are refused; health stays open.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { startLocalCluster } from '../cluster/local-cluster.js';
import { protos } from '../proto/load.js';

const workerEntry = fileURLToPath(new URL('../worker/entry.js', import.meta.url));

test('cluster token: right token joins and runs, wrong token is refused, unauthenticated calls fail', async () => {
  const token = `ct-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const coordinatorLog: string[] = [];
  const cluster = await startLocalCluster({
    workers: 2,
    threadsPerWorker: 1,
    env: { LASP_TOKEN: token },
    coordinator: { token, log: (l) => coordinatorLog.push(l) },
  });
  const rogue = spawn(
    process.execPath,
    [workerEntry, '--coordinator', cluster.coordinator.address, '--id', 'rogue', '--token', `${token}-x`, '--exit-with-stdin'],
    {
      stdio: ['pipe', 'ignore', 'pipe'],
      env: { ...process.env, LASP_TOKEN: '' },
    },
  );
  const rogueLog: string[] = [];
  createInterface({ input: rogue.stderr! }).on('line', (l) => rogueLog.push(l));
  try {
    const group = await cluster.formGroup('token-job', 2);
    const replies = await cluster.runTask(group, 'sp-layer', { kind: 'gated_delta', T: 64, H: 1, dk: 8, dv: 8, seed: 3, repeats: 1 });
    assert.equal(replies.length, 2);
    await cluster.releaseGroup(group);

    for (let i = 0; i < 50 && !rogueLog.some((l) => /UNAUTHENTICATED/.test(l)); i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(
      rogueLog.some((l) => /UNAUTHENTICATED.*wrong cluster token/.test(l)),
      rogueLog.join('\n'),
    );
    assert.equal(cluster.coordinator.registry.get('rogue'), undefined, 'the rogue worker never joins');
    assert.ok(
      coordinatorLog.some((l) => /refused \/lasp\.v1\.Coordinator\/Register .*wrong cluster token/.test(l)),
      coordinatorLog.join('\n'),
    );
    assert.ok(
      [...coordinatorLog, ...rogueLog].every((l) => !l.includes(token)),
      'the secret is never logged',
    );

    // A call to a worker's control service without the token.
    const address = cluster.coordinator.registry.get('local-0')!.address;
    const client = new (protos().worker.lasp.v1.WorkerControl)(address, grpc.credentials.createInsecure());
    const err = await new Promise<grpc.ServiceError | null>((resolve) =>
      client.Abort({ jobId: 'x', generation: 1, reason: 'test' }, { deadline: Date.now() + 5000 }, (e: grpc.ServiceError | null) =>
        resolve(e),
      ),
    );
    client.close();
    assert.equal(err?.code, grpc.status.UNAUTHENTICATED, String(err));
  } finally {
    rogue.kill('SIGKILL');
    await cluster.stop();
  }
});
