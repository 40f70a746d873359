#!/usr/bin/env node
// The `lasp` command.
import { Command, InvalidArgumentError } from 'commander';
import { printKernelBench, runKernelBench } from '../bench/kernels.js';
import { registerSpBench } from '../bench/sp.js';
import { registerCollectivesBench } from '../bench/collectives.js';
import { registerCoordinatorCommand } from '../coordinator/cli.js';
import { registerWorkerCommand } from '../worker/cli.js';

function positiveInt(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got ${JSON.stringify(value)}`);
    return n;
  };
}

function intList(name: string) {
  return (value: string): number[] =>
    value.split(',').map((x) => {
      const n = Number(x.trim().replace(/k$/i, '000').replace(/K$/, '000'));
      if (!Number.isInteger(n) || n < 1)
        throw new InvalidArgumentError(`${name} must be a comma-separated list of positive integers, got ${JSON.stringify(value)}`);
      return n;
    });
}

const program = new Command();
program.name('lasp').description('Sequence-parallel training of linear-attention models').showHelpAfterError();

const bench = program.command('bench').description('benchmarks');
bench
  .command('kernels')
  .description('GEMM vs OpenBLAS, each attention kind forward/backward, time per token vs sequence length')
  .option('--seq-len <T>', 'tokens for the per-kind table', positiveInt('--seq-len'), 16384)
  .option('--heads <H>', 'heads', positiveInt('--heads'), 4)
  .option('--head-dim <D>', 'head dimension (dk = dv)', positiveInt('--head-dim'), 64)
  .option('--sweep <list>', 'sequence lengths for time per token', intList('--sweep'), [4096, 16384, 65536, 262144])
  .option('--max-softmax-seq-len <T>', 'longest softmax run (quadratic)', positiveInt('--max-softmax-seq-len'), 32768)
  .option('--json', 'print one JSON object instead of tables')
  .action(async (o: { seqLen: number; heads: number; headDim: number; sweep: number[]; maxSoftmaxSeqLen: number; json?: boolean }) => {
    const opts = { T: o.seqLen, H: o.heads, d: o.headDim, sweep: o.sweep, maxSoftmaxT: o.maxSoftmaxSeqLen };
    const r = await runKernelBench(opts);
    process.stdout.write(o.json ? `${JSON.stringify(r)}\n` : `${printKernelBench(r, opts)}\n`);
  });

registerSpBench(bench);
registerCollectivesBench(bench);
registerCoordinatorCommand(program);
registerWorkerCommand(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`lasp: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
