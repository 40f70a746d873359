// Original file: lasp/v1/coordinator.proto


export interface HeartbeatReply {
  /**
   * false: the coordinator does not know this worker (e.g. it restarted); register again.
   */
  'known'?: (boolean);
  /**
   * true: the coordinator asks this worker to drain (POST /v1/workers/:id/drain): leave once its
   * job has checkpointed and released it, then exit.
   */
  'drain'?: (boolean);
}

export interface HeartbeatReply__Output {
  /**
   * false: the coordinator does not know this worker (e.g. it restarted); register again.
   */
  'known': (boolean);
  /**
   * true: the coordinator asks this worker to drain (POST /v1/workers/:id/drain): leave once its
   * job has checkpointed and released it, then exit.
   */
  'drain': (boolean);
}
