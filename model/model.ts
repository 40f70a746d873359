// The language model of DESIGN.md §4, for one process holding the whole sequence:
// embedding → N × [RMSNorm → attention → residual, RMSNorm → SwiGLU → residual] → RMSNorm →
// LM head → cross-entropy. Parameters live in one flat ParamStore (model.params).
import { cpuBackend, type Backend, type LayerKind, type Tensor } from './backend.js';
import { ParamStore } from './params.js';
import { Attention, attentionCache, type AttentionCache } from './layers/attention.js';
import { Embedding, type EmbeddingCache } from './layers/embedding.js';
import { LmHead, lmHeadCache, type LmHeadCache } from './layers/lm-head.js';
import { RmsNorm, type RmsNormCache } from './layers/rms-norm.js';
import { SwigluMlp, swigluMlpCache, type SwigluMlpCache } from './layers/swiglu-mlp.js';

export interface ModelConfig {
  vocab: number;
  dModel: number;
  nLayers: number;
  heads: number;
  dk: number;
  dv: number;
  ffn: number;
  /** One kind per layer (length nLayers): a linear kind, softmax or swa. */
  kinds: LayerKind[];
  /** Keys per query of the swa layers (itself included). Required when a layer is swa. */
  window?: number;
  /** Attention kernel chunk size. */
  chunk: number;
  /** Gate temperature τ. Default 16. */
  tau?: number;
  /** Per-head output RMSNorm in attention. Default true. */
  outNorm?: boolean;
  /** RMSNorm eps. Default 1e-6. */
  normEps?: number;
  /** Short causal convolution kernel size on q, k, v (0: none). Default 0. */
  conv?: number;
}

interface Block {
  norm1: RmsNorm;
  attn: Attention;
  norm2: RmsNorm;
  mlp: SwigluMlp;
}

interface BlockCache {
  norm1: RmsNormCache;
  attn: AttentionCache;
  norm2: RmsNormCache;
  mlp: SwigluMlpCache;
}

/** Everything a forward keeps for its backward. */
export interface ModelCache {
  embed: EmbeddingCache;
  blocks: BlockCache[];
  normF: RmsNormCache;
  head: LmHeadCache;
}

export interface ForwardOptions {
  /** dlogits scale; default 1/(counted targets), i.e. the gradient of the mean loss. */
  scale?: number;
  /** Also return the arg-max prediction at every counted target. Default false. */
  predict?: boolean;
}

/** B sequences of T positions, one after another: inputs[b·T + t] is followed by targets[b·T + t]. */
export interface Batch {
  inputs: Int32Array;
  /** Next-token targets, IGNORE (-1) where a position does not count. */
  targets: Int32Array;
  /** B. Default 1. */
  sequences?: number;
}

export interface ForwardResult {
  /** Mean token loss over counted targets. */
  loss: number;
  /** Summed token loss. */
  lossSum: number;
  count: number;
  cache: ModelCache;
  /** With `predict`: the arg-max token at each counted target position, -1 elsewhere. */
  predictions?: Int32Array;
}

export class Model {
  readonly params = new ParamStore();
  readonly embed: Embedding;
  readonly blocks: Block[];
  readonly normF: RmsNorm;
  readonly head: LmHead;

  constructor(
    readonly cfg: ModelConfig,
    readonly be: Backend = cpuBackend,
  ) {
    const { vocab, dModel: D, nLayers, kinds } = cfg;
    if (kinds.length !== nLayers) throw new Error(`lasp model: kinds has ${kinds.length} entries for ${nLayers} layers`);
    const eps = cfg.normEps ?? 1e-6;
    const P = this.params;
    this.embed = new Embedding(be, P, 'embed', vocab, D);
    this.blocks = kinds.map((kind, i) => ({
      norm1: new RmsNorm(be, P, `l${i}.norm1`, D, eps),
      attn: new Attention(be, P, `l${i}.attn`, {
        kind,
        dModel: D,
        heads: cfg.heads,
        dk: cfg.dk,
        dv: cfg.dv,
        chunk: cfg.chunk,
        layer: i,
        ...(cfg.conv !== undefined ? { conv: cfg.conv } : {}),
        ...(cfg.window !== undefined ? { window: cfg.window } : {}),
        ...(cfg.tau !== undefined ? { tau: cfg.tau } : {}),
        ...(cfg.outNorm !== undefined ? { outNorm: cfg.outNorm } : {}),
      }),
      norm2: new RmsNorm(be, P, `l${i}.norm2`, D, eps),
      mlp: new SwigluMlp(be, P, `l${i}.mlp`, D, cfg.ffn),
    }));
    this.normF = new RmsNorm(be, P, 'norm_f', D, eps);
    this.head = new LmHead(be, P, 'lm_head', D, vocab);
    P.allocate();
  }

  /** Seeded weights (identical in every process for the same seed). */
  init(seed: number): Promise<void> {
    return this.params.initialize(seed);
  }

  /**
   * A batch, or one whole sequence of T+1 tokens (inputs tokens[0..T), targets tokens[1..T]).
   * Under sequence parallelism the batch holds this rank's block of each sequence.
   */
  async forward(input: Int32Array | Batch, opts: ForwardOptions = {}): Promise<ForwardResult> {
    const batch: Batch =
      input instanceof Int32Array ? { inputs: input.subarray(0, input.length - 1), targets: input.subarray(1), sequences: 1 } : input;
    const { inputs, targets } = batch;
    const B = batch.sequences ?? 1;
    if (inputs.length < 1 || inputs.length !== targets.length || inputs.length % B !== 0)
      throw new Error(
        `lasp model: a batch needs inputs and targets of the same non-zero length divisible by sequences=${B}, got ${inputs.length} and ${targets.length}`,
      );
    const cache: ModelCache = { embed: {}, blocks: [], normF: {}, head: lmHeadCache() };
    let x = await this.embed.forward(inputs, cache.embed);
    for (const b of this.blocks) {
      const c: BlockCache = { norm1: {}, attn: attentionCache(), norm2: {}, mlp: swigluMlpCache() };
      cache.blocks.push(c);
      x = await this.be.add(x, await b.attn.forward(await b.norm1.forward(x, c.norm1), c.attn, B));
      x = await this.be.add(x, await b.mlp.forward(await b.norm2.forward(x, c.norm2), c.mlp));
    }
    const h = await this.normF.forward(x, cache.normF);
    let counted = 0;
    for (const t of targets) if (t >= 0) counted++;
    const scale = opts.scale ?? 1 / Math.max(counted, 1);
    const { loss, count } = await this.head.forward(h, targets, scale, cache.head, opts.predict ?? false);
    const r: ForwardResult = { loss: loss / Math.max(count, 1), lossSum: loss, count, cache };
    if (opts.predict && cache.head.logits) r.predictions = argmaxCounted(cache.head.logits, targets);
    return r;
  }

  /** Accumulates ∂(scale · summed loss)/∂params into params.grads (zero them first). */
  async backward(cache: ModelCache): Promise<void> {
    let dx: Tensor = await this.normF.backward(await this.head.backward(cache.head), cache.normF);
    for (let i = this.blocks.length - 1; i >= 0; i--) {
      const b = this.blocks[i]!;
      const c = cache.blocks[i]!;
      dx = await this.be.add(dx, await b.norm2.backward(await b.mlp.backward(dx, c.mlp), c.norm2));
      dx = await this.be.add(dx, await b.norm1.backward(await b.attn.backward(dx, c.attn), c.norm1));
    }
    await this.embed.backward(dx, cache.embed);
  }

  /** zeroGrads + forward + backward; returns the mean loss. */
  async lossAndGrad(tokens: Int32Array, opts: ForwardOptions = {}): Promise<number> {
    this.params.zeroGrads();
    const r = await this.forward(tokens, opts);
    await this.backward(r.cache);
    return r.loss;
  }
}

/** Arg-max of each logits row whose target counts (evaluation only: few rows on MQAR). */
function argmaxCounted(logits: Tensor, targets: Int32Array): Int32Array {
  const V = logits.shape[1]!;
  const out = new Int32Array(targets.length).fill(-1);
  for (let i = 0; i < targets.length; i++) {
    if (targets[i]! < 0) continue;
    const row = logits.data.subarray(i * V, (i + 1) * V);
    let best = 0;
    for (let j = 1; j < V; j++) if (row[j]! > row[best]!) best = j;
    out[i] = best;
  }
  return out;
}
