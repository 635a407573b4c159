# p2p_server container image (see docs/operations.md, "Container"). Build and run:
#   docker build -t p2p_server .
#   docker run --rm -p 8080:8080/udp -p 127.0.0.1:9100:9100 -v p2p_state:/var/lib/p2p_server p2p_server
# Build stage: the same single-file binary as `deno task compile` (permissions, --unstable-net and the V8 flags
# of tools/compile.ts baked in).
FROM denoland/deno:2.9.6 AS build
WORKDIR /src
COPY deno.json deno.lock main.ts mod.ts ./
COPY src/ src/
RUN deno compile --frozen --unstable-net --allow-net --allow-read --allow-write --allow-env --allow-ffi \
      --v8-flags=--max-semi-space-size=4 --output /out/p2p_server main.ts && \
    mkdir -p /out/state

# A static busybox, only for the HEALTHCHECK's HTTP GET (the runtime image has no shell and no curl).
FROM busybox:1.37-musl AS busybox

# Runtime: glibc and libgcc, nothing else; user nonroot (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/p2p_server /usr/local/bin/p2p_server
COPY --from=busybox /bin/busybox /usr/local/bin/busybox
COPY deploy/container.json /etc/p2p_server/config.json
# The identity key (state) lives here; mount a volume to keep the node id across containers.
COPY --from=build --chown=65532:65532 /out/state /var/lib/p2p_server
VOLUME /var/lib/p2p_server
WORKDIR /var/lib/p2p_server
USER 65532:65532
# UDP: the protocol. TCP: the operations HTTP server (/health, /metrics, /peers, status page).
EXPOSE 8080/udp 9100/tcp
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9100/health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/p2p_server"]
CMD ["--config", "/etc/p2p_server/config.json"]
