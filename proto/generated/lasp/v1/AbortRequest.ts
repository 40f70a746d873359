// Original file: lasp/v1/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface AbortRequest {
  'jobId'?: (string);
  'generation'?: (number | string | Long);
  'reason'?: (string);
}

export interface AbortRequest__Output {
  'jobId': (string);
  'generation': (number);
  'reason': (string);
}
