# The arq image: one static binary on distroless, run as a non-root user.
#   docker build -t arqonbus/arq:dev .
#   docker run --rm arqonbus/arq:dev version
# deploy/docker-compose.yml builds it and runs "arq serve" and "arq brain".
# Checked in make test (cmd/arq/deploy_test.go: stages, static build, user).

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Modules first, so a source change does not download them again
# (third_party/netpoll is a replace target in go.mod).
COPY go.mod go.sum ./
COPY third_party/ third_party/
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/arq ./cmd/arq

# distroless static: CA certificates, /etc/passwd with "nonroot" (65532),
# no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/arq /usr/local/bin/arq
COPY --from=build /src/policies/*.wasm /etc/arq/policies/
USER 65532:65532
WORKDIR /home/nonroot
EXPOSE 8080 9090 9091
ENTRYPOINT ["/usr/local/bin/arq"]
CMD ["version"]
