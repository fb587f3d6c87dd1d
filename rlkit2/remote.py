"""Remote rollout workers (``--workers N``): more envs than one process can step, feeding one learner.

A ``Worker`` is a plain class that owns a share of the training envs (built with ``envs.make``) and an *acting copy*
of the agent: the same agent class, built from the same config on the CPU, whose networks the learner overwrites
before each piece of work. With ``--worker_mode ray`` each worker is a Ray actor; with ``local`` the same objects
run in the learner's process (tests, debugging), and give bit-identical results: a worker's random stream is seeded
from (seed, worker index, request number) and kept apart from the learner's (``torch.random.fork_rng``).

On-policy (``RemoteCollector``, one iteration, synchronous)::

    learner: acting weights + normalizer state -> CPU -> one ray.put; every worker gets the same reference
    worker:  its own OnPolicyCollector (the in-process one, so truncation, final_obs bootstrapping and episode
             statistics are the same code) collects T steps of its k envs -> numpy arrays [T,k,...], its episode
             statistics and the moments of the observations it normalised
    learner: ray.get with a timeout -> arrays concatenated along the env axis -> the Rollout the update reads;
             each worker's moments merged into the learner's normalizer (Chan et al.)

Off-policy (``ReplayFeeder``, asynchronous): each actor steps its envs with the newest weights it was sent and
returns chunks of transitions that the learner writes into its replay buffer (the actor's columns). At most
``in_flight`` requests per actor are outstanding, and a new one is only sent once the learner has made the updates
its last chunk owes, which holds the replay ratio. Weights go out every ``sync_every`` updates; the policy lag
(learner updates since the weights a chunk was collected with) is logged. ``synchronous=True`` collects one chunk
from every actor per round, in worker order: deterministic, for tests.

Agents opt in (``AgentSpec.remote_workers``) and provide ``acting_modules()``: the modules an acting copy needs,
by name. The learner's ``ctx.env`` is then a ``WorkerGroup``: the spaces and env count the agent is built from,
and the owner of the workers (closing it ends them). An agent's collector is ``make_on_policy_collector(env, ...)``,
which is the in-process ``OnPolicyCollector`` whenever ``env`` is an ordinary VecEnv.

Failures: a worker whose env raises, whose process dies or that does not answer within ``timeout`` seconds raises
``WorkerError`` naming it; the run loop saves a resumable checkpoint and stops (rlkit2/run.py).
Workers never touch CUDA: they act on the CPU, and the learner moves the acting weights to the CPU before the put.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

import envs
from rlkit2.collector import EpisodeStats, OnPolicyCollector, Rollout, final_next_obs
from rlkit2.device import cpu_count, set_threads
from rlkit2.normalizers import RunningMeanStd, moments_since

WORKER_DEVICE = torch.device("cpu")  # acting copies live here whatever the learner's device
START_TIMEOUT = 120.0  # seconds a worker may take to start (its process, imports, envs), whatever worker_timeout is


class WorkerError(RuntimeError):
    """A remote worker failed (its env raised, its process died, or it did not answer in time)."""

    def __init__(self, index: int, count: int, what: str):
        self.index, self.count = index, count
        self.what = " ".join(what.split())  # one line
        super().__init__(f"rollout worker {index} of {count} failed: {self.what}")


# ------------------------------------------------------------------------------------------ acting weights
def acting_state(modules: dict[str, nn.Module]) -> dict[str, dict[str, Any]]:
    """CPU snapshots of the modules' state (numpy where it has the dtype, so Ray moves it without a copy): what a
    worker loads. A copy even on the CPU, so a broadcast in flight never sees the learner's next update."""
    out: dict[str, dict[str, Any]] = {}
    for name, module in modules.items():
        out[name] = {}
        for key, tensor in module.state_dict().items():
            cpu = tensor.detach().to("cpu", copy=True)
            out[name][key] = cpu.numpy() if cpu.dtype != torch.bfloat16 else cpu
    return out


def check_cpu_only(state: dict[str, dict[str, Any]]) -> None:
    """A worker's guard: acting weights arrive as host arrays; a device tensor means the learner skipped
    ``acting_state`` and the worker would initialise CUDA."""
    for name, entries in state.items():
        for key, value in entries.items():
            if isinstance(value, Tensor) and value.device.type != "cpu":
                raise ValueError(f"acting weight '{name}.{key}' is on {value.device}; workers act on the CPU only "
                                 "(send rlkit2.remote.acting_state(...), which copies to the CPU)")


def load_acting_state(modules: dict[str, nn.Module], state: dict[str, dict[str, Any]]) -> None:
    check_cpu_only(state)
    for name, module in modules.items():
        module.load_state_dict({k: torch.as_tensor(np.array(v)) if isinstance(v, np.ndarray) else v
                                for k, v in state[name].items()})


def running_stats(modules: dict[str, nn.Module]) -> dict[str, RunningMeanStd]:
    """Every running mean/std inside the acting modules, by a stable name."""
    return {f"{name}.{sub}": m for name, module in modules.items() for sub, m in module.named_modules()
            if isinstance(m, RunningMeanStd)}


def request_seed(seed: int, worker: int, request: int) -> int:
    """A worker's random stream for one request: (run seed, worker index, request number)."""
    return int(np.random.SeedSequence([seed, worker, request]).generate_state(1)[0])


def env_shares(num_envs: int, workers: int) -> list[int]:
    """How many of the ``num_envs`` envs each worker owns (the first ones take the remainder)."""
    return [num_envs // workers + (i < num_envs % workers) for i in range(workers)]


# -------------------------------------------------------------------------------------------------- worker
@dataclass
class WorkerSpec:
    """What a worker builds its envs and acting copy from (picklable: it travels to Ray actors)."""

    agent: str
    agent_config: Any
    env: Any  # a registered id, 'module:Class', or a picklable callable
    make_kwargs: dict = field(default_factory=dict)  # envs.make keyword arguments (backend, atari, limits, kwargs)
    threads: int = 1  # torch intra-op threads while acting
    total_steps: int = 1


class Worker:
    """Envs ``offset .. offset + num_envs - 1`` of the run (seeded ``seed + offset + i``, as in-process) and an acting
    copy of the agent on the CPU."""

    def __init__(self, spec: WorkerSpec, index: int, offset: int, num_envs: int, seed: int, in_ray: bool = False):
        from rlkit2.agent import BuildContext, get_agent_spec

        if in_ray:  # Ctrl-C is for the learner, which saves a checkpoint and then ends the workers
            import signal

            with contextlib.suppress(ValueError):  # not the main thread: nothing to do
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.spec, self.index, self.seed = spec, index, seed
        self.env = envs.make(spec.env, num_envs, seed=seed + offset, **spec.make_kwargs)
        ctx = BuildContext(env=self.env, device=WORKER_DEVICE, total_steps=spec.total_steps, seed=seed + offset,
                           threads_collect=spec.threads, threads_update=spec.threads, training=False)
        with _rng_kept():  # the networks' initialisation draws from torch's RNG: the learner's, in local mode
            self.agent = get_agent_spec(spec.agent).build(spec.agent_config, ctx)
        # the agent whose collector steps the envs: the agent itself, or the RL agent inside a wrapper (pref)
        self.collecting = getattr(self.agent, "rollout_agent", self.agent)
        self.modules = self.agent.acting_modules()
        for module in self.modules.values():
            module.eval()
        self.normalizers = running_stats(self.modules)
        self.version = -1  # of the acting weights loaded
        self.episodes = EpisodeStats()
        self.obs: np.ndarray | None = None  # off-policy: the current observations
        self.reset(seed, offset)

    def ready(self) -> dict:
        return {"pid": os.getpid(), "observation_space": self.env.single_observation_space,
                "action_space": self.env.single_action_space}

    def reset(self, seed: int, offset: int) -> None:
        """A seeded reset of this worker's envs (env i: seed + offset + i, as in-process)."""
        self.seed = seed
        if hasattr(self.collecting, "collector"):  # on-policy: the agent's own collector steps the envs
            self.collecting.collector.reset(seed=seed + offset)
        else:
            self.obs, _ = self.env.reset(seed=seed + offset)

    def _load(self, version: int, box: list) -> None:
        if version != self.version:
            state = box[0]
            if not isinstance(state, dict):  # a Ray object reference, fetched only when the version is new
                import ray

                state = ray.get(state)
            load_acting_state(self.modules, state)
            self.version = version

    @contextlib.contextmanager
    def _own_stream(self, request: int):
        """This request's random stream and thread count, leaving the caller's (the learner's, in local mode) as
        they were."""
        threads = torch.get_num_threads()
        with _rng_kept():
            torch.manual_seed(request_seed(self.seed, self.index, request))
            set_threads(self.spec.threads)
            try:
                yield
            finally:
                set_threads(threads)

    def collect(self, version: int, box: list, request: int) -> dict:
        """One on-policy rollout of this worker's envs with the given weights, as numpy arrays."""
        self._load(version, box)
        before = {key: rms.moments() for key, rms in self.normalizers.items()}
        start = time.perf_counter()
        collector = self.collecting.collector
        with self._own_stream(request):
            rollout = collector.collect(self.collecting)
        seconds = time.perf_counter() - start
        out = _rollout_arrays(rollout)
        out["episodes"] = collector.episodes.pop()
        out["moments"] = {key: moments_since(rms.moments(), before[key]) for key, rms in self.normalizers.items()}
        out["timing"] = {**collector.pop_timing(), "collect": seconds}
        out["version"] = self.version
        # what a wrapping agent keeps in the learner from this rollout (pref: the steps for its segment pool)
        out["payload"] = self.agent.worker_payload() if hasattr(self.agent, "worker_payload") else None
        return out

    def call(self, version: int, box: list, request: int, method: str, *args: Any) -> Any:
        """Run the acting copy's ``method(*args)`` with the given weights in this request's random stream: work an
        agent does on its workers besides rollouts (pref: the initial policy's warm-up steps)."""
        self._load(version, box)
        with self._own_stream(request):
            return getattr(self.agent, method)(*args)

    def collect_chunk(self, version: int, box: list, steps: int, warmup: bool, request: int) -> dict:
        """``steps`` env steps of off-policy acting (``agent.explore``): transitions [T,k,...] for the replay."""
        self._load(version, box)
        agent, env, k = self.agent, self.env, self.env.num_envs
        obs = np.zeros((steps, *self.obs.shape), self.obs.dtype)
        next_obs = np.zeros_like(obs)
        actions = rewards = None
        terminated, truncated = np.zeros((steps, k), bool), np.zeros((steps, k), bool)
        start, env_time = time.perf_counter(), 0.0
        with self._own_stream(request), torch.inference_mode():
            for t in range(steps):
                action = agent.explore(torch.as_tensor(self.obs, dtype=torch.float32), warmup)
                env_action = agent.to_env_action(action).numpy()
                started = time.perf_counter()
                nxt, reward, terminated[t], truncated[t], info = env.step(env_action)
                env_time += time.perf_counter() - started
                self.episodes.record(info)
                if actions is None:
                    actions = np.zeros((steps, *action.shape), np.float32)
                    rewards = np.zeros((steps, k), np.float32)
                obs[t], actions[t], rewards[t] = self.obs, action.numpy(), reward
                next_obs[t] = final_next_obs(nxt, terminated[t] | truncated[t], info)
                self.obs = nxt
        return {"obs": obs, "actions": actions, "rewards": rewards, "terminated": terminated,
                "truncated": truncated, "next_obs": next_obs, "episodes": self.episodes.pop(),
                "timing": {"collect": time.perf_counter() - start, "env": env_time}, "version": self.version}

    def close(self) -> None:
        self.env.close()


@contextlib.contextmanager
def _rng_kept():
    """Whatever runs inside leaves torch's and numpy's global random streams as it found them."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            np.random.set_state(state)


def _rollout_arrays(rollout: Rollout) -> dict:
    def np_(t: Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    return {
        "obs": np_(rollout.obs), "actions": np_(rollout.actions), "logprobs": np_(rollout.logprobs),
        "values": np_(rollout.values), "rewards": np_(rollout.rewards), "terminated": np_(rollout.terminated),
        "truncated": np_(rollout.truncated), "final_values": np_(rollout.final_values),
        "last_obs": np_(rollout.last_obs), "last_value": np_(rollout.last_value),
        "extras": {k: np_(v) for k, v in rollout.extras.items()}, "infos": dict(rollout.infos),
        "truncated_final_obs": [(t, np_(idx), np_(obs)) for t, idx, obs in rollout.truncated_final_obs],
    }


# ------------------------------------------------------------------------------------- the learner's side
class _Done:
    """A local worker's answer (or exception), in the place of a Ray object reference."""

    def __init__(self, call: Callable[[], Any]):
        self.error: BaseException | None = None
        try:
            self.value = call()
        except Exception as e:  # noqa: BLE001 -- handed to the learner as a WorkerError naming the worker
            self.error = e


class WorkerGroup:
    """The learner's view of the training envs when workers step them: spaces and the total env count (what an
    agent is built from), and the workers themselves, started by ``start(seed)`` and ended by ``close()``."""

    def __init__(self, spec: WorkerSpec, probe: envs.VecEnv, num_envs: int, workers: int, mode: str = "ray",
                 timeout: float = 300.0, cpus: float = 1.0):
        if mode not in ("ray", "local"):
            raise ValueError(f"worker mode must be 'ray' or 'local', got {mode!r}")
        self.spec, self.count, self.mode, self.timeout, self.cpus = spec, workers, mode, timeout, cpus
        self.name = probe.name
        self.num_envs = num_envs
        self.single_observation_space = probe.single_observation_space
        self.single_action_space = probe.single_action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.settings = {**probe.settings, "num_envs": num_envs, "workers": workers, "worker_mode": mode}
        self.backend_name = probe.backend_name
        self.shares = env_shares(num_envs, workers)
        self.offsets = [sum(self.shares[:i]) for i in range(workers)]
        self.workers: list = []
        self.pids: list[int] = []  # the workers' processes
        probe.close()

    # -- life cycle
    def start(self, seed: int) -> None:
        """Build the workers (or reset their envs with ``seed`` when they run already)."""
        if self.workers:
            self.gather([self.submit(i, "reset", seed, self.offsets[i]) for i in range(self.count)], "reset")
            return
        if self.mode == "local":
            self.workers = [None] * self.count
            for i in range(self.count):
                done = _Done(lambda i=i: Worker(self.spec, i, self.offsets[i], self.shares[i], seed))
                if done.error is not None:
                    raise WorkerError(i, self.count, _describe(done.error)) from done.error
                self.workers[i] = done.value
        else:
            from rlkit2.ray_local import init_ray

            # a local Ray gets at least a CPU per worker: a worker short of one would wait forever to start
            init_ray(num_cpus=max(cpu_count(), int(np.ceil(self.cpus * self.count))),
                     instead="--worker_mode local (the same workers in this process)")
            import ray

            actor = ray.remote(num_cpus=self.cpus, num_gpus=0, max_restarts=0)(Worker)
            self.workers = [actor.remote(self.spec, i, self.offsets[i], self.shares[i], seed, True)
                            for i in range(self.count)]
        # starting a worker process (imports, envs) may take longer than a request: at least START_TIMEOUT
        answers = self.gather([self.submit(i, "ready") for i in range(self.count)], "start",
                              max(self.timeout, START_TIMEOUT))
        self.pids = [a["pid"] for a in answers]
        for i, answer in enumerate(answers):
            if answer["observation_space"] != self.single_observation_space:
                raise WorkerError(i, self.count, f"its env has observations {answer['observation_space']}, the "
                                                 f"learner's {self.single_observation_space}")

    def close(self) -> None:
        workers, self.workers = self.workers, []
        if self.mode == "local":
            for worker in workers:
                if worker is not None:
                    worker.close()
            return
        if workers:
            import ray

            for worker in workers:
                with contextlib.suppress(Exception):  # already dead
                    ray.kill(worker)

    def reset(self, *args, **kwargs):
        raise RuntimeError("the training envs run in remote workers (--workers); the learner does not step them")

    step = reset

    # -- requests
    def put(self, state: dict) -> list:
        """One object-store put for every worker (local: the dict itself), boxed so that Ray passes the reference
        through and a worker fetches it only when the version is new to it."""
        if self.mode == "local":
            return [state]
        import ray

        return [ray.put(state)]

    def submit(self, index: int, method: str, *args: Any):
        if self.mode == "local":
            return _Done(lambda: getattr(self.workers[index], method)(*args))
        return getattr(self.workers[index], method).remote(*args)

    def gather(self, handles: list, what: str, timeout: float | None = None) -> list:
        """Every worker's answer, in worker order; the first failure (or a worker silent for ``timeout`` s, default
        the group's) raises a WorkerError naming that worker."""
        timeout = self.timeout if timeout is None else timeout
        if self.mode == "local":
            for i, done in enumerate(handles):
                if done.error is not None:
                    raise WorkerError(i, self.count, _describe(done.error)) from done.error
            return [done.value for done in handles]
        import ray

        index = {ref: i for i, ref in enumerate(handles)}
        pending, results = list(handles), [None] * len(handles)
        deadline = time.monotonic() + timeout
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                late = sorted(index[ref] for ref in pending)
                raise WorkerError(late[0], self.count, f"no answer to '{what}' within {timeout:g} s (worker_timeout); "
                                  f"workers still silent: {late}")
            for ref in ready:
                results[index[ref]] = self.result(ref, index[ref])
        return results

    def wait_any(self, handles: list, workers: list[int]) -> int:
        """The position in ``handles`` (requests to ``workers``, oldest first) of one finished request (local: the
        oldest); a WorkerError naming the worker of the oldest request when none answers within ``timeout``."""
        if self.mode == "local":
            return 0
        import ray

        ready, _ = ray.wait(handles, num_returns=1, timeout=self.timeout)
        if not ready:
            raise WorkerError(workers[0], self.count, f"no answer to 'collect_chunk' within {self.timeout:g} s "
                                                      f"(worker_timeout); workers still silent: {sorted(set(workers))}")
        return handles.index(ready[0])

    def result(self, handle, index: int):
        if self.mode == "local":
            if handle.error is not None:
                raise WorkerError(index, self.count, _describe(handle.error)) from handle.error
            return handle.value
        import ray

        try:
            return ray.get(handle, timeout=self.timeout)
        except ray.exceptions.RayTaskError as e:  # the worker's own exception (its env raised ...)
            cause = e.cause if getattr(e, "cause", None) is not None else e
            raise WorkerError(index, self.count, _describe(cause)) from None
        except ray.exceptions.GetTimeoutError:
            raise WorkerError(index, self.count, f"no answer within {self.timeout:g} s (worker_timeout)") from None
        except ray.exceptions.RayActorError as e:
            lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [""]
            if "creation task" in lines[0]:  # its __init__ raised: the message ends with the worker's exception
                raise WorkerError(index, self.count, f"could not start: {lines[-1]}") from None
            raise WorkerError(index, self.count, f"its process died ({type(e).__name__}: {lines[0]})") from None


def _describe(error: BaseException) -> str:
    """The worker's exception in one line; the env layer's own errors already name the env, step and cause."""
    from envs import EnvCheckError

    text = str(error).splitlines()[0][:600] if str(error) else ""
    return text if isinstance(error, EnvCheckError) else f"{type(error).__name__}: {text[:400]}"


# --------------------------------------------------------------------------------------------- on-policy
def make_on_policy_collector(env, num_steps: int, device: torch.device, bootstrap_truncation: bool = True,
                             info_keys: tuple[str, ...] = ()):
    """The in-process ``OnPolicyCollector`` for an ordinary VecEnv; a ``RemoteCollector`` for a ``WorkerGroup``."""
    if isinstance(env, WorkerGroup):
        return RemoteCollector(env, num_steps, device)
    return OnPolicyCollector(env, num_steps, device, bootstrap_truncation=bootstrap_truncation, info_keys=info_keys)


class RemoteCollector:
    """``OnPolicyCollector``'s interface over a ``WorkerGroup``: each ``collect`` broadcasts the acting weights once,
    gathers every worker's rollout and returns one Rollout [T, N, ...] (envs in worker order) on the learner's
    device. The workers' own collectors apply the agent's truncation and info-key settings."""

    final_values = staticmethod(OnPolicyCollector.final_values)

    def __init__(self, group: WorkerGroup, num_steps: int, device: torch.device):
        self.group, self.num_steps, self.device = group, num_steps, device
        self.env = group
        self.episodes = EpisodeStats()
        self.requests = 0
        self._seed = 0
        self._timing = {"wait": 0.0, "broadcast": 0.0}
        self._stats: dict[str, float] = {}
        self._pin = device.type == "cuda"
        # modules a wrapping agent adds to every broadcast (pref: its reward model, which rewards on the workers)
        self.extra_modules: dict[str, nn.Module] = {}
        self._payloads: list = []  # the workers' payloads of the last rollout (Worker.collect), in worker order

    def reset(self, seed: int | None = None) -> None:
        self._seed = self._seed if seed is None else seed
        self.group.start(self._seed)

    def _broadcast(self, modules: dict[str, nn.Module]) -> tuple[int, int, list]:
        """Put the acting weights once: (version, request number, box)."""
        box = self.group.put(acting_state(modules))
        version = request = self.requests
        self.requests += 1
        return version, request, box

    def call(self, policy, method: str, *args: Any) -> list:
        """Every worker's ``acting copy.method(*args)`` with the current weights, in worker order."""
        if not self.group.workers:
            self.reset()
        version, request, box = self._broadcast({**policy.acting_modules(), **self.extra_modules})
        return self.group.gather([self.group.submit(i, "call", version, box, request, method, *args)
                                  for i in range(self.group.count)], method)

    def take_payloads(self) -> list:
        """The workers' payloads of the last rollout (None for agents that send none), once."""
        out, self._payloads = self._payloads, []
        return out

    def _to_device(self, array: np.ndarray) -> Tensor:
        tensor = torch.from_numpy(array)
        if self._pin:
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def collect(self, policy) -> Rollout:
        if not self.group.workers:
            self.reset()
        modules = {**policy.acting_modules(), **self.extra_modules}
        start = time.perf_counter()
        version, request, box = self._broadcast(modules)
        broadcast = time.perf_counter() - start
        start = time.perf_counter()
        parts = self.group.gather([self.group.submit(i, "collect", version, box, request)
                                   for i in range(self.group.count)], "collect")
        wait = time.perf_counter() - start
        rollout = self._assemble(parts)
        self._payloads = [part["payload"] for part in parts]
        for key, rms in running_stats(modules).items():  # in worker order: Ray and local merge alike
            for part in parts:
                rms.merge(part["moments"][key])
        for part in parts:
            self.episodes.returns.extend(part["episodes"][0])
            self.episodes.lengths.extend(part["episodes"][1])
        self._timing["wait"] += wait
        self._timing["broadcast"] += broadcast
        self._stats = {"workers/wait_s": wait, "workers/broadcast_s": broadcast,
                       "workers/rollout_mb": sum(_nbytes(p) for p in parts) / 2 ** 20}
        for i, part in enumerate(parts):
            steps = part["rewards"].size
            self._stats[f"workers/steps_per_sec_w{i}"] = steps / max(part["timing"]["collect"], 1e-9)
        return rollout

    def _assemble(self, parts: list[dict]) -> Rollout:
        def cat_env_axis(arrays: list[np.ndarray], axis: int) -> Tensor:
            return self._to_device(np.concatenate(arrays, axis=axis))

        truncated_final_obs = []
        for part, offset in zip(parts, self.group.offsets):
            for t, idx, obs in part["truncated_final_obs"]:
                truncated_final_obs.append((t, self._to_device(idx + offset), self._to_device(np.array(obs))))
        truncated_final_obs.sort(key=lambda entry: entry[0])
        time_major = ("obs", "actions", "logprobs", "values", "rewards", "terminated", "truncated", "final_values")
        tensors = {k: cat_env_axis([p[k] for p in parts], 1) for k in time_major}
        return Rollout(
            **tensors,
            last_obs=cat_env_axis([p["last_obs"] for p in parts], 0),
            last_value=cat_env_axis([p["last_value"] for p in parts], 0),
            extras={k: cat_env_axis([p["extras"][k] for p in parts], 1) for k in parts[0]["extras"]},
            truncated_final_obs=truncated_final_obs,
            infos={k: np.concatenate([p["infos"][k] for p in parts], axis=1) for k in parts[0]["infos"]},
        )

    def pop_timing(self) -> dict[str, float]:
        out, self._timing = self._timing, {"wait": 0.0, "broadcast": 0.0}
        return out

    def pop_stats(self) -> dict[str, float]:
        out, self._stats = self._stats, {}
        return out


def _nbytes(tree) -> int:
    if isinstance(tree, np.ndarray):
        return tree.nbytes
    if isinstance(tree, dict):
        return sum(_nbytes(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(_nbytes(v) for v in tree)
    return 0


# -------------------------------------------------------------------------------------------- off-policy
@dataclass
class Chunk:
    """Transitions from one actor: [T, k, ...] arrays for the replay columns ``envs`` of the learner's buffer."""

    worker: int
    envs: slice
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    next_obs: np.ndarray
    version: int  # the learner's update count when the acting weights were sent
    episodes: tuple[list, list]
    seconds: float

    @property
    def steps(self) -> int:
        return self.rewards.size


class ReplayFeeder:
    """Actors that fill an off-policy learner's replay (see the module docstring). The agent asks for chunks with
    ``next_chunks`` and reports its updates with ``updated``; weights are pushed every ``sync_every`` updates."""

    def __init__(self, group: WorkerGroup, chunk_steps: int, in_flight: int = 2, sync_every: int = 100,
                 synchronous: bool = False):
        self.group, self.chunk_steps, self.sync_every = group, chunk_steps, sync_every
        self.in_flight = 1 if synchronous else in_flight
        self.synchronous = synchronous
        self.pending: list[tuple[Any, int, int]] = []  # (handle, worker, steps) in the order sent
        self.requests = 0
        self.box: list | None = None
        self.version = -1  # learner updates when the newest weights were put
        self._lags: list[int] = []
        self._timing = {"wait": 0.0, "broadcast": 0.0}
        self._worker_time = np.zeros(group.count)
        self._worker_steps = np.zeros(group.count)

    def start(self, seed: int) -> None:
        self.group.start(seed)

    def steps_in_flight(self) -> int:
        return sum(steps for _, _, steps in self.pending)

    def push_weights(self, modules: dict[str, nn.Module], updates: int) -> None:
        start = time.perf_counter()
        self.box = self.group.put(acting_state(modules))
        self.version = updates
        self._timing["broadcast"] += time.perf_counter() - start

    def updated(self, modules: dict[str, nn.Module], updates: int) -> None:
        """After the learner's updates: new weights once ``sync_every`` updates have passed since the last push."""
        if updates - self.version >= self.sync_every:
            self.push_weights(modules, updates)

    def _send(self, worker: int, warmup: bool) -> None:
        steps = self.chunk_steps * self.group.shares[worker]
        handle = self.group.submit(worker, "collect_chunk", self.version, self.box, self.chunk_steps, warmup,
                                   self.requests)
        self.requests += 1
        self.pending.append((handle, worker, steps))

    def next_chunks(self, modules: dict[str, nn.Module], updates: int, warmup: Callable[[int], bool]) -> list[Chunk]:
        """Chunks to add now: one from every actor in worker order (synchronous), else the first to arrive. Actors
        are topped up to ``in_flight`` requests first; ``warmup(steps_in_flight)`` says whether a new request acts at
        random (the learner counts the steps it has not received yet)."""
        if self.box is None:
            self.push_weights(modules, updates)
        for worker in range(self.group.count):
            while sum(1 for _, w, _ in self.pending if w == worker) < self.in_flight:
                self._send(worker, warmup(self.steps_in_flight()))
        start = time.perf_counter()
        if self.synchronous:
            taken, self.pending = self.pending, []
            answers = self.group.gather([h for h, _, _ in taken], "collect_chunk")
            chunks = [self._chunk(worker, a, updates) for (_, worker, _), a in zip(taken, answers)]
        else:
            position = self.group.wait_any([h for h, _, _ in self.pending], [w for _, w, _ in self.pending])
            handle, worker, _ = self.pending.pop(position)
            chunks = [self._chunk(worker, self.group.result(handle, worker), updates)]
        self._timing["wait"] += time.perf_counter() - start
        return chunks

    def _chunk(self, worker: int, answer: dict, updates: int) -> Chunk:
        offset, share = self.group.offsets[worker], self.group.shares[worker]
        self._lags.append(updates - answer["version"])
        self._worker_time[worker] += answer["timing"]["collect"]
        self._worker_steps[worker] += answer["rewards"].size
        arrays = [np.array(answer[k]) for k in ("obs", "actions", "rewards", "terminated", "truncated", "next_obs")]
        return Chunk(worker, slice(offset, offset + share), *arrays, answer["version"], answer["episodes"],
                     answer["timing"]["collect"])  # (writable copies: Ray's arrays are read-only)

    def pop_timing(self) -> dict[str, float]:
        out, self._timing = self._timing, {"wait": 0.0, "broadcast": 0.0}
        return out

    def pop_stats(self) -> dict[str, float]:
        stats: dict[str, float] = {}
        if self._lags:
            stats["workers/policy_lag_mean"] = float(np.mean(self._lags))
            stats["workers/policy_lag_max"] = float(np.max(self._lags))
        for i in range(self.group.count):
            if self._worker_time[i] > 0:
                stats[f"workers/steps_per_sec_w{i}"] = float(self._worker_steps[i] / self._worker_time[i])
        self._lags = []
        self._worker_time[:] = 0.0
        self._worker_steps[:] = 0.0
        return stats
