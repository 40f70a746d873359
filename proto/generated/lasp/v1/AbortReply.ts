// Original file: lasp/v1/worker.proto


export interface AbortReply {
}

export interface AbortReply__Output {
}
