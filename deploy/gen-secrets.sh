#!/usr/bin/env bash
# Makes the secrets of deploy/docker-compose.yml, once (existing ones are kept):
#   deploy/secrets/hs256.secret            the gateways' HS256 token secret
#   deploy/secrets/nats-gateway.password   NATS user "gateway" (arq serve)
#   deploy/secrets/nats-brain.password     NATS user "brain" (arq brain)
#   deploy/.env                            the same NATS passwords, the system
#                                          account's and Grafana's admin password,
#                                          for the NATS and Grafana containers
# Nothing here is committed (.gitignore). The secrets directory is 0700; the
# files in it are 0644 so the image's non-root user (uid 65532) can read them
# through compose's bind mounts, while other users of this host cannot reach them.
set -euo pipefail
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
chmod 700 secrets
gen() { # file bytes
  if [ ! -s "secrets/$1" ]; then
    openssl rand -hex "$2" > "secrets/$1"
    echo "gen-secrets: wrote deploy/secrets/$1"
  fi
  chmod 644 "secrets/$1"
}
gen hs256.secret 32
gen nats-gateway.password 24
gen nats-brain.password 24
gen nats-system.password 24
gen nats-backend.password 24
gen grafana-admin.password 12
{
  echo "# written by deploy/gen-secrets.sh from deploy/secrets/"
  echo "ARQ_NATS_GATEWAY_PASSWORD=$(cat secrets/nats-gateway.password)"
  echo "ARQ_NATS_BRAIN_PASSWORD=$(cat secrets/nats-brain.password)"
  echo "ARQ_NATS_SYSTEM_PASSWORD=$(cat secrets/nats-system.password)"
  echo "ARQ_NATS_BACKEND_PASSWORD=$(cat secrets/nats-backend.password)"
  echo "GRAFANA_ADMIN_PASSWORD=$(cat secrets/grafana-admin.password)"
} > .env
chmod 600 .env
echo "gen-secrets: deploy/.env up to date (Grafana: admin / $(cat secrets/grafana-admin.password))"
