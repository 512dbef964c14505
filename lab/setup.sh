#!/usr/bin/env bash
# Installs the programs the network lab runs (as root, on Debian/Ubuntu). Idempotent.
# Besides the lab's own tools, the real programs that cli/tests/real_programs.rs runs
# over msocket: OpenSSH (server and client), nginx, curl and iperf3. Installing them must
# not leave daemons running: a policy-rc.d forbids starting services for the duration of
# the install (and the services are disabled afterwards, should a system manager exist).
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v ping >/dev/null || need+=(iputils-ping)
command -v ethtool >/dev/null || need+=(ethtool)
command -v conntrack >/dev/null || need+=(conntrack)
command -v sysctl >/dev/null || need+=(procps)
# Real programs for cli/tests/real_programs.rs (sshd and nginx live in /usr/sbin).
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx-light)
command -v curl >/dev/null || need+=(curl)
command -v iperf3 >/dev/null || need+=(iperf3)
if ((${#need[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "lab/setup.sh: the lab needs root; missing: ${need[*]}" >&2
        exit 0
    fi
    # No service may start during the install (sshd, nginx, iperf3's daemon): Debian's
    # invoke-rc.d asks /usr/sbin/policy-rc.d, and 101 means "not allowed". Ours is removed
    # afterwards; an existing one (a container's) is left alone.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    # iperf3 asks whether to start its daemon; the answer is no.
    echo 'iperf3 iperf3/start_daemon boolean false' | debconf-set-selections 2>/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        for unit in ssh nginx iperf3; do
            systemctl disable --now "$unit" >/dev/null 2>&1 || true
        done
    fi
fi
