#!/usr/bin/env bash
# deploy/compose.yaml without containers: NATS with JetStream, two hubs serving it together,
# and the example agents listing both hubs. Ctrl-C stops everything.
#
#   deploy/local.sh [MESH_HOME]          (default ./mesh; made, with the example's agents,
#                                         when it does not exist)
set -euo pipefail
home=${1:-./mesh}
nats_port=${NATS_PORT:-4322}
hub_a=${HUB_A_PORT:-7760}
hub_b=${HUB_B_PORT:-7761}
command -v nats-server >/dev/null || PATH=$PATH:/usr/sbin
if [ ! -f "$home/mesh.yaml" ]; then
  interlink init --home "$home" --tls
  interlink agent add --home "$home" ideator --call drafter.draft
  interlink agent add --home "$home" drafter --call editor.review
  interlink agent add --home "$home" editor
fi
trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT INT TERM
nats-server -js -sd "$home/nats" -a 127.0.0.1 -p "$nats_port" &
store="nats://127.0.0.1:$nats_port"
interlink serve --home "$home" --port "$hub_a" --store "$store" &
sleep 2
interlink serve --home "$home" --port "$hub_b" --store "$store" &
export INTERLINK_HOME=$home INTERLINK_HUB="wss://127.0.0.1:$hub_a/ws,wss://127.0.0.1:$hub_b/ws"
interlink example blog-team &
echo "NATS on $store; hubs A on :$hub_a and B on :$hub_b, serving one mesh; agents list both."
echo "Try: INTERLINK_HUB=wss://127.0.0.1:$hub_b/ws interlink call --home $home ideator drafter draft '{\"topic\": \"x\"}'"
echo "     (through hub B, to the drafter on hub A); then kill hub A and call again."
wait
