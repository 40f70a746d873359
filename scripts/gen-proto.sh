#!/usr/bin/env bash
# Regenerates the TypeScript types of the .proto files into proto/generated (committed).
# The generator writes extensionless relative imports; NodeNext resolution needs ".js".
set -euo pipefail
cd "$(dirname "$0")/../proto"
rm -rf generated
npx proto-loader-gen-types lasp/v1/peer.proto lasp/v1/coordinator.proto lasp/v1/worker.proto grpc/health/v1/health.proto \
  --longs=Number --enums=String --defaults --oneofs --includeComments --grpcLib=@grpc/grpc-js -O generated -I . 2>&1 |
  grep -v 'This tool is in alpha' || true
find generated -name '*.ts' -exec sed -i -E "s#(from '\.[^']*)';#\1.js';#" {} +
