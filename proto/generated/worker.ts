import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { AbortReply as _lasp_v1_AbortReply, AbortReply__Output as _lasp_v1_AbortReply__Output } from './lasp/v1/AbortReply.js';
import type { AbortRequest as _lasp_v1_AbortRequest, AbortRequest__Output as _lasp_v1_AbortRequest__Output } from './lasp/v1/AbortRequest.js';
import type { AssignReply as _lasp_v1_AssignReply, AssignReply__Output as _lasp_v1_AssignReply__Output } from './lasp/v1/AssignReply.js';
import type { Assignment as _lasp_v1_Assignment, Assignment__Output as _lasp_v1_Assignment__Output } from './lasp/v1/Assignment.js';
import type { TaskReply as _lasp_v1_TaskReply, TaskReply__Output as _lasp_v1_TaskReply__Output } from './lasp/v1/TaskReply.js';
import type { TaskRequest as _lasp_v1_TaskRequest, TaskRequest__Output as _lasp_v1_TaskRequest__Output } from './lasp/v1/TaskRequest.js';
import type { Tensor as _lasp_v1_Tensor, Tensor__Output as _lasp_v1_Tensor__Output } from './lasp/v1/Tensor.js';
import type { WorkerControlClient as _lasp_v1_WorkerControlClient, WorkerControlDefinition as _lasp_v1_WorkerControlDefinition } from './lasp/v1/WorkerControl.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  lasp: {
    v1: {
      AbortReply: MessageTypeDefinition<_lasp_v1_AbortReply, _lasp_v1_AbortReply__Output>
      AbortRequest: MessageTypeDefinition<_lasp_v1_AbortRequest, _lasp_v1_AbortRequest__Output>
      AssignReply: MessageTypeDefinition<_lasp_v1_AssignReply, _lasp_v1_AssignReply__Output>
      Assignment: MessageTypeDefinition<_lasp_v1_Assignment, _lasp_v1_Assignment__Output>
      TaskReply: MessageTypeDefinition<_lasp_v1_TaskReply, _lasp_v1_TaskReply__Output>
      TaskRequest: MessageTypeDefinition<_lasp_v1_TaskRequest, _lasp_v1_TaskRequest__Output>
      Tensor: MessageTypeDefinition<_lasp_v1_Tensor, _lasp_v1_Tensor__Output>
      WorkerControl: SubtypeConstructor<typeof grpc.Client, _lasp_v1_WorkerControlClient> & { service: _lasp_v1_WorkerControlDefinition }
    }
  }
}

