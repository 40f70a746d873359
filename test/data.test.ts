// Training data sources (train/data): MQAR structure and determinism, resume from a cursor,
// per-rank windows, byte-text and uint16 token files, config validation.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  ByteTextSource,
  ConfigError,
  createSource,
  IGNORE,
  inputsOf,
  MqarSource,
  parseSourceConfig,
  rankWindow,
  recallAccuracy,
  sliceSample,
  TokenFileSource,
  type Sample,
  type SequenceSource,
} from '../train/data/index.js';
import { caseSeed } from './helpers/rng.js';

async function take(src: SequenceSource, n: number): Promise<Sample[]> {
  const out: Sample[] = [];
  for (let i = 0; i < n; i++) out.push(await src.next());
  return out;
}

function sameSamples(a: Sample[], b: Sample[], what: string): void {
  assert.equal(a.length, b.length, what);
  a.forEach((s, i) => {
    assert.equal(s.index, b[i]!.index, `${what}: index of sample ${i}`);
    assert.deepEqual(s.tokens, b[i]!.tokens, `${what}: tokens of sample ${i}`);
    assert.deepEqual(s.targets, b[i]!.targets, `${what}: targets of sample ${i}`);
  });
}

describe('MQAR', () => {
  const seed = caseSeed('mqar');
  const opts = { seqLen: 64, vocabSize: 101, numKvPairs: 8, numQueries: 6, seed };

  test('every query target is the value paired with its key in the context', async () => {
    const src = new MqarSource(opts);
    const { keyStart, numKeys, valueStart, numValues } = src.vocab;
    for (const s of await take(src, 50)) {
      assert.equal(s.tokens.length, 65);
      assert.equal(s.targets.length, 64);
      const pairs = new Map<number, number>();
      for (let i = 0; i < 8; i++) {
        const k = s.tokens[2 * i]!;
        const v = s.tokens[2 * i + 1]!;
        assert.ok(k >= keyStart && k < keyStart + numKeys, `seed ${seed}: key ${k} out of the key range`);
        assert.ok(v >= valueStart && v < valueStart + numValues, `seed ${seed}: value ${v} out of the value range`);
        assert.ok(!pairs.has(k), `seed ${seed}: key ${k} repeated in the context of sequence ${s.index}`);
        pairs.set(k, v);
        assert.equal(s.targets[2 * i], IGNORE);
        assert.equal(s.targets[2 * i + 1], IGNORE);
      }
      let queries = 0;
      const queried = new Set<number>();
      for (let p = 16; p < 64; p++) {
        const tok = s.tokens[p]!;
        const tgt = s.targets[p]!;
        if (tgt === IGNORE) {
          assert.equal(tok, 0, `seed ${seed}: non-query position ${p} holds ${tok}, not filler`);
          continue;
        }
        queries++;
        assert.equal(tgt, pairs.get(tok), `seed ${seed}: sequence ${s.index} position ${p}: key ${tok}`);
        assert.ok(!queried.has(tok), `seed ${seed}: key ${tok} queried twice`);
        queried.add(tok);
      }
      assert.equal(queries, 6, `seed ${seed}: sequence ${s.index} has ${queries} queries`);
    }
  });

  test('deterministic per seed; different seeds and different indices differ', async () => {
    const a = await take(new MqarSource(opts), 5);
    sameSamples(a, await take(new MqarSource(opts), 5), 'same seed');
    const b = await take(new MqarSource({ ...opts, seed: (seed + 1) >>> 0 }), 5);
    assert.ok(
      a.some((s, i) => !s.tokens.every((t, j) => t === b[i]!.tokens[j])),
      `seeds ${seed} and ${seed + 1} gave the same sequences`,
    );
    assert.notDeepEqual(a[0]!.tokens, a[1]!.tokens);
    const src = new MqarSource(opts);
    sameSamples([await src.at(3)], [a[3]!], 'at(3) equals the 4th next()');
    assert.equal(src.state().index, 0, 'at() does not move the cursor');
  });

  test('state → JSON → restore continues with the identical sequences', async () => {
    const src = new MqarSource(opts);
    await take(src, 7);
    const cursor: unknown = JSON.parse(JSON.stringify(src.state()));
    const expected = await take(src, 4);
    const resumed = new MqarSource(opts);
    resumed.restore(cursor);
    sameSamples(await take(resumed, 4), expected, 'resumed');
    assert.throws(() => new MqarSource({ ...opts, seed: (seed ^ 1) >>> 0 }).restore(cursor), /cursor\.id .*other options/);
    assert.throws(() => resumed.restore({ ...(cursor as object), type: 'bytes' }), /cursor\.type must be "mqar".*"bytes"/);
    assert.throws(() => resumed.restore({ ...(cursor as object), index: -1 }), /cursor\.index must be a non-negative/);
  });

  test('rank windows are views of the whole sequence and tile it', async () => {
    const src = new MqarSource(opts);
    const whole = await src.at(11);
    const W = 3;
    let covered = 0;
    for (let r = 0; r < W; r++) {
      const w = rankWindow(64, r, W);
      assert.equal(w.start, covered);
      covered = w.end;
      const part = await src.at(11, w);
      assert.deepEqual(part, sliceSample(whole, w));
      assert.deepEqual(part.tokens, whole.tokens.subarray(w.start, w.end + 1));
      assert.deepEqual(part.targets, whole.targets.subarray(w.start, w.end));
    }
    assert.equal(covered, 64);
    await assert.rejects(src.at(0, { start: 10, end: 65 }), /window must satisfy 0 <= start < end <= T=64/);
  });

  test('recallAccuracy counts only query positions', async () => {
    const s = await new MqarSource(opts).at(0);
    const perfect = recallAccuracy(s.targets, s.targets);
    assert.deepEqual(perfect, { total: 6, correct: 6, accuracy: 1 });
    const pred = new Int32Array(64); // all filler: wrong at every query
    assert.deepEqual(recallAccuracy(pred, s.targets), { total: 6, correct: 0, accuracy: 0 });
    const half = Int32Array.from(s.targets);
    let changed = 0;
    for (let p = 0; p < 64 && changed < 3; p++) {
      if (half[p] === IGNORE) continue;
      half[p] = 0;
      changed++;
    }
    assert.equal(recallAccuracy(half, s.targets).accuracy, 0.5);
    assert.throws(() => recallAccuracy(new Int32Array(3), s.targets), /predicted must have one id per target \(length 64\), got length 3/);
  });

  test('impossible options name the field', () => {
    assert.throws(
      () => new MqarSource({ ...opts, seqLen: 20 }),
      (e: unknown) => e instanceof ConfigError && e.field === 'mqar.seqLen',
    );
    assert.throws(() => new MqarSource({ ...opts, numQueries: 9 }), /mqar\.numQueries must be an integer in \[1, 8\], got 9/);
    assert.throws(() => new MqarSource({ vocabSize: 9, numKvPairs: 5 }), /mqar\.numKvPairs must be an integer in \[1, 4\], got 5/);
  });
});

describe('byte text and token files', () => {
  let dir: string;
  const content = Buffer.alloc(1000);
  for (let i = 0; i < content.length; i++) content[i] = (i * 7 + 3) % 256;
  const tokens = new Uint16Array(500);
  for (let i = 0; i < tokens.length; i++) tokens[i] = (i * 131 + 5) % 1201; // ids up to 1200, above 255
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lasp-data-test-'));
    await writeFile(join(dir, 'text.bin'), content);
    const le = Buffer.alloc(tokens.length * 2);
    tokens.forEach((t, i) => le.writeUInt16LE(t, 2 * i));
    await writeFile(join(dir, 'tokens.u16'), le);
    await writeFile(join(dir, 'odd.u16'), Buffer.alloc(41));
    await writeFile(join(dir, 'short.txt'), 'hello');
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  test('random offsets: T+1 consecutive bytes, vocab 256, deterministic per seed, targets = shifted tokens', async () => {
    const seed = caseSeed('bytes-random');
    const src = await ByteTextSource.open({ path: join(dir, 'text.bin'), seqLen: 32, seed });
    try {
      assert.equal(src.vocabSize, 256);
      const offsets = new Set<number>();
      for (const s of await take(src, 20)) {
        const off = src.offsetOf(s.index);
        assert.ok(off >= 0 && off + 33 <= 1000, `seed ${seed}: offset ${off}`);
        offsets.add(off);
        assert.deepEqual(s.tokens, Int32Array.from(content.subarray(off, off + 33)));
        assert.deepEqual(s.targets, s.tokens.subarray(1));
        assert.deepEqual(inputsOf(s), s.tokens.subarray(0, 32));
      }
      assert.ok(offsets.size > 10, `seed ${seed}: offsets barely vary (${offsets.size} distinct)`);
      const again = await ByteTextSource.open({ path: join(dir, 'text.bin'), seqLen: 32, seed });
      sameSamples(await take(again, 20), await Promise.all(Array.from({ length: 20 }, (_, i) => src.at(i))), 'same seed');
      await again.close();
    } finally {
      await src.close();
    }
  });

  test('sequential offsets tile the file and wrap; windows read only their part; resume', async () => {
    const src = await ByteTextSource.open({ path: join(dir, 'text.bin'), seqLen: 100, order: 'sequential' });
    try {
      assert.equal(src.numWindows, 9); // ⌊999/100⌋
      const all = await take(src, 10);
      all.forEach((s, i) => assert.equal(s.tokens[0], content[(i % 9) * 100], `sequence ${i}`));
      assert.equal(all[0]!.tokens[100], all[1]!.tokens[0], 'the last token of one sequence is the first of the next');
      const w = rankWindow(100, 1, 4);
      assert.deepEqual(await src.at(4, w), sliceSample(all[4]!, w));
      const cursor = src.state();
      const expected = await take(src, 3);
      src.restore(cursor);
      sameSamples(await take(src, 3), expected, 'restored');
    } finally {
      await src.close();
    }
  });

  test('file shorter than T+1 bytes, missing file, cursor of another file', async () => {
    await assert.rejects(
      ByteTextSource.open({ path: join(dir, 'short.txt'), seqLen: 5 }),
      (e: unknown) =>
        e instanceof ConfigError && e.field === 'bytes.path' && /has 5 bytes, but a sequence needs seqLen\+1 = 6/.test(e.message),
    );
    await assert.rejects(ByteTextSource.open({ path: join(dir, 'nope.txt'), seqLen: 5 }), /bytes\.path: cannot open .*nope\.txt/);
    const a = await ByteTextSource.open({ path: join(dir, 'text.bin'), seqLen: 4 });
    const b = await ByteTextSource.open({ path: join(dir, 'short.txt'), seqLen: 4 });
    assert.throws(() => b.restore(a.state()), /cursor\.id .*another file/);
    await a.close();
    await b.close();
  });

  test('uint16 LE token file: ids above 255, vocab = max id + 1 or given, windows', async () => {
    const seed = caseSeed('tokens');
    const src = await TokenFileSource.open({ path: join(dir, 'tokens.u16'), seqLen: 40, seed });
    try {
      assert.equal(src.numTokens, 500);
      assert.equal(src.vocabSize, Math.max(...tokens) + 1);
      for (const s of await take(src, 10)) {
        const off = src.offsetOf(s.index);
        assert.deepEqual(s.tokens, Int32Array.from(tokens.subarray(off, off + 41)), `seed ${seed}: sequence ${s.index}`);
        const w = rankWindow(40, 2, 3);
        assert.deepEqual(await src.at(s.index, w), sliceSample(s, w));
      }
    } finally {
      await src.close();
    }
    const given = await TokenFileSource.open({ path: join(dir, 'tokens.u16'), seqLen: 40, vocabSize: 65536 });
    assert.equal(given.vocabSize, 65536);
    await given.close();
    const small = await TokenFileSource.open({ path: join(dir, 'tokens.u16'), seqLen: 40, vocabSize: 10 });
    await assert.rejects(small.next(), /token \d+ at token offset \d+ is not below vocabSize 10/);
    await small.close();
  });

  test('odd-sized and short token files are rejected naming the path', async () => {
    await assert.rejects(
      TokenFileSource.open({ path: join(dir, 'odd.u16'), seqLen: 4 }),
      /tokens\.path: token file .*odd\.u16" has 41 bytes, an odd number/,
    );
    await assert.rejects(
      TokenFileSource.open({ path: join(dir, 'tokens.u16'), seqLen: 500 }),
      /has 500 tokens, but a sequence needs seqLen\+1 = 501/,
    );
  });

  test('createSource builds each type from a config', async () => {
    const m = await createSource({ type: 'mqar', seqLen: 32, numKvPairs: 4 });
    assert.equal(m.type, 'mqar');
    assert.equal(m.vocabSize, 8192);
    const b = await createSource({ type: 'bytes', path: join(dir, 'text.bin'), seqLen: 16, order: 'sequential' });
    assert.equal((await b.next()).tokens.length, 17);
    await b.close();
    const t = await createSource({ type: 'tokens', path: join(dir, 'tokens.u16'), seqLen: 16, vocabSize: 2000 });
    assert.equal(t.vocabSize, 2000);
    await t.close();
    await assert.rejects(
      createSource({ type: 'mqar', seqLen: 10, numKvPairs: 4 }),
      /data\.seqLen must be at least 2·numKvPairs \+ numQueries = 12/,
    );
    await assert.rejects(
      createSource({ type: 'bytes', path: join(dir, 'short.txt') }),
      /data\.path: .* has 5 bytes, but a sequence needs seqLen\+1 = 257/,
    );
  });
});

describe('config validation names the field, the expectation and the value', () => {
  const cases: [string, unknown, RegExp, string][] = [
    ['not an object', 'mqar', /data must be an object, got "mqar"/, 'data'],
    ['unknown type', { type: 'parquet' }, /data\.type must be one of "mqar", "bytes", "tokens", got "parquet"/, 'data.type'],
    [
      'unknown field',
      { type: 'mqar', seqlen: 64 },
      /data\.seqlen is not a field of a 'mqar' source \(allowed: type, seqLen, vocabSize/,
      'data.seqlen',
    ],
    [
      'field of another type',
      { type: 'bytes', path: 'x', numKvPairs: 3 },
      /data\.numKvPairs is not a field of a 'bytes' source/,
      'data.numKvPairs',
    ],
    ['non-integer seqLen', { type: 'mqar', seqLen: 64.5 }, /data\.seqLen must be an integer in \[1, \d+\], got 64\.5/, 'data.seqLen'],
    ['string seed', { type: 'mqar', seed: '7' }, /data\.seed must be an integer in \[0, 4294967295\], got "7"/, 'data.seed'],
    ['missing path', { type: 'bytes', seqLen: 8 }, /data\.path must be a non-empty string, got undefined/, 'data.path'],
    [
      'bad order',
      { type: 'tokens', path: 'x', order: 'shuffled' },
      /data\.order must be one of "random", "sequential", got "shuffled"/,
      'data.order',
    ],
    [
      'token vocab too large',
      { type: 'tokens', path: 'x', vocabSize: 70000 },
      /data\.vocabSize must be an integer in \[1, 65536\], got 70000/,
      'data.vocabSize',
    ],
  ];
  for (const [name, config, message, field] of cases) {
    test(name, () => {
      assert.throws(
        () => parseSourceConfig(config),
        (e: unknown) => e instanceof ConfigError && e.field === field && message.test(e.message),
      );
    });
  }
  test('a valid config passes through unchanged', () => {
    const c = { type: 'bytes', path: '/data/enwik8', seqLen: 1024, order: 'random', seed: 3 };
    assert.deepEqual(parseSourceConfig(c), c);
  });
});
