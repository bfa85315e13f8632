#!/usr/bin/env bash
# Makes an API key: prints a new random secret once (give it to the client; it is stored
# nowhere) and appends its line, `<key-id> <scopes> <sha256-hex-of-the-secret>`, to the keys
# file (API_KEYS_FILE's format; docs/security.md). The running stack picks the file up within
# seconds, or at once with `npm run reload`.
#
#   npm run api-key -- <key-id> <read|write|read,write> [file]   (file: $API_KEYS_FILE, else .stack/api-keys)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
id="${1:-}" scopes="${2:-}" file="${3:-${API_KEYS_FILE:-$ROOT/.stack/api-keys}}"
usage() { echo "usage: npm run api-key -- <key-id> <read|write|read,write> [file]" >&2; exit 2; }
[[ "$id" =~ ^[A-Za-z0-9._-]{1,64}$ ]] || usage
case "$scopes" in read | write | read,write | write,read) ;; *) usage ;; esac
if [ -f "$file" ] && awk -v id="$id" '$1 == id { found = 1 } END { exit !found }' "$file"; then
  echo "the key id $id is already in $file" >&2
  exit 1
fi
secret="$(head -c 32 /dev/urandom | base64 | tr -d '=+/\n' | head -c 43)"
digest="$(printf '%s' "$secret" | sha256sum | cut -d' ' -f1)"
mkdir -p "$(dirname "$file")"
# Digests only: the file may be readable by the services' user (nobody, natively).
printf '%s %s %s\n' "$id" "$scopes" "$digest" >>"$file"
chmod 0644 "$file"
echo "key $id ($scopes) added to $file" >&2
echo "secret (shown once; send it as Authorization: Bearer <secret>):" >&2
echo "$secret"
