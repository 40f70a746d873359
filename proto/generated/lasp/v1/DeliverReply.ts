// Original file: lasp/v1/peer.proto

import type { Long } from '@grpc/proto-loader';

/**
 * Deliver: empty (the status is the call's). Stream: the outcome of one piece.
 */
export interface DeliverReply {
  'seq'?: (number | string | Long);
  /**
   * A grpc status code: 0 (OK) when the piece was accepted.
   */
  'code'?: (number);
  'details'?: (string);
}

/**
 * Deliver: empty (the status is the call's). Stream: the outcome of one piece.
 */
export interface DeliverReply__Output {
  'seq': (number);
  /**
   * A grpc status code: 0 (OK) when the piece was accepted.
   */
  'code': (number);
  'details': (string);
}
