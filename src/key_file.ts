/**
 * The server's identity key file: an Ed25519 private key in PKCS#8 PEM, created on first use with
 * owner-only permissions (through a temp file, so it is never seen empty or half written) and refused when
 * others may read or write it. The key itself is never logged or printed:
 * errors name the file and what is wrong with it, nothing of its contents.
 *
 * @module
 */
import { generateIdentity, type Identity, identityFrom } from "./core/auth.ts";
import { exportPrivateKeyPem, importEd25519Pem } from "./deps/crypto.ts";

/**
 * A key file that is missing and cannot be created, readable by others, or not a key.
 *
 * @example A file that does not hold a key
 * ```ts
 * import { KeyFileError, loadOrCreateIdentity } from "../mod.ts";
 * const path = Deno.makeTempFileSync({ suffix: ".pem" });
 * Deno.writeTextFileSync(path, "not a key\n", { mode: 0o600 });
 * Deno.chmodSync(path, 0o600);
 * try {
 *   loadOrCreateIdentity(path);
 *   throw new Error("accepted");
 * } catch (error) {
 *   if (!(error instanceof KeyFileError) || error.path !== path) throw error;
 * }
 * ```
 */
export class KeyFileError extends Error {
  /** The file. */
  readonly path: string;
  /**
   * A problem with the key file at `path`.
   *
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
 * @throws {KeyFileError} when the file cannot be created or read, group or others have any permission on it
 * (on systems with Unix permissions), or it is empty or does not hold an Ed25519 private key.
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
    return { identity: createKeyFile(path), created: true };
  }
  if (!info.isFile) throw new KeyFileError(path, `Key file "${path}" is not a regular file`);
  if (info.mode !== null && (info.mode & 0o077) !== 0) {
    const mode = (info.mode & 0o777).toString(8).padStart(4, "0");
    const read = (info.mode & 0o044) !== 0;
    const written = (info.mode & 0o022) !== 0;
    const what = read && written ? "read and written" : written ? "written" : read ? "read" : "opened";
    throw new KeyFileError(
      path,
      `Key file "${path}" may be ${what} by others (mode ${mode}): restrict it with chmod 600 "${path}"`,
    );
  }
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    throw new KeyFileError(path, `Cannot read key file "${path}": ${(error as Error).message}`);
  }
  if (text.trim() === "") {
    throw new KeyFileError(
      path,
      `Key file "${path}" is empty, not an Ed25519 private key in PKCS#8 PEM: restore the key, or delete the ` +
        "file to have a new one created (the node id changes)",
    );
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

/**
 * Creates `path` with a new key, never leaving it empty or half written: the key goes to a temp file of its
 * own (a random name beside `path`, mode 0600), is flushed to disk, and is then linked to `path`, which
 * fails when `path` exists (another process created it meanwhile: its key is loaded instead). Where the file
 * system has no hard links, a rename takes the link's place. A crash leaves at most a stray temp file, which
 * no later start reads.
 */
function createKeyFile(path: string): Identity {
  const identity = generateIdentity();
  const suffix = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0"))
    .join("");
  const temp = `${path}.${suffix}.tmp`;
  try {
    const file = Deno.openSync(temp, { write: true, createNew: true, mode: 0o600 });
    try {
      file.writeSync(new TextEncoder().encode(exportPrivateKeyPem(identity.privateKey)));
      file.syncSync();
    } finally {
      file.close();
    }
  } catch (error) {
    try {
      Deno.removeSync(temp);
    } catch {
      // never created
    }
    throw new KeyFileError(path, `Cannot create key file "${path}": ${(error as Error).message}`);
  }
  try {
    try {
      Deno.linkSync(temp, path);
    } catch (error) {
      if (error instanceof Deno.errors.AlreadyExists) return loadOrCreateIdentity(path);
      // No hard links here: a rename is atomic too (it would replace a file created in the meantime).
      Deno.renameSync(temp, path);
    }
  } catch (error) {
    throw new KeyFileError(path, `Cannot create key file "${path}": ${(error as Error).message}`);
  } finally {
    try {
      Deno.removeSync(temp);
    } catch {
      // renamed
    }
  }
  return identity;
}
