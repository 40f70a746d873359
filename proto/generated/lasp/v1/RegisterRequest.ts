// Original file: lasp/v1/coordinator.proto


export interface RegisterRequest {
  /**
   * Stable id chosen by the worker (kept across coordinator restarts).
   */
  'workerId'?: (string);
  /**
   * host:port of the worker's gRPC server, as peers and the coordinator should dial it.
   */
  'address'?: (string);
  'host'?: (string);
  'pid'?: (number);
  /**
   * "cpu" or "cuda:N".
   */
  'device'?: (string);
  'threads'?: (number);
}

export interface RegisterRequest__Output {
  /**
   * Stable id chosen by the worker (kept across coordinator restarts).
   */
  'workerId': (string);
  /**
   * host:port of the worker's gRPC server, as peers and the coordinator should dial it.
   */
  'address': (string);
  'host': (string);
  'pid': (number);
  /**
   * "cpu" or "cuda:N".
   */
  'device': (string);
  'threads': (number);
}
