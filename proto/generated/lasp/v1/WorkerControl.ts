// Original file: lasp/v1/worker.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { AbortReply as _lasp_v1_AbortReply, AbortReply__Output as _lasp_v1_AbortReply__Output } from '../../lasp/v1/AbortReply.js';
import type { AbortRequest as _lasp_v1_AbortRequest, AbortRequest__Output as _lasp_v1_AbortRequest__Output } from '../../lasp/v1/AbortRequest.js';
import type { AssignReply as _lasp_v1_AssignReply, AssignReply__Output as _lasp_v1_AssignReply__Output } from '../../lasp/v1/AssignReply.js';
import type { Assignment as _lasp_v1_Assignment, Assignment__Output as _lasp_v1_Assignment__Output } from '../../lasp/v1/Assignment.js';
import type { TaskReply as _lasp_v1_TaskReply, TaskReply__Output as _lasp_v1_TaskReply__Output } from '../../lasp/v1/TaskReply.js';
import type { TaskRequest as _lasp_v1_TaskRequest, TaskRequest__Output as _lasp_v1_TaskRequest__Output } from '../../lasp/v1/TaskRequest.js';

export interface WorkerControlClient extends grpc.Client {
  /**
   * Aborts a generation: pending collectives of that generation fail at once.
   */
  Abort(argument: _lasp_v1_AbortRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_AbortReply__Output>): grpc.ClientUnaryCall;
  Abort(argument: _lasp_v1_AbortRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_lasp_v1_AbortReply__Output>): grpc.ClientUnaryCall;
  Abort(argument: _lasp_v1_AbortRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_AbortReply__Output>): grpc.ClientUnaryCall;
  Abort(argument: _lasp_v1_AbortRequest, callback: grpc.requestCallback<_lasp_v1_AbortReply__Output>): grpc.ClientUnaryCall;
  /**
   * Aborts a generation: pending collectives of that generation fail at once.
   */
  abort(argument: _lasp_v1_AbortRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_AbortReply__Output>): grpc.ClientUnaryCall;
  abort(argument: _lasp_v1_AbortRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_lasp_v1_AbortReply__Output>): grpc.ClientUnaryCall;
  abort(argument: _lasp_v1_AbortRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_AbortReply__Output>): grpc.ClientUnaryCall;
  abort(argument: _lasp_v1_AbortRequest, callback: grpc.requestCallback<_lasp_v1_AbortReply__Output>): grpc.ClientUnaryCall;
  
  /**
   * Joins the worker to a group: its rank, the world size and every rank's address.
   */
  Assign(argument: _lasp_v1_Assignment, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_AssignReply__Output>): grpc.ClientUnaryCall;
  Assign(argument: _lasp_v1_Assignment, metadata: grpc.Metadata, callback: grpc.requestCallback<_lasp_v1_AssignReply__Output>): grpc.ClientUnaryCall;
  Assign(argument: _lasp_v1_Assignment, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_AssignReply__Output>): grpc.ClientUnaryCall;
  Assign(argument: _lasp_v1_Assignment, callback: grpc.requestCallback<_lasp_v1_AssignReply__Output>): grpc.ClientUnaryCall;
  /**
   * Joins the worker to a group: its rank, the world size and every rank's address.
   */
  assign(argument: _lasp_v1_Assignment, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_AssignReply__Output>): grpc.ClientUnaryCall;
  assign(argument: _lasp_v1_Assignment, metadata: grpc.Metadata, callback: grpc.requestCallback<_lasp_v1_AssignReply__Output>): grpc.ClientUnaryCall;
  assign(argument: _lasp_v1_Assignment, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_AssignReply__Output>): grpc.ClientUnaryCall;
  assign(argument: _lasp_v1_Assignment, callback: grpc.requestCallback<_lasp_v1_AssignReply__Output>): grpc.ClientUnaryCall;
  
  /**
   * Runs a task of the current assignment (e.g. a sequence-parallel layer benchmark or a
   * training job) and returns its result.
   */
  RunTask(argument: _lasp_v1_TaskRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_TaskReply__Output>): grpc.ClientUnaryCall;
  RunTask(argument: _lasp_v1_TaskRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_lasp_v1_TaskReply__Output>): grpc.ClientUnaryCall;
  RunTask(argument: _lasp_v1_TaskRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_TaskReply__Output>): grpc.ClientUnaryCall;
  RunTask(argument: _lasp_v1_TaskRequest, callback: grpc.requestCallback<_lasp_v1_TaskReply__Output>): grpc.ClientUnaryCall;
  /**
   * Runs a task of the current assignment (e.g. a sequence-parallel layer benchmark or a
   * training job) and returns its result.
   */
  runTask(argument: _lasp_v1_TaskRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_TaskReply__Output>): grpc.ClientUnaryCall;
  runTask(argument: _lasp_v1_TaskRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_lasp_v1_TaskReply__Output>): grpc.ClientUnaryCall;
  runTask(argument: _lasp_v1_TaskRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_lasp_v1_TaskReply__Output>): grpc.ClientUnaryCall;
  runTask(argument: _lasp_v1_TaskRequest, callback: grpc.requestCallback<_lasp_v1_TaskReply__Output>): grpc.ClientUnaryCall;
  
}

export interface WorkerControlHandlers extends grpc.UntypedServiceImplementation {
  /**
   * Aborts a generation: pending collectives of that generation fail at once.
   */
  Abort: grpc.handleUnaryCall<_lasp_v1_AbortRequest__Output, _lasp_v1_AbortReply>;
  
  /**
   * Joins the worker to a group: its rank, the world size and every rank's address.
   */
  Assign: grpc.handleUnaryCall<_lasp_v1_Assignment__Output, _lasp_v1_AssignReply>;
  
  /**
   * Runs a task of the current assignment (e.g. a sequence-parallel layer benchmark or a
   * training job) and returns its result.
   */
  RunTask: grpc.handleUnaryCall<_lasp_v1_TaskRequest__Output, _lasp_v1_TaskReply>;
  
}

export interface WorkerControlDefinition extends grpc.ServiceDefinition {
  Abort: MethodDefinition<_lasp_v1_AbortRequest, _lasp_v1_AbortReply, _lasp_v1_AbortRequest__Output, _lasp_v1_AbortReply__Output>
  Assign: MethodDefinition<_lasp_v1_Assignment, _lasp_v1_AssignReply, _lasp_v1_Assignment__Output, _lasp_v1_AssignReply__Output>
  RunTask: MethodDefinition<_lasp_v1_TaskRequest, _lasp_v1_TaskReply, _lasp_v1_TaskRequest__Output, _lasp_v1_TaskReply__Output>
}
