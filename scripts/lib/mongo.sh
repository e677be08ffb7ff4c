# Sourced by scripts/test and scripts/stress: start the pinned MongoDB-wire
# test server (SecantusDB, installed into $VENV on first use), bound to
# 127.0.0.1, stopped on exit; exports MONGO_URI and WXKF_SECANTUS_BIN.
SECANTUS_VERSION="0.7.0b3"
VENV="${WXKF_TEST_VENV:-$PWD/.venv}"
MONGO_PID=""
MONGO_DIR=""

stop_test_mongo() {
  if [[ -n "$MONGO_PID" ]]; then
    kill "$MONGO_PID" 2>/dev/null || true
    wait "$MONGO_PID" 2>/dev/null || true
  fi
  [[ -n "$MONGO_DIR" ]] && rm -rf "$MONGO_DIR"
  MONGO_PID=""
  MONGO_DIR=""
}

start_test_mongo() {
  if ! "$VENV/bin/python" -c "import secantusdb" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "SecantusDB==$SECANTUS_VERSION"
  fi
  MONGO_DIR="$(mktemp -d)"
  MONGO_PORT="$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  "$VENV/bin/secantusd-py" --host 127.0.0.1 --port "$MONGO_PORT" --storage-path "$MONGO_DIR" \
    --sync-on-commit --log-level WARNING &
  MONGO_PID=$!
  trap stop_test_mongo EXIT
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$MONGO_PORT") 2>/dev/null && break
    sleep 0.1
  done
  export MONGO_URI="mongodb://127.0.0.1:$MONGO_PORT/wxkf-test"
  # Tests that restart the server themselves start their own from this venv.
  export WXKF_SECANTUS_BIN="$VENV/bin/secantusd-py"
}
