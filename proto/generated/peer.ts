import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { DeliverReply as _lasp_v1_DeliverReply, DeliverReply__Output as _lasp_v1_DeliverReply__Output } from './lasp/v1/DeliverReply.js';
import type { PeerClient as _lasp_v1_PeerClient, PeerDefinition as _lasp_v1_PeerDefinition } from './lasp/v1/Peer.js';
import type { PeerMessage as _lasp_v1_PeerMessage, PeerMessage__Output as _lasp_v1_PeerMessage__Output } from './lasp/v1/PeerMessage.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  lasp: {
    v1: {
      DeliverReply: MessageTypeDefinition<_lasp_v1_DeliverReply, _lasp_v1_DeliverReply__Output>
      Peer: SubtypeConstructor<typeof grpc.Client, _lasp_v1_PeerClient> & { service: _lasp_v1_PeerDefinition }
      PeerMessage: MessageTypeDefinition<_lasp_v1_PeerMessage, _lasp_v1_PeerMessage__Output>
    }
  }
}

