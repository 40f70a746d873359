// Original file: lasp/v1/coordinator.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { HeartbeatReply as _lasp_v1_HeartbeatReply, HeartbeatReply__Output as _lasp_v1_HeartbeatReply__Output } from '../../lasp/v1/HeartbeatReply.js';
import type { HeartbeatRequest as _lasp_v1_HeartbeatRequest, HeartbeatRequest__Output as _lasp_v1_HeartbeatRequest__Output } from '../../lasp/v1/HeartbeatRequest.js';
import type { RegisterReply as _lasp_v1_RegisterReply, RegisterReply__Output as _lasp_v1_RegisterReply__Output } from '../../lasp/v1/RegisterReply.js';
import type { RegisterRequest as _lasp_v1_RegisterRequest, RegisterRequest__Output as _lasp_v1_RegisterRequest__Output } from '../../lasp/v1/RegisterRequest.js';

export interface CoordinatorClient extends grpc.Client {
  Heartbeat(argument: _lasp_v1_HeartbeatRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_HeartbeatReply__Output>): grpc.ClientUnaryCall;
  Heartbeat(argument: _lasp_v1_HeartbeatRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_lasp_v1_HeartbeatReply__Output>): grpc.ClientUnaryCall;
  Heartbeat(argument: _lasp_v1_HeartbeatRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_HeartbeatReply__Output>): grpc.ClientUnaryCall;
  Heartbeat(argument: _lasp_v1_HeartbeatRequest, callback: grpc.requestCallback<_lasp_v1_HeartbeatReply__Output>): grpc.ClientUnaryCall;
  heartbeat(argument: _lasp_v1_HeartbeatRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_HeartbeatReply__Output>): grpc.ClientUnaryCall;
  heartbeat(argument: _lasp_v1_HeartbeatRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_lasp_v1_HeartbeatReply__Output>): grpc.ClientUnaryCall;
  heartbeat(argument: _lasp_v1_HeartbeatRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_HeartbeatReply__Output>): grpc.ClientUnaryCall;
  heartbeat(argument: _lasp_v1_HeartbeatRequest, callback: grpc.requestCallback<_lasp_v1_HeartbeatReply__Output>): grpc.ClientUnaryCall;
  
  Register(argument: _lasp_v1_RegisterRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_RegisterReply__Output>): grpc.ClientUnaryCall;
  Register(argument: _lasp_v1_RegisterRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_lasp_v1_RegisterReply__Output>): grpc.ClientUnaryCall;
  Register(argument: _lasp_v1_RegisterRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_RegisterReply__Output>): grpc.ClientUnaryCall;
  Register(argument: _lasp_v1_RegisterRequest, callback: grpc.requestCallback<_lasp_v1_RegisterReply__Output>): grpc.ClientUnaryCall;
  register(argument: _lasp_v1_RegisterRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_RegisterReply__Output>): grpc.ClientUnaryCall;
  register(argument: _lasp_v1_RegisterRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_lasp_v1_RegisterReply__Output>): grpc.ClientUnaryCall;
  register(argument: _lasp_v1_RegisterRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_RegisterReply__Output>): grpc.ClientUnaryCall;
  register(argument: _lasp_v1_RegisterRequest, callback: grpc.requestCallback<_lasp_v1_RegisterReply__Output>): grpc.ClientUnaryCall;
  
}

export interface CoordinatorHandlers extends grpc.UntypedServiceImplementation {
  Heartbeat: grpc.handleUnaryCall<_lasp_v1_HeartbeatRequest__Output, _lasp_v1_HeartbeatReply>;
  
  Register: grpc.handleUnaryCall<_lasp_v1_RegisterRequest__Output, _lasp_v1_RegisterReply>;
  
}

export interface CoordinatorDefinition extends grpc.ServiceDefinition {
  Heartbeat: MethodDefinition<_lasp_v1_HeartbeatRequest, _lasp_v1_HeartbeatReply, _lasp_v1_HeartbeatRequest__Output, _lasp_v1_HeartbeatReply__Output>
  Register: MethodDefinition<_lasp_v1_RegisterRequest, _lasp_v1_RegisterReply, _lasp_v1_RegisterRequest__Output, _lasp_v1_RegisterReply__Output>
}
