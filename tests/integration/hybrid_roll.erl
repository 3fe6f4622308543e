%% Test driver for tests/integration/hybrid_roll.rs: the one-restart hybrid module
%% (src/zero_split/distls_hybrid_dist.erl) on the OTP this VM runs. Starts its nodes as peers
%% controlled over stdio (so their distribution is only what the test is about), then checks,
%% printing one line per check: "ROLL <check> ok" or "ROLL <check> FAIL <what was seen>".
%%   erl -noshell -pa DIR/ebin -run hybrid_roll main DIR HOST COOKIE
%% DIR holds ebin/ (the module and this driver, compiled by this OTP) and the optfiles
%% good.conf (verify_peer both ways, the verify_client host check), nocert.conf (a client with
%% no certificate) and foreign.conf (a client certificate from another CA).
-module(hybrid_roll).
-export([main/1]).

-include_lib("kernel/include/net_address.hrl").

main([Dir, Host, Cookie]) ->
    Env = #{dir => Dir, host => Host, cookie => Cookie},
    try
        run(Env)
    catch
        Class:Reason:Stack ->
            out("crash", io_lib:format("FAIL ~0p:~0p ~0p", [Class, Reason, Stack]))
    end,
    halt(0).

run(Env) ->
    P1 = start(Env, p1, ["-hidden"]),
    H1 = start(Env, h1, hybrid(Env, [h1])),
    %% What distls does before a node starts with the module: the running hybrid nodes learn it.
    ok = call(H1, distls_hybrid_dist, add_tls_peers, [[node_name(Env, h2)]]),
    H2 = start(Env, h2, hybrid(Env, [h1, h2])),
    T1 = start(Env, t1, stock_tls(Env, "good.conf")),
    T2 = start(Env, t2, stock_tls(Env, "nocert.conf")),
    T3 = start(Env, t3, stock_tls(Env, "foreign.conf")),
    [N_p1, N_h1, N_h2] = [node_name(Env, N) || N <- [p1, h1, h2]],

    %% Hybrid to hybrid: TLS, whichever side dials.
    check("hybrid_dials_hybrid_tls", dial(H2, N_h1), {true, tls, tls}),
    disconnect(H2, N_h1),
    check("hybrid_dialed_by_hybrid_tls", dial(H1, N_h2), {true, tls, tls}),
    %% A stock plain node and a hybrid node: plain, whichever side dials.
    check("plain_dials_hybrid_tcp", dial(P1, N_h1), {true, tcp, tcp}),
    disconnect(P1, N_h1),
    check("hybrid_dials_plain_tcp", dial(H1, N_p1), {true, tcp, tcp}),
    disconnect(H1, N_p1),
    %% A plain dialer whose name is a TLS peer is refused; once it is not, it is let in.
    ok = call(H1, distls_hybrid_dist, add_tls_peers, [[N_p1]]),
    check("plain_dialer_named_as_tls_peer_refused", dial(P1, N_h1), refused),
    ok = call(H1, distls_hybrid_dist, remove_tls_peers, [[N_p1]]),
    check("plain_dialer_let_in_again", dial(P1, N_h1), {true, tcp, tcp}),
    %% Stock TLS dialers go through the stock TLS accept path, with its checks.
    check("stock_tls_dialer_accepted", dial(T1, N_h1), {true, tls, tls}),
    check("tls_dialer_without_certificate_refused", dial(T2, N_h1), refused),
    check("tls_dialer_from_another_ca_refused", dial(T3, N_h1), refused),

    %% The seal: plain links and dialers go, TLS links stay (the same connection).
    Owner = owner(H1, N_h2),
    ok = call(H1, distls_hybrid_dist, seal, []),
    ok = call(H2, distls_hybrid_dist, seal, []),
    check("seal_closes_plain_links", wait(fun() -> not linked(P1, N_h1) andalso not linked(H1, N_p1) end), true),
    check("seal_keeps_tls_links", {linked(H1, N_h2), owner(H1, N_h2)}, {true, Owner}),
    check("sealed_refuses_plain_dialer", dial(P1, N_h1), refused),
    check("sealed_dials_tls_only", {call(H1, distls_hybrid_dist, info, []), dial(H2, N_p1)},
          {#{sealed => true, tls_peers => [N_h1, N_h2], dial_all_tls => false}, refused}),
    disconnect(T1, N_h1),
    check("sealed_accepts_stock_tls", dial(T1, N_h2), {true, tls, tls}),
    check("sealed_refuses_tls_without_certificate", dial(T2, N_h2), refused),
    %% Unsealed (a rollback after the seal): plain again from non-TLS peers.
    ok = call(H1, distls_hybrid_dist, unseal, []),
    check("unsealed_accepts_plain_again", dial(P1, N_h1), {true, tcp, tcp}),
    %% net_kernel:allow holds on the TLS path (and the host check of the certificate, which
    %% the verify_client marker in good.conf asks for): a node not allowed is refused.
    disconnect(T1, N_h2),
    ok = call(H2, net_kernel, allow, [[nobody@elsewhere]]),
    check("allow_refuses_tls_dialer", dial(T1, N_h2), refused),
    [peer:stop(P) || P <- [T3, T2, T1, H2, H1, P1]],
    out("done", "ok").

check(Name, Seen, Expected) ->
    case Seen of
        Expected -> out(Name, "ok");
        _ -> out(Name, io_lib:format("FAIL ~0p (expected ~0p)", [Seen, Expected]))
    end.

out(Name, Text) ->
    io:format("ROLL ~s ~s~n", [Name, Text]).

%% ---- nodes ----------------------------------------------------------------------------------

start(#{host := Host, cookie := Cookie, dir := Dir} = Env, Name, Args) ->
    {ok, Peer, _Node} =
        peer:start_link(#{name => Name, host => Host, longnames => false,
                          connection => standard_io, wait_boot => 60000,
                          args => ["-setcookie", Cookie, "-connect_all", "false",
                                   "-env", "ERL_CRASH_DUMP", filename:join(Dir, atom_to_list(Name) ++ ".dump")
                                   | Args]}),
    put({peer, node_name(Env, Name)}, Peer),
    Peer.

node_name(#{host := Host}, Name) ->
    list_to_atom(atom_to_list(Name) ++ "@" ++ Host).

hybrid(#{dir := Dir} = Env, TlsPeers) ->
    ["-pa", filename:join(Dir, "ebin"), "-proto_dist", "distls_hybrid",
     "-distls_hybrid", "tls_peers" | [atom_to_list(node_name(Env, P)) || P <- TlsPeers]]
        ++ ["-ssl_dist_optfile", filename:join(Dir, "good.conf")].

%% Hidden, as are the plain node's: no global name server connects them to others behind the
%% test's back.
stock_tls(#{dir := Dir}, Optfile) ->
    ["-hidden", "-proto_dist", "inet_tls", "-ssl_dist_optfile", filename:join(Dir, Optfile)].

call(Peer, M, F, A) ->
    peer:call(Peer, M, F, A, 30000).

%% ---- links ----------------------------------------------------------------------------------

%% From dials To: {true, transport as From sees it, as To sees it} or refused (no link either
%% side afterwards).
dial(From, To) ->
    case call(From, net_kernel, connect_node, [To]) of
        true ->
            Self = call(From, erlang, node, []),
            {true, transport(From, To), peer_transport(From, To, Self)};
        _ ->
            case linked(From, To) of
                false -> refused;
                true -> {linked_after_false, transport(From, To)}
            end
    end.

transport(Peer, Node) ->
    protocol(call(Peer, net_kernel, node_info, [Node])).

protocol({ok, Info}) ->
    case proplists:get_value(address, Info) of
        #net_address{protocol = P} -> P;
        Other -> Other
    end;
protocol(Other) ->
    Other.

%% How To sees the link from Self: asked over the link itself.
peer_transport(From, To, Self) ->
    protocol(call(From, rpc, call, [To, net_kernel, node_info, [Self], 10000])).

owner(Peer, Node) ->
    case call(Peer, net_kernel, node_info, [Node]) of
        {ok, Info} -> proplists:get_value(owner, Info);
        Other -> Other
    end.

linked(Peer, Node) ->
    lists:member(Node, call(Peer, erlang, nodes, [connected])).

%% Until neither side has the link (the other side learns of it when the socket closes).
disconnect(Peer, Node) ->
    Self = call(Peer, erlang, node, []),
    Other = get({peer, Node}),
    call(Peer, erlang, disconnect_node, [Node]),
    true = wait(fun() -> not linked(Peer, Node) andalso not linked(Other, Self) end).

wait(Fun) ->
    wait(Fun, erlang:monotonic_time(millisecond) + 15000).

wait(Fun, Deadline) ->
    case Fun() of
        true -> true;
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> false;
                false -> receive after 50 -> wait(Fun, Deadline) end
            end
    end.
