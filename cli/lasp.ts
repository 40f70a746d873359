#!/usr/bin/env -S node --initial-old-space-size=256
// The `lasp` command.
import { Command } from 'commander';
import { intList, positiveInt } from './args.js';
import { printKernelBench, runKernelBench } from '../bench/kernels.js';
import { registerSpBench } from '../bench/sp.js';
import { registerCollectivesBench } from '../bench/collectives.js';
import { registerTrainBench } from '../bench/train.js';
import { registerScaleBench } from '../bench/scale.js';
import { registerApiBench } from '../bench/api.js';
import { registerCudaBench } from '../bench/cuda.js';
import { registerCoordinatorCommand } from '../coordinator/cli.js';
import { registerWorkerCommand } from '../worker/cli.js';
import { registerTrainCommand } from './train.js';
import { registerJobCommands } from './jobs.js';

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
registerTrainBench(bench);
registerScaleBench(bench);
registerApiBench(bench);
registerCudaBench(bench);
registerCoordinatorCommand(program);
registerWorkerCommand(program);
registerTrainCommand(program);
registerJobCommands(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`lasp: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
