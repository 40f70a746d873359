// Text that goes back to a caller in a gRPC status (the grpc-message trailer) or into a log line
// when part of it came from the network. A status trailer larger than the peer's header-list limit
// (16 KiB by default in Node's HTTP/2) is never delivered: the call then hangs to its deadline
// instead of failing. So strings received from a caller are quoted short, and every status detail
// is bounded.

/** Longest status details sent, in characters (percent-encoding can make them up to 9× longer). */
export const MAX_STATUS_DETAILS_CHARS = 1024;

/** Characters of a received string shown in a message. */
const SHOWN_CHARS = 64;

/**
 * A received string for an error message or log line: quoted, non-printable and non-ASCII
 * characters escaped, cut to its first 64 characters with the full length named.
 */
export function quoteUntrusted(s: string): string {
  const shown = s.length > SHOWN_CHARS ? s.slice(0, SHOWN_CHARS) : s;
  const escaped = shown.replace(/[^\x20-\x7e]|["\\]/g, (c) =>
    c === '"' || c === '\\' ? `\\${c}` : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return s.length > SHOWN_CHARS ? `"${escaped}…" (${s.length} characters)` : `"${escaped}"`;
}

/** Status details bounded to MAX_STATUS_DETAILS_CHARS (the cut is marked). */
export function clampDetails(details: string): string {
  if (details.length <= MAX_STATUS_DETAILS_CHARS) return details;
  const more = details.length - MAX_STATUS_DETAILS_CHARS;
  return `${details.slice(0, MAX_STATUS_DETAILS_CHARS)}… (${more} more characters cut)`;
}

/** Why `s` is not a usable identifier (1..maxChars printable ASCII, no spaces), or undefined when it is. */
export function identifierProblem(field: string, s: string, maxChars = 128): string | undefined {
  if (s.length === 0) return `${field} must not be empty`;
  if (s.length > maxChars || !/^[\x21-\x7e]+$/.test(s))
    return `${field} must be 1..${maxChars} printable ASCII characters without spaces, got ${quoteUntrusted(s)}`;
  return undefined;
}
