// Bounded, escaped status details for strings that came from the network (coordinator/status-details.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clampDetails, identifierProblem, MAX_STATUS_DETAILS_CHARS, quoteUntrusted } from '../coordinator/status-details.js';
import { rngFor } from './helpers/rng.js';

test('quoteUntrusted: short strings quoted whole, long ones cut to 64 characters with their length, escapes applied', () => {
  assert.equal(quoteUntrusted('job-7'), '"job-7"');
  assert.equal(quoteUntrusted('a"b\\c'), '"a\\"b\\\\c"');
  assert.equal(quoteUntrusted('é\n\u0000'), '"\\u00e9\\u000a\\u0000"');
  const rng = rngFor('quote-untrusted');
  const n = rng.int(65, 100_000);
  const long = String.fromCharCode(...Array.from({ length: Math.min(n, 1000) }, () => rng.int(0, 0xffff)))
    .repeat(Math.ceil(n / 1000))
    .slice(0, n);
  const q = quoteUntrusted(long);
  assert.ok(q.endsWith(`…" (${n} characters)`), q.slice(-40));
  assert.ok(/^[\x20-\x7e…]+$/.test(q), 'only printable ASCII (and the cut mark)');
  assert.ok(q.length <= 64 * 6 + 40, `${q.length} characters`);
});

test('clampDetails bounds status details and marks the cut', () => {
  assert.equal(clampDetails('short'), 'short');
  const d = 'x'.repeat(MAX_STATUS_DETAILS_CHARS + 500);
  const c = clampDetails(d);
  assert.ok(c.startsWith('x'.repeat(MAX_STATUS_DETAILS_CHARS)));
  assert.ok(c.endsWith('… (500 more characters cut)'), c.slice(-40));
  assert.equal(clampDetails('y'.repeat(MAX_STATUS_DETAILS_CHARS)).length, MAX_STATUS_DETAILS_CHARS);
});

test('identifierProblem names the field, the rule and what arrived', () => {
  assert.equal(identifierProblem('worker_id', 'node-3.gpu:0'), undefined);
  assert.equal(identifierProblem('worker_id', ''), 'worker_id must not be empty');
  assert.equal(
    identifierProblem('worker_id', 'has space'),
    'worker_id must be 1..128 printable ASCII characters without spaces, got "has space"',
  );
  assert.match(identifierProblem('address', 'h'.repeat(300), 255) ?? '', /^address must be 1\.\.255 .* \(300 characters\)$/);
  assert.match(identifierProblem('job_id', 'jöb') ?? '', /got "j\\u00f6b"$/);
});
