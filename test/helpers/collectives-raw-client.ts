// A raw Peer client for the negative tests: sends hand-made PeerMessages (or bytes that are not
// a PeerMessage at all) and returns the gRPC status code of the reply.
import * as grpc from '@grpc/grpc-js';
import { protos } from '../../proto/load.js';
import type { PeerClient } from '../../proto/generated/lasp/v1/Peer.js';
import type { PeerMessage } from '../../proto/generated/lasp/v1/PeerMessage.js';

export interface DeliverOutcome {
  code: grpc.status;
  details: string;
}

export class RawPeerClient {
  private readonly client: PeerClient;

  constructor(
    readonly address: string,
    private readonly token?: string,
  ) {
    const Peer = protos().peer.lasp.v1.Peer;
    this.client = new Peer(address, grpc.credentials.createInsecure(), { 'grpc.enable_retries': 0 });
  }

  private metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    if (this.token !== undefined) md.set('authorization', `Bearer ${this.token}`);
    return md;
  }

  deliver(msg: PeerMessage): Promise<DeliverOutcome> {
    return new Promise((resolve) => {
      this.client.Deliver(msg, this.metadata(), { deadline: Date.now() + 5000 }, (err) =>
        resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '' }),
      );
    });
  }

  /** Send `bytes` as the request body of Deliver, unparsed. */
  deliverRaw(bytes: Buffer): Promise<DeliverOutcome> {
    return new Promise((resolve) => {
      this.client.makeUnaryRequest(
        '/lasp.v1.Peer/Deliver',
        (b: Buffer) => b,
        (b: Buffer) => b,
        bytes,
        this.metadata(),
        { deadline: Date.now() + 5000 },
        (err) => resolve(err ? { code: err.code, details: err.details ?? '' } : { code: grpc.status.OK, details: '' }),
      );
    });
  }

  close(): void {
    this.client.close();
  }
}
