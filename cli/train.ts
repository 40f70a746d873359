// `lasp train`: a whole local cluster (coordinator + W worker processes on loopback, no Redis)
// training a model with every sequence split between the workers. Defaults train a small
// gated_delta model on multi-query associative recall in about a minute.
import { Option, type Command } from 'commander';
import { parseTrainConfig, tokensPerStep, type TrainConfig } from '../train/config.js';
import { runTraining, type StepEvent, type TrainSummary } from '../train/driver.js';
import { formatDuration, formatRate, ProgressBar } from '../train/progress.js';
import { addJobConfigOptions, jobConfigFromFlags, type JobConfigFlags, type Json } from './job-flags.js';

interface TrainFlags extends JobConfigFlags {
  config?: string;
  resume?: boolean;
  json?: boolean;
  verbose?: boolean;
  device?: string;
  precision?: 'fp32' | 'bf16';
  streamTransport?: 'http2' | 'grpc-js' | 'raw' | 'native';
}

/** The job config: the file (if any), then the flags on top; validated with every default filled in. */
export async function configFromFlags(f: TrainFlags): Promise<TrainConfig> {
  return (await rawConfigFromFlags(f)).config;
}

async function rawConfigFromFlags(f: TrainFlags): Promise<{ config: TrainConfig; raw: Json }> {
  const raw = await jobConfigFromFlags(f.config, f);
  return { config: parseTrainConfig(raw), raw };
}

const round = (x: number, digits: number) => Number(x.toPrecision(digits));

function describeRun(cfg: TrainConfig, startStep: number, parameters: number, resumedFrom?: string): string {
  const m = cfg.model;
  // "2 × gated_delta" or, for a hybrid, "3 gated_delta : 1 softmax" (in the order they first appear).
  const counts = new Map<string, number>();
  for (const k of m.kinds) {
    const name = k === 'swa' ? `swa(window ${m.window})` : k;
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  const kinds =
    counts.size === 1
      ? `${m.layers} × ${[...counts.keys()][0]!}`
      : `${m.layers} layers (${[...counts].map(([k, n]) => `${n} ${k}`).join(' : ')})`;
  const d = cfg.data;
  const data = d.type === 'mqar' ? `MQAR (${d.numKvPairs ?? 16} pairs, vocab ${d.vocabSize ?? 8192})` : `${d.type} ${d.path}`;
  const lines = [
    `model   ${kinds}, d_model ${m.dModel}, ${m.heads} heads × ${m.dk}/${m.dv}, ffn ${m.ffn}, vocab ${m.vocab} — ${parameters.toLocaleString('en-US')} parameters`,
    `data    ${data}, T = ${d.seqLen} split over ${cfg.cluster.workers} worker${cfg.cluster.workers > 1 ? 's' : ''}, batch ${cfg.training.batchSize} (${tokensPerStep(cfg)} tokens/step)`,
    `train   ${cfg.training.steps} steps, lr ${cfg.training.lr} (warm-up ${cfg.training.warmupSteps}, cosine to ${cfg.training.minLr}), clip ${cfg.training.gradClip}, seed ${cfg.training.seed}`,
    `output  ${cfg.checkpoint.dir}`,
  ];
  if (resumedFrom) lines.push(`resumed ${resumedFrom} (step ${startStep})`);
  return lines.join('\n');
}

export async function trainCommand(f: TrainFlags): Promise<void> {
  const { config: cfg, raw } = await rawConfigFromFlags(f);
  const given = (sec: string, field: string) => {
    const o = raw[sec] as Json | undefined;
    return typeof o === 'object' && o !== null && o[field] !== undefined;
  };
  if (f.resume && !given('checkpoint', 'dir'))
    throw new Error('--resume needs the run directory: give --checkpoint-dir <dir> (or checkpoint.dir in --config)');
  const out = process.stdout;
  const err = process.stderr;
  const bar = !f.json && err.isTTY ? new ProgressBar({ total: cfg.training.steps, stream: err }) : undefined;
  const say = (line: string) => (bar ? bar.log(line) : err.write(`${line}\n`));
  const controller = new AbortController();
  let interrupts = 0;
  const onSigint = () => {
    interrupts++;
    if (interrupts > 1) process.exit(130);
    say('interrupted: stopping after this step and writing a checkpoint (Ctrl-C again to quit now)');
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  let total = cfg.training.steps;
  let plainEvery = 1;
  const onStep = (e: StepEvent) => {
    if (f.json) {
      out.write(
        `${JSON.stringify({ step: e.step, loss: e.loss, tokensPerSec: round(e.tokensPerSec, 6), lr: e.lr, gradNorm: round(e.gradNorm, 6), ms: round(e.wallMs, 6), collectiveMs: round(e.collectiveMs, 4) })}\n`,
      );
    } else if (bar) {
      bar.update(e.step, { loss: e.loss.toFixed(4), 'tok/s': formatRate(e.tokensPerSec) });
    } else if (e.step % plainEvery === 0 || e.step === total) {
      out.write(`step ${e.step}/${total}  loss ${e.loss.toFixed(4)}  tok/s ${formatRate(e.tokensPerSec)}  lr ${e.lr.toExponential(2)}\n`);
    }
  };
  let summary: TrainSummary;
  try {
    summary = await runTraining(cfg, {
      resume: f.resume ?? false,
      resumeSteps: given('training', 'steps') ? 'config' : 'checkpoint',
      signal: controller.signal,
      verbose: f.verbose ?? false,
      ...(f.device !== undefined ? { device: f.device } : {}),
      ...(f.precision !== undefined ? { precision: f.precision } : {}),
      ...(f.streamTransport !== undefined ? { streamTransport: f.streamTransport } : {}),
      events: {
        start: (e) => {
          total = e.config.training.steps;
          plainEvery = Math.max(1, Math.round(total / 20));
          if (!f.json) say(describeRun(e.config, e.startStep, e.parameters, e.resumedFrom));
          if (e.startStep >= total) say(`already at step ${e.startStep} of ${total}: nothing to train (raise --steps to continue)`);
        },
        step: onStep,
        eval: (e) =>
          say(
            `eval    step ${e.step}: loss ${e.loss.toFixed(4)}${e.accuracy !== null ? `, recall accuracy ${(100 * e.accuracy).toFixed(1)}%` : ''} on ${e.sequences} held-out sequences`,
          ),
        checkpoint: (e) => say(`saved   ${e.path} (step ${e.step}, ${formatRate(e.bytes)}B)`),
        log: (m) => say(m),
      },
    });
  } finally {
    process.off('SIGINT', onSigint);
    bar?.done();
  }
  if (f.json) {
    out.write(`${JSON.stringify({ summary: true, ...summary, losses: undefined, tokensPerSec: round(summary.tokensPerSec, 6) })}\n`);
  } else {
    say(
      `done    ${summary.step - summary.startStep} steps in ${formatDuration(summary.wallSeconds * 1000)}, final loss ${summary.finalLoss.toFixed(4)}, ${formatRate(summary.tokensPerSec)} tokens/s`,
    );
    if (summary.metrics) say(`files   ${summary.metrics}, ${summary.lossCurve}`);
  }
  if (summary.stoppedEarly) process.exitCode = 130;
}

export function registerTrainCommand(program: Command): void {
  const cmd = program
    .command('train')
    .description('train a model on a local cluster of worker processes, every sequence split between them')
    .option('--config <file>', 'job config (JSON: model, data, training, cluster, checkpoint sections)');
  addJobConfigOptions(cmd)
    .option('--resume', 'continue from the newest valid checkpoint in --checkpoint-dir')
    .option('--json', 'print one JSON object per step and a summary line')
    .option('--verbose', "copy the workers' log lines to stderr")
    .option(
      '--device <dev>',
      "the workers' device: cpu, cuda:N, or a comma-separated list handed out in turn (cuda:0,cuda:1); workers given the same GPU share it",
      'cpu',
    )
    .addOption(
      new Option('--precision <p>', "the workers' attention arithmetic (lasp worker --precision): fp32, or bf16 on cuda devices").choices([
        'fp32',
        'bf16',
      ]),
    )
    .addOption(
      new Option('--stream-transport <t>', "what carries the workers' collective pieces (lasp worker --stream-transport)").choices([
        'http2',
        'grpc-js',
        'raw',
        'native',
      ]),
    )
    .action((f: TrainFlags) => trainCommand(f));
}
