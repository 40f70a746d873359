// Option parsers shared by the CLI commands: each names the flag and what it got.
import { InvalidArgumentError } from 'commander';

/** A positive integer; "16k" means 16000, "16K" 16384-style binary suffixes are not guessed. */
export function positiveInt(flag: string) {
  return (value: string): number => {
    const n = Number(value.trim().replace(/k$/i, '000'));
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${flag} must be a positive integer, got ${JSON.stringify(value)}`);
    return n;
  };
}

/** A non-negative integer (0 allowed). */
export function nonNegativeInt(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0)
      throw new InvalidArgumentError(`${flag} must be a non-negative integer, got ${JSON.stringify(value)}`);
    return n;
  };
}

/** A comma-separated list of positive integers. */
export function intList(flag: string) {
  const one = positiveInt(flag);
  return (value: string): number[] => {
    try {
      return value.split(',').map((x) => one(x));
    } catch {
      throw new InvalidArgumentError(`${flag} must be a comma-separated list of positive integers, got ${JSON.stringify(value)}`);
    }
  };
}
