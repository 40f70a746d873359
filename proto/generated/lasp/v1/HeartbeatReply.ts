// Original file: lasp/v1/coordinator.proto


export interface HeartbeatReply {
  /**
   * false: the coordinator does not know this worker (e.g. it restarted); register again.
   */
  'known'?: (boolean);
}

export interface HeartbeatReply__Output {
  /**
   * false: the coordinator does not know this worker (e.g. it restarted); register again.
   */
  'known': (boolean);
}
