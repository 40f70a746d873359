// Which tokens of a sequence each rank owns (DESIGN.md §3.1). A layout is a list of segments in
// sequence order, each owned by one rank; a rank's local rows are its segments one after another,
// in sequence order.
//  - contiguous: W segments, rank r owns segment r (splitBlocks).
//  - zigzag: 2W segments (splitBlocks(T, 2W)), rank r owns segments r and 2W−1−r, which balances
//    causal attention's work (early and late queries on every rank).
import { splitBlocks, type Block } from './blocks.js';

export const LAYOUTS = ['contiguous', 'zigzag'] as const;
export type LayoutName = (typeof LAYOUTS)[number];

export interface Layout {
  readonly T: number;
  readonly world: number;
  /** Segments in sequence order. */
  readonly segments: readonly Block[];
  /** owner[i]: the rank holding segment i. */
  readonly owner: readonly number[];
}

export function makeLayout(T: number, world: number, name: LayoutName = 'contiguous'): Layout {
  if (name === 'contiguous') return { T, world, segments: splitBlocks(T, world), owner: Array.from({ length: world }, (_, r) => r) };
  if (name !== 'zigzag') throw new Error(`layout must be one of ${LAYOUTS.join(', ')}, got ${JSON.stringify(name)}`);
  if (T < 2 * world) throw new Error(`a zigzag layout of ${T} tokens over ${world} ranks needs T >= 2W = ${2 * world}`);
  const n = 2 * world;
  return { T, world, segments: splitBlocks(T, n), owner: Array.from({ length: n }, (_, i) => (i < world ? i : n - 1 - i)) };
}

/** One of a rank's segments: its index in the layout, its tokens, and where its rows start locally. */
export interface OwnSegment {
  index: number;
  block: Block;
  /** First local row. */
  offset: number;
}

export function ownSegments(layout: Layout, rank: number): OwnSegment[] {
  const out: OwnSegment[] = [];
  let offset = 0;
  for (const [index, block] of layout.segments.entries()) {
    if (layout.owner[index] !== rank) continue;
    out.push({ index, block, offset });
    offset += block.end - block.start;
  }
  return out;
}

/** Rows a rank holds. */
export function localRows(layout: Layout, rank: number): number {
  return ownSegments(layout, rank).reduce((s, x) => s + x.block.end - x.block.start, 0);
}

/** The local rows of `rank` of a whole-sequence row-major tensor of `width` floats per row (a copy). */
export function localSlice(layout: Layout, rank: number, full: Float32Array, width: number): Float32Array {
  const segs = ownSegments(layout, rank);
  const out = new Float32Array(localRows(layout, rank) * width);
  for (const s of segs) out.set(full.subarray(s.block.start * width, s.block.end * width), s.offset * width);
  return out;
}
