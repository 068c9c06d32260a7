#!/bin/sh
# Build the dtma image from a binary built on this host (no Go image pulled).
# Usage: deploy/docker/build-prebuilt.sh [VERSION] [TAG]   (from the repository root)
set -eu
version=${1:-dev}
tag=${2:-dtma:$version}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$ctx/dtma" ./cmd/dtma
cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
mkdir "$ctx/data"
cp deploy/docker/Dockerfile.prebuilt "$ctx/Dockerfile"
docker build -t "$tag" "$ctx"
echo "built $tag"
