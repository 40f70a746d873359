// Original file: lasp/v1/peer.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { DeliverReply as _lasp_v1_DeliverReply, DeliverReply__Output as _lasp_v1_DeliverReply__Output } from '../../lasp/v1/DeliverReply.js';
import type { PeerMessage as _lasp_v1_PeerMessage, PeerMessage__Output as _lasp_v1_PeerMessage__Output } from '../../lasp/v1/PeerMessage.js';

export interface PeerClient extends grpc.Client {
  /**
   * One piece of one collective message. Errors: FAILED_PRECONDITION (other job or generation,
   * no group), INVALID_ARGUMENT (bad rank, piece index, sizes that disagree or exceed limits),
   * UNAUTHENTICATED (missing or wrong cluster token).
   */
  Deliver(argument: _lasp_v1_PeerMessage, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_DeliverReply__Output>): grpc.ClientUnaryCall;
  Deliver(argument: _lasp_v1_PeerMessage, metadata: grpc.Metadata, callback: grpc.requestCallback<_lasp_v1_DeliverReply__Output>): grpc.ClientUnaryCall;
  Deliver(argument: _lasp_v1_PeerMessage, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_DeliverReply__Output>): grpc.ClientUnaryCall;
  Deliver(argument: _lasp_v1_PeerMessage, callback: grpc.requestCallback<_lasp_v1_DeliverReply__Output>): grpc.ClientUnaryCall;
  /**
   * One piece of one collective message. Errors: FAILED_PRECONDITION (other job or generation,
   * no group), INVALID_ARGUMENT (bad rank, piece index, sizes that disagree or exceed limits),
   * UNAUTHENTICATED (missing or wrong cluster token).
   */
  deliver(argument: _lasp_v1_PeerMessage, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_DeliverReply__Output>): grpc.ClientUnaryCall;
  deliver(argument: _lasp_v1_PeerMessage, metadata: grpc.Metadata, callback: grpc.requestCallback<_lasp_v1_DeliverReply__Output>): grpc.ClientUnaryCall;
  deliver(argument: _lasp_v1_PeerMessage, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_DeliverReply__Output>): grpc.ClientUnaryCall;
  deliver(argument: _lasp_v1_PeerMessage, callback: grpc.requestCallback<_lasp_v1_DeliverReply__Output>): grpc.ClientUnaryCall;
  
  /**
   * The fast path: one long-lived call per (sender, receiver) pair carries many pieces. Every
   * piece is checked exactly as in Deliver and answered, in order, by one DeliverReply with the
   * piece's seq and the status Deliver would have returned (code 0 = accepted). The token is
   * checked once, when the call starts (UNAUTHENTICATED ends the call). A piece that is refused
   * does not end the call.
   */
  Stream(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_lasp_v1_PeerMessage, _lasp_v1_DeliverReply__Output>;
  Stream(options?: grpc.CallOptions): grpc.ClientDuplexStream<_lasp_v1_PeerMessage, _lasp_v1_DeliverReply__Output>;
  /**
   * The fast path: one long-lived call per (sender, receiver) pair carries many pieces. Every
   * piece is checked exactly as in Deliver and answered, in order, by one DeliverReply with the
   * piece's seq and the status Deliver would have returned (code 0 = accepted). The token is
   * checked once, when the call starts (UNAUTHENTICATED ends the call). A piece that is refused
   * does not end the call.
   */
  stream(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_lasp_v1_PeerMessage, _lasp_v1_DeliverReply__Output>;
  stream(options?: grpc.CallOptions): grpc.ClientDuplexStream<_lasp_v1_PeerMessage, _lasp_v1_DeliverReply__Output>;
  
}

export interface PeerHandlers extends grpc.UntypedServiceImplementation {
  /**
   * One piece of one collective message. Errors: FAILED_PRECONDITION (other job or generation,
   * no group), INVALID_ARGUMENT (bad rank, piece index, sizes that disagree or exceed limits),
   * UNAUTHENTICATED (missing or wrong cluster token).
   */
  Deliver: grpc.handleUnaryCall<_lasp_v1_PeerMessage__Output, _lasp_v1_DeliverReply>;
  
  /**
   * The fast path: one long-lived call per (sender, receiver) pair carries many pieces. Every
   * piece is checked exactly as in Deliver and answered, in order, by one DeliverReply with the
   * piece's seq and the status Deliver would have returned (code 0 = accepted). The token is
   * checked once, when the call starts (UNAUTHENTICATED ends the call). A piece that is refused
   * does not end the call.
   */
  Stream: grpc.handleBidiStreamingCall<_lasp_v1_PeerMessage__Output, _lasp_v1_DeliverReply>;
  
}

export interface PeerDefinition extends grpc.ServiceDefinition {
  Deliver: MethodDefinition<_lasp_v1_PeerMessage, _lasp_v1_DeliverReply, _lasp_v1_PeerMessage__Output, _lasp_v1_DeliverReply__Output>
  Stream: MethodDefinition<_lasp_v1_PeerMessage, _lasp_v1_DeliverReply, _lasp_v1_PeerMessage__Output, _lasp_v1_DeliverReply__Output>
}
