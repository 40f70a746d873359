// Original file: lasp/v1/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface TaskRequest {
  'jobId'?: (string);
  'generation'?: (number | string | Long);
  /**
   * Task type, e.g. "sp-layer".
   */
  'type'?: (string);
  /**
   * Task parameters as JSON (validated by the worker).
   */
  'configJson'?: (string);
}

export interface TaskRequest__Output {
  'jobId': (string);
  'generation': (number);
  /**
   * Task type, e.g. "sp-layer".
   */
  'type': (string);
  /**
   * Task parameters as JSON (validated by the worker).
   */
  'configJson': (string);
}
