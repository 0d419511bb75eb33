#!/usr/bin/env bash
# The built-in demo: learn on a throw-away lab, print the report, turn it
# into an enforcing nftables table inside the lab, show what passes and
# what is dropped, remove everything. It touches nothing of the host: two network namespaces joined
# by a veth pair (a "server" with dnsmasq and an HTTP server, a "client"),
# one child cgroup, and a temporary store. Run as root, after `make build`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-./bin}
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces and a cgroup)" >&2; exit 1; }

id=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
SRV=egdemo-srv-$id
CLI=egdemo-cli-$id
CG2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
[ -n "$CG2" ] || { echo "demo: no cgroup2 mount in /proc/mounts" >&2; exit 1; }
CG=$CG2/egress-demo-$id
WORK=$(mktemp -d /tmp/egress-demo.XXXXXX)
DB=$WORK/baseline.db
pids=()

cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	# The confirm guard that apply started leaves within its poll once the
	# generation is confirmed; wait for it (or stop it, when the demo failed
	# before the confirm), so it cannot re-create the store in $WORK after
	# the rm below, nor roll back a minute later in a namespace gone.
	for _ in $(seq 30); do pgrep -f -- "confirm-guard --db $DB" >/dev/null || break; sleep 0.1; done
	pkill -f -- "confirm-guard --db $DB" 2>/dev/null
	if [ -d "$CG" ]; then
		echo 1 > "$CG/cgroup.kill" 2>/dev/null
		for _ in $(seq 50); do rmdir "$CG" 2>/dev/null && break; sleep 0.1; done
	fi
	ip netns del "$SRV" 2>/dev/null
	ip netns del "$CLI" 2>/dev/null
	rm -rf "/etc/netns/$CLI" "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# await_ready WHAT PID LOG PATTERN: wait up to 60 s for PATTERN in LOG (a
# ready line); fail, with the log, when the process stops or time is up.
await_ready() {
	local what=$1 pid=$2 log=$3 pattern=$4
	for _ in $(seq 600); do
		grep -q -- "$pattern" "$log" && return 0
		kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "demo: the $what stopped" >&2; exit 1; }
		sleep 0.1
	done
	cat "$log" >&2
	echo "demo: the $what was not ready within 60 s" >&2
	exit 1
}

step "lab: namespaces $SRV (server) and $CLI (client), cgroup $CG"
ip netns add "$SRV"
ip netns add "$CLI"
ip -n "$SRV" link set lo up
ip -n "$CLI" link set lo up
ip -n "$SRV" link add veth0 type veth peer name veth1 netns "$CLI"
ip -n "$SRV" addr add 10.78.0.1/24 dev veth0   # DNS
ip -n "$SRV" addr add 10.78.0.10/24 dev veth0  # web.demo.lan
ip -n "$SRV" addr add 10.78.0.20/24 dev veth0  # api.demo.lan
ip -n "$SRV" addr add fd78::1/64 dev veth0 nodad
ip -n "$SRV" addr add fd78::10/64 dev veth0 nodad
ip -n "$CLI" addr add 10.78.0.2/24 dev veth1
ip -n "$CLI" addr add fd78::2/64 dev veth1 nodad
ip -n "$SRV" link set veth0 up
ip -n "$CLI" link set veth1 up
mkdir -p "/etc/netns/$CLI"
echo "nameserver 10.78.0.1" > "/etc/netns/$CLI/resolv.conf"
mkdir "$CG"

# Servers: dnsmasq answers for demo.lan only; socat serves HTTP on port 80
# (IPv4 and IPv6) and a second service on 8443.
ip netns exec "$SRV" dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
	--listen-address=10.78.0.1 --user=root --group=root --pid-file= --log-facility="$WORK/dnsmasq.log" \
	--host-record=web.demo.lan,10.78.0.10,fd78::10,300 \
	--cname=www.demo.lan,web.demo.lan,300 \
	--host-record=api.demo.lan,10.78.0.20,300 &
pids+=($!)
cat > "$WORK/http.sh" <<'HTTP'
#!/bin/sh
# Read the request up to its blank line first: a server that answers and
# exits before the request has arrived makes socat fail writing the request
# to it, and the client gets an empty reply.
cr=$(printf '\r')
while IFS= read -r line; do
	case "$line" in "" | "$cr") break ;; esac
done
printf 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from the demo server\r\n'
HTTP
chmod +x "$WORK/http.sh"
for spec in "TCP4-LISTEN:80,bind=10.78.0.10" "TCP6-LISTEN:80,bind=[fd78::10],ipv6only=1" "TCP4-LISTEN:8443,bind=10.78.0.20"; do
	ip netns exec "$SRV" socat "$spec,fork,reuseaddr" EXEC:"$WORK/http.sh" &
	pids+=($!)
done
for _ in $(seq 50); do
	ip netns exec "$CLI" dig +time=1 +tries=1 +short @10.78.0.1 web.demo.lan >/dev/null 2>&1 && break
	sleep 0.1
done

# client USER CMD...: run CMD as USER inside the cgroup and the client
# namespace. The shell joins the cgroup first: `ip netns exec` remounts /sys.
client() {
	local user=$1; shift
	printf '$ (uid %s) %s\n' "$user" "$*"
	sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CG" \
		ip netns exec "$CLI" setpriv --reuid="$user" --regid="$user" --clear-groups -- "$@"
}

step "learn: $BIN/egress-learn run --cgroup $CG --db $DB"
"$BIN/egress-learn" run --cgroup "$CG" --db "$DB" --flush-interval 1s 2>"$WORK/learn.log" &
learner=$!
pids+=($learner)
# The learner logs its ready line (msg=learning) once its programs are
# attached: traffic before that would not be learned.
await_ready learner "$learner" "$WORK/learn.log" 'msg=learning'

step "clients: root and nobody reach the demo servers with curl and dig"
client 0 curl -sS -4 http://www.demo.lan/
client 0 curl -sS -6 http://www.demo.lan/
client 65534 dig +short www.demo.lan
client 65534 curl -sS http://api.demo.lan:8443/
client 65534 curl -sS http://10.78.0.10/
kill -INT "$learner"
wait "$learner"
grep -E 'level=(WARN|ERROR)' "$WORK/learn.log" || true

step "report: $BIN/egress-learn report --db $DB"
"$BIN/egress-learn" report --db "$DB"

step "report --json --user nobody (for scripts; first flow)"
"$BIN/egress-learn" report --db "$DB" --json --user nobody | sed -n '1,/^  },/p'

# The enforcer works in the client namespace and takes its DNS servers
# from that namespace's resolv.conf.
export EGRESS_DB=$DB EGRESS_NETNS=$CLI EGRESS_RESOLV_CONF=/etc/netns/$CLI/resolv.conf

step "generate: the table to review ($BIN/egress-enforce generate --mode enforce)"
"$BIN/egress-enforce" generate --mode enforce

step "watch: the monitor of denied packets runs beside the table"
"$BIN/egress-enforce" watch --flush-interval 1s > "$WORK/watch.log" 2>&1 &
watcher=$!
pids+=($watcher)
# "watching" is its ready line: the NFLOG group is bound.
await_ready monitor "$watcher" "$WORK/watch.log" 'msg=watching'

step "apply: audit first (logs, blocks nothing), then enforce with a confirm window, in namespace $CLI"
"$BIN/egress-enforce" apply --mode audit --reason "soak in audit"
"$BIN/egress-enforce" diff --mode enforce
"$BIN/egress-enforce" apply --mode enforce --confirm-within 1m --reason "go live"

step "allowed: what each user did while learning"
client 0 curl -sS --max-time 3 -4 http://www.demo.lan/
client 65534 curl -sS --max-time 3 http://api.demo.lan:8443/
client 65534 dig +short www.demo.lan

step "denied: what a user never did (each fails after 2 s)"
client 65534 curl -sS --max-time 2 -6 http://www.demo.lan/ || echo "-> blocked: nobody never used web.demo.lan over IPv6"
client 0 curl -sS --max-time 2 http://api.demo.lan:8443/ || echo "-> blocked: root never used api.demo.lan"

step "confirm: keep the enforcing table (without it, it would be rolled back after a minute)"
"$BIN/egress-enforce" confirm
"$BIN/egress-enforce" history

step "status: the default rule counted the dropped packets"
"$BIN/egress-enforce" status

step "the monitor saw each dropped packet; denied summarizes them"
kill -TERM "$watcher"
wait "$watcher" || true
grep -v 'level=INFO msg=watching$\|level=INFO msg=watching ' "$WORK/watch.log" || true
"$BIN/egress-enforce" denied

step "done: the lab is removed on exit"
