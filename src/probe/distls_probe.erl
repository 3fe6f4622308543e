%% distls probe: a hidden, non-listening VM that answers questions about cluster nodes.
%% Started with the node's own -args_file (its vm.dist.args), so it speaks the same
%% distribution protocol as that node's ctl would. Protocol: one request per stdin line,
%% one reply per stdout line prefixed with "DISTLS " so log noise can be told apart.
%%   <id> cookies <node> <cookie> ... -> DISTLS <id> ok        (a few hundred per line; never echoed)
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
%%   <id> tlsfiles <node>            -> DISTLS <id> tlsfiles <role>=<hexpath>,...  (the files <node>'s running
%%                                      distribution options name, as it booted: -ssl_dist_optfile's terms, then
%%                                      -ssl_dist_opt; role: server_certfile, client_cacertfile, ...; <role>=! for
%%                                      an inline option (cert, key, cacerts, certs_keys); - for none)
%%                                   |  DISTLS <id> tlsfiles !<reason>
%%   <id> served <node>              -> DISTLS <id> served <hex of the DER leaf it presents>  (a fresh TLS handshake
%%                                      with its distribution port, with this VM's own client certificate; the
%%                                      leaf is taken unverified: distls checks it) | served !<reason>
%%   <id> clearpem <node>            -> DISTLS <id> clearpem ok | clearpem absent | clearpem error <reason>
%%                                      (<node>'s distribution PEM cache, ssl_pem_cache_dist: its files are read
%%                                      again for the next connection)
%%   <id> refresh                    -> DISTLS <id> ok  (this VM's own PEM caches, distribution and normal)
%%   <id> relink <node>              -> DISTLS <id> relink ok | relink error <reason>  (this VM's own hidden link
%%                                      to <node> is dropped and made again: a new TLS link with this VM's files)
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

handle([Id, "cookies" | Pairs]) ->
    set_cookies(Pairs),
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
handle([Id, "tlsfiles", Node]) ->
    spawn(fun() -> reply(Id, "tlsfiles " ++ try tls_files(list_to_atom(Node))
                                           catch C:R -> "!" ++ atom_to_list(C) ++ "_" ++ reason(R) end) end);
handle([Id, "served", Node]) ->
    %% A crash must still answer: distls would wait for the reply until its timeout.
    spawn(fun() -> reply(Id, "served " ++ try served(list_to_atom(Node))
                                         catch C:R -> "!" ++ atom_to_list(C) ++ "_" ++ reason(R) end) end);
handle([Id, "clearpem", Node]) ->
    spawn(fun() -> reply(Id, "clearpem " ++ clear_pem(list_to_atom(Node))) end);
handle([Id, "refresh"]) ->
    _ = clear_dist_pem_cache(),
    _ = clear_normal_pem_cache(),
    reply(Id, "ok");
handle([Id, "relink", Node]) ->
    spawn(fun() -> reply(Id, "relink " ++ relink(list_to_atom(Node))) end);
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

%% The files a VM's distribution options name. Its optfile is read now (the VM read it at boot;
%% distls never rewrites it during a rotation), its -ssl_dist_opt pairs are its argv.
tls_files(Node) ->
    Timeout = 5000,
    case {rpc:call(Node, init, get_argument, [ssl_dist_optfile], Timeout),
          rpc:call(Node, init, get_argument, [ssl_dist_opt], Timeout)} of
        {{badrpc, R}, _} -> "!" ++ reason(R);
        {_, {badrpc, R}} -> "!" ++ reason(R);
        {OptFile, Opt} ->
            case optfile_terms(Node, OptFile, Timeout) of
                {ok, Terms} -> roles(Terms ++ opt_terms(Opt));
                {error, R} -> "!" ++ reason(R)
            end
    end.

optfile_terms(Node, {ok, [[File | _] | _]}, Timeout) ->
    case rpc:call(Node, file, consult, [File], Timeout) of
        {ok, [Terms]} when is_list(Terms) -> {ok, Terms};
        {ok, Terms} -> {ok, Terms};
        {error, _} -> {error, optfile_unreadable};
        {badrpc, R} -> {error, R}
    end;
optfile_terms(_, _, _) ->
    {ok, []}.

%% -ssl_dist_opt server_certfile F client_keyfile K ...: {server, [{certfile, F}]}, ...
opt_terms({ok, Lists}) ->
    [side_term(K, V) || L <- Lists, {K, V} <- pairs(L), side_term(K, V) =/= skip];
opt_terms(_) ->
    [].

pairs([K, V | Rest]) -> [{K, V} | pairs(Rest)];
pairs(_) -> [].

side_term("server_" ++ Opt, V) -> {server, [{list_to_atom(Opt), V}]};
side_term("client_" ++ Opt, V) -> {client, [{list_to_atom(Opt), V}]};
side_term(_, _) -> skip.

roles(Terms) ->
    Roles = [role(Side, Opt, V) || {Side, Opts} <- Terms, is_list(Opts),
                                   Side =:= server orelse Side =:= client,
                                   {Opt, V} <- [O || O <- Opts, is_tuple(O), tuple_size(O) =:= 2]],
    case string:join([R || R <- Roles, R =/= skip], ",") of
        "" -> "-";
        S -> S
    end.

role(Side, Opt, V) when Opt =:= certfile; Opt =:= keyfile; Opt =:= cacertfile ->
    atom_to_list(Side) ++ "_" ++ atom_to_list(Opt) ++ "=" ++ hex_path(V);
role(Side, Opt, _) when Opt =:= cert; Opt =:= key; Opt =:= cacerts; Opt =:= certs_keys ->
    atom_to_list(Side) ++ "_" ++ atom_to_list(Opt) ++ "=!";
role(_, _, _) ->
    skip.

hex_path(V) when is_atom(V) ->
    hex_path(atom_to_list(V));
hex_path(V) ->
    Bin = if is_binary(V) -> V;
             true -> unicode:characters_to_binary(V, file:native_name_encoding())
          end,
    case Bin of
        B when is_binary(B) -> lists:flatten([io_lib:format("~2.16.0b", [C]) || <<C>> <= B]);
        _ -> "!"
    end.

%% A fresh handshake with the node's distribution listener: the leaf it serves right now.
served(Node) ->
    case string:split(atom_to_list(Node), "@") of
        [Name, Host] ->
            case dist_port(Name, Host) of
                {ok, Port} -> handshake(Host, Port);
                {error, R} -> "!" ++ reason(R)
            end;
        _ -> "!no_host"
    end.

dist_port(Name, Host) ->
    case init:get_argument(erl_epmd_port) of
        {ok, [[Port]]} -> {ok, list_to_integer(Port)};
        _ ->
            try erl_epmd:port_please(Name, Host, 2000) of
                {port, Port, _} -> {ok, Port};
                _ -> {error, not_registered}
            catch
                _:_ -> {error, epmd}
            end
    end.

handshake(Host, Port) ->
    %% The ssl application itself (not only the distribution's instance) runs ssl:connect/4.
    _ = application:ensure_all_started(ssl),
    _ = clear_normal_pem_cache(),
    Own = [{K, V} || {client, Opts} <- own_terms(), is_list(Opts), {K, V} <- Opts,
                     K =:= certfile orelse K =:= keyfile],
    Family = case init:get_argument(proto_dist) of
                 {ok, [["inet6_tls" | _] | _]} -> [inet6];
                 _ -> []
             end,
    Opts = Family ++ [binary, {active, false}, {verify, verify_none}, {server_name_indication, disable},
                      {reuse_sessions, false} | Own],
    case ssl:connect(Host, Port, Opts, 5000) of
        {ok, Socket} ->
            Reply = case ssl:peercert(Socket) of
                        {ok, Der} -> hex_path(Der);
                        {error, R} -> "!" ++ reason(R)
                    end,
            ssl:close(Socket),
            Reply;
        {error, R} ->
            "!" ++ reason(R)
    end.

%% This VM's own options, as tls_files/1 reads a node's.
own_terms() ->
    File = case init:get_argument(ssl_dist_optfile) of
               {ok, [[F | _] | _]} ->
                   case file:consult(F) of
                       {ok, [T]} when is_list(T) -> T;
                       {ok, T} -> T;
                       _ -> []
                   end;
               _ -> []
           end,
    File ++ opt_terms(init:get_argument(ssl_dist_opt)).

clear_pem(Node) ->
    case rpc:call(Node, erlang, whereis, [ssl_pem_cache_dist], 5000) of
        Pid when is_pid(Pid) ->
            case rpc:call(Node, gen_server, call, [ssl_pem_cache_dist, {unconditionally_clear_pem_cache, self()}, 10000], 12000) of
                {badrpc, R} -> "error " ++ reason(R);
                _ -> "ok"
            end;
        undefined -> "absent";
        {badrpc, R} -> "error " ++ reason(R)
    end.

clear_dist_pem_cache() ->
    case whereis(ssl_pem_cache_dist) of
        undefined -> ok;
        _ -> try gen_server:call(ssl_pem_cache_dist, {unconditionally_clear_pem_cache, self()}, 10000)
             catch _:_ -> error end
    end.

%% The ssl application's own PEM cache (not the distribution's): ssl:connect/4 reads this VM's
%% files through it. A TLS-distribution VM runs only the distribution's instance until the ssl
%% application is started, and ssl:clear_pem_cache/0 exits with noproc before that.
clear_normal_pem_cache() ->
    try ssl:clear_pem_cache() catch _:_ -> error end.

relink(Node) ->
    _ = clear_dist_pem_cache(),
    erlang:disconnect_node(Node),
    case net_kernel:connect_node(Node) of
        true -> "ok";
        _ -> "error not_connected"
    end.

reason(R) when is_atom(R) -> atom_to_list(R);
reason({tls_alert, {A, _}}) when is_atom(A) -> "tls_alert_" ++ atom_to_list(A);
reason(_) -> "error".

set_cookies([Node, Cookie | Rest]) ->
    erlang:set_cookie(list_to_atom(Node), list_to_atom(Cookie)),
    set_cookies(Rest);
set_cookies(_) ->
    ok.

reply(Id, Text) ->
    io:put_chars(["DISTLS ", Id, " ", Text, "\n"]).
