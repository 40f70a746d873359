// Original file: lasp/v1/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface Assignment {
  'jobId'?: (string);
  'generation'?: (number | string | Long);
  'rank'?: (number);
  'world'?: (number);
  /**
   * Address (host:port) of each rank, indexed by rank.
   */
  'peers'?: (string)[];
}

export interface Assignment__Output {
  'jobId': (string);
  'generation': (number);
  'rank': (number);
  'world': (number);
  /**
   * Address (host:port) of each rank, indexed by rank.
   */
  'peers': (string)[];
}
