%% distls discover: a hidden, non-listening VM that asks one running node and its peers how they
%% were started, for `distls plan discover`. Read-only: it only calls functions that report.
%% Protocol: one request per stdin line, one reply per stdout line prefixed with "DISTLS ".
%% Paths, file contents and values travel hex-encoded (any byte, no quoting).
%%   cookie <cookie>            -> DISTLS ok            (this VM's cookie; never echoed)
%%   nodes <node>               -> DISTLS nodes <node> <peer>...  | DISTLS down <reason>
%%   facts <node>               -> DISTLS facts <key>=<hex>...    | DISTLS down <reason>
%%        keys: root, pid, hostname, cwd, app (repeated), env_<VAR> (when set)
%%        (erlexec expands -args_file before the VM starts, so the files are found from cwd and
%%        the release's variables instead)
%%   read <node> <hexpath>      -> DISTLS file <hex>  | DISTLS error <reason>  (read on the node's host)
%%   exists <node> <hexpath>    -> DISTLS yes | DISTLS no                      (a regular file there)
-module(distls_discover).
-export([main/0]).

-define(TIMEOUT, 10000).
-define(MAX_READ, 1048576).
-define(ENV_VARS, ["RELEASE_ROOT", "ROOTDIR", "EJABBERD_CONFIG_PATH", "EJABBERDCTL_CONFIG_PATH",
                   "CONFIG_DIR", "ETC_DIR", "RABBITMQ_CONF_ENV_FILE", "RABBITMQ_CONFIG_FILE",
                   "RABBITMQ_HOME", "RELEASE_NAME", "RELEASE_VSN", "RUNNER_BASE_DIR",
                   "RUNNER_ETC_DIR", "USER", "HOME"]).

main() ->
    logger:set_primary_config(level, none),
    loop().

loop() ->
    case io:get_line('') of
        eof -> halt(0);
        {error, _} -> halt(1);
        Line ->
            %% A node that goes away mid-request answers an error, never stops this VM.
            reply(try handle(string:lexemes(string:trim(Line), " "))
                  catch Class:Reason -> "down " ++ reason({Class, Reason})
                  end),
            loop()
    end.

reply(Text) ->
    io:put_chars(["DISTLS ", Text, "\n"]).

handle(["cookie", Cookie]) ->
    erlang:set_cookie(node(), list_to_atom(Cookie)),
    "ok";
handle(["nodes", Node]) ->
    N = list_to_atom(Node),
    case rpc:call(N, erlang, nodes, [], ?TIMEOUT) of
        {badrpc, Reason} -> down(Reason);
        Peers -> string:join(["nodes", Node | [atom_to_list(P) || P <- Peers]], " ")
    end;
handle(["facts", Node]) ->
    facts(list_to_atom(Node));
handle(["read", Node, HexPath]) ->
    Path = binary:decode_hex(list_to_binary(HexPath)),
    case rpc:call(list_to_atom(Node), file, read_file_info, [Path], ?TIMEOUT) of
        {ok, Info} when element(2, Info) =< ?MAX_READ ->
            case rpc:call(list_to_atom(Node), file, read_file, [Path], ?TIMEOUT) of
                {ok, Bytes} -> "file " ++ hex(Bytes);
                Other -> "error " ++ reason(Other)
            end;
        {ok, _} -> "error too_large";
        Other -> "error " ++ reason(Other)
    end;
handle(["exists", Node, HexPath]) ->
    Path = binary:decode_hex(list_to_binary(HexPath)),
    case rpc:call(list_to_atom(Node), filelib, is_regular, [Path], ?TIMEOUT) of
        true -> "yes";
        _ -> "no"
    end;
handle(_) ->
    "error unknown_request".

facts(N) ->
    case rpc:call(N, code, root_dir, [], ?TIMEOUT) of
        {badrpc, Reason} -> down(Reason);
        Root ->
            Pid = rpc:call(N, os, getpid, [], ?TIMEOUT),
            {ok, Host} = rpc:call(N, inet, gethostname, [], ?TIMEOUT),
            Apps = [A || {A, _, _} <- rpc:call(N, application, which_applications, [], ?TIMEOUT)],
            {ok, Cwd} = rpc:call(N, file, get_cwd, [], ?TIMEOUT),
            Env = [{V, Value} || V <- ?ENV_VARS,
                                 (Value = rpc:call(N, os, getenv, [V], ?TIMEOUT)) =/= false],
            Pairs = [{"root", Root}, {"pid", Pid}, {"hostname", Host}, {"cwd", Cwd}]
                ++ [{"app", atom_to_list(A)} || A <- Apps]
                ++ [{"env_" ++ V, Value} || {V, Value} <- Env],
            string:join(["facts" | [K ++ "=" ++ hex(V) || {K, V} <- Pairs]], " ")
    end.

down(Reason) ->
    "down " ++ reason(Reason).

reason(Term) ->
    lists:filter(fun(C) -> C > 32 andalso C < 127 end,
                 lists:flatten(io_lib:format("~0p", [Term]))).

hex(Value) when is_list(Value) -> hex(unicode:characters_to_binary(Value));
hex(Value) when is_binary(Value) -> binary_to_list(binary:encode_hex(Value)).
