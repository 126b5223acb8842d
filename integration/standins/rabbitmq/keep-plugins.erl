%% Prints the applications (space-separated) that the broker, its prelaunch and the enabled plugins
%% need, read from the .app files in the plugins folder given after -extra: the image keeps these only.
[Dir] = init:get_plain_arguments(),
Deps = fun(App) ->
    case filelib:wildcard(Dir ++ "/" ++ atom_to_list(App) ++ "-*/ebin/" ++ atom_to_list(App) ++ ".app") of
        [File | _] ->
            {ok, [{application, _, Props}]} = file:consult(File),
            lists:append([proplists:get_value(Key, Props, [])
                          || Key <- [applications, included_applications, optional_applications]]);
        [] -> []
    end
end,
{ok, [Enabled]} = file:consult("/etc/rabbitmq/enabled_plugins"),
Closure = fun Walk([], Seen) -> Seen;
              Walk([App | Rest], Seen) ->
                  case lists:member(App, Seen) of
                      true -> Walk(Rest, Seen);
                      false -> Walk(Deps(App) ++ Rest, [App | Seen])
                  end
          end,
Keep = lists:sort(Closure([rabbit, rabbitmq_prelaunch, rabbit_common | Enabled], [])),
io:format("~s~n", [lists:join(" ", [atom_to_list(A) || A <- Keep])]).
