// A PeerEndpoint on its own gRPC server on loopback (port 0), for in-process collective tests.
import * as grpc from '@grpc/grpc-js';
import { PeerEndpoint, peerServerOptions, type PeerEndpointOptions } from '../../worker/peer-endpoint.js';

export interface Ep {
  ep: PeerEndpoint;
  address: string;
  server: grpc.Server;
}

export async function endpointOn(opts: PeerEndpointOptions): Promise<Ep> {
  const ep = new PeerEndpoint(opts);
  const server = new grpc.Server(peerServerOptions(ep.options.pieceBytes));
  ep.addTo(server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return { ep, address: `127.0.0.1:${port}`, server };
}

/** Closes each endpoint and stops its server at once. */
export function shut(...eps: Ep[]): void {
  for (const e of eps) {
    e.ep.close();
    e.server.forceShutdown();
  }
}
