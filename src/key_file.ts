/**
 * The server's identity key file: an Ed25519 private key in PKCS#8 PEM, created on first use with
 * owner-only permissions and refused when others may read it. The key itself is never logged or printed:
 * errors name the file and what is wrong with it, nothing of its contents.
 *
 * @module
 */
import { generateIdentity, type Identity, identityFrom } from "./core/auth.ts";
import { exportPrivateKeyPem, importEd25519Pem } from "./deps/crypto.ts";

/** A key file that is missing and cannot be created, readable by others, or not a key. */
export class KeyFileError extends Error {
  /** The file. */
  readonly path: string;
  /**
   * @param path The file.
   * @param message One line saying what is wrong.
   */
  constructor(path: string, message: string) {
    super(message);
    this.name = "KeyFileError";
    this.path = path;
  }
}

/**
 * Reads the identity in `path`, or creates the file with a new key (mode 0600) when it does not exist.
 *
 * @throws {KeyFileError} when the file cannot be created or read, is readable by group or others (on
 * systems with Unix permissions), or does not hold an Ed25519 private key.
 * @example
 * ```ts
 * import { loadOrCreateIdentity } from "./key_file.ts";
 * const path = Deno.makeTempDirSync() + "/id.pem";
 * const first = loadOrCreateIdentity(path);
 * if (loadOrCreateIdentity(path).nodeId !== first.nodeId) throw new Error("the same key comes back");
 * ```
 */
export function loadOrCreateIdentity(path: string): Identity {
  return openIdentityFile(path).identity;
}

/**
 * Same as {@linkcode loadOrCreateIdentity}, and says whether the file was created just now (the server logs
 * the path and the new node id then).
 *
 * @throws {KeyFileError} as {@linkcode loadOrCreateIdentity}.
 */
export function openIdentityFile(path: string): { identity: Identity; created: boolean } {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      throw new KeyFileError(path, `Cannot read key file "${path}": ${(error as Error).message}`);
    }
    const identity = generateIdentity();
    try {
      Deno.writeTextFileSync(path, exportPrivateKeyPem(identity.privateKey), {
        mode: 0o600,
        createNew: true,
      });
    } catch (error) {
      throw new KeyFileError(path, `Cannot create key file "${path}": ${(error as Error).message}`);
    }
    return { identity, created: true };
  }
  if (!info.isFile) throw new KeyFileError(path, `Key file "${path}" is not a regular file`);
  if (info.mode !== null && (info.mode & 0o077) !== 0) {
    const mode = (info.mode & 0o777).toString(8).padStart(4, "0");
    throw new KeyFileError(
      path,
      `Key file "${path}" may be read by others (mode ${mode}): restrict it with chmod 600 "${path}"`,
    );
  }
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    throw new KeyFileError(path, `Cannot read key file "${path}": ${(error as Error).message}`);
  }
  try {
    return { identity: identityFrom(importEd25519Pem(text)), created: false };
  } catch (error) {
    throw new KeyFileError(
      path,
      `Key file "${path}" is corrupt: not an Ed25519 private key in PKCS#8 PEM (${(error as Error).message})`,
    );
  }
}
