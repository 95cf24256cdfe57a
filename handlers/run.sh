#!/bin/bash
# The streamed chat function's entry point (infra/template.yaml: ChatStreamFunction, Handler run.sh).
# The Lambda Web Adapter's wrapper (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap) runs this instead of the
# Python runtime's client; the adapter then proxies each invocation to the server on AWS_LWA_PORT.
# The function's code, the dependencies layer and the runtime's own modules go on the path in the
# order the Python runtime's client puts them.
set -euo pipefail
cd "${LAMBDA_TASK_ROOT:-$(dirname "$0")}"
export PYTHONPATH="${LAMBDA_TASK_ROOT:-.}:/opt/python:/var/runtime${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m handlers.chat_stream_server \
  --port "${AWS_LWA_PORT:-8080}" \
  --timeout-seconds "${PAI_FUNCTION_TIMEOUT_SECONDS:-60}"
