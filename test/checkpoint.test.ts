// Training checkpoints (train/checkpoint): bit-exact round trip, atomic writes (a crash before the
// rename or a truncated file falls back to the previous checkpoint), keep-last-K, checksum
// mismatch, and forged headers rejected before anything is allocated.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, open, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  CheckpointError,
  checkpointName,
  latestValid,
  listCheckpoints,
  readCheckpoint,
  readCheckpointHeader,
  writeCheckpoint,
  type CheckpointTensor,
} from '../train/checkpoint/index.js';
import { blobStartFor, encodePrefix } from '../train/checkpoint/format.js';
import { rngFor } from './helpers/rng.js';

let root: string;
let n = 0;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'lasp-ckpt-test-'));
});
after(async () => rm(root, { recursive: true, force: true }));
const freshDir = () => join(root, `case-${++n}`);

function tensors(seed: string): CheckpointTensor[] {
  const rng = rngFor(seed);
  const special = new Float32Array([0, -0, NaN, Infinity, -Infinity, 1.401298464324817e-45, 3.4028234663852886e38]);
  const nanPayload = new Float32Array(1);
  new Uint32Array(nanPayload.buffer)[0] = 0x7fc01234; // a NaN with a payload survives bit-exactly
  return [
    { name: 'embed', shape: [257, 33], data: rng.normals(257 * 33) },
    { name: 'adam.m.embed', shape: [257, 33], data: rng.normals(257 * 33, 1e-3) },
    { name: 'adam.v.embed', shape: [257, 33], data: rng.normals(257 * 33, 1e-6) },
    { name: 'special', shape: [7], data: special },
    { name: 'nan-payload', shape: [1], data: nanPayload },
    { name: 'empty', shape: [0, 4], data: new Float32Array(0) },
    { name: 'scalar', shape: [], data: new Float32Array([42]) },
  ];
}

function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

async function writeSteps(dir: string, steps: number[], keep = 10): Promise<void> {
  for (const step of steps)
    await writeCheckpoint(dir, { step, tensors: [{ name: 'w', shape: [3], data: new Float32Array([step, 1, 2]) }] }, { keep });
}

describe('checkpoints', () => {
  test('round trip is bit-exact, with config, data cursor and RNG state', async () => {
    const dir = freshDir();
    const ts = tensors('ckpt-roundtrip');
    const meta = {
      config: { lr: 3e-4, layers: ['linear', 'delta'] },
      data: { type: 'mqar', id: 'abcd1234', index: 77 },
      rng: { s: [1, 2, 3, 4] },
    };
    const res = await writeCheckpoint(dir, { step: 1234, ...meta, tensors: ts });
    assert.equal(res.path, join(dir, 'ckpt-000000001234.lasp'));
    const ck = await readCheckpoint(res.path);
    assert.equal(ck.sha256, res.sha256);
    assert.equal(ck.header.step, 1234);
    assert.deepEqual(ck.header.config, meta.config);
    assert.deepEqual(ck.header.data, meta.data);
    assert.deepEqual(ck.header.rng, meta.rng);
    assert.deepEqual(
      [...ck.tensors.keys()],
      ts.map((t) => t.name),
    );
    for (const t of ts) {
      const got = ck.tensors.get(t.name)!;
      assert.deepEqual(got.shape, t.shape, t.name);
      assert.deepEqual(bits(got.data), bits(t.data), `${t.name} differs bitwise`);
      assert.equal(got.data.byteOffset % 64, 0, `${t.name} is 64-byte aligned`);
    }
    assert.equal((await readCheckpointHeader(res.path)).tensors.length, ts.length);
    assert.deepEqual(await readdir(dir), ['ckpt-000000001234.lasp'], 'no temp file is left behind');
  });

  test('bad input is rejected before anything is written', async () => {
    const dir = freshDir();
    const w = new Float32Array(6);
    await assert.rejects(
      writeCheckpoint(dir, { step: 1, tensors: [{ name: 'w', shape: [2, 2], data: w }] }),
      /tensor "w": shape \[2, 2\] holds 4 elements, data has 6/,
    );
    await assert.rejects(writeCheckpoint(dir, { step: -1, tensors: [] }), /step must be an integer in \[0, 999999999999\], got -1/);
    await assert.rejects(
      writeCheckpoint(dir, {
        step: 1,
        tensors: [
          { name: 'w', shape: [6], data: w },
          { name: 'w', shape: [6], data: w },
        ],
      }),
      /tensors\[1\]\.name "w" is used twice/,
    );
    await assert.rejects(writeCheckpoint(dir, { step: 1, rng: { big: 1n }, tensors: [] }), /rng must be JSON-serialisable/);
    assert.deepEqual(await listCheckpoints(dir), []);
  });

  test('a crash before the rename leaves only a temp file: latestValid returns the previous checkpoint', async () => {
    const dir = freshDir();
    await writeSteps(dir, [10, 20]);
    const crash = new Error('simulated crash');
    await assert.rejects(
      writeCheckpoint(dir, { step: 30, tensors: tensors('ckpt-crash') }, { beforeRename: () => Promise.reject(crash) }),
      (e: unknown) => e === crash,
    );
    assert.ok(
      (await readdir(dir)).some((f) => f.startsWith('.ckpt-000000000030.lasp.tmp-')),
      'the temp file of step 30 is there',
    );
    // A temp file cut short by the crash, too.
    await writeFile(join(dir, '.ckpt-000000000040.lasp.tmp-1-deadbeef'), Buffer.from('LASPCKPT partial'));
    const { checkpoint, skipped } = await latestValid(dir);
    assert.equal(checkpoint?.header.step, 20);
    assert.deepEqual(skipped, []);
    // The next successful write cleans the temp files up.
    const res = await writeCheckpoint(dir, { step: 30, tensors: [] });
    assert.equal(res.removed.filter((p) => p.includes('.tmp-')).length, 2);
    assert.deepEqual(await readdir(dir).then((f) => f.sort()), [
      'ckpt-000000000010.lasp',
      'ckpt-000000000020.lasp',
      'ckpt-000000000030.lasp',
    ]);
  });

  test('a truncated newest checkpoint is skipped and reported', async () => {
    const dir = freshDir();
    await writeSteps(dir, [1, 2, 3]);
    const newest = join(dir, checkpointName(3));
    const size = (await readFile(newest)).length;
    await truncate(newest, size - 5);
    const lines: string[] = [];
    const { checkpoint, skipped } = await latestValid(dir, { log: (l) => lines.push(l) });
    assert.equal(checkpoint?.header.step, 2);
    assert.deepEqual(bits(checkpoint!.tensors.get('w')!.data), bits(new Float32Array([2, 1, 2])));
    assert.equal(skipped.length, 1);
    assert.equal(skipped[0]!.step, 3);
    assert.match(skipped[0]!.reason, /blobBytes \d+ does not match the file .*truncated or corrupt/);
    assert.match(lines[0]!, /skipping checkpoint of step 3/);
    // Cut inside the header too, and to nothing.
    await truncate(newest, 60);
    assert.match((await latestValid(dir)).skipped[0]!.reason, /header length \d+ is impossible for a 60-byte file/);
    await truncate(newest, 0);
    assert.match((await latestValid(dir)).skipped[0]!.reason, /truncated: 0 bytes/);
    assert.deepEqual(await latestValid(freshDir()), { checkpoint: undefined, skipped: [] }, 'a missing directory has none');
  });

  test('keep-last-K deletes older checkpoints after each successful write', async () => {
    const dir = freshDir();
    for (let step = 1; step <= 5; step++) {
      const res = await writeCheckpoint(dir, { step, tensors: [] }, { keep: 2 });
      assert.deepEqual(res.removed, step > 2 ? [join(dir, checkpointName(step - 2))] : []);
    }
    assert.deepEqual(
      (await listCheckpoints(dir)).map((f) => f.step),
      [5, 4],
    );
    // Resuming from step 4 and checkpointing step 4 again drops step 5, left by the abandoned run.
    await writeCheckpoint(dir, { step: 4, tensors: [] }, { keep: 2 });
    assert.deepEqual(
      (await listCheckpoints(dir)).map((f) => f.step),
      [4],
    );
    await assert.rejects(writeCheckpoint(dir, { step: 6, tensors: [] }, { keep: 0 }), /keep must be an integer >= 1, got 0/);
  });

  test('a flipped byte anywhere fails the checksum; latestValid falls back', async () => {
    const dir = freshDir();
    await writeSteps(dir, [7, 8]);
    const path = join(dir, checkpointName(8));
    const bytes = await readFile(path);
    const fh = await open(path, 'r+');
    const at = bytes.length - 32 - 3; // inside the blob
    await fh.write(Buffer.from([bytes[at]! ^ 0x10]), 0, 1, at);
    await fh.close();
    await assert.rejects(
      readCheckpoint(path),
      (e: unknown) => e instanceof CheckpointError && /checksum mismatch: stored sha256 [0-9a-f]{64}, computed/.test(e.message),
    );
    const { checkpoint, skipped } = await latestValid(dir);
    assert.equal(checkpoint?.header.step, 7);
    assert.match(skipped[0]!.reason, /checksum mismatch/);
  });

  describe('forged headers are rejected before allocation', () => {
    /** A file with a self-consistent prefix, padding and (correct) checksum around `header` and `blobBytes` zero bytes. */
    async function forge(header: unknown, blobBytes: number, headerLenOverride?: number): Promise<string> {
      const h = Buffer.from(JSON.stringify(header));
      const start = blobStartFor(h.length);
      const body = Buffer.alloc(start + blobBytes);
      Buffer.from(encodePrefix(headerLenOverride ?? h.length)).copy(body, 0);
      h.copy(body, 16);
      const file = Buffer.concat([body, createHash('sha256').update(body).digest()]);
      const path = join(root, `forged-${++n}.lasp`);
      await writeFile(path, file);
      return path;
    }
    const base = (tensors: unknown[], blobBytes: number) => ({
      format: 'lasp-checkpoint',
      version: 1,
      step: 1,
      createdAt: 'x',
      config: null,
      data: null,
      rng: null,
      blobBytes,
      tensors,
    });
    const t = (byteLength: number, shape: number[], byteOffset = 0) => ({ name: 'w', shape, dtype: 'float32', byteOffset, byteLength });

    test('the honest forgery reads (the helper is right)', async () => {
      const ck = await readCheckpoint(await forge(base([t(64, [16])], 64), 64));
      assert.deepEqual(bits(ck.tensors.get('w')!.data), new Uint32Array(16));
    });
    test('a tensor of 4 TB in a 64-byte blob', async () => {
      await assert.rejects(
        readCheckpoint(await forge(base([t(4e12, [1e12])], 64), 64)),
        /tensor "w": shape \[1000000000000\] needs more bytes than the 64-byte blob holds/,
      );
    });
    test('a shape whose product overflows', async () => {
      await assert.rejects(
        readCheckpoint(await forge(base([t(64, [2 ** 40, 2 ** 40, 0])], 64), 64)),
        /needs more bytes than the 64-byte blob/,
      );
    });
    test('blobBytes larger than the file', async () => {
      await assert.rejects(
        readCheckpoint(await forge(base([t(64, [16])], 2 ** 40), 64)),
        /blobBytes 1099511627776 does not match the file \(room for 64 bytes/,
      );
    });
    test('byteLength not matching the shape, or outside the blob', async () => {
      await assert.rejects(
        readCheckpoint(await forge(base([t(2 ** 40, [16])], 64), 64)),
        /byteLength must be 4 × 16 elements = 64, got 1099511627776/,
      );
      await assert.rejects(readCheckpoint(await forge(base([t(64, [16], 64)], 64), 64)), /bytes \[64, 128\) lie outside the 64-byte blob/);
    });
    test('overlapping tensors, bad dtype', async () => {
      const two = [t(64, [16]), { ...t(64, [16]), name: 'v' }];
      await assert.rejects(readCheckpoint(await forge(base(two, 64), 64)), /tensors "w" and "v" overlap|tensors "v" and "w" overlap/);
      await assert.rejects(
        readCheckpoint(await forge(base([{ ...t(64, [16]), dtype: 'float64' }], 64), 64)),
        /dtype must be "float32", got "float64"/,
      );
    });
    test('a header length of 4 GB in the prefix', async () => {
      await assert.rejects(readCheckpoint(await forge(base([], 0), 0, 0xffffffff)), /header length 4294967295 is impossible/);
    });
    test('a blob over maxBlobBytes', async () => {
      await assert.rejects(readCheckpoint(await forge(base([t(64, [16])], 64), 64), { maxBlobBytes: 32 }), /exceeds maxBlobBytes 32/);
    });
    test('not a checkpoint at all', async () => {
      const path = join(root, 'junk.lasp');
      await writeFile(path, Buffer.alloc(100, 0x41));
      await assert.rejects(readCheckpoint(path), /not a lasp checkpoint \(magic "AAAAAAAA"\)/);
    });
  });

  test('a 4M-parameter model with AdamW state round-trips quickly', async () => {
    const dir = freshDir();
    const rng = rngFor('ckpt-large');
    const w = rng.normals(1 << 20);
    const ts = ['w', 'adam.m.w', 'adam.v.w', 'w2'].map((name) => ({ name, shape: [1024, 1024], data: w }));
    const t0 = performance.now();
    await writeCheckpoint(dir, { step: 1, tensors: ts });
    const { checkpoint } = await latestValid(dir);
    const ms = performance.now() - t0;
    for (const name of ['w', 'adam.v.w']) assert.deepEqual(bits(checkpoint!.tensors.get(name)!.data), bits(w));
    assert.ok(ms < 5000, `16 MiB checkpoint took ${ms.toFixed(0)} ms`);
  });
});
