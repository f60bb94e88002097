"""Benchmarks: load generator and scenarios."""

import os

# The servers benchmarks start serve HTTP/REST on a free port rather than all
# contending for Triton's 8000.
os.environ.setdefault("INFERD_HTTP_PORT", "0")
