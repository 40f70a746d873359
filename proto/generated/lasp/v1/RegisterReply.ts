// Original file: lasp/v1/coordinator.proto


export interface RegisterReply {
  'workerId'?: (string);
  'heartbeatIntervalMs'?: (number);
}

export interface RegisterReply__Output {
  'workerId': (string);
  'heartbeatIntervalMs': (number);
}
