%% distls_hybrid_dist: a TRANSITIONAL Erlang distribution module for moving a live cluster from
%% plain-TCP distribution (inet_tcp) to TLS distribution (inet_tls) without a split, at the cost
%% of one restart per node.
%%
%% Its one listener (the single port registered in epmd) accepts BOTH plain-TCP and TLS
%% distribution connections, chosen per connection by the first byte the peer sends: 16#16 is a
%% TLS ClientHello record; a plain dist handshake starts with a 2-byte length, whose first byte is
%% 0 for any real handshake. It dials TLS to the peers it knows speak TLS and plain TCP to the
%% others:
%%
%%   -pa DIR -proto_dist distls_hybrid -distls_hybrid tls_peers N1 N2 ...   (one-restart roll)
%%   -pa DIR -proto_dist distls_hybrid -distls_hybrid dial tcp|tls           (three-roll mode:
%%                                                           dial tls means TLS to every peer)
%% plus the usual TLS settings (-ssl_dist_opt ... or -ssl_dist_optfile F).
%%
%% The peers that speak TLS: those named at boot (the nodes that ran this module before this one
%% started, and the node itself), those distls adds at run time (add_tls_peers/1, before a peer
%% starts with this module), and any visible node that linked to this one over TLS. A plain
%% connection whose handshake names one of them is refused, so a link between two nodes that run
%% this module is never plain, whichever side dials.
%%
%% seal/0 (at run time, once every node runs this module): from then on plain connections are
%% refused, plain handshakes under way and plain links are closed, and every dial is TLS; the
%% node behaves as stock inet_tls until its next restart, which boots stock inet_tls from the
%% rewritten flags file. unseal/0 undoes it (a rollback after the seal).
%%
%% SECURITY: until the seal, PLAINTEXT connections are accepted from anyone who has the cookie
%% (except from the TLS peers), exactly as under inet_tcp. TLS connections go through the stock
%% inet_tls_dist accept path (its accept loop is handed the TLS-classified sockets), so
%% verify_peer, fail_if_no_peer_cert, the inet_tls_dist:verify_client/3 host check, check_ip,
%% net_kernel:allow and its max pending handshakes all hold as under stock inet_tls.
%%
%% IPv4 only (family inet): it delegates to inet_tcp_dist / inet_tls_dist, not their inet6 twins.
%% Kernel TLS (the ktls option of OTP 27+) is not supported: the TLS link would reach
%% accept_connection/5 as a port, like a plain one.
%%
%% How the stock TLS accept loop gets its sockets: on OTP 25 through inet_tls_dist:gen_accept/2,
%% whose Driver:accept/1 is accept/1 of this module; from OTP 27 on (no gen_accept/2) through
%% inet_tls_dist:fam_accept/2 given {'$inet', ?MODULE, Handle} as its listen socket, which
%% gen_tcp:accept/1 hands to accept/2 of this module. distls's preflight checks that each host's
%% OTP has one of the two, and its tests run the module on OTP 25, 27 and 29.
%%
%% How a connection is classified: its first bytes are read and pushed back into the inet
%% driver's own buffer with gen_tcp:unrecv/2 (exported on OTP 25 to 29), so the delegate's
%% handshake reads the stream from its start. A plain connection's whole first packet (the
%% handshake's name message) is read, to see who dials.
-module(distls_hybrid_dist).

%% The distribution module API (net_kernel calls these).
-export([childspecs/0, listen/2, accept/1, accept_connection/5, setup/5, close/1,
         select/1, address/0, is_node_name/1]).
%% What the stock TLS accept loop calls back: accept/1 (OTP 25's Driver:accept/1 on a queue
%% handle), accept/2 (OTP 27+: gen_tcp:accept/1,2 on the '$inet' handle), family/0 and mask/2.
-export([accept/2, family/0, mask/2]).
%% At run time, from distls (through its probe VM): who speaks TLS, the seal.
-export([info/0, add_tls_peers/1, remove_tls_peers/1, seal/0, unseal/0]).

-include_lib("kernel/include/net_address.hrl").

%% Handles the stock TLS accept loop gets instead of a listen socket; its accepts come back to
%% accept/1,2 with them, which then yield the next TLS-classified socket.
-define(QUEUE(Pid), {?MODULE, tls_queue, Pid}).
-define(INET_QUEUE(Pid), {'$inet', ?MODULE, {tls_queue, Pid}}).
%% The process that tracks plain connections (to close them at the seal) and learns TLS peers.
-define(WATCHER, distls_hybrid_watcher).
-define(PEERS, {?MODULE, tls_peers}).
-define(SEALED, {?MODULE, sealed}).

childspecs() ->
    %% Starts ssl_dist_sup, which reads -ssl_dist_optfile into the ssl_dist_opts table.
    inet_tls_dist:childspecs().

select(Node) ->
    inet_tcp_dist:select(Node).

is_node_name(Node) ->
    inet_tcp_dist:is_node_name(Node).

%% Reports protocol tls like listen/2 below, so net_kernel's record of this module is the same
%% whether or not the node listens.
address() ->
    (inet_tcp_dist:address())#net_address{protocol = tls}.

%% The plain inet_tcp_dist listener ({packet,2}, epmd registration). Its address says tls:
%% net_kernel routes an {accept, _, _, Family, Protocol} message to the listener whose address
%% has that family and protocol, and the stock TLS accept code (reused below) sends tls. So
%% every accept this module makes is sent as tls, plain ones too; accept_connection/5 tells
%% them apart by the socket. The link's real transport shows in nodes_info() anyway: it comes
%% from the delegate's f_address.
listen(Name, Host) ->
    _ = boot_arguments(),  % a bad -distls_hybrid argument fails the node at boot, not at first dial
    case inet_tcp_dist:listen(Name, Host) of
        {ok, {Listen, Address, Creation}} ->
            {ok, {Listen, Address#net_address{protocol = tls}, Creation}};
        Error ->
            Error
    end.

close(Listen) ->
    inet_tcp_dist:close(Listen).

%% net_kernel: accept(ListenSocket) -> the acceptor pid, linked to net_kernel, restarted by
%% net_kernel when it exits. That pid is the TLS queue process. Linked to it: the raw accept
%% loop, the watcher and the stock TLS accept loop, so if one crashes the acceptor goes down
%% with it and net_kernel starts a fresh set, instead of a node that silently stops accepting
%% one protocol.
accept(Listen) when is_port(Listen) ->
    Kernel = self(),
    Queue = spawn_opt(fun() -> queue_start(Kernel, Listen) end, [link, {priority, max}]),
    %% Called here, in net_kernel, because the stock loop sends {accept, ...} to its caller.
    TlsLoop = stock_tls_accept(Queue),
    Queue ! {tls_loop, TlsLoop},
    Queue;
accept(?QUEUE(Queue)) ->
    take(Queue).

accept(?INET_QUEUE(Queue), _Timeout) ->
    take(Queue).

stock_tls_accept(Queue) ->
    _ = code:ensure_loaded(inet_tls_dist),
    case erlang:function_exported(inet_tls_dist, gen_accept, 2) of
        true -> inet_tls_dist:gen_accept(?MODULE, ?QUEUE(Queue));
        false -> inet_tls_dist:fam_accept(inet, ?INET_QUEUE(Queue))
    end.

%% The next TLS-classified socket, owned by the caller (a stock handshake process):
%% {ok, Socket} | {error, closed}. The queue names a waiting classifier, which hands its socket
%% over. A classifier that gave up (connecttime passed, peer gone) just then goes down instead:
%% ask for the next one.
take(Queue) ->
    MRef = erlang:monitor(process, Queue),
    take(Queue, MRef).

take(Queue, MRef) ->
    Queue ! {take, self(), MRef},
    receive
        {MRef, from, Classifier} ->
            CRef = erlang:monitor(process, Classifier),
            receive
                {MRef, Socket} ->
                    erlang:demonitor(CRef, [flush]),
                    erlang:demonitor(MRef, [flush]),
                    {ok, Socket};
                {'DOWN', CRef, process, _, _} ->
                    take(Queue, MRef)
            end;
        {'DOWN', MRef, process, _, _} ->
            %% The stock loop exits on this error, so a stale loop dies with its queue.
            {error, closed}
    end.

family() ->
    inet_tcp:family().

mask(Netmask, Ip) ->
    inet_tcp:mask(Netmask, Ip).

%% A port is a plain socket (kernel TLS is not supported, see above); a pid (OTP 25) or an
%% sslsocket record (OTP 27+) is what the stock TLS accept loop hands net_kernel.
accept_connection(AcceptPid, Socket, MyNode, Allowed, SetupTime) when is_port(Socket) ->
    plain_connection(inet_tcp_dist:accept_connection(AcceptPid, Socket, MyNode, Allowed, SetupTime));
accept_connection(AcceptPid, DistCtrl, MyNode, Allowed, SetupTime) ->
    inet_tls_dist:accept_connection(AcceptPid, DistCtrl, MyNode, Allowed, SetupTime).

setup(Node, Type, MyNode, LongOrShortNames, SetupTime) ->
    case dials_tls(Node) of
        true -> inet_tls_dist:setup(Node, Type, MyNode, LongOrShortNames, SetupTime);
        false -> plain_connection(inet_tcp_dist:setup(Node, Type, MyNode, LongOrShortNames, SetupTime))
    end.

%% ---------------------------------------------------------------------------------------------
%% Who speaks TLS. Kept in persistent_term (read on every dial and plain accept, written a few
%% times per roll); until distls first changes it, the boot arguments say.

info() ->
    #{sealed => sealed(), tls_peers => tls_peers(), dial_all_tls => dial_all_tls()}.

add_tls_peers(Nodes) when is_list(Nodes) ->
    true = lists:all(fun erlang:is_atom/1, Nodes),
    persistent_term:put(?PEERS, lists:usort(tls_peers() ++ Nodes)).

remove_tls_peers(Nodes) when is_list(Nodes) ->
    persistent_term:put(?PEERS, tls_peers() -- Nodes).

%% Plain connections are refused from now on; the plain handshakes under way and the plain links
%% this node has are closed (the links to nodes that run this module are TLS already).
seal() ->
    persistent_term:put(?SEALED, true),
    case whereis(?WATCHER) of
        undefined -> ok;
        Watcher -> Watcher ! close_plain
    end,
    {ok, Infos} = net_kernel:nodes_info(),
    _ = [erlang:disconnect_node(Node) || {Node, Info} <- Infos, transport(Info) =:= tcp],
    ok.

unseal() ->
    persistent_term:put(?SEALED, false).

sealed() ->
    persistent_term:get(?SEALED, false).

tls_peers() ->
    case persistent_term:get(?PEERS, undefined) of
        undefined -> element(2, boot_arguments());
        Peers -> Peers
    end.

dial_all_tls() ->
    element(1, boot_arguments()).

dials_tls(Node) ->
    sealed() orelse dial_all_tls() orelse lists:member(Node, tls_peers()).

transport(Info) ->
    case proplists:get_value(address, Info) of
        #net_address{protocol = Protocol} -> Protocol;
        _ -> unknown
    end.

%% {DialAllTls, TlsPeers} from every -distls_hybrid argument: `dial tcp|tls` (the last one
%% wins; missing means tcp) and `tls_peers Node...` (all of them).
boot_arguments() ->
    case init:get_argument(distls_hybrid) of
        error -> {false, []};
        {ok, Args} -> lists:foldl(fun boot_argument/2, {false, []}, Args)
    end.

boot_argument(["dial", "tcp"], {_, Peers}) -> {false, Peers};
boot_argument(["dial", "tls"], {_, Peers}) -> {true, Peers};
boot_argument(["tls_peers" | Names], {All, Peers}) ->
    {All, lists:usort(Peers ++ [list_to_atom(N) || N <- Names])};
boot_argument(Other, _) -> erlang:error({bad_argument, distls_hybrid, Other}).

%% A plain connection's handshake process is known to the watcher, which closes it at the seal.
plain_connection(Pid) ->
    case whereis(?WATCHER) of
        undefined -> ok;
        Watcher -> Watcher ! {plain, Pid}
    end,
    case sealed() of
        true -> exit(Pid, kill);  % sealed since it was classified
        false -> ok
    end,
    Pid.

%% The watcher: holds the plain connections' processes (until they end) and adds every visible
%% node that links over TLS to the TLS peers (the safety net for a node distls could not tell).
watcher_start() ->
    %% The watcher of an acceptor set that just went down may not be gone yet.
    case whereis(?WATCHER) of
        undefined -> ok;
        Old ->
            Ref = erlang:monitor(process, Old),
            receive {'DOWN', Ref, process, _, _} -> ok end
    end,
    register(?WATCHER, self()),
    ok = net_kernel:monitor_nodes(true),
    watcher_loop(#{}).

watcher_loop(Plain) ->
    receive
        {plain, Pid} ->
            watcher_loop(Plain#{erlang:monitor(process, Pid) => Pid});
        {'DOWN', Ref, process, _, _} ->
            watcher_loop(maps:remove(Ref, Plain));
        close_plain ->
            _ = [exit(Pid, kill) || Pid <- maps:values(Plain)],
            watcher_loop(Plain);
        {nodeup, Node} ->
            case net_kernel:node_info(Node) of
                {ok, Info} ->
                    case transport(Info) =:= tls andalso not lists:member(Node, tls_peers()) of
                        true -> add_tls_peers([Node]);
                        false -> ok
                    end;
                _ ->
                    ok
            end,
            watcher_loop(Plain);
        _ ->
            watcher_loop(Plain)
    end.

%% ---------------------------------------------------------------------------------------------
%% The acceptor: a FIFO of classifiers holding a TLS socket for a stock handshake process, and
%% of handshake processes waiting for a socket. The sockets stay with their classifiers (which
%% the raw loop counts against its cap, and which close them after connecttime), so a flood of
%% stalled TLS connections neither grows without bound nor outlives the setup time.

queue_start(Kernel, Listen) ->
    receive {tls_loop, TlsLoop} -> link(TlsLoop) end,
    Self = self(),
    _ = spawn_opt(fun() -> raw_accept_loop(Kernel, Listen, Self, max_pending(), {#{}, #{}}) end,
                  [link, {priority, max}]),
    _ = spawn_link(fun watcher_start/0),
    queue_loop(queue:new(), queue:new()).

queue_loop(Holders, Takers) ->
    case {queue:out(Holders), queue:out(Takers)} of
        {{{value, Holder}, Holders1}, {{value, {Pid, Ref}}, Takers1}} ->
            Pid ! {Ref, from, Holder},
            Holder ! {give, Pid, Ref},
            queue_loop(Holders1, Takers1);
        _ ->
            receive
                {tls_socket, Holder} ->
                    erlang:monitor(process, Holder),
                    queue_loop(queue:in(Holder, Holders), Takers);
                {take, Pid, Ref} ->
                    queue_loop(Holders, queue:in({Pid, Ref}, Takers));
                {'DOWN', _, process, Gone, _} ->
                    queue_loop(queue:delete(Gone, Holders), Takers)
            end
    end.

%% Connections waiting to be classified or taken by the stock TLS loop, at most: the listen
%% backlog, but not less than 1024, so that idle connections cannot easily hold the port shut
%% (each waits at most connecttime).
max_pending() ->
    LOpts = application:get_env(kernel, inet_dist_listen_options, []),
    max(1024, proplists:get_value(backlog, LOpts, 128)).

%% Connections from one source address waiting to be classified, at most: a sixteenth of the
%% total, so that one client (a scanner, a stuck peer) cannot fill the total and keep the nodes
%% from reaching a restarted node while plaintext is still accepted. Nodes connect once per peer;
%% a host's ctl and probe VMs are classified in milliseconds.
max_per_source(Max) ->
    max(8, Max div 16).

%% Accepts TCP connections and starts one classifier per connection, at most Max at a time and
%% max_per_source(Max) per source address (a classifier lives until the plain hand-over, until
%% the stock TLS loop takes its socket, or until connecttime passes). Live: {classifier pid =>
%% source, source => count}.
raw_accept_loop(Kernel, Listen, Queue, Max, {Pids, _} = Live) when map_size(Pids) >= Max ->
    receive {'DOWN', _, process, Pid, _} -> ok end,
    raw_accept_loop(Kernel, Listen, Queue, Max, forget(Pid, Live));
raw_accept_loop(Kernel, Listen, Queue, Max, Live0) ->
    case inet_tcp:accept(Listen) of
        {ok, Socket} ->
            {_, Counts} = Live = reap(Live0),
            Source = case inet:peername(Socket) of
                         {ok, {Address, _Port}} -> Address;
                         _ -> unknown
                     end,
            case maps:get(Source, Counts, 0) >= max_per_source(Max) of
                true ->
                    inet_tcp:close(Socket),
                    raw_accept_loop(Kernel, Listen, Queue, Max, Live);
                false ->
                    {Pid, _} = spawn_monitor(fun() ->
                                                     receive {go, Socket} -> classify(Kernel, Socket, Queue) end
                                             end),
                    case inet_tcp:controlling_process(Socket, Pid) of
                        ok -> Pid ! {go, Socket};
                        {error, _} -> inet_tcp:close(Socket), exit(Pid, kill)
                    end,
                    raw_accept_loop(Kernel, Listen, Queue, Max, remember(Pid, Source, Live))
            end;
        Error ->
            exit(Error)
    end.

remember(Pid, Source, {Pids, Counts}) ->
    {Pids#{Pid => Source}, Counts#{Source => maps:get(Source, Counts, 0) + 1}}.

forget(Pid, {Pids, Counts} = Live) ->
    case maps:take(Pid, Pids) of
        {Source, Pids1} ->
            case maps:get(Source, Counts) of
                1 -> {Pids1, maps:remove(Source, Counts)};
                N -> {Pids1, Counts#{Source := N - 1}}
            end;
        error ->
            Live
    end.

reap(Live) ->
    receive {'DOWN', _, process, Pid, _} -> reap(forget(Pid, Live)) after 0 -> Live end.

classify(Kernel, Socket, Queue) ->
    case first_packet(Socket) of
        tls ->
            %% Stock inet_tls_dist sets nodelay on its listen socket; ours is the plain one.
            _ = inet:setopts(Socket, [{nodelay, true}]),
            Queue ! {tls_socket, self()},
            receive
                {give, Taker, Ref} ->
                    case gen_tcp:controlling_process(Socket, Taker) of
                        ok -> Taker ! {Ref, Socket};
                        {error, _} -> gen_tcp:close(Socket)  % the taker asks for the next one
                    end
            after net_kernel:connecttime() ->
                gen_tcp:close(Socket)
            end;
        {plain, Name} ->
            case refuse_plain(Name) of
                false ->
                    plain_handover(Kernel, Socket);
                Why ->
                    logger:warning("distls_hybrid: refused a plain-TCP distribution connection from ~0p (~s)",
                                   [Name, Why]),
                    gen_tcp:close(Socket)
            end;
        {error, _} ->
            gen_tcp:close(Socket)  % silent peer (timeout), gone, or not a dist handshake
    end.

refuse_plain(Name) ->
    case sealed() of
        true -> "sealed: TLS only";
        false ->
            case lists:member(Name, [atom_to_binary(Peer, utf8) || Peer <- tls_peers()]) of
                true -> "it runs distls's hybrid module: links between such nodes are TLS";
                false -> false
            end
    end.

%% Reads the first bytes in raw mode, pushes them back into the driver's buffer and restores
%% the listener's packet mode ({packet,2}, what the plain dist handshake is read with). For TLS
%% two bytes (a 5-byte record header is sent at once); for plain the whole first packet: a
%% 2-byte length and the name message the dialer sends at once (its node name). Pushing back
%% a whole packet, not one byte: with a single byte, half a {packet,2} header, the driver's next
%% recv fails with emsgsize.
first_packet(Socket) ->
    Timeout = net_kernel:connecttime(),
    case inet:getopts(Socket, [packet]) of
        {ok, [{packet, Packet}]} ->
            Read = inet:setopts(Socket, [{packet, raw}]) =:= ok
                andalso gen_tcp:recv(Socket, 2, Timeout),
            case Read =/= false andalso Read of
                {ok, Head} ->
                    case first_packet(Socket, iolist_to_binary(Head), Timeout) of
                        {ok, Kind, Data} ->
                            case {gen_tcp:unrecv(Socket, Data),
                                  inet:setopts(Socket, [{packet, Packet}])} of
                                {ok, ok} -> Kind;
                                _ -> {error, closed}
                            end;
                        Error ->
                            Error
                    end;
                {error, _} = Error ->
                    Error;
                _ ->
                    {error, closed}
            end;
        Error ->
            Error
    end.

first_packet(_Socket, <<16#16, _>> = Head, _Timeout) ->
    {ok, tls, Head};
first_packet(Socket, <<Length:16>> = Head, Timeout) when Length > 0, Length =< 1024 ->
    case gen_tcp:recv(Socket, Length, Timeout) of
        {ok, Body} ->
            Message = iolist_to_binary(Body),
            {ok, {plain, dialer_name(Message)}, <<Head/binary, Message/binary>>};
        Error ->
            Error
    end;
first_packet(_Socket, _Head, _Timeout) ->
    {error, not_a_handshake}.

%% The node name in a plain handshake's first message (the ERTS distribution protocol's
%% send_name: 'N' since OTP 23, 'n' before).
dialer_name(<<$N, _Flags:64, _Creation:32, Length:16, Name:Length/binary, _/binary>>) -> Name;
dialer_name(<<$n, _Version:16, _Flags:32, Name/binary>>) -> Name;
dialer_name(_) -> <<>>.

%% The inet_tcp_dist accept-loop side of the hand-over to the process that net_kernel starts
%% through accept_connection/5, which waits for {AcceptPid, controller} with no timeout, so it
%% is always sent (as stock does); if the socket is gone, that handshake fails at once. The
%% socket is passive, so there are no tcp messages to forward to the new owner.
plain_handover(Kernel, Socket) ->
    KRef = erlang:monitor(process, Kernel),
    Kernel ! {accept, self(), Socket, inet, tls},
    receive
        {Kernel, controller, Pid} ->
            _ = inet_tcp:controlling_process(Socket, Pid),
            Pid ! {self(), controller};
        {Kernel, unsupported_protocol} ->
            inet_tcp:close(Socket);
        {'DOWN', KRef, process, _, _} ->
            inet_tcp:close(Socket)  % distribution stopped meanwhile
    end.
