// Original file: lasp/v1/worker.proto

import type { Tensor as _lasp_v1_Tensor, Tensor__Output as _lasp_v1_Tensor__Output } from '../../lasp/v1/Tensor.js';

export interface TaskReply {
  /**
   * Task result as JSON.
   */
  'resultJson'?: (string);
  'tensors'?: (_lasp_v1_Tensor)[];
}

export interface TaskReply__Output {
  /**
   * Task result as JSON.
   */
  'resultJson': (string);
  'tensors': (_lasp_v1_Tensor__Output)[];
}
