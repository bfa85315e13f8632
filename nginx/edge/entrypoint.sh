#!/bin/sh
# /docker-entrypoint.d/40-ledger-edge.sh of the nginx container (compose and Kubernetes mount it
# there; the image's entrypoint runs it before nginx starts): writes /etc/nginx/edge/, which
# nginx.conf includes, from the container's environment, by the generator the native launcher
# runs too (mounted beside this file at /etc/nginx/ledger-edge/).
#
# compose always names the certificate files (TLS_CERT=/etc/nginx/tls/cert.pem) and mounts an
# empty file there (nginx/edge/no-tls.pem) when the host's TLS_CERT is unset: an empty
# certificate file means no HTTPS.
set -eu
if [ -n "${TLS_CERT:-}" ] && [ ! -s "$TLS_CERT" ]; then
  unset TLS_CERT TLS_KEY
fi
EDGE_TLS_LISTEN=8443 exec sh "${EDGE_GENERATOR:-/etc/nginx/ledger-edge/generate.sh}" "${EDGE_DIR:-/etc/nginx/edge}"
