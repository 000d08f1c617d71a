#!/bin/sh
# Container entrypoint.
#   serve [args]    start the HTTP service (python -m app); the default command
#   mbridge [args]  run the command-line tool (embed, train, evaluate, ...)
#   anything else   run it as given (e.g. `sh` for a shell)
set -eu

data_dir="${BRIDGE_DATA_DIR:-/data}"
if [ "${1:-serve}" = "serve" ] || [ "${1:-}" = "mbridge" ]; then
    mkdir -p "$data_dir" 2>/dev/null || true
    if [ ! -w "$data_dir" ]; then
        echo "entrypoint: data directory $data_dir is not writable by uid $(id -u);" \
             "chown the volume to uid 10001 or set BRIDGE_DATA_DIR" >&2
        exit 1
    fi
fi

if [ "$#" -eq 0 ]; then
    set -- serve
fi

case "$1" in
    serve)
        shift
        exec python -m app "$@"
        ;;
    mbridge)
        shift
        exec mbridge "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
