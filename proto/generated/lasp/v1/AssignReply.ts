// Original file: lasp/v1/worker.proto


export interface AssignReply {
}

export interface AssignReply__Output {
}
