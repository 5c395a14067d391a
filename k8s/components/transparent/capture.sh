#!/bin/sh
# Transparent capture (docs/transparent.md): the pod's outbound TCP 443 goes to Envoy's
# transparent listener on port 15443, except the sidecars' own connections: Envoy (UID 101)
# reaching the providers and relaying other traffic, cascade-extproc (UID 10001) making its
# draft and verify calls. Without those exclusions their connections would loop back to Envoy.
#
# Run once per pod start by the `cascade-capture` init container (root, NET_ADMIN + NET_RAW only);
# idempotent. tests/e2e/test_transparent.py runs this very file in a network namespace.
#
# CAPTURE_IPV6=true: capture IPv6 too (Envoy must then also listen on [::1]:15443: its bootstrap
# generated with --transparent '[::1]:15443' as well, see kustomization.yaml).
# BLOCK_QUIC=true: reject UDP 443 (HTTP/3), so clients fall back to TCP, which is captured.
set -eu

# The nf_tables backend (every current kernel); the legacy one where only that works.
if iptables-nft -t nat -S OUTPUT >/dev/null 2>&1; then mode=nft; else mode=legacy; fi

capture="-p tcp --dport 443 -m owner ! --uid-owner 101 -m owner ! --uid-owner 10001 -j REDIRECT --to-ports 15443"
quic="-p udp --dport 443 -m owner ! --uid-owner 101 -m owner ! --uid-owner 10001 -j REJECT"

add() {  # add TOOL TABLE RULE...: append the rule to OUTPUT unless it is there already
    tool=$1 table=$2
    shift 2
    "$tool-$mode" -t "$table" -C OUTPUT "$@" 2>/dev/null || "$tool-$mode" -t "$table" -A OUTPUT "$@"
}

# shellcheck disable=SC2086  # the rules are split into words on purpose
add iptables nat $capture
if [ "${BLOCK_QUIC:-false}" = true ]; then
    # shellcheck disable=SC2086
    add iptables filter $quic
fi
if [ "${CAPTURE_IPV6:-false}" = true ]; then
    # shellcheck disable=SC2086
    add ip6tables nat $capture
    if [ "${BLOCK_QUIC:-false}" = true ]; then
        # shellcheck disable=SC2086
        add ip6tables filter $quic
    fi
fi
echo "cascade-capture: iptables-$mode rules installed:"
"iptables-$mode" -t nat -S OUTPUT
