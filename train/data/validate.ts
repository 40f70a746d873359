// Checks for source options and configs. Every failure names the field, what was expected and
// what was given, e.g. `data.seqLen must be an integer in [1, 1073741823], got 0`.

/** A bad field in a source's options or config. `field` is the dotted path, e.g. `data.seqLen`. */
export class ConfigError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Largest sequence length T (a sequence holds T+1 tokens). */
export const MAX_SEQ_LEN = 0x3fffffff;

export function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined) return String(v);
  if (Array.isArray(v)) return `array(${v.length})`;
  try {
    const s = JSON.stringify(v);
    return s.length > 60 ? `${s.slice(0, 57)}...` : s;
  } catch {
    return typeof v;
  }
}

export function checkInt(field: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ConfigError(field, `${field} must be an integer in [${min}, ${max}], got ${show(v)}`);
  }
  return v;
}

export function checkString(field: string, v: unknown): string {
  if (typeof v !== 'string' || v === '') throw new ConfigError(field, `${field} must be a non-empty string, got ${show(v)}`);
  return v;
}

export function checkEnum<T extends string>(field: string, v: unknown, allowed: readonly T[]): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw new ConfigError(field, `${field} must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${show(v)}`);
  }
  return v as T;
}

export function checkObject(field: string, v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigError(field, `${field} must be an object, got ${show(v)}`);
  return v as Record<string, unknown>;
}

/** Rejects fields not in `allowed`, naming the first unknown one and listing the allowed ones. */
export function checkKnownFields(field: string, obj: Record<string, unknown>, allowed: readonly string[], what: string): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) {
      throw new ConfigError(`${field}.${key}`, `${field}.${key} is not a field of ${what} (allowed: ${allowed.join(', ')})`);
    }
  }
}
