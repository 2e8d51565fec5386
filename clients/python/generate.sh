#!/usr/bin/env bash
# Generates the Python stubs of smista's public API from proto/ into ./gen (not committed: the
# proto is the contract, the stubs are derived).
set -euo pipefail
cd "$(dirname "$0")"
rm -rf gen && mkdir -p gen
python3 -m grpc_tools.protoc -I ../../proto --python_out=gen --grpc_python_out=gen ../../proto/smista/v1/*.proto
touch gen/smista/__init__.py gen/smista/v1/__init__.py
echo "stubs in $(pwd)/gen"
