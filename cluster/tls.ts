// Optional TLS for the gRPC control plane and the peer channels. Every lasp process both serves
// gRPC (coordinator: Register/Heartbeat; worker: WorkerControl and Peer) and calls other processes
// (worker -> coordinator, coordinator -> worker, worker <-> worker), so one set of files serves
// both directions:
//   --tls-cert / --tls-key  this process's certificate chain and private key: served to callers,
//                           and presented as the client certificate on outgoing calls;
//   --tls-ca                the CA bundle that the other side's certificates must chain to
//                           (server certificates always; client certificates too: mutual TLS);
//   --tls-server-only       do not ask callers for a certificate (server-side TLS only).
// Certificates are checked against the address dialled, so their subjectAltName must cover the
// advertised hosts (e.g. IP:127.0.0.1, DNS:localhost). Files are read and checked once at start;
// every problem names the flag and the path.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';

/** Paths (or env-var fallbacks) of the TLS files; all optional. */
export interface TlsPaths {
  /** PEM certificate chain of this process. Default: $LASP_TLS_CERT, else none. */
  cert?: string;
  /** PEM private key of `cert`. Default: $LASP_TLS_KEY, else none. */
  key?: string;
  /** PEM CA bundle to verify the other side. Default: $LASP_TLS_CA, else none (the system's roots on outgoing calls, no client certificates asked for). */
  ca?: string;
  /** Do not require client certificates even when `ca` is given. Default: $LASP_TLS_SERVER_ONLY is "1" or "true", else false. */
  serverOnly?: boolean;
}

/** Loaded and checked TLS material. */
export interface TlsConfig {
  cert: Buffer;
  key: Buffer;
  /** Undefined: the system's root CAs verify servers, and clients are not asked for certificates. */
  ca?: Buffer;
  /** Incoming calls must present a certificate that chains to `ca`. True when `ca` is given and serverOnly is not set. */
  mutual: boolean;
  /** For log lines: "TLS (mutual, CA ca.pem)". */
  describe: string;
}

/** A bad TLS flag or file; the message names the flag and the path. */
export class TlsConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TlsConfigError';
  }
}

function readPem(flag: string, path: string): Buffer {
  let b: Buffer;
  try {
    b = readFileSync(path);
  } catch (err) {
    throw new TlsConfigError(`${flag} ${path}: cannot read the file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (!b.toString('latin1').includes('-----BEGIN ')) throw new TlsConfigError(`${flag} ${path}: not a PEM file (no "-----BEGIN" line)`);
  return b;
}

function parseCert(flag: string, path: string, pem: Buffer): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw new TlsConfigError(`${flag} ${path}: not a PEM certificate: ${(err as Error).message}`);
  }
}

/**
 * Reads and checks the TLS files. Returns undefined when no flag and no env var asks for TLS.
 * Throws TlsConfigError naming the flag and path: a missing half of the cert/key pair, an
 * unreadable or non-PEM file, a key that does not belong to the certificate, an expired
 * certificate, a certificate not issued by the given CA.
 */
export function loadTls(paths: TlsPaths = {}, env: NodeJS.ProcessEnv = process.env): TlsConfig | undefined {
  const certPath = paths.cert ?? (env.LASP_TLS_CERT || undefined);
  const keyPath = paths.key ?? (env.LASP_TLS_KEY || undefined);
  const caPath = paths.ca ?? (env.LASP_TLS_CA || undefined);
  const serverOnly = paths.serverOnly ?? ['1', 'true'].includes((env.LASP_TLS_SERVER_ONLY ?? '').toLowerCase());
  if (certPath === undefined && keyPath === undefined && caPath === undefined) return undefined;
  if (certPath === undefined || keyPath === undefined)
    throw new TlsConfigError(
      `TLS needs both --tls-cert and --tls-key (or LASP_TLS_CERT and LASP_TLS_KEY): got ${certPath === undefined ? 'no --tls-cert' : `--tls-cert ${certPath}`} and ${keyPath === undefined ? 'no --tls-key' : `--tls-key ${keyPath}`}`,
    );
  const cert = readPem('--tls-cert', certPath);
  const key = readPem('--tls-key', keyPath);
  const x509 = parseCert('--tls-cert', certPath, cert);
  try {
    createPrivateKey(key);
  } catch (err) {
    throw new TlsConfigError(`--tls-key ${keyPath}: not a PEM private key: ${(err as Error).message}`);
  }
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new TlsConfigError(`--tls-key ${keyPath} does not belong to the certificate --tls-cert ${certPath}: ${(err as Error).message}`);
  }
  const validTo = Date.parse(x509.validTo);
  if (Number.isFinite(validTo) && validTo < Date.now())
    throw new TlsConfigError(`--tls-cert ${certPath}: the certificate expired on ${new Date(validTo).toISOString()}`);
  let ca: Buffer | undefined;
  if (caPath !== undefined) {
    ca = readPem('--tls-ca', caPath);
    const roots = splitPem(ca).map((pem) => parseCert('--tls-ca', caPath, Buffer.from(pem)));
    if (roots.length === 0) throw new TlsConfigError(`--tls-ca ${caPath}: no certificate in the file`);
    if (!roots.some((r) => x509.checkIssued(r) && x509.verify(r.publicKey)))
      throw new TlsConfigError(
        `--tls-cert ${certPath} is not issued by a CA in --tls-ca ${caPath} (issuer ${JSON.stringify(x509.issuer)}; CA subjects ${roots.map((r) => JSON.stringify(r.subject)).join(', ')})`,
      );
  }
  const mutual = ca !== undefined && !serverOnly;
  return {
    cert,
    key,
    ...(ca !== undefined ? { ca } : {}),
    mutual,
    describe: `TLS (${mutual ? 'mutual' : 'server-only'}${caPath !== undefined ? `, CA ${caPath}` : ', system CAs'})`,
  };
}

function splitPem(bundle: Buffer): string[] {
  return bundle.toString('latin1').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

/** Credentials of a gRPC server: insecure without TLS; with it, client certificates required when mutual. */
export function serverCredentials(tls: TlsConfig | undefined): grpc.ServerCredentials {
  if (tls === undefined) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(tls.ca ?? null, [{ cert_chain: tls.cert, private_key: tls.key }], tls.mutual);
}

/** Credentials of an outgoing channel: insecure without TLS; with it, verify the server against `ca` and present our certificate. */
export function channelCredentials(tls: TlsConfig | undefined): grpc.ChannelCredentials {
  if (tls === undefined) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(tls.ca ?? null, tls.key, tls.cert);
}

/**
 * Client options that make a generated client open its channel with TLS credentials whatever
 * credentials its creator passed (for clients built by code that always passes insecure ones, such
 * as the peer channels). Unchanged without TLS.
 */
export function withChannelCredentials<T extends grpc.ChannelOptions>(options: T, tls: TlsConfig | undefined): T {
  if (tls === undefined) return options;
  const creds = channelCredentials(tls);
  return {
    ...options,
    channelFactoryOverride: (address: string, _insecure: grpc.ChannelCredentials, opts: grpc.ChannelOptions) =>
      new grpc.Channel(address, creds, opts),
  };
}
