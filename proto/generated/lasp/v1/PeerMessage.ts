// Original file: lasp/v1/peer.proto

import type { Long } from '@grpc/proto-loader';

export interface PeerMessage {
  'jobId'?: (string);
  'generation'?: (number | string | Long);
  'fromRank'?: (number);
  'step'?: (number | string | Long);
  'layer'?: (number);
  /**
   * The collective phase, e.g. "fwd.summary", "bwd.stategrad", "grad.allreduce.rs.2".
   */
  'op'?: (string);
  'piece'?: (number);
  'pieces'?: (number);
  /**
   * Size of the whole logical message in bytes (all pieces).
   */
  'totalBytes'?: (number | string | Long);
  /**
   * Byte offset of this piece inside the logical message.
   */
  'offset'?: (number | string | Long);
  'data'?: (Buffer | Uint8Array | string);
  /**
   * Stream only: the sender's number of this piece on the call, echoed in its DeliverReply.
   */
  'seq'?: (number | string | Long);
}

export interface PeerMessage__Output {
  'jobId': (string);
  'generation': (number);
  'fromRank': (number);
  'step': (number);
  'layer': (number);
  /**
   * The collective phase, e.g. "fwd.summary", "bwd.stategrad", "grad.allreduce.rs.2".
   */
  'op': (string);
  'piece': (number);
  'pieces': (number);
  /**
   * Size of the whole logical message in bytes (all pieces).
   */
  'totalBytes': (number);
  /**
   * Byte offset of this piece inside the logical message.
   */
  'offset': (number);
  'data': (Buffer);
  /**
   * Stream only: the sender's number of this piece on the call, echoed in its DeliverReply.
   */
  'seq': (number);
}
