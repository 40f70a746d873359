// Original file: lasp/v1/coordinator.proto

import type { Long } from '@grpc/proto-loader';

export interface HeartbeatRequest {
  'workerId'?: (string);
  /**
   * idle | busy | draining
   */
  'state'?: (string);
  'jobId'?: (string);
  'generation'?: (number | string | Long);
  'step'?: (number | string | Long);
}

export interface HeartbeatRequest__Output {
  'workerId': (string);
  /**
   * idle | busy | draining
   */
  'state': (string);
  'jobId': (string);
  'generation': (number);
  'step': (number);
}
