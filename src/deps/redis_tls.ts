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

/** Alerts a server sends when it refuses the client's certificate, or the lack of one. */
const CLIENT_CERT_ALERT =
  /alert[: ]+(CertificateRequired|BadCertificate|UnknownCA|CertificateUnknown|UnsupportedCertificate|CertificateExpired|CertificateRevoked|AccessDenied)|alert (certificate required|bad certificate|unknown ca|certificate unknown)/i;

/**
 * One line saying what went wrong with TLS, for the usual failures: a server that requires a client
 * certificate (or refuses the one sent), a server certificate that does not verify, or a server that does not
 * speak TLS. Other messages come back as they are. `clientCertificate` says whether one was sent.
 *
 * @example
 * ```ts
 * import { describeTlsFailure } from "./redis_tls.ts";
 * const line = describeTlsFailure("received fatal alert: CertificateRequired");
 * if (!line.startsWith("TLS: the server requires a client certificate")) throw new Error(line);
 * ```
 */
export function describeTlsFailure(
  message: string,
  options: { clientCertificate?: boolean } = {},
): string {
  // The server's alerts first: "certificate" in them is about ours, not the server's.
  const alert = CLIENT_CERT_ALERT.exec(message);
  if (alert !== null) {
    const required = /required/i.test(alert[0]);
    if (required || !options.clientCertificate) {
      return `TLS: the server requires a client certificate (${message}); set cluster.tls_cert_file and cluster.tls_key_file`;
    }
    return `TLS: the server did not accept the client certificate (${message}); check cluster.tls_cert_file, cluster.tls_key_file and the CA the server trusts`;
  }
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
    const hint = options.clientCertificate
      ? ""
      : " (a server that requires a client certificate may refuse so too: cluster.tls_cert_file)";
    return `TLS: the handshake failed (${message}); is the server speaking TLS on this port?${hint}`;
  }
  return message;
}
