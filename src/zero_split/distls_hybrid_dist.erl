%% distls_hybrid_dist: a TRANSITIONAL Erlang distribution module for moving a live cluster from
%% plain-TCP distribution (inet_tcp) to TLS distribution (inet_tls) without a split.
%%
%% Its one listener (the single port registered in epmd) accepts BOTH plain-TCP and TLS
%% distribution connections, chosen per connection by the first byte the peer sends: 16#16 is a
%% TLS ClientHello record; a plain dist handshake starts with a 2-byte length, whose first byte is
%% 0 for any real handshake. It dials either plain TCP or TLS, as configured.
%%
%%   -pa DIR -proto_dist distls_hybrid -distls_hybrid dial tcp    (phase A; also the default)
%%   -pa DIR -proto_dist distls_hybrid -distls_hybrid dial tls    (phase B)
%% plus the usual TLS settings (-ssl_dist_opt ... or -ssl_dist_optfile F).
%%
%% Phases of a roll: A, every node accepts both and dials tcp (plain nodes can still reach
%% everyone); B, every node accepts both and dials tls (links become TLS as they reconnect);
%% C, every node runs stock -proto_dist inet_tls and this module is removed.
%%
%% SECURITY: while this module runs, PLAINTEXT connections are accepted from anyone who has
%% the cookie, exactly as under inet_tcp. Only TLS links get TLS security (the stock
%% inet_tls_dist accept path is reused, so verify_peer, fail_if_no_peer_cert, the
%% inet_tls_dist:verify_client/3 marker, check_ip and max pending handshakes all hold).
%%
%% IPv4 only (family inet): it delegates to inet_tcp_dist / inet_tls_dist, not their inet6 twins.
%%
%% How a connection is classified: its first two bytes are read and pushed back into the inet
%% driver's own buffer with gen_tcp:unrecv/2 (exported but undocumented, OTP 25), so the
%% delegate's handshake reads the stream from its start: the driver serves buffered bytes to the
%% next passive recv, and delivers them when the socket is made active (what ssl does). No peek
%% through a dup'd fd: that approach (socket NIF) made some TLS accepts stall.
-module(distls_hybrid_dist).

%% The distribution module API (net_kernel calls these).
-export([childspecs/0, listen/2, accept/1, accept_connection/5, setup/5, close/1,
         select/1, address/0, is_node_name/1]).
%% The "driver" API that inet_tls_dist:gen_accept/2 calls back: accept/1 (on a queue handle,
%% see below), family/0 and mask/2.
-export([family/0, mask/2]).

-include_lib("kernel/include/net_address.hrl").

%% Handle that inet_tls_dist:gen_accept/2 gets instead of a listen socket: its Driver:accept/1
%% calls come back to accept/1 with it, which then yields the next TLS-classified socket.
-define(QUEUE(Pid), {?MODULE, tls_queue, Pid}).

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
    _ = dial_mode(),  % a bad -distls_hybrid argument fails the node at boot, not at first dial
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
%% loop and the stock TLS accept loop, so if either crashes the acceptor goes down with it and
%% net_kernel starts a fresh set, instead of a node that silently stops accepting one protocol.
%%
%% inet_tls_dist:gen_accept/2 as driver: accept(QueueHandle) -> {ok, Socket} | {error, closed},
%% the next TLS-classified socket, owned by the caller (a stock handshake process).
accept(Listen) when is_port(Listen) ->
    Kernel = self(),
    Queue = spawn_opt(fun() -> queue_start(Kernel, Listen) end, [link, {priority, max}]),
    %% Called here, in net_kernel, because the stock loop sends {accept, ...} to its caller.
    TlsLoop = inet_tls_dist:gen_accept(?MODULE, ?QUEUE(Queue)),
    Queue ! {tls_loop, TlsLoop},
    Queue;
accept(?QUEUE(Queue)) ->
    MRef = erlang:monitor(process, Queue),
    take(Queue, MRef).

%% The queue names a waiting classifier, which hands its socket over. A classifier that gave up
%% (connecttime passed, peer gone) just then goes down instead: ask for the next one.
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

accept_connection(AcceptPid, Socket, MyNode, Allowed, SetupTime) when is_port(Socket) ->
    inet_tcp_dist:accept_connection(AcceptPid, Socket, MyNode, Allowed, SetupTime);
accept_connection(AcceptPid, DistCtrl, MyNode, Allowed, SetupTime) when is_pid(DistCtrl) ->
    inet_tls_dist:accept_connection(AcceptPid, DistCtrl, MyNode, Allowed, SetupTime).

setup(Node, Type, MyNode, LongOrShortNames, SetupTime) ->
    case dial_mode() of
        tls -> inet_tls_dist:setup(Node, Type, MyNode, LongOrShortNames, SetupTime);
        tcp -> inet_tcp_dist:setup(Node, Type, MyNode, LongOrShortNames, SetupTime)
    end.

%% -distls_hybrid dial tcp|tls (the last one given wins); missing means tcp.
dial_mode() ->
    case init:get_argument(distls_hybrid) of
        error -> tcp;
        {ok, Args} ->
            case lists:last(Args) of
                ["dial", "tcp"] -> tcp;
                ["dial", "tls"] -> tls;
                Other -> erlang:error({bad_argument, distls_hybrid, Other})
            end
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
    case first_byte(Socket) of
        {ok, 16#16} ->
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
        {ok, _} ->
            plain_handover(Kernel, Socket);
        {error, _} ->
            gen_tcp:close(Socket)  % silent peer (timeout), or gone
    end.

%% Reads the first TWO bytes in raw mode, pushes them back into the driver's buffer and restores
%% the listener's packet mode ({packet,2}, what the plain dist handshake is read with). Two, not
%% one: with a single pushed-back byte, half a {packet,2} header, the driver's next recv fails
%% with emsgsize (its buffer is exactly full and packet_size is 0). Both protocols send at least
%% two bytes at once (a 5-byte TLS record header; a 2-byte length and the dist name message).
first_byte(Socket) ->
    case inet:getopts(Socket, [packet]) of
        {ok, [{packet, Packet}]} ->
            case inet:setopts(Socket, [{packet, raw}]) =:= ok andalso
                gen_tcp:recv(Socket, 2, net_kernel:connecttime()) of
                {ok, Data} ->
                    case {gen_tcp:unrecv(Socket, Data),
                          inet:setopts(Socket, [{packet, Packet}])} of
                        {ok, ok} ->
                            <<Byte, _>> = iolist_to_binary(Data),
                            {ok, Byte};
                        _ ->
                            {error, closed}
                    end;
                false ->
                    {error, closed};
                Error ->
                    Error
            end;
        Error ->
            Error
    end.

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
