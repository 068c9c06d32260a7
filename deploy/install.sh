#!/bin/sh
# Install dtma as a systemd service: the binary, the unit and an env file.
#
#   sudo deploy/install.sh ./dtma            # a binary you built or downloaded
#   sudo DTMA_BEARER_TOKEN=... deploy/install.sh ./dtma
#
# Idempotent: an existing /etc/dtma/dtma.env is kept (a token in it is never
# replaced). Upgrading: run it again with the new binary; the service is
# restarted, which restarts no tool container (see docs/OPERATIONS.md).
set -eu

bin=${1:?usage: install.sh PATH_TO_DTMA_BINARY}
here=$(cd "$(dirname "$0")" && pwd)
prefix=${PREFIX:-/usr/local}

[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
command -v systemctl >/dev/null || { echo "install.sh: systemd is required" >&2; exit 1; }
getent group docker >/dev/null || { echo "install.sh: no docker group: install Docker first" >&2; exit 1; }
"$bin" version --client >/dev/null || { echo "install.sh: $bin does not run" >&2; exit 1; }

# The service user: no login, no home, in the docker group (the socket).
if ! id dtma >/dev/null 2>&1; then
	useradd --system --no-create-home --home-dir /var/lib/dtma --shell /usr/sbin/nologin dtma
fi
usermod -aG docker dtma

# Back up the registry before replacing a running version (rollback: docs/OPERATIONS.md).
if [ -x "$prefix/bin/dtma" ] && [ -f /var/lib/dtma/dtma.db ]; then
	backup=/var/lib/dtma/dtma.db.before-$(date -u +%Y%m%dT%H%M%SZ)
	( set -a; . /etc/dtma/dtma.env; set +a; DTMA_DATA_DIR=/var/lib/dtma "$prefix/bin/dtma" backup "$backup" ) &&
		chown dtma:dtma "$backup" && echo "registry backed up to $backup"
fi

install -m 0755 "$bin" "$prefix/bin/dtma.new"
mv -f "$prefix/bin/dtma.new" "$prefix/bin/dtma"
install -m 0644 "$here/systemd/dtma.service" /etc/systemd/system/dtma.service
if [ "$prefix" != /usr/local ]; then
	sed -i "s#/usr/local/bin/dtma#$prefix/bin/dtma#" /etc/systemd/system/dtma.service
fi

install -d -m 0750 -o root -g dtma /etc/dtma
if [ ! -f /etc/dtma/dtma.env ]; then
	token=${DTMA_BEARER_TOKEN:-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')}
	umask 077
	cat >/etc/dtma/dtma.env <<ENV
# dtma settings (README.md, Configuration). Mode 0640 root:dtma.
DTMA_BEARER_TOKEN=$token
DTMA_LISTEN=:30000
# DTMA_REGISTRY_URL=postgres://dtma@db.internal/platform
# AGENTOPIA_API_BASE_URL=https://api.example.com
# DTMA_DEFAULT_HOST_IP=127.0.0.1
ENV
	echo "wrote /etc/dtma/dtma.env with a new bearer token"
fi
chown root:dtma /etc/dtma/dtma.env
chmod 0640 /etc/dtma/dtma.env

systemctl daemon-reload
systemctl enable dtma.service >/dev/null
systemctl restart dtma.service
echo "dtma installed: systemctl status dtma; check the host with: sudo -u dtma sh -c 'set -a; . /etc/dtma/dtma.env; dtma doctor'"
