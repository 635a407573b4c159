/**
 * TLS of the Redis link (`src/deps/redis.ts`): the PEM files read at start, and one line for the usual TLS
 * failures, naming the settings to check.
 *
 * @module
 */
/** TLS settings of a link (for `rediss://` and `rediss-sentinel://`). */
export interface RedisTlsOptions {
  /** The CA(s) to trust instead of the system's. */
  caFile?: string | null | undefined;
  /** A client certificate (mutual TLS), with `keyFile`. */
  certFile?: string | null | undefined;
  /** The client certificate's key. */
  keyFile?: string | null | undefined;
  /** The name the server's certificate must carry, when not the URL's host. */
  serverName?: string | null | undefined;
}

function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

/** What `tls.connect` gets: the files' contents, the server name, and verification on. */
export interface TlsSettings {
  ca?: string;
  cert?: string;
  key?: string;
  servername?: string;
  rejectUnauthorized: true;
}

/** Reads the TLS files. @throws {TypeError} `Cannot read the TLS CA file "<path>": <reason>`. */
export function readTls(options: RedisTlsOptions): TlsSettings {
  const read = (path: string | null | undefined, what: string) => {
    if (path === null || path === undefined) return undefined;
    try {
      return Deno.readTextFileSync(path);
    } catch (error) {
      throw new TypeError(`Cannot read the TLS ${what} "${path}": ${messageOf(error)}`);
    }
  };
  const ca = read(options.caFile, "CA file");
  const cert = read(options.certFile, "client certificate file");
  const key = read(options.keyFile, "client key file");
  if ((cert === undefined) !== (key === undefined)) {
    throw new TypeError(
      "Invalid TLS settings: a client certificate needs its key file, and a key its certificate",
    );
  }
  return {
    rejectUnauthorized: true,
    ...(ca !== undefined ? { ca } : {}),
    ...(cert !== undefined && key !== undefined ? { cert, key } : {}),
    ...(options.serverName ? { servername: options.serverName } : {}),
  };
}

/**
 * One line saying what went wrong with TLS, for the usual failures: a certificate that does not verify, or a
 * server that does not speak TLS. Other messages come back as they are.
 */
export function describeTlsFailure(message: string): string {
  if (
    /certificate|UnknownIssuer|BadSignature|NotValidForName|CertNotValid|CERT_|self.signed|unable to (get|verify)/i
      .test(message)
  ) {
    return `TLS: the server's certificate was not accepted (${message}); check cluster.tls_ca_file and cluster.tls_server_name`;
  }
  if (
    /corrupt message|InvalidContentType|wrong version|packet length|record overflow|HandshakeFailure|peer is incompatible|disconnected before secure|tls handshake eof|unexpected eof/i
      .test(message)
  ) {
    return `TLS: the handshake failed (${message}); is the server speaking TLS on this port?`;
  }
  return message;
}
