%% Prints, as one Erlang term, the modules of every application the broker loads at boot: rabbit, its
%% prelaunch, the enabled plugins and all that their .app files need, OTP's own applications included.
%% The boot loads all of them anyway (rabbit reads the attributes of every module of every loaded
%% application to find its feature flags and boot steps); integration_preload loads them in parallel.
{ok, [Enabled]} = file:consult("/etc/rabbitmq/enabled_plugins"),
Key = fun(App, Name) ->
    case application:get_key(App, Name) of
        {ok, Value} -> Value;
        undefined -> []
    end
end,
Deps = fun(App) ->
    case application:load(App) of
        ok -> ok;
        {error, {already_loaded, App}} -> ok;
        {error, Reason} -> erlang:error({cannot_load, App, Reason})
    end,
    Key(App, applications) ++ Key(App, included_applications) ++ Key(App, optional_applications)
end,
Loadable = fun(App) -> code:lib_dir(App) =/= {error, bad_name} end,
Closure = fun Walk([], Seen) -> Seen;
              Walk([App | Rest], Seen) ->
                  case lists:member(App, Seen) orelse not Loadable(App) of
                      true -> Walk(Rest, Seen);
                      false -> Walk(Deps(App) ++ Rest, [App | Seen])
                  end
          end,
Apps = Closure([rabbit, rabbitmq_prelaunch, rabbit_common | Enabled], []),
Modules = lists:usort(lists:append([Key(App, modules) || App <- Apps])),
io:format("~p.~n", [Modules]).
