// The TLS flags shared by `lasp coordinator` and `lasp worker` (cluster/tls.ts has what they mean).
import { Option, type Command } from 'commander';
import { loadTls, type TlsConfig } from './tls.js';

export interface TlsFlagValues {
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tlsServerOnly?: boolean;
}

/** Adds --tls-cert, --tls-key, --tls-ca and --tls-server-only (env LASP_TLS_CERT, LASP_TLS_KEY, LASP_TLS_CA, LASP_TLS_SERVER_ONLY). */
export function addTlsOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option('--tls-cert <file>', "PEM certificate chain: serve gRPC over TLS with it, and present it on this process's calls").env(
        'LASP_TLS_CERT',
      ),
    )
    .addOption(new Option('--tls-key <file>', 'PEM private key of --tls-cert').env('LASP_TLS_KEY'))
    .addOption(
      new Option(
        '--tls-ca <file>',
        'PEM CA bundle: verify the servers this process calls, and require client certificates from this CA (mutual TLS; default: system CAs, no client certificates)',
      ).env('LASP_TLS_CA'),
    )
    .addOption(
      new Option('--tls-server-only', 'with --tls-ca: do not require client certificates (server-side TLS only)').env(
        'LASP_TLS_SERVER_ONLY',
      ),
    );
}

/** The checked TLS material of the flags, or undefined when TLS is off. Throws TlsConfigError naming the flag and path. */
export function tlsFromFlags(o: TlsFlagValues): TlsConfig | undefined {
  return loadTls(
    {
      ...(o.tlsCert !== undefined ? { cert: o.tlsCert } : {}),
      ...(o.tlsKey !== undefined ? { key: o.tlsKey } : {}),
      ...(o.tlsCa !== undefined ? { ca: o.tlsCa } : {}),
      serverOnly: o.tlsServerOnly === true,
    },
    {},
  );
}
