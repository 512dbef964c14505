#!/usr/bin/env bash
# Installs the programs the network lab runs (as root, on Debian/Ubuntu). Idempotent.
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v ping >/dev/null || need+=(iputils-ping)
command -v ethtool >/dev/null || need+=(ethtool)
command -v conntrack >/dev/null || need+=(conntrack)
command -v sysctl >/dev/null || need+=(procps)
if ((${#need[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "lab/setup.sh: the lab needs root; missing: ${need[*]}" >&2
        exit 0
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
