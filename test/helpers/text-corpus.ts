// A seeded pseudo-text corpus for training tests: sentences of words built from syllables, so
// byte-level models have structure to learn (not uniform noise) and every run draws fresh text.
import { writeFile } from 'node:fs/promises';
import { Rng } from './rng.js';

const SYLLABLES = ['ka', 'lo', 'mi', 'ten', 'sa', 'ru', 'vel', 'do', 'ni', 'qua', 'ber', 'as', 'ti', 'on', 'el', 'ga'];

export function corpusText(seed: number, bytes: number): string {
  const rng = new Rng(seed);
  const words = Array.from({ length: 60 }, () =>
    Array.from({ length: rng.int(1, 3) }, () => SYLLABLES[rng.int(0, SYLLABLES.length - 1)]).join(''),
  );
  let out = '';
  while (out.length < bytes) {
    const n = rng.int(3, 12);
    const sentence = Array.from({ length: n }, () => words[rng.int(0, words.length - 1)]).join(' ');
    out += sentence.charAt(0).toUpperCase() + sentence.slice(1) + (rng.int(0, 4) === 0 ? '?\n' : '. ');
  }
  return out.slice(0, bytes);
}

export async function writeCorpus(path: string, seed: number, bytes: number): Promise<void> {
  await writeFile(path, corpusText(seed, bytes));
}
