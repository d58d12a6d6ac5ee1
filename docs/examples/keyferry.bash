# keyferry agent over one persistent connection: bash + socat + coproc.
# Source it, then:
#   kf_open && kf_call '{"op":"get","name":"claude"}' && jq -r .result.token <<<"$KF_REPLY"
# kf_call leaves the reply in $KF_REPLY: bash does not give a coprocess's descriptors to
# subshells, so kf_call must not run in a pipeline or $(...).
# Needs bash >= 4, socat, jq, GNU stat (Linux). See docs/protocol.md.

: "${KF_SOCK:=${KEYFERRY_SOCK:-${XDG_RUNTIME_DIR:+$XDG_RUNTIME_DIR/keyferry/agent.sock}}}"
: "${KF_SOCK:=/tmp/keyferry-$(id -u)/agent.sock}"
KF_ID=0

# The socket's directory must be ours and 0700 and the socket ours: then only our uid (or
# root) can be serving it. socat cannot ask SO_PEERCRED; this is the shell's equivalent.
kf_check_sock() {
    local dir; dir=$(dirname -- "$KF_SOCK")
    [[ -S $KF_SOCK && ! -L $dir && -d $dir ]] || { echo "kf: no agent socket at $KF_SOCK" >&2; return 5; }
    local me; me=$(id -u)
    if [[ $(stat -c '%u %a' -- "$dir") != "$me 700" || $(stat -c %u -- "$KF_SOCK") != "$me" ]]; then
        echo "kf: $KF_SOCK is not private to uid $me; refusing" >&2; return 6
    fi
}

# Opens the connection and does the handshake.
kf_open() {
    kf_close
    kf_check_sock || return
    coproc KF { exec socat - "UNIX-CONNECT:$KF_SOCK" 2>/dev/null; }
    kf_call '{"op":"hello","version":1,"client":"keyferry.bash"}' >/dev/null
}

# kf_call JSON: sends one request (an "id" is added); its reply line goes to $KF_REPLY.
# Returns 1 when the reply has "ok":false. Event lines (after watch) are skipped.
kf_call() {
    KF_REPLY=
    [[ -n ${KF_PID:-} ]] || { echo "kf: not connected: kf_open (again; the agent closes a connection idle for idle_timeout_secs)" >&2; return 5; }
    local req=$1 line id
    id=$((++KF_ID))
    req=$(jq -c --argjson id "$id" '. + {id: $id}' <<<"$req") || return 2
    printf '%s\n' "$req" >&"${KF[1]}"
    while IFS= read -r -t "${KF_TIMEOUT:-120}" line <&"${KF[0]}"; do
        case $line in '{"event":'*) continue ;; esac
        # Replies without an id (idle_timeout, bad_request, ...) answer this request too.
        if jq -e --argjson id "$id" '(.id // $id) == $id' <<<"$line" >/dev/null; then
            KF_REPLY=$line
            jq -e .ok <<<"$line" >/dev/null
            return
        fi
    done
    echo "kf: no reply within ${KF_TIMEOUT:-120} s, or the agent closed the connection" >&2
    return 5
}

kf_close() {
    [[ -n ${KF_PID:-} ]] || return 0
    local pid=$KF_PID
    eval "exec ${KF[1]}>&-"  # EOF: the agent answers what it has, then closes
    wait "$pid" 2>/dev/null
}
