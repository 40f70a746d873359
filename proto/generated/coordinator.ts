import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { CoordinatorClient as _lasp_v1_CoordinatorClient, CoordinatorDefinition as _lasp_v1_CoordinatorDefinition } from './lasp/v1/Coordinator.js';
import type { HeartbeatReply as _lasp_v1_HeartbeatReply, HeartbeatReply__Output as _lasp_v1_HeartbeatReply__Output } from './lasp/v1/HeartbeatReply.js';
import type { HeartbeatRequest as _lasp_v1_HeartbeatRequest, HeartbeatRequest__Output as _lasp_v1_HeartbeatRequest__Output } from './lasp/v1/HeartbeatRequest.js';
import type { RegisterReply as _lasp_v1_RegisterReply, RegisterReply__Output as _lasp_v1_RegisterReply__Output } from './lasp/v1/RegisterReply.js';
import type { RegisterRequest as _lasp_v1_RegisterRequest, RegisterRequest__Output as _lasp_v1_RegisterRequest__Output } from './lasp/v1/RegisterRequest.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  lasp: {
    v1: {
      Coordinator: SubtypeConstructor<typeof grpc.Client, _lasp_v1_CoordinatorClient> & { service: _lasp_v1_CoordinatorDefinition }
      HeartbeatReply: MessageTypeDefinition<_lasp_v1_HeartbeatReply, _lasp_v1_HeartbeatReply__Output>
      HeartbeatRequest: MessageTypeDefinition<_lasp_v1_HeartbeatRequest, _lasp_v1_HeartbeatRequest__Output>
      RegisterReply: MessageTypeDefinition<_lasp_v1_RegisterReply, _lasp_v1_RegisterReply__Output>
      RegisterRequest: MessageTypeDefinition<_lasp_v1_RegisterRequest, _lasp_v1_RegisterRequest__Output>
    }
  }
}

