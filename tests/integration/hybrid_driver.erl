%% Test driver for tests/integration/hybrid.rs, run in a stock VM (-proto_dist inet_tls or plain).
%% Prints one result line per job, prefixed with "HYBRID ", then halts.
%%   stress Expect N Target...  N connect -> check transport -> disconnect cycles per target:
%%       HYBRID stress <target> <expect> cycles=N failures=F mean_us=.. p50_us=.. p99_us=.. max_us=..
%%       HYBRID failure <target> <cycle> <reason>    (one per failed cycle)
%%   pairs A B                A dials B, then (after a disconnect) B dials A; per direction:
%%       HYBRID pair <dialer> <acceptor> <dialer's view: tcp|tls|none> <acceptor's view> <connected>
%%   crash Target             kills the raw accept loop, the TLS accept loop, then the acceptor, one at
%%                            a time, and checks net_kernel restarts the whole set each time:
%%       HYBRID crash <target> [{raw_accept_loop,restarted},...]
%%   refused Target           HYBRID refused <target> <true|false> (true: no link on either side)
%%   seal Target              seals distls's hybrid module on Target: HYBRID seal <target> ok
%%   allow Target Entry       makes Entry (e.g. nobody@elsewhere) the only node Target allows
%%                            (net_kernel:allow), then dials it again: HYBRID allow <target> <reconnected>
-module(hybrid_driver).
-export([main/1]).

main(["stress", Expect, N | Targets]) ->
    Results = [stress(list_to_atom(T), list_to_atom(Expect), list_to_integer(N)) || T <- Targets],
    [out(L) || L <- lists:append(Results)],
    halt(0);
main(["pairs", A, B]) ->
    {NA, NB} = {list_to_atom(A), list_to_atom(B)},
    true = net_kernel:connect_node(NA),
    true = net_kernel:connect_node(NB),
    First = pair(NA, NB),
    ok = rpc:call(NA, net_kernel, disconnect, [NB]) =:= true andalso
        until(fun() -> not linked(NA, NB) andalso not linked(NB, NA) end, 10000),
    out(First),
    out(pair(NB, NA)),
    halt(0);
main(["crash", Target]) ->
    T = list_to_atom(Target),
    true = net_kernel:connect_node(T),
    Restarted = [crash(T, What) || What <- [raw_accept_loop, tls_accept_loop, acceptor]],
    out(io_lib:format("crash ~s ~w", [T, Restarted])),
    halt(0);
main(["allow", Target, Entry]) ->
    T = list_to_atom(Target),
    true = net_kernel:connect_node(T),
    ok = rpc:call(T, net_kernel, allow, [[list_to_atom(Entry)]]),
    true = erlang:disconnect_node(T),
    ok = until(fun() -> not lists:member(T, nodes(connected)) end, 10000),
    Again = net_kernel:connect_node(T),
    out(io_lib:format("allow ~s ~s", [T, Again])),
    halt(0);
main(["seal", Target]) ->
    T = list_to_atom(Target),
    Result = rpc:call(T, distls_hybrid_dist, seal, []),
    out(io_lib:format("seal ~s ~p", [T, Result])),
    halt(0);
main(["refused", Target]) ->
    T = list_to_atom(Target),
    Result = net_kernel:connect_node(T),
    NoLink = (Result =:= false) andalso not lists:member(T, nodes(connected)),
    out(io_lib:format("refused ~s ~s", [T, NoLink])),
    halt(0).

stress(Target, Expect, N) ->
    Cycles = [cycle(Target, Expect) || _ <- lists:seq(1, N)],
    Times = lists:sort([Us || {ok, Us} <- Cycles]),
    Failures = [{I, R} || {I, {error, R}} <- lists:zip(lists:seq(1, N), Cycles)],
    Summary = io_lib:format(
                "stress ~s ~s cycles=~b failures=~b mean_us=~b p50_us=~b p99_us=~b max_us=~b",
                [Target, Expect, N, length(Failures), mean(Times), pct(Times, 50),
                 pct(Times, 99), lists:last([0 | Times])]),
    [Summary | [io_lib:format("failure ~s ~b ~0p", [Target, I, R]) || {I, R} <- Failures]].

%% One cycle: dial (timed), ask the target how it sees this link, disconnect. The target learns
%% of the disconnect when the socket closes; if the next dial is faster, the stock handshake
%% settles it (the target asks whether the old link is still alive).
cycle(Target, Expect) ->
    T0 = erlang:monotonic_time(microsecond),
    case net_kernel:connect_node(Target) of
        true ->
            Us = erlang:monotonic_time(microsecond) - T0,
            Seen = transport(Target, node()),
            erlang:disconnect_node(Target),
            case Seen of
                Expect -> {ok, Us};
                _ -> {error, {transport, Seen}}
            end;
        Other ->
            {error, {connect, Other}}
    end.

%% Asks Dialer to connect to Acceptor; both nodes' view of the link once the acceptor has it up.
pair(Dialer, Acceptor) ->
    Connected = rpc:call(Dialer, net_kernel, connect_node, [Acceptor]),
    _ = until(fun() -> linked(Acceptor, Dialer) end, 5000),
    io_lib:format("pair ~s ~s ~s ~s ~p", [Dialer, Acceptor, transport(Dialer, Acceptor),
                                           transport(Acceptor, Dialer), Connected]).

linked(A, B) ->
    lists:member(B, rpc:call(A, erlang, nodes, [connected])).

%% Polls Check every 10 ms until it holds (ok) or Ms have passed (timeout).
until(Check, Ms) ->
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    until1(Check, Deadline).
until1(Check, Deadline) ->
    case Check() of
        true -> ok;
        false ->
            case erlang:monotonic_time(millisecond) >= Deadline of
                true -> timeout;
                false -> receive after 10 -> until1(Check, Deadline) end
            end
    end.

%% Kills one of the hybrid acceptor's processes on T (found by what they run) and waits until a
%% complete new set runs: {What, restarted} or {What, {not_restarted, Procs}}.
crash(T, What) ->
    Before = acceptor_procs(T),
    Victim = maps:get(What, Before),
    rpc:call(T, erlang, exit, [Victim, kill]),
    Fresh = fun() ->
                    After = acceptor_procs(T),
                    map_size(After) =:= 3 andalso
                        lists:all(fun(P) -> not lists:member(P, maps:values(Before)) end,
                                  maps:values(After))
            end,
    case until(Fresh, 5000) of
        ok -> {What, restarted};
        timeout -> {What, {not_restarted, acceptor_procs(T)}}
    end.

%% The acceptor (queue), raw accept loop and stock TLS accept loop running on T.
acceptor_procs(T) ->
    Kinds = #{{distls_hybrid_dist, queue_loop, 2} => acceptor,
              {prim_inet, accept0, 3} => raw_accept_loop,
              {inet_tls_dist, accept_loop, 4} => tls_accept_loop},
    maps:from_list(
      [{maps:get(F, Kinds), P}
       || P <- rpc:call(T, erlang, processes, []),
          {current_function, F} <- [rpc:call(T, erlang, process_info, [P, current_function])],
          is_map_key(F, Kinds)]).

%% Node A's view of its link to B: tcp, tls or none (from A's net_kernel:nodes_info()).
transport(A, B) ->
    Info = case A =:= node() of
               true -> net_kernel:nodes_info();
               false -> rpc:call(A, net_kernel, nodes_info, [])
           end,
    case Info of
        {ok, Nodes} ->
            case lists:keyfind(B, 1, Nodes) of
                {B, Props} ->
                    {net_address, _, _, Proto, _} = proplists:get_value(address, Props),
                    Proto;
                false -> none
            end;
        Other -> {error, Other}
    end.

mean([]) -> 0;
mean(L) -> lists:sum(L) div length(L).

pct([], _) -> 0;
pct(L, P) -> lists:nth(max(1, (length(L) * P + 99) div 100), L).

out(Line) ->
    io:format("HYBRID ~s~n", [Line]).
