# The agent as an image: a static dtma binary FROM scratch, meant to run as
# the dtma_manager container with the Docker socket and a data volume (see
# docs/OPERATIONS.md). Build: docker build -t dtma:VERSION --build-arg VERSION=VERSION .
#
# Where no Go image can be pulled (CI here), build the binary on the host and
# use deploy/docker/Dockerfile.prebuilt instead; both give the same image.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/dtma ./cmd/dtma \
 && mkdir -p /out/data

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/dtma /dtma
# The data dir belongs to the unprivileged user; a new named volume mounted
# here takes this owner (and mode 0700 once dtma has started).
COPY --from=build --chown=65532:65532 /out/data /var/lib/dtma
# Non-root: add the group that owns the Docker socket at run time
# (--group-add "$(stat -c %g /var/run/docker.sock)"); see docs/OPERATIONS.md.
USER 65532:65532
ENV DTMA_DATA_DIR=/var/lib/dtma DTMA_LISTEN=:30000
VOLUME /var/lib/dtma
EXPOSE 30000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["/dtma", "healthcheck"]
ENTRYPOINT ["/dtma"]
CMD ["serve"]
