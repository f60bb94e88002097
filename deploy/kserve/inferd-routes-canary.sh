#!/bin/sh
# The same canary with inferd's own routes: both versions live in ONE model
# repository (digits_mlp/1 and digits_mlp/2) served by one Deployment
# (deploy/k8s), and the servers split the traffic per request. Guardrails roll
# the challenger back by themselves. The route is written to the shared state
# file (routes.json on the ReadWriteMany volume), so every replica follows it
# within a second; any replica may take the call.
#
#   kubectl -n inferd port-forward deploy/inferd 8001:8001 &
#   sh deploy/kserve/inferd-routes-canary.sh 127.0.0.1:8001
#
# With the GitOps overlay (deploy/k8s/overlays/gitops-routes) the state is
# read-only: edit its routes.json instead (it holds this same route).
set -eu
URL=${1:-127.0.0.1:8001}
MODEL=${MODEL:-digits_mlp}

# Version 2 must be staged before it may take traffic (it loads and warms up
# on every replica).
inferd models stage "$MODEL" 2 staging --url "$URL" --reason "canary of v2"
# 10% of requests to version 2; roll back by itself if over 60 s (once 50
# requests are in) its errors pass 2% or its p99 passes 50 ms.
inferd models route "$MODEL" --url "$URL" --challenger 2 --mode canary --weight 0.1 \
  --window 60 --min-requests 50 --max-error-ratio 0.02 --max-p99-ms 50 \
  --reason "canary of v2"
inferd models route "$MODEL" --url "$URL"      # per-variant traffic, errors, p50/p99

# Later: promote (v2 becomes champion; v1 stays loaded as the rollback target)
#   inferd models promote "$MODEL" --url "$URL"
# or roll back by hand:
#   inferd models rollback "$MODEL" --url "$URL"
