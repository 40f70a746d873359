// Polling and health-check helpers for multi-process control-plane tests.
import * as grpc from '@grpc/grpc-js';
import { setTimeout as sleep } from 'node:timers/promises';
import { protos } from '../../proto/load.js';

/** Polls `check` every `everyMs` until it returns true; fails after `timeoutMs` naming `what`. */
export async function waitUntil(check: () => boolean, what: string, timeoutMs = 5000, everyMs = 20): Promise<number> {
  const t0 = Date.now();
  while (!check()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
  return Date.now() - t0;
}

/** grpc.health.v1 Check of `service` ("" = the server) at `address`. */
export function healthCheck(address: string, service = ''): Promise<string> {
  const Ctor = protos().health.grpc.health.v1.Health;
  const client = new Ctor(address, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    client.Check({ service }, { deadline: Date.now() + 2000 }, (err, reply) => {
      client.close();
      if (err || !reply) reject(err ?? new Error('empty reply'));
      else resolve(reply.status);
    });
  });
}
