// A raw Peer client for the negative tests: sends hand-made PeerMessages (or bytes that are not
// a PeerMessage at all) as unary Deliver calls or on one Stream call, and returns the gRPC status
// code of each reply.
import * as grpc from '@grpc/grpc-js';
import { protos } from '../../proto/load.js';
import type { PeerClient } from '../../proto/generated/lasp/v1/Peer.js';
import type { PeerMessage } from '../../proto/generated/lasp/v1/PeerMessage.js';
import type { DeliverReply__Output } from '../../proto/generated/lasp/v1/DeliverReply.js';

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

  /**
   * Send `msgs` on one Stream call (seq = index + 1) and collect one outcome per piece: the code of
   * its DeliverReply, or the call's status for every piece without a reply when the call ends.
   */
  stream(msgs: PeerMessage[]): Promise<(DeliverOutcome & { seq: number })[]> {
    return new Promise((resolve) => {
      const out: (DeliverOutcome & { seq: number })[] = [];
      const call = this.client.Stream(this.metadata(), { deadline: Date.now() + 10_000 });
      let settled = false;
      const finish = (status: DeliverOutcome) => {
        if (settled) return;
        settled = true;
        for (let i = out.length; i < msgs.length; i++) out.push({ ...status, seq: i + 1 });
        resolve(out);
      };
      call.on('data', (r: DeliverReply__Output) => {
        out.push({ code: r.code, details: r.details, seq: r.seq });
        if (out.length === msgs.length) {
          call.end();
          finish({ code: grpc.status.OK, details: '' });
        }
      });
      call.on('error', (err: grpc.ServiceError) => finish({ code: err.code, details: err.details }));
      call.on('status', (s: grpc.StatusObject) => finish({ code: s.code, details: s.details }));
      msgs.forEach((m, i) => call.write({ ...m, seq: i + 1 }));
    });
  }

  close(): void {
    this.client.close();
  }
}
