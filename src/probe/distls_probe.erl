%% distls probe: a hidden, non-listening VM that answers questions about cluster nodes.
%% Started with the node's own -args_file (its vm.dist.args), so it speaks the same
%% distribution protocol as that node's ctl would. Protocol: one request per stdin line,
%% one reply per stdout line prefixed with "DISTLS " so log noise can be told apart.
%%   <id> cookie <node> <cookie>     -> DISTLS <id> ok         (the cookie is never echoed)
%%   <id> self                       -> DISTLS <id> self <proto>
%%   <id> info <node>                -> DISTLS <id> up <proto> <ospid> <peer>:<state>:<tcp|tls>:<type>,...
%%                                      (<proto> of distls's hybrid module carries its dial mode: distls_hybrid:tcp)
%%                                   |  DISTLS <id> unreachable <epmd_port> <reason>  (registered with epmd, no answer)
%%                                   |  DISTLS <id> down <reason> epmd <host>:<port> <names>
%%                                      (the epmd asked, as this VM's -epmd_port says, and the names it
%%                                      lists: <name>:<port>,... | - (none) | !<error> (no answer))
%%                                   |  DISTLS <id> down <reason> noepmd <host>:<port>
%%                                      (-erl_epmd_port: no epmd, and nothing accepts at that port)
%%                                   |  DISTLS <id> down <reason>  (a node name without a host)
%%   <id> names <host>               -> DISTLS <id> names epmd <host>:<port> <names> | names noepmd <host>:<port>
%%                                      (where `info` would look a node of <host> up, as in `down`)
%%   <id> connect <node> <peer>...   -> DISTLS <id> ok        (asks <node> to dial each peer)
%%   <id> stop <node> init|halt      -> DISTLS <id> ok        (init:stop() or erlang:halt() on <node>)
%%   <id> hybrid <node> seal|unseal|add|remove [<peer>...]
%%                                   -> DISTLS <id> hybrid ok | hybrid absent | hybrid error <reason>
%%                                      (distls's hybrid module on <node>: seal/0, unseal/0,
%%                                      add_tls_peers/1, remove_tls_peers/1; absent: not loaded there)
%%   <id> versions                   -> DISTLS <id> versions <otp_release> <ssl_vsn|missing> <root_dir>  (this VM's own)
%%   <id> lacks <m:f/a>...           -> DISTLS <id> lacks <m:f/a>...  (those this VM's OTP does not export;
%%                                      a need `m:f/a|m:g/b` is met by any one of them)
-module(distls_probe).
-export([main/0]).

main() ->
    %% TLS alerts and connection warnings must not interleave with replies.
    logger:set_primary_config(level, none),
    loop().

loop() ->
    case io:get_line('') of
        eof -> halt(0);
        {error, _} -> halt(1);
        Line ->
            handle(string:lexemes(string:trim(Line), " ")),
            loop()
    end.

handle([Id, "cookie", Node, Cookie]) ->
    erlang:set_cookie(list_to_atom(Node), list_to_atom(Cookie)),
    reply(Id, "ok");
handle([Id, "self"]) ->
    reply(Id, "self " ++ proto(init:get_argument(proto_dist)));
handle([Id, "info", Node]) ->
    spawn(fun() -> reply(Id, info(list_to_atom(Node))) end);
handle([Id, "names", Host]) ->
    spawn(fun() -> reply(Id, "names " ++ registered(Host)) end);
handle([Id, "connect", Node | Peers]) ->
    spawn(fun() ->
                  [rpc:cast(list_to_atom(Node), net_kernel, connect_node, [list_to_atom(P)]) || P <- Peers],
                  reply(Id, "ok")
          end);
handle([Id, "stop", Node, How]) ->
    %% A node whose ctl cannot stop it (ejabberd still booting: its ctl commands are not there yet).
    {M, F} = case How of "halt" -> {erlang, halt}; _ -> {init, stop} end,
    rpc:cast(list_to_atom(Node), M, F, []),
    reply(Id, "ok");
handle([Id, "hybrid", Node, Op | Peers]) ->
    spawn(fun() -> reply(Id, "hybrid " ++ hybrid(list_to_atom(Node), Op, [list_to_atom(P) || P <- Peers])) end);
handle([Id, "versions"]) ->
    Ssl = case application:load(ssl) of
              R when R =:= ok; R =:= {error, {already_loaded, ssl}} ->
                  {ok, Vsn} = application:get_key(ssl, vsn),
                  Vsn;
              _ ->
                  "missing"
          end,
    reply(Id, "versions " ++ erlang:system_info(otp_release) ++ " " ++ Ssl ++ " " ++ code:root_dir());
handle([Id, "lacks" | Needs]) ->
    reply(Id, string:join(["lacks" | [N || N <- Needs,
                                            not lists:any(fun exported/1, string:split(N, "|", all))]], " "));
handle([]) ->
    ok;
handle(Other) ->
    reply("-", "error unknown_request " ++ integer_to_list(length(Other))).

info(Node) ->
    Timeout = 5000,
    case rpc:call(Node, init, get_argument, [proto_dist], Timeout) of
        {badrpc, Reason} ->
            down(Node, Reason);
        Proto ->
            Pid = rpc:call(Node, os, getpid, [], Timeout),
            case rpc:call(Node, net_kernel, nodes_info, [], Timeout) of
                {ok, Infos} when is_list(Pid) ->
                    case proto(Proto, Node, Timeout) of
                        {badrpc, R} -> down(Node, R);
                        P -> "up " ++ P ++ " " ++ Pid ++ " " ++ peers(Infos)
                    end;
                Other ->
                    "down " ++ reason(Other)
            end
    end.

%% Not answering: is it registered with epmd (running, but this VM cannot talk to it, e.g. its
%% certificate is rejected), or really gone? Gone: say which epmd was asked and what it lists.
down(Node, Reason) ->
    case string:split(atom_to_list(Node), "@") of
        [Name, Host] ->
            case init:get_argument(erl_epmd_port) of
                {ok, [[Port]]} -> fixed_port_down(Host, Port, Reason);
                _ -> epmd_down(Name, Host, Reason)
            end;
        _ ->
            "down " ++ reason(Reason)
    end.

epmd_down(Name, Host, Reason) ->
    %% A try, not `catch Expr`: OTP 29 deprecates the latter (a compile warning).
    try erl_epmd:port_please(Name, Host, 2000) of
        {port, Port, _Version} ->
            "unreachable " ++ integer_to_list(Port) ++ " " ++ reason(Reason);
        _ ->
            "down " ++ reason(Reason) ++ " " ++ epmd_names(Host)
    catch
        _:_ ->
            "down " ++ reason(Reason) ++ " " ++ epmd_names(Host)
    end.

%% Where a node of Host is looked up: its epmd (with the names it lists), or the fixed port.
registered(Host) ->
    case init:get_argument(erl_epmd_port) of
        {ok, [[Port]]} -> "noepmd " ++ Host ++ ":" ++ Port;
        _ -> epmd_names(Host)
    end.

epmd_names(Host) ->
    "epmd " ++ Host ++ ":" ++ epmd_port() ++ " " ++ names(Host).

%% As erl_epmd picks it: the first -epmd_port (erlexec puts ERL_EPMD_PORT's first), else 4369.
epmd_port() ->
    case init:get_argument(epmd_port) of
        {ok, [[Port | _] | _]} -> Port;
        _ -> "4369"
    end.

names(Host) ->
    try erl_epmd:names(Host) of
        {ok, []} -> "-";
        {ok, Names} -> string:join([N ++ ":" ++ integer_to_list(P) || {N, P} <- Names], ",");
        {error, Why} -> "!" ++ reason(Why);
        _ -> "!error"
    catch
        _:_ -> "!error"
    end.

%% No epmd: the node listens on the fixed port itself; something accepting there is its VM.
fixed_port_down(Host, Port, Reason) ->
    case gen_tcp:connect(Host, list_to_integer(Port), [], 2000) of
        {ok, Socket} ->
            gen_tcp:close(Socket),
            "unreachable " ++ Port ++ " " ++ reason(Reason);
        _ ->
            "down " ++ reason(Reason) ++ " noepmd " ++ Host ++ ":" ++ Port
    end.

%% `module:function/arity` is exported by this VM's OTP (the module loaded from its code path).
exported(Need) ->
    try string:lexemes(Need, ":/") of
        [M, F, A] ->
            Module = list_to_atom(M),
            code:ensure_loaded(Module) =:= {module, Module}
                andalso erlang:function_exported(Module, list_to_atom(F), list_to_integer(A));
        _ ->
            false
    catch
        _:_ -> false
    end.

hybrid(Node, Op, Peers) ->
    {F, A} = case Op of
                 "seal" -> {seal, []};
                 "unseal" -> {unseal, []};
                 "add" -> {add_tls_peers, [Peers]};
                 "remove" -> {remove_tls_peers, [Peers]}
             end,
    case rpc:call(Node, distls_hybrid_dist, F, A, 10000) of
        ok -> "ok";
        {badrpc, {'EXIT', {undef, _}}} -> "absent";
        {badrpc, R} -> "error " ++ reason(R);
        _ -> "error unexpected"
    end.

proto({ok, [[P | _] | _]}) -> P;
proto(_) -> "inet_tcp".

%% The module's stages: the three-roll path's two differ only in what they dial (the last
%% -distls_hybrid dial argument, as the module reads it; none means tcp); the one-restart path's
%% (-distls_hybrid tls_peers ...) is h until the module is sealed at run time.
proto(Proto, Node, Timeout) ->
    case proto(Proto) of
        "distls_hybrid" ->
            case rpc:call(Node, init, get_argument, [distls_hybrid], Timeout) of
                {badrpc, R} -> {badrpc, R};
                {ok, Args} ->
                    case lists:any(fun(A) -> hd(A) =:= "tls_peers" end, Args) of
                        true -> sealed(rpc:call(Node, distls_hybrid_dist, info, [], Timeout));
                        false -> dial_stage([A || ["dial", _] = A <- Args])
                    end;
                error -> "distls_hybrid:tcp"
            end;
        P -> P
    end.

sealed(#{sealed := true}) -> "distls_hybrid:sealed";
sealed(#{sealed := false}) -> "distls_hybrid:h";
sealed({badrpc, R}) -> {badrpc, R};
sealed(_) -> "distls_hybrid:unknown".

dial_stage([]) -> "distls_hybrid:tcp";
dial_stage(Dials) ->
    case lists:last(Dials) of
        ["dial", "tls"] -> "distls_hybrid:tls";
        _ -> "distls_hybrid:tcp"
    end.

peers(Infos) ->
    Entries = [peer(N, I) || {N, I} <- Infos],
    case string:join([E || E <- Entries, E =/= ""], ",") of
        "" -> "-";
        S -> S
    end.

peer(Node, Info) ->
    State = proplists:get_value(state, Info, unknown),
    Type = proplists:get_value(type, Info, unknown),
    Transport = case proplists:get_value(address, Info) of
                    {net_address, _, _, T, _} when is_atom(T) -> T;
                    _ -> unknown
                end,
    atom_to_list(Node) ++ ":" ++ atom_to_list(State) ++ ":" ++ atom_to_list(Transport)
        ++ ":" ++ atom_to_list(Type).

reason(R) when is_atom(R) -> atom_to_list(R);
reason(_) -> "error".

reply(Id, Text) ->
    io:put_chars(["DISTLS ", Id, " ", Text, "\n"]).
