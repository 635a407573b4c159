/**
 * Where the program (`main.ts`) keeps its identity key when the config file names none (`identity_file`).
 * One rule, in this order; the first that applies wins:
 *
 * 1. `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`; its first entry when it lists several):
 *    `$STATE_DIRECTORY/p2p_server_identity.pem`.
 * 2. A config file was given (`-c dir/NAME.json`): next to it, `dir/NAME.identity.pem`, so two servers
 *    with two config files have two identities, even in one directory.
 * 3. `$XDG_STATE_HOME` is set: `$XDG_STATE_HOME/p2p_server/p2p_server_identity.pem` (the directory is
 *    created, mode 0700).
 * 4. Otherwise the working directory: `./p2p_server_identity.pem`.
 *
 * A relative `identity_file` in a config file is read relative to that file's directory.
 *
 * @module
 */
import { basename, dirname, extname, isAbsolute, join, resolve } from "node:path";

/** The default identity file name (rules 1, 3 and 4). */
export const IDENTITY_FILE_NAME = "p2p_server_identity.pem";

/** Which rule chose the identity file. */
export type IdentityRule =
  | "identity_file"
  | "state_directory"
  | "config_file"
  | "xdg_state_home"
  | "working_directory";

/** The identity file the program uses, and why. */
export interface IdentityLocation {
  /** An absolute path. */
  path: string;
  /** The rule that chose it. */
  rule: IdentityRule;
  /** A directory to create (0700) before the key can be written, or null. */
  createDir: string | null;
}

/** What the rule looks at. */
export interface IdentityInput {
  /** The `identity_file` the config file set (a string; null and absent are handled by the caller). */
  identityFile?: string | undefined;
  /** The config file given with `-c`, if any. */
  configFile?: string | undefined;
  /** `STATE_DIRECTORY` and `XDG_STATE_HOME` from the environment. */
  env: { STATE_DIRECTORY?: string | undefined; XDG_STATE_HOME?: string | undefined };
  /** The working directory. */
  cwd: string;
}

/**
 * Applies the rule of the module documentation.
 *
 * @example
 * ```ts
 * import { identityLocation } from "./identity_path.ts";
 * const at = identityLocation({ configFile: "/etc/p2p/eu-1.json", env: {}, cwd: "/" });
 * if (at.path !== "/etc/p2p/eu-1.identity.pem" || at.rule !== "config_file") throw new Error(at.path);
 * ```
 */
export function identityLocation(input: IdentityInput): IdentityLocation {
  const configDir = input.configFile !== undefined ? dirname(resolve(input.cwd, input.configFile)) : null;
  if (input.identityFile !== undefined) {
    const base = configDir ?? input.cwd;
    return {
      path: isAbsolute(input.identityFile) ? input.identityFile : resolve(base, input.identityFile),
      rule: "identity_file",
      createDir: null,
    };
  }
  const state = input.env.STATE_DIRECTORY?.split(":").find((d) => d.length > 0);
  if (state !== undefined) {
    return {
      path: join(resolve(input.cwd, state), IDENTITY_FILE_NAME),
      rule: "state_directory",
      createDir: null,
    };
  }
  if (input.configFile !== undefined && configDir !== null) {
    const name = basename(input.configFile);
    const stem = extname(name) === ".json" ? name.slice(0, -".json".length) : name;
    return { path: join(configDir, `${stem}.identity.pem`), rule: "config_file", createDir: null };
  }
  const xdg = input.env.XDG_STATE_HOME;
  if (xdg !== undefined && xdg.length > 0 && isAbsolute(xdg)) {
    const dir = join(xdg, "p2p_server");
    return { path: join(dir, IDENTITY_FILE_NAME), rule: "xdg_state_home", createDir: dir };
  }
  return { path: resolve(input.cwd, IDENTITY_FILE_NAME), rule: "working_directory", createDir: null };
}
