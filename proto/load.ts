// Loads the .proto files at run time (@grpc/proto-loader) with the same options the generated
// types in proto/generated were made with (npm run build:proto).
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ProtoGrpcType as CoordinatorProto } from './generated/coordinator.js';
import type { ProtoGrpcType as HealthProto } from './generated/health.js';
import type { ProtoGrpcType as PeerProto } from './generated/peer.js';
import type { ProtoGrpcType as WorkerProto } from './generated/worker.js';

/** Directory holding the .proto sources (works from the sources and from dist/). */
export function protoDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  // dist/proto/load.js -> <root>/proto ; proto/load.ts (ts-node style) -> <root>/proto
  return here.includes(`${join('dist', 'proto')}`) ? join(here, '..', '..', 'proto') : here;
}

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

function load<T>(file: string): T {
  const def = protoLoader.loadSync(file, { ...LOADER_OPTIONS, includeDirs: [protoDir()] });
  return grpc.loadPackageDefinition(def) as unknown as T;
}

let cache: { peer: PeerProto; coordinator: CoordinatorProto; worker: WorkerProto; health: HealthProto } | undefined;

/** The loaded packages, typed by the generated definitions. */
export function protos() {
  cache ??= {
    peer: load<PeerProto>('lasp/v1/peer.proto'),
    coordinator: load<CoordinatorProto>('lasp/v1/coordinator.proto'),
    worker: load<WorkerProto>('lasp/v1/worker.proto'),
    health: load<HealthProto>('grpc/health/v1/health.proto'),
  };
  return cache;
}
