// Training across two worker processes with a given stream transport against the same run over the
// default http2 transport: the losses must be bit-identical, and both workers' pieces must have
// moved to the peer's announced listener (their NODE_DEBUG=lasp-raw log says so).
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLocalCluster } from '../../cluster/local-cluster.js';
import { parseTrainConfig } from '../../train/config.js';
import { runTraining } from '../../train/driver.js';
import { caseSeed } from './rng.js';

export async function assertTrainingMatchesHttp2(streamTransport: 'raw' | 'native'): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), `lasp-${streamTransport}-train-`));
  const config = (name: string) =>
    parseTrainConfig({
      model: { dModel: 16, layers: 2, heads: 2, dk: 8, dv: 8, ffn: 32, kinds: ['gated_delta', 'softmax'], chunk: 8 },
      data: { type: 'mqar', seqLen: 64, seed: caseSeed(`${streamTransport}-train-data`) },
      training: { steps: 4, batchSize: 2, lr: 3e-3, seed: caseSeed(`${streamTransport}-train-init`), evalSequences: 2 },
      cluster: { workers: 2 },
      checkpoint: { dir: join(dir, name) },
    });
  const direct = await startLocalCluster({ workers: 2, threadsPerWorker: 1, streamTransport, env: { NODE_DEBUG: 'lasp-raw' } });
  const plain = await startLocalCluster({ workers: 2, threadsPerWorker: 1 });
  try {
    const a = await runTraining(config(streamTransport), { cluster: direct, writeFiles: false });
    const b = await runTraining(config('http2'), { cluster: plain, writeFiles: false });
    assert.deepEqual(a.losses, b.losses, 'the transport must not change a single bit of the losses');
    const moved = direct.workers.filter((w) => w.logTail.some((l) => /move to its raw listener/.test(l)));
    assert.equal(
      moved.length,
      2,
      `workers whose pieces moved to the peer's ${streamTransport} listener:\n${direct.workers.map((w) => w.logTail.join('\n')).join('\n---\n')}`,
    );
  } finally {
    await direct.stop();
    await plain.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
