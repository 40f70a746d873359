// A real `lasp worker --http-port 0` process for the tests, and the URL of its HTTP probes once it
// prints the line that announces them (15 s at most).
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const lasp = fileURLToPath(new URL('../../cli/lasp.js', import.meta.url));

/** Starts `lasp worker --coordinator <coordinator> --id <id> --http-port 0 …extraArgs`. */
export function spawnProbedWorker(
  id: string,
  coordinator: string,
  extraArgs: string[] = [],
): { child: ChildProcess; url: Promise<string> } {
  const child = spawn(process.execPath, [lasp, 'worker', '--coordinator', coordinator, '--id', id, '--http-port', '0', ...extraArgs], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const url = new Promise<string>((resolve, reject) => {
    const lines: string[] = [];
    const timer = setTimeout(() => reject(new Error(`no HTTP probes line:\n${lines.join('\n')}`)), 15_000);
    createInterface({ input: child.stderr! }).on('line', (l) => {
      lines.push(l);
      const m = /HTTP probes on (http:\/\/[\d.]+:\d+)/.exec(l);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
  });
  return { child, url };
}
