"""`python -m benchmarks`: what a run costs on the bundled example, side by side with pytest-docker.

A benchmark, not a test, and not part of the installed package (setuptools packages `integration*`
only): `nox -s bench` runs it from the repository root. It prints tables and writes every sample as JSON
(`compose/bench/<stamp>.json`, path printed; the folder ignores itself in git). Each figure is the
median of `--repeat` runs (default 3):

- the use-case tests from the command to the test summary (a whole `pytest --integration` process):
  with the images built from nothing, with the images cached (cold stack), and warm (reuse mode, no
  change); the same tests under pytest-docker in its usual setup for each of the three;
- the freshness check alone when nothing changed, timed in-process and as `python -m integration check`;
- `reset()` latency, p50 and p95 over `--resets` resets (default 200) of the running stack, with a few
  rows seeded into every table before each one; teardown; image builds from nothing and cached;
- a system of `--scale` services (default 6: copies of the example's two services) against the
  example's 2: build, up, reset and down;
- the second example, `examples/shop` (a service that calls another): its freshness check, cold and
  warm runs, up, reset and down (`--no-shop` skips it);

First come issue 14's tables (each measure beside its target, pytest-docker's figure from the same run),
then the cold start's critical path (which container waited for which, and how long). Every timed
process caches its bytecode in the work folder, as Python does on a developer's machine.
- `-n 0` against `-n 2` (pytest-xdist), shared stack and a stack per worker (`--only-workers`: that
  alone).

Everything runs on copies under the work folder (default `compose/bench/`) with `bench-` image tags,
`bench-` compose projects and their own port blocks, so that a benchmark never touches the example's
images or a stack someone else is running. "From nothing" builds a copy whose Dockerfiles set a fresh
`ENV BENCH_CACHE_BUST=<token>` right after `FROM`, which invalidates every cached layer after the base
image for both tools alike; the base images themselves are local and are not counted.

Modules, one job each:

- `__main__`: the command line; `bench`: one run (preparation, the order of the measurements, cleanup,
  output);
- `toolkit`: measuring the toolkit (its commands as processes, its in-process freshness check, builds,
  and a stack's up, resets and down); `timeline`: the container events of a cold up;
- `pytest_docker`: pytest-docker's side (its virtual environment, its conftest, its compose file);
- `comparison`: the whole test command, ours beside pytest-docker; `scaling`: 2 services against
  `--scale`; `workers`: `-n 0` against `-n 2`; `shop`: the second example;
- `systems`: the copies of the example; `cleanup`: removing projects and images (the Docker tests'
  helper, shared); `processes`: timing a whole command; `samples` and `report`: the figures, the tables,
  the JSON.

Files it copies rather than writes from strings: `pytest_docker_side/conftest.py` (pytest-docker's
conftest), `scaled_system/contract.py` (a copied service's contract module), `work-folder.gitignore`.

Docker is driven through python-on-whales (cleanup, the pre-build of pytest-docker's images, the
container events, the engine's versions) or by the toolkit in-process. What stays a subprocess is what
is measured as a whole process, because that is what a person or CI waits for: `pytest --integration`,
`python -m integration ...`, pytest-docker's `pytest` (which runs `docker compose` itself), and
`python -c pass` as the floor; besides those, only the making of pytest-docker's virtual environment
(`venv`, `pip`) and reading its version, which run in that other interpreter.
"""
