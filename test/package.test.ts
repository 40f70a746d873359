// The package's public entry point (package.json "exports") exposes the kernels.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// dist/test/package.test.js → repository root is two levels up.
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface PackageJson {
  name: string;
  exports: { '.': { default: string } };
}

function entryOf(pkg: PackageJson): string {
  const e = pkg.exports?.['.']?.default;
  assert.equal(typeof e, 'string', 'package.json exports["."].default must be a path');
  return e;
}

test('the package root (package.json exports ".") exposes kernels.forward and kernels.backward', async () => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as PackageJson;
  const mod = (await import(pathToFileURL(join(root, entryOf(pkg))).href)) as Record<string, unknown>;
  const kernels = mod.kernels as Record<string, unknown> | undefined;
  assert.ok(kernels && typeof kernels === 'object', 'exports a kernels object');
  for (const fn of ['forward', 'backward', 'summary', 'stateGrad', 'foldStates', 'suffixFold', 'gemm']) {
    assert.equal(typeof kernels[fn], 'function', `kernels.${fn} is a function`);
  }
  assert.equal(typeof (kernels.softmax as Record<string, unknown>)?.forward, 'function', 'kernels.softmax.forward');
  assert.deepEqual(mod.KINDS, ['linear', 'scalar_gate', 'vector_gate', 'delta', 'gated_delta']);
  assert.equal(mod.DEFAULT_CHUNK, 64);
});

test('the package resolves by its own name (self-reference through "exports") to the same module', async () => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as PackageJson;
  const byName = pkg.name; // a variable specifier: resolved by Node at run time, not by tsc
  const a = (await import(byName)) as Record<string, unknown>;
  const b = (await import(pathToFileURL(join(root, entryOf(pkg))).href)) as Record<string, unknown>;
  assert.equal(a.kernels, b.kernels);
});
