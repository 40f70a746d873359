// Original file: lasp/v1/worker.proto


export interface Tensor {
  'name'?: (string);
  'shape'?: (number)[];
  /**
   * little-endian float32, row-major
   */
  'data'?: (Buffer | Uint8Array | string);
}

export interface Tensor__Output {
  'name': (string);
  'shape': (number)[];
  /**
   * little-endian float32, row-major
   */
  'data': (Buffer);
}
