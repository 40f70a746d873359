// The collective deadline is a worker option (`lasp worker --collective-timeout-ms`, the local
// cluster's collectiveTimeoutMs): with a short one, a rank that waits in an AllGather for a peer
// that is still busy fails when the deadline passes, naming the op and the peer it waited for;
// with the default (30 s) the same task, where the busy rank is late by 2.5 s, completes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startLocalCluster } from '../cluster/local-cluster.js';

const LATE_MS = 2500;

async function runLateAllGather(collectiveTimeoutMs: number | undefined): Promise<{ ms: number; error?: string }> {
  const cluster = await startLocalCluster({
    workers: 2,
    threadsPerWorker: 1,
    ...(collectiveTimeoutMs !== undefined ? { collectiveTimeoutMs } : {}),
  });
  try {
    const group = await cluster.formGroup(`deadline-${collectiveTimeoutMs ?? 'default'}`, 2);
    const t0 = Date.now();
    try {
      const replies = await cluster.runTask(group, 'echo', { sleepMs: LATE_MS, sleepOnRank: 1, allGather: true });
      assert.equal(replies.length, 2);
      return { ms: Date.now() - t0 };
    } catch (err) {
      return { ms: Date.now() - t0, error: (err as Error).message };
    } finally {
      await cluster.releaseGroup(group).catch(() => {});
    }
  } finally {
    await cluster.stop();
  }
}

test('--collective-timeout-ms: a short deadline fails an AllGather that waits for a late rank; the default waits', async () => {
  const short = await runLateAllGather(600);
  assert.ok(short.error !== undefined, `with a 600 ms deadline the AllGather should fail (it finished in ${short.ms} ms)`);
  assert.match(short.error, /echo/, short.error);
  assert.match(short.error, /deadline|timed out|timeout/i, short.error);
  assert.ok(short.ms < LATE_MS, `failed after ${short.ms} ms, before the late rank (${LATE_MS} ms) would have joined`);

  const dflt = await runLateAllGather(undefined);
  assert.equal(dflt.error, undefined, `with the default deadline it should complete: ${dflt.error}`);
  assert.ok(dflt.ms >= LATE_MS, `completed after ${dflt.ms} ms`);
});
