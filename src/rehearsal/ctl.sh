#!/bin/sh
# bin/ctl: control script of one node of a distls rehearsal cluster.
#
# It stands in for MongooseIM's mongooseimctl + bin/mongooseim + nodetool:
# like them, EVERY VM it starts (the server and the short-lived control VMs)
# reads etc/vm.dist.args, so whether it talks plain TCP or TLS always follows
# what that file says right now, not what the running node uses.
# The node name and the cookie come from etc/vm.args, found the way
# MongooseIM's scripts find them: lines starting with -sname/-name and -setcookie.
#
# Commands (exit codes as in MongooseIM where it has an equivalent):
#   start   ping first: "Node is already running!" (1) if it answers; otherwise
#           launch the server detached and exit 0 (readiness is checked by others).
#   stop    rpc init:stop, then wait (60 s) for the pid in var/pid to exit.
#           Test knobs: var/stop-hangs makes stop hang without stopping the node;
#           var/ignore-sigterm (read at boot) makes the VM ignore SIGTERM.
#           "Node N not responding to pings." (1) when the node cannot be reached.
#   ping    "pong" (0) or "Node N not responding to pings." (1)
#   status  "distribution protocol: inet_tcp|inet_tls" (0), or
#           "Failed RPC connection to the node N: nodedown" (3)
#   peers   one "<peer> <tcp|tls>" line per normal peer in state up (0), or 3
#   links   the status line followed by the peers lines (one control VM for both)
#   otp     the OTP release the node runs, e.g. "27" (0), or 3
#   started "started" (0) iff var/status says started AND the node answers a
#           ping; otherwise a one-line reason (1). Like `mongooseimctl started`
#           but without its wait: callers poll it (a plan's commands.ready).
#   mnesia-init NODE...
#           (run on one node's ctl, with every node of the cluster listed, all
#           running, meshed, and booted with var/mnesia): create a disc schema
#           on all of them, start Mnesia, create the disc_copies table
#           `rehearsal` on every node with one row per node. Prints "ok" (0).
#   mnesia-keys
#           the keys of table `rehearsal`, read on the node, one per line (0),
#           or the reason it cannot be read (1; 3 when the node is down)
#
# Boot-time switches of the server VM (files looked at when it boots):
#   var/ignore-sigterm  the VM ignores SIGTERM (test knob).
#   var/sample-links    a sampler appends a line to var/links.log every 200 ms:
#                       "<os:system_time(millisecond)> <os pid> <peers>" (the
#                       pid tells a restart from a short pause), peers being
#                       "peer:tcp|tls" for every normal peer in state up from
#                       net_kernel:nodes_info(), comma-separated, or "-" for
#                       none. Sampling ends when the VM (or net_kernel) does.
#   var/mnesia/         (a directory) Mnesia keeps its files there. Once it
#                       holds a schema (var/mnesia/schema.DAT, see mnesia-init),
#                       every boot starts Mnesia and waits, without limit, for
#                       all its tables to load before var/status says started;
#                       until then it says starting (as MongooseIM does).
#
# ERL_EPMD_PORT must point at the cluster's epmd; no VM started here starts epmd.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd -P) || exit 2
cd "$ROOT" || exit 2
ETC="$ROOT/etc"
VAR="$ROOT/var"
LOG="$ROOT/log"

NAME_ARG=$(grep -E '^-s?name' "$ETC/vm.args" | head -n 1)
NAME_TYPE=$(echo "$NAME_ARG" | awk '{print $1}')
NAME=$(echo "$NAME_ARG" | awk '{print $2}')
COOKIE=$(grep -E '^-setcookie' "$ETC/vm.args" | head -n 1 | awk '{print $2}')
if [ -z "$NAME" ] || [ -z "$COOKIE" ]; then
    echo "ctl: no -sname/-name or -setcookie line in $ETC/vm.args" >&2
    exit 2
fi
case "$NAME" in
    *@*) CTL_NAME="${NAME%%@*}_maint_$$@${NAME#*@}" ;;
    *) CTL_NAME="${NAME}_maint_$$" ;;
esac

# Erlang code of the control VM. Plain arguments: NODE COMMAND.
# Every remote call is bounded; a watchdog halts the VM whatever happens.
CTL_ERL='
Watchdog = fun() -> receive after 30000 -> io:format(standard_error, "ctl: control VM timed out~n", []), erlang:halt(4) end end,
spawn(Watchdog),
[NodeS, Cmd | Args] = init:get_plain_arguments(),
Node = list_to_atom(NodeS),
T = 15000,
NotResponding = fun() -> io:format("Node ~s not responding to pings.~n", [NodeS]) end,
RpcFailed = fun(R) -> io:format("Failed RPC connection to the node ~s: ~p~n", [NodeS, R]) end,
Proto = fun() ->
    case rpc:call(Node, init, get_argument, [proto_dist], T) of
        {ok, [[P | _] | _]} -> {ok, P};
        error -> {ok, "inet_tcp"};
        {badrpc, R} -> {badrpc, R}
    end
end,
Peers = fun() ->
    case rpc:call(Node, net_kernel, nodes_info, [], T) of
        {ok, Infos} ->
            {ok, [{N, element(4, proplists:get_value(address, I))}
                  || {N, I} <- Infos,
                     proplists:get_value(state, I) =:= up,
                     proplists:get_value(type, I) =:= normal]};
        {badrpc, R} -> {badrpc, R}
    end
end,
PrintPeers = fun(L) -> [io:format("~s ~s~n", [N, P]) || {N, P} <- lists:sort(L)] end,
Code = case Cmd of
    "ping" ->
        case net_adm:ping(Node) of
            pong -> io:format("pong~n"), 0;
            pang -> NotResponding(), 1
        end;
    "stop" ->
        case net_adm:ping(Node) of
            pang -> NotResponding(), 1;
            pong ->
                case rpc:call(Node, init, stop, [], T) of
                    ok -> 0;
                    {badrpc, R} -> RpcFailed(R), 1
                end
        end;
    "status" ->
        case Proto() of
            {ok, P} -> io:format("distribution protocol: ~s~n", [P]), 0;
            {badrpc, R} -> RpcFailed(R), 3
        end;
    "otp" ->
        case rpc:call(Node, erlang, system_info, [otp_release], T) of
            {badrpc, R} -> RpcFailed(R), 3;
            Release -> io:format("~s~n", [Release]), 0
        end;
    "peers" ->
        case Peers() of
            {ok, L} -> PrintPeers(L), 0;
            {badrpc, R} -> RpcFailed(R), 3
        end;
    "links" ->
        case {Proto(), Peers()} of
            {{ok, P}, {ok, L}} -> io:format("distribution protocol: ~s~n", [P]), PrintPeers(L), 0;
            {{badrpc, R}, _} -> RpcFailed(R), 3;
            {_, {badrpc, R}} -> RpcFailed(R), 3
        end;
    "mnesia-init" ->
        Nodes = [list_to_atom(A) || A <- Args],
        Step = fun(What, Result, Ok) ->
            case lists:all(fun(R) -> R =:= Ok end, Result) of
                true -> ok;
                false -> io:format("mnesia-init: ~s failed: ~p~n", [What, Result]), erlang:halt(1)
            end
        end,
        Step("mnesia:stop", [rpc:call(N, mnesia, stop, [], T) || N <- Nodes], stopped),
        Step("mnesia:create_schema", [rpc:call(Node, mnesia, create_schema, [Nodes], T)], ok),
        Step("mnesia:start", [rpc:call(N, mnesia, start, [], T) || N <- Nodes], ok),
        Step("mnesia:create_table",
             [rpc:call(Node, mnesia, create_table,
                       [rehearsal, [{disc_copies, Nodes}, {attributes, [node, note]}]], T)],
             {atomic, ok}),
        Step("mnesia:wait_for_tables",
             [rpc:call(N, mnesia, wait_for_tables, [[rehearsal], T], T) || N <- Nodes], ok),
        Step("mnesia:dirty_write",
             [rpc:call(N, mnesia, dirty_write, [{rehearsal, N, created}], T) || N <- Nodes], ok),
        io:format("ok~n"),
        0;
    "mnesia-keys" ->
        case rpc:call(Node, mnesia, dirty_all_keys, [rehearsal], T) of
            Keys when is_list(Keys) -> [io:format("~s~n", [K]) || K <- lists:sort(Keys)], 0;
            {badrpc, nodedown} -> RpcFailed(nodedown), 3;
            Other -> io:format("table rehearsal cannot be read: ~p~n", [Other]), 1
        end
end,
erlang:halt(Code).
'

# Boot code of the server VM: record the OS pid, mark the status, and keep
# dialing every peer listed in etc/peers while not connected to it (this stands
# in for Mnesia/CETS discovery: a restarted node rejoins its peers by itself).
BOOT_ERL='
{ok, [[Root | _] | _]} = init:get_argument(rehearsal_root),
Var = filename:join(Root, "var"),
Pid = os:getpid(),
%% Test knob: a VM that ignores SIGTERM (only SIGKILL stops it without its ctl).
case filelib:is_file(filename:join(Var, "ignore-sigterm")) of
    true -> os:set_signal(sigterm, ignore);
    false -> ok
end,
ok = file:write_file(filename:join(Var, "pids.log"), [Pid, "\n"], [append]),
ok = file:write_file(filename:join(Var, "pid"), Pid),
logger:add_handler(rehearsal_file, logger_std_h,
                   #{config => #{file => filename:join([Root, "log", "erlang.log"])}}),
{ok, PeersBin} = file:read_file(filename:join([Root, "etc", "peers"])),
PeerNames = [list_to_atom(P) || P <- string:lexemes(binary_to_list(PeersBin), "\r\n\t "),
                                hd(P) =/= $#],
Dial = fun Loop(Peer) ->
    case lists:member(Peer, nodes()) of
        true -> ok;
        false -> net_kernel:connect_node(Peer)
    end,
    receive after 1000 -> ok end,
    Loop(Peer)
end,
[spawn(fun() -> Dial(P) end) || P <- PeerNames],
%% Switch: sample the links into var/links.log every 200 ms (see the header).
case filelib:is_file(filename:join(Var, "sample-links")) of
    true ->
        LinksLog = filename:join(Var, "links.log"),
        Sample = fun SampleLoop() ->
            case catch net_kernel:nodes_info() of
                {ok, Infos} ->
                    Up = lists:sort([atom_to_list(N) ++ ":" ++ atom_to_list(element(4, proplists:get_value(address, I)))
                                     || {N, I} <- Infos,
                                        proplists:get_value(state, I) =:= up,
                                        proplists:get_value(type, I) =:= normal]),
                    Peers = case Up of [] -> "-"; _ -> lists:join(",", Up) end,
                    _ = file:write_file(LinksLog,
                                         [integer_to_list(os:system_time(millisecond)), " ", Pid, " ", Peers, "\n"],
                                         [append]),
                    receive after 200 -> ok end,
                    SampleLoop();
                _ ->
                    stopped
            end
        end,
        spawn(Sample);
    false -> ok
end,
Status = filename:join(Var, "status"),
MnesiaDir = filename:join(Var, "mnesia"),
case filelib:is_dir(MnesiaDir) of
    true ->
        %% Loaded first: loading later would reset the environment to the .app file.
        ok = application:load(mnesia),
        ok = application:set_env(mnesia, dir, MnesiaDir),
        case filelib:is_file(filename:join(MnesiaDir, "schema.DAT")) of
            true ->
                %% Like MongooseIM: wait for every local table before saying started.
                spawn(fun() ->
                    ok = mnesia:start(),
                    Wait = fun WaitLoop() ->
                        case mnesia:wait_for_tables(mnesia:system_info(local_tables), 10000) of
                            ok -> ok;
                            Other ->
                                logger:notice("rehearsal: still waiting for Mnesia tables: ~p", [Other]),
                                WaitLoop()
                        end
                    end,
                    ok = Wait(),
                    ok = file:write_file(Status, "started")
                end);
            false ->
                ok = file:write_file(Status, "started")
        end;
    false ->
        ok = file:write_file(Status, "started")
end.
'

# A control VM: hidden, fast to boot, random listen port on loopback.
ctl_vm() {
    # A crash dump stays in the node's log directory (it would hold the cookie), never in the
    # caller's working directory.
    ERL_CRASH_DUMP="$LOG/ctl_erl_crash.dump" erl -boot start_clean -noshell -noinput -hidden -start_epmd false \
        "$NAME_TYPE" "$CTL_NAME" -setcookie "$COOKIE" \
        -kernel inet_dist_use_interface '{127,0,0,1}' \
        -kernel logger '[{handler,default,logger_std_h,#{config => #{type => standard_error}}}]' \
        -args_file "$ETC/vm.dist.args" \
        -eval "$CTL_ERL" -extra "$NAME" "$@"
}

# Is this pid alive? A zombie is not (kill -0 succeeds on zombies).
is_running() {
    kill -0 "$1" 2>/dev/null || return 1
    [ -d /proc/self ] || return 0
    state=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d ' ' -f 1)
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# Wait up to 60 s for a pid to exit, polling every 0.1 s.
wait_for_pid_exit() {
    tries=0
    while is_running "$1"; do
        tries=$((tries + 1))
        if [ "$tries" -ge 600 ]; then
            return 1
        fi
        sleep 0.1
    done
    return 0
}

case "${1:-}" in
    start)
        if ctl_vm ping >/dev/null 2>&1; then
            echo "Node is already running!"
            exit 1
        fi
        mkdir -p "$VAR" "$LOG" || exit 1
        echo starting >"$VAR/status"
        ERL_CRASH_DUMP="$LOG/erl_crash.dump" erl \
            -args_file "$ETC/vm.args" -args_file "$ETC/vm.dist.args" \
            -start_epmd false -detached -noinput \
            -rehearsal_root "$ROOT" \
            -eval "$BOOT_ERL"
        ;;
    stop)
        if [ -e "$VAR/stop-hangs" ]; then
            # Test knob: a stop that hangs and never stops the node (distls must escalate).
            echo "ctl stop hangs (test knob $VAR/stop-hangs)" >&2
            # Hangs as long as the knob (and the cluster directory) exists, so a stop that
            # distls failed to kill still ends when its test cleans up.
            while [ -e "$VAR/stop-hangs" ]; do sleep 1; done
            exit 1
        fi
        PID=$(cat "$VAR/pid" 2>/dev/null)
        ctl_vm stop || exit $?
        if [ -n "$PID" ] && ! wait_for_pid_exit "$PID"; then
            echo "Node $NAME (pid $PID) did not exit within 60 s"
            exit 1
        fi
        echo stopped >"$VAR/status"
        ;;
    ping | status | peers | links | otp | mnesia-keys)
        ctl_vm "$1"
        ;;
    mnesia-init)
        ctl_vm "$@"
        ;;
    started)
        STATUS=$(cat "$VAR/status" 2>/dev/null)
        if [ "$STATUS" != started ]; then
            echo "Node $NAME is not started (status: ${STATUS:-none})"
            exit 1
        fi
        if ! ctl_vm ping >/dev/null 2>&1; then
            echo "Node $NAME not responding to pings."
            exit 1
        fi
        echo started
        ;;
    *)
        echo "Usage: $0 start|stop|ping|status|peers|links|otp|started|mnesia-init|mnesia-keys" >&2
        exit 2
        ;;
esac
