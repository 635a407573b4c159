/**
 * The driver's batched UDP backend (`io_backend: "mmsg"`): a Linux UDP socket driven through libc with
 * `Deno.dlopen` (needs `--allow-ffi`). Datagrams are read with `recvmmsg` (up to {@linkcode SLOTS} per
 * system call, without blocking) and sent at once, synchronously, with `sendmmsg` (the answers of a batch
 * together, up to {@linkcode SEND_SLOTS} per call), so a datagram costs no promise and no async operation of
 * the runtime. Only waiting leaves the main thread: when nothing is
 * waiting, one `recvmmsg` that blocks until the next datagram runs on the runtime's blocking-call thread (a
 * `shutdown` wakes it on close), and when the kernel's send buffer is full, a `poll` for room does.
 * `Deno.listenDatagram` remains the default backend and the fallback: {@linkcode mmsgUnavailable} says why
 * this one cannot run here.
 *
 * Struct layouts are those of 64-bit Linux (x86_64 and aarch64 share them): `sockaddr_in` 16 bytes,
 * `sockaddr_in6` 28, `iovec` 16, `mmsghdr` 64, `pollfd` 8.
 *
 * @module
 */
import { formatIp, ipBytes, type SocketAddr } from "./wire/address.ts";
import { ConfigError } from "./config_error.ts";
import type { IoBackend } from "./config_checks.ts";

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  recvmmsg: { parameters: ["i32", "pointer", "u32", "i32", "pointer"], result: "i32" },
  recvmmsgWait: {
    name: "recvmmsg",
    parameters: ["i32", "pointer", "u32", "i32", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "i32" },
  sendmmsg: { parameters: ["i32", "pointer", "u32", "i32"], result: "i32" },
  poll: { parameters: ["pointer", "usize", "i32"], result: "i32", nonblocking: true },
  pollHere: { name: "poll", parameters: ["pointer", "usize", "i32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** Datagrams read per `recvmmsg` call. */
export const SLOTS = 16;
/** Datagrams handed to the kernel per `sendmmsg` call, at most. */
export const SEND_SLOTS = 32;
/** Bytes of the area the datagrams of one `sendmmsg` call are copied into (a larger one goes alone). */
const SEND_AREA_BYTES = 65_536;
/** Bytes of each receive slot: any UDP datagram fits. */
const SLOT_BYTES = 65_536;
const NAME_BYTES = 32; // a sockaddr_in6 (28) rounded up
const MMSGHDR_BYTES = 64;

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const MSG_DONTWAIT = 0x40;
const MSG_WAITFORONE = 0x10000;
const SHUT_RDWR = 2;
const MSG_TRUNC = 0x20;
const POLLIN = 1;
const POLLOUT = 4;
const EAGAIN = 11;
const ENOBUFS = 105;
const EINTR = 4;

let lib: Libc | null = null;
let unavailable: string | null | undefined;

/**
 * Why the batched backend cannot run in this process (not Linux on x86_64 or aarch64, no `--allow-ffi`,
 * no libc to open), or null when it can.
 */
export function mmsgUnavailable(): string | null {
  if (unavailable !== undefined) return unavailable;
  if (Deno.build.os !== "linux" || (Deno.build.arch !== "x86_64" && Deno.build.arch !== "aarch64")) {
    return unavailable = `needs Linux on x86_64 or aarch64 (this is ${Deno.build.os} on ${Deno.build.arch})`;
  }
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    return unavailable = "needs --allow-ffi";
  }
  try {
    lib = Deno.dlopen("libc.so.6", SYMBOLS).symbols;
    return unavailable = null;
  } catch (error) {
    return unavailable = `cannot open libc.so.6: ${(error as Error).message}`;
  }
}

/**
 * Checks that the configured backend can run in this process.
 *
 * @throws {ConfigError} naming `io_backend` and why, for `"mmsg"` where it cannot run.
 */
export function requireIoBackend(backend: IoBackend): void {
  const why = backend === "mmsg" ? mmsgUnavailable() : null;
  if (why !== null) {
    throw new ConfigError(`Invalid value for io_backend: "mmsg": the mmsg backend ${why}`, "io_backend");
  }
}

function libc(): Libc {
  const why = mmsgUnavailable();
  if (why !== null) throw new Error(`The mmsg backend ${why}`);
  return lib!;
}

/** The calling thread's errno, read right after the call that failed. */
function errno(c: Libc): number {
  return new Deno.UnsafePointerView(c.__errno_location()!).getInt32();
}

/** An OS error as Deno words one: `Address already in use (os error 98)`. */
function osError(c: Libc, code: number): Error {
  const text = Deno.UnsafePointerView.getCString(c.strerror(code)!);
  const error = new Error(`${text} (os error ${code})`);
  (error as { code?: number }).code = code;
  return error;
}

/** Bytes in an ArrayBuffer of their own, which stays where it is for as long as it lives. */
function outside(length: number): Uint8Array {
  return new Uint8Array(new ArrayBuffer(length));
}

function pointer(bytes: Uint8Array): Deno.PointerValue {
  return Deno.UnsafePointer.of(bytes as Uint8Array<ArrayBuffer>);
}

function address(bytes: Uint8Array): bigint {
  return BigInt(Deno.UnsafePointer.value(pointer(bytes)));
}

/** Most host names kept by each socket's two address caches before they start over. */
const CACHE_LIMIT = 4_096;

/**
 * A bound UDP socket of the batched backend. `receiveNow()` reads what is waiting into the slots, then
 * `from(i)` and `bytes(i)` give datagram `i` (valid until the next `receiveNow()`); `sendNow()` hands one
 * datagram to the kernel or says the send buffer is full.
 */
export class MmsgSocket {
  /** The bound local address, as `Deno.DatagramConn.addr` gives it. */
  readonly addr: Deno.NetAddr;
  readonly #c: Libc;
  readonly #fd: number;
  readonly #wake: number;
  readonly #v6: boolean;
  // Memory whose address the kernel keeps (read by a poll on another thread, or written by recvmmsg) comes
  // from ArrayBuffers made directly, never from a small typed array that V8 may keep on its moving heap.
  readonly #slots = outside(SLOTS * SLOT_BYTES);
  readonly #names = outside(SLOTS * NAME_BYTES);
  readonly #hdr = outside(SLOTS * MMSGHDR_BYTES);
  readonly #hdrView = new DataView(this.#hdr.buffer);
  readonly #iov = outside(SLOTS * 16);
  readonly #hdrPtr: Deno.PointerValue;
  readonly #writePoll = outside(16);
  readonly #readPoll = outside(8);
  readonly #readPollPtr: Deno.PointerValue;
  readonly #writePollPtr: Deno.PointerValue;
  // The send side of `sendmmsg`: datagrams copied into one area, a destination and an iovec per message.
  readonly #sendArea = outside(SEND_AREA_BYTES);
  readonly #sendNames = outside(SEND_SLOTS * NAME_BYTES);
  readonly #sendNamesView = new DataView(this.#sendNames.buffer);
  readonly #sendHdr = outside(SEND_SLOTS * MMSGHDR_BYTES);
  readonly #sendHdrView = new DataView(this.#sendHdr.buffer);
  readonly #sendIov = outside(SEND_SLOTS * 16);
  readonly #sendIovView = new DataView(this.#sendIov.buffer);
  readonly #sendHdrPtr: Deno.PointerValue;
  readonly #sendAreaAt: number;
  readonly #dest = new Uint8Array(NAME_BYTES);
  readonly #destView = new DataView(this.#dest.buffer);
  /** Source address (family, address bytes) -> host name; host name -> destination address bytes. */
  readonly #hosts = new Map<string, string>();
  readonly #dests = new Map<string, Uint8Array | null>();
  #receiving = false;
  #waits = 0;
  #closed = false;

  /**
   * Binds `hostname:port` (an IP literal; `0.0.0.0` or `::` for every address).
   *
   * @throws {Error} Deno's wording of the OS error (`Address already in use (os error 98)`), or why the
   *   backend cannot run.
   */
  constructor(local: SocketAddr) {
    const c = this.#c = libc();
    const ip = ipBytes(local.hostname);
    if (!ip) throw new Error(`Not an IP address: ${local.hostname}`);
    this.#v6 = ip.length === 16;
    // A blocking socket: every call on the main thread says MSG_DONTWAIT, and only the wait for the next
    // datagram blocks, in `recvmmsg` on the runtime's blocking-call thread.
    const fd = c.socket(this.#v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw osError(c, errno(c));
    const name = new Uint8Array(NAME_BYTES);
    const length = writeSockaddr(new DataView(name.buffer), ip, local.port, this.#v6);
    if (c.bind(fd, name, length) !== 0) {
      const error = osError(c, errno(c));
      c.close(fd);
      throw error;
    }
    const len = new Uint32Array([NAME_BYTES]);
    c.getsockname(fd, name, new Uint8Array(len.buffer));
    const port = (name[2]! << 8) | name[3]!;
    this.addr = { transport: "udp", hostname: local.hostname, port };
    const wake = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake < 0) {
      const error = osError(c, errno(c));
      c.close(fd);
      throw error;
    }
    this.#fd = fd;
    this.#wake = wake;
    const iov = new DataView(this.#iov.buffer);
    const slots = address(this.#slots);
    const names = address(this.#names);
    const iovs = address(this.#iov);
    for (let i = 0; i < SLOTS; i++) {
      iov.setBigUint64(i * 16, slots + BigInt(i * SLOT_BYTES), true);
      iov.setBigUint64(i * 16 + 8, BigInt(SLOT_BYTES), true);
      const h = i * MMSGHDR_BYTES;
      this.#hdrView.setBigUint64(h, names + BigInt(i * NAME_BYTES), true);
      this.#hdrView.setBigUint64(h + 16, iovs + BigInt(i * 16), true);
      this.#hdrView.setBigUint64(h + 24, 1n, true);
    }
    this.#hdrPtr = pointer(this.#hdr);
    const sendNames = address(this.#sendNames);
    const sendIovs = address(this.#sendIov);
    for (let i = 0; i < SEND_SLOTS; i++) {
      const h = i * MMSGHDR_BYTES;
      this.#sendHdrView.setBigUint64(h, sendNames + BigInt(i * NAME_BYTES), true);
      this.#sendHdrView.setBigUint64(h + 16, sendIovs + BigInt(i * 16), true);
      this.#sendHdrView.setBigUint64(h + 24, 1n, true);
    }
    this.#sendHdrPtr = pointer(this.#sendHdr);
    // A user-space address is below 2^47: exact as a number, so the iovecs are written without BigInts.
    this.#sendAreaAt = Number(address(this.#sendArea));
    const poll = new DataView(this.#writePoll.buffer);
    poll.setInt32(0, fd, true);
    poll.setInt16(4, POLLOUT, true);
    poll.setInt32(8, wake, true);
    poll.setInt16(12, POLLIN, true);
    this.#writePollPtr = pointer(this.#writePoll);
    const read = new DataView(this.#readPoll.buffer);
    read.setInt32(0, fd, true);
    read.setInt16(4, POLLIN, true);
    this.#readPollPtr = pointer(this.#readPoll);
  }

  /**
   * Reads the datagrams waiting (up to {@linkcode SLOTS}) without blocking and returns how many; 0 when none
   * is waiting (or the socket is closed).
   */
  receiveNow(): number {
    if (this.#closed || this.#receiving) return 0;
    this.#resetNames();
    const n = this.#c.recvmmsg(this.#fd, this.#hdrPtr, SLOTS, MSG_DONTWAIT, null);
    return n > 0 ? n : 0;
  }

  /**
   * Waits on this thread, at most `ms` milliseconds, for a datagram, then reads as {@linkcode receiveNow}
   * does; 0 when none came in time. The thread sleeps in the kernel meanwhile, and nothing else runs on it:
   * the event loop waits too.
   */
  receiveSoon(ms: number): number {
    if (this.#closed || this.#receiving) return 0;
    return this.#c.pollHere(this.#readPollPtr, 1n, ms) > 0 ? this.receiveNow() : 0;
  }

  /**
   * Waits for the next datagram and reads it and any others waiting (up to {@linkcode SLOTS}) into the
   * slots, as {@linkcode receiveNow} does; resolves to how many, or 0 once the socket is closed.
   */
  async receiveWait(): Promise<number> {
    if (this.#closed || this.#receiving) return 0;
    this.#receiving = true;
    try {
      while (!this.#closed) {
        this.#resetNames();
        const n = await this.#c.recvmmsgWait(this.#fd, this.#hdrPtr, SLOTS, MSG_WAITFORONE, null);
        if (this.#closed) break;
        if (n > 0) return n;
        // A signal on that thread (EINTR), or an error the kernel reports once: read again, after a pause of
        // 1 ms on that thread (a poll of no descriptors), so that an error that persisted could not keep it busy.
        if (n < 0) await this.#c.poll(null, 0n, 1);
      }
      return 0;
    } finally {
      this.#receiving = false;
      if (this.#closed) this.#c.close(this.#fd);
    }
  }

  #resetNames(): void {
    const v = this.#hdrView;
    for (let i = 0; i < SLOTS; i++) v.setUint32(i * MMSGHDR_BYTES + 8, NAME_BYTES, true);
  }

  /** Datagram `i` of the last {@linkcode receiveNow} (a view into its slot). */
  bytes(i: number): Uint8Array {
    const length = this.#hdrView.getUint32(i * MMSGHDR_BYTES + 56, true);
    return this.#slots.subarray(i * SLOT_BYTES, i * SLOT_BYTES + length);
  }

  /** Whether datagram `i` was longer than its slot (never for UDP over IPv4 or IPv6 without jumbograms). */
  truncated(i: number): boolean {
    return (this.#hdrView.getInt32(i * MMSGHDR_BYTES + 48, true) & MSG_TRUNC) !== 0;
  }

  /** Where datagram `i` came from, named as `Deno.DatagramConn.receive` names it. */
  from(i: number): SocketAddr {
    const names = this.#names;
    const at = i * NAME_BYTES;
    const port = (names[at + 2]! << 8) | names[at + 3]!;
    const family = names[at]! | (names[at + 1]! << 8);
    const raw = family === AF_INET6 ? names.subarray(at + 8, at + 24) : names.subarray(at + 4, at + 8);
    // The cache key: the address bytes as a short string (numbers, not text, so no encoding runs).
    let key = "";
    for (let k = 0; k < raw.length; k++) key += String.fromCharCode(raw[k]!);
    let hostname = this.#hosts.get(key);
    if (hostname === undefined) {
      if (this.#hosts.size >= CACHE_LIMIT) this.#hosts.clear();
      hostname = formatHost(raw);
      this.#hosts.set(key, hostname);
    }
    return { hostname, port };
  }

  /**
   * Hands one datagram to the kernel. Returns false when the send buffer is full (wait for
   * {@linkcode writable}, then send it again).
   *
   * @throws {Error} any other OS error (the network unreachable, a host name that is not an IP address of
   *   this socket's family), worded as Deno words it.
   */
  sendNow(bytes: Uint8Array, hostname: string, port: number): boolean {
    const c = this.#c;
    const ip = this.#destination(hostname);
    if (ip === null) {
      throw new Error(`Address family not supported by protocol (os error 97): ${hostname}`);
    }
    const length = writeSockaddr(this.#destView, ip, port, this.#v6);
    for (;;) {
      const sent = c.sendto(this.#fd, bytes, BigInt(bytes.length), MSG_DONTWAIT, this.#dest, length);
      if (sent >= 0) return true;
      const code = errno(c);
      if (code === EINTR) continue;
      if (code === EAGAIN || code === ENOBUFS) return false;
      throw osError(c, code);
    }
  }

  /**
   * Hands `datagrams[first]`, `datagrams[first + 1]`, ... to the kernel with one `sendmmsg` call: as many as
   * fit (at most {@linkcode SEND_SLOTS}, their bytes within the copy area; one larger than the area goes
   * alone, by {@linkcode sendNow}), stopping before the first whose `socket` differs from `socketIndex`.
   * Returns how many the kernel took, in order: 0 when the first could not be sent now (the send buffer
   * full: wait for {@linkcode writable}), or -1 when `datagrams[first]` does not belong to this socket.
   *
   * @throws {Error} any other OS error for `datagrams[first]` (the kernel reports an error of a later one on
   *   the call that starts with it), worded as Deno words it; the caller skips that datagram.
   */
  sendBatch(
    datagrams: readonly { to: SocketAddr; bytes: Uint8Array; socket?: number }[],
    first: number,
    socketIndex: number,
  ): number {
    const head = datagrams[first]!;
    if ((head.socket ?? 0) !== socketIndex) return -1;
    if (head.bytes.length > SEND_AREA_BYTES) {
      return this.sendNow(head.bytes, head.to.hostname, head.to.port) ? 1 : 0;
    }
    const area = this.#sendArea;
    const names = this.#sendNamesView;
    const hdr = this.#sendHdrView;
    const iov = this.#sendIovView;
    let used = 0;
    let n = 0;
    for (let k = first; k < datagrams.length && n < SEND_SLOTS; k++) {
      const t = datagrams[k]!;
      if ((t.socket ?? 0) !== socketIndex) break;
      const bytes = t.bytes;
      if (used + bytes.length > SEND_AREA_BYTES) break;
      const ip = this.#destination(t.to.hostname);
      if (ip === null) {
        if (n === 0) {
          throw new Error(`Address family not supported by protocol (os error 97): ${t.to.hostname}`);
        }
        break; // sent alone next, to fail alone
      }
      area.set(bytes, used);
      const at = this.#sendAreaAt + used;
      iov.setUint32(n * 16, at % 0x1_0000_0000, true);
      iov.setUint32(n * 16 + 4, Math.floor(at / 0x1_0000_0000), true);
      iov.setUint32(n * 16 + 8, bytes.length, true);
      hdr.setUint32(
        n * MMSGHDR_BYTES + 8,
        writeSockaddrAt(names, n * NAME_BYTES, ip, t.to.port, this.#v6),
        true,
      );
      used += bytes.length;
      n++;
    }
    const c = this.#c;
    for (;;) {
      const sent = c.sendmmsg(this.#fd, this.#sendHdrPtr, n, MSG_DONTWAIT);
      if (sent >= 0) return sent;
      const code = errno(c);
      if (code === EINTR) continue;
      if (code === EAGAIN || code === ENOBUFS) return 0;
      throw osError(c, code);
    }
  }

  #destination(hostname: string): Uint8Array | null {
    let ip = this.#dests.get(hostname);
    if (ip === undefined) {
      if (this.#dests.size >= CACHE_LIMIT) this.#dests.clear();
      ip = destinationBytes(hostname, this.#v6);
      this.#dests.set(hostname, ip);
    }
    return ip;
  }

  /** Waits until the kernel's send buffer has room; false once the socket is closed. */
  writable(): Promise<boolean> {
    return this.#wait(this.#writePollPtr);
  }

  async #wait(poll: Deno.PointerValue): Promise<boolean> {
    this.#waits++;
    try {
      while (!this.#closed) {
        const n = await this.#c.poll(poll, 2n, -1);
        if (this.#closed) break;
        if (n > 0) return true;
      }
      return false;
    } finally {
      if (--this.#waits === 0 && this.#closed) this.#c.close(this.#wake);
    }
  }

  /** Closes the socket; a pending {@linkcode receiveWait} resolves 0 and {@linkcode writable} false. */
  close(): void {
    if (this.#closed) throw new Deno.errors.BadResource("Bad resource ID");
    this.#closed = true;
    // A receive waiting in another thread is woken by the shutdown and closes the socket when it returns.
    if (this.#receiving) this.#c.shutdown(this.#fd, SHUT_RDWR);
    else this.#c.close(this.#fd);
    // Wakes any poll in progress (it watches the eventfd too); the last one to return closes the eventfd.
    if (this.#waits === 0) this.#c.close(this.#wake);
    else this.#c.write(this.#wake, new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]), 8n);
  }
}

/** Writes a sockaddr for `ip` (4 or 16 bytes; mapped into IPv6 on an IPv6 socket) and returns its length. */
function writeSockaddr(view: DataView, ip: Uint8Array, port: number, v6: boolean): number {
  const bytes = new Uint8Array(view.buffer);
  bytes.fill(0);
  view.setUint16(0, v6 ? AF_INET6 : AF_INET, true);
  view.setUint16(2, port, false);
  if (!v6) {
    bytes.set(ip, 4);
    return 16;
  }
  if (ip.length === 4) {
    bytes[18] = 0xff;
    bytes[19] = 0xff;
    bytes.set(ip, 20);
  } else {
    bytes.set(ip, 8);
  }
  return 28;
}

/** Writes a sockaddr for `ip` at `at` of `view` as {@linkcode writeSockaddr} does; returns its length. */
function writeSockaddrAt(view: DataView, at: number, ip: Uint8Array, port: number, v6: boolean): number {
  view.setUint16(at, v6 ? AF_INET6 : AF_INET, true);
  view.setUint16(at + 2, port, false);
  if (!v6) {
    for (let k = 0; k < 4; k++) view.setUint8(at + 4 + k, ip[k]!);
    view.setUint32(at + 8, 0);
    view.setUint32(at + 12, 0);
    return 16;
  }
  view.setUint32(at + 4, 0); // flow info
  if (ip.length === 4) {
    view.setUint32(at + 8, 0);
    view.setUint32(at + 12, 0);
    view.setUint32(at + 16, 0xffff, false);
    for (let k = 0; k < 4; k++) view.setUint8(at + 20 + k, ip[k]!);
  } else {
    for (let k = 0; k < 16; k++) view.setUint8(at + 8 + k, ip[k]!);
  }
  view.setUint32(at + 24, 0); // scope id
  return 28;
}

/** The address bytes to send to `hostname` from a socket of the given family, or null when it cannot. */
function destinationBytes(hostname: string, v6: boolean): Uint8Array | null {
  const ip = ipBytes(hostname);
  if (!ip) return null;
  if (ip.length === 16 && !v6) return null;
  return ip;
}

/** A source address as Deno names it: dotted quad, or IPv6 with an IPv4-mapped one as `::ffff:a.b.c.d`. */
function formatHost(raw: Uint8Array): string {
  if (
    raw.length === 16 && raw[10] === 0xff && raw[11] === 0xff && raw.subarray(0, 10).every((b) => b === 0)
  ) {
    return `::ffff:${raw.subarray(12).join(".")}`;
  }
  return formatIp(raw.slice());
}
