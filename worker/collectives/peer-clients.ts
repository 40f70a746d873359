// Outgoing side: one gRPC channel per peer address, opened lazily and reused across groups.
import * as grpc from '@grpc/grpc-js';
import { protos } from '../../proto/load.js';
import type { PeerClient } from '../../proto/generated/lasp/v1/Peer.js';

/**
 * Channel options of the peer clients. Retries are off (a piece is never re-sent behind our back:
 * a duplicate would be refused) and messages are never compressed (float32 data does not compress).
 */
export const PEER_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.enable_retries': 0,
  'grpc.default_compression_algorithm': 0,
  'grpc.max_send_message_length': -1,
  'grpc.max_receive_message_length': -1,
  'grpc-node.flow_control_window': 16 * 1024 * 1024,
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1000,
};

export class PeerClients {
  private readonly clients = new Map<string, PeerClient>();
  private readonly metadata: grpc.Metadata;

  /**
   * @param token cluster token sent as `authorization: Bearer <token>` on every call (none when undefined)
   * @param channelOptions options of every channel (default PEER_CHANNEL_OPTIONS)
   */
  constructor(
    token: string | undefined,
    private readonly channelOptions: grpc.ChannelOptions = PEER_CHANNEL_OPTIONS,
  ) {
    this.metadata = new grpc.Metadata();
    if (token !== undefined) this.metadata.set('authorization', `Bearer ${token}`);
  }

  /** The client for `address` (host:port), created on first use. */
  get(address: string): PeerClient {
    let c = this.clients.get(address);
    if (c === undefined) {
      const Peer = protos().peer.lasp.v1.Peer;
      c = new Peer(address, grpc.credentials.createInsecure(), this.channelOptions);
      this.clients.set(address, c);
    }
    return c;
  }

  /** Metadata of every call (a fresh copy: gRPC may modify it). */
  callMetadata(): grpc.Metadata {
    return this.metadata.clone();
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
