/** The program's rule for where its identity key lives (src/identity_path.ts), one case per step. */
import { assertEquals } from "./deps/assert.ts";
import { identityLocation } from "../src/identity_path.ts";

Deno.test("identity_file wins; a relative one is read from the config file's directory", () => {
  assertEquals(
    identityLocation({
      identityFile: "keys/a.pem",
      configFile: "conf/eu.json",
      env: { STATE_DIRECTORY: "/var/lib/p2p_server" },
      cwd: "/srv",
    }),
    { path: "/srv/conf/keys/a.pem", rule: "identity_file", createDir: null },
  );
  assertEquals(
    identityLocation({ identityFile: "/k.pem", env: {}, cwd: "/srv" }).path,
    "/k.pem",
  );
  assertEquals(identityLocation({ identityFile: "k.pem", env: {}, cwd: "/srv" }).path, "/srv/k.pem");
});

Deno.test("systemd's STATE_DIRECTORY (its first entry) comes next, even with a config file", () => {
  assertEquals(
    identityLocation({
      configFile: "/etc/p2p_server/config.json",
      env: { STATE_DIRECTORY: "/var/lib/p2p_server:/var/lib/other", XDG_STATE_HOME: "/home/u/.local/state" },
      cwd: "/",
    }),
    { path: "/var/lib/p2p_server/p2p_server_identity.pem", rule: "state_directory", createDir: null },
  );
});

Deno.test("with a config file the key sits next to it, named after it", () => {
  const at = (configFile: string) =>
    identityLocation({ configFile, env: { XDG_STATE_HOME: "/home/u/.local/state" }, cwd: "/srv" });
  assertEquals(at("/etc/p2p/eu-1.json"), {
    path: "/etc/p2p/eu-1.identity.pem",
    rule: "config_file",
    createDir: null,
  });
  assertEquals(at("config.json").path, "/srv/config.identity.pem");
  assertEquals(at("./b/node.conf").path, "/srv/b/node.conf.identity.pem");
});

Deno.test("then XDG_STATE_HOME/p2p_server (absolute only, as the spec says), then the working directory", () => {
  assertEquals(identityLocation({ env: { XDG_STATE_HOME: "/home/u/.local/state" }, cwd: "/srv" }), {
    path: "/home/u/.local/state/p2p_server/p2p_server_identity.pem",
    rule: "xdg_state_home",
    createDir: "/home/u/.local/state/p2p_server",
  });
  assertEquals(identityLocation({ env: { XDG_STATE_HOME: "relative/state" }, cwd: "/srv" }), {
    path: "/srv/p2p_server_identity.pem",
    rule: "working_directory",
    createDir: null,
  });
  assertEquals(identityLocation({ env: { STATE_DIRECTORY: "" }, cwd: "/srv" }).rule, "working_directory");
});
