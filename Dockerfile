# syntax=docker/dockerfile:1
#
# probed container image: a static binary on Alpine (for the healthcheck's
# wget), running as a non-root user with CAP_NET_RAW as its only privilege.
#
#   docker build --build-arg VERSION=$(git describe --always) -t probed .
#   docker run -d --name probed \
#     --cap-drop ALL --cap-add NET_RAW \
#     -e PROBED_SITE=us-east \
#     -v /etc/probed/mesh.yaml:/etc/probed/mesh.yaml:ro \
#     -p 9447:9447 probed
#
# NET_RAW lets the agent open raw ICMP sockets (TOS, interface binding,
# traceroute). Without it the agent falls back to unprivileged ICMP
# datagram sockets (Docker allows them via net.ipv4.ping_group_range).
# Use --network host when probes must leave from the host's own addresses
# and the STAMP reflector must be reachable on the agent address.

# Keep equal to the go directive of go.mod (deploy/binary_test.go checks it).
ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# deploy/dockerfile_test.go runs this exact line and checks the result is a
# static binary that runs; keep it on one line.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/probed ./cmd/probed

FROM alpine:3.22
# The file capability is what lets the non-root user use the NET_RAW that
# `docker run --cap-add NET_RAW` puts in the bounding set. It is set in this
# stage because COPY --from does not reliably carry extended attributes.
RUN apk add --no-cache libcap-setcap \
 && addgroup -S -g 10001 probed \
 && adduser -S -D -H -u 10001 -G probed -s /sbin/nologin probed \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/probed
COPY --from=build /out/probed /usr/bin/probed
RUN setcap cap_net_raw,cap_net_bind_service+ep /usr/bin/probed && apk del --no-cache libcap-setcap
COPY configs/example-mesh.yaml /etc/probed/mesh.yaml
USER 10001:10001
# The event journal (--storage.path); mount a volume here to keep it when
# the container is replaced.
VOLUME /var/lib/probed
EXPOSE 9447
# Plain HTTP on the default port; with --web.config.file (TLS) or another
# --web.listen-address, override the healthcheck at `docker run`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD wget -q -O /dev/null http://127.0.0.1:9447/-/healthy || exit 1
ENTRYPOINT ["/usr/bin/probed"]
CMD ["--config.file=/etc/probed/mesh.yaml", "--storage.path=/var/lib/probed"]
