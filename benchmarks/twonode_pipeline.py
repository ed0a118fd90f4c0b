"""What vLLM's CPU build does with a pipeline-parallel model on two Ray nodes.

Issue 10 asks for a model whose placement spans two nodes and that answers.
The e2e test (``tests/e2e/test_daemon_e2e.py::
test_a_pipeline_parallel_model_is_placed_across_two_nodes``) proves what
works here: the replica's two bundles on two nodes (Ray's placement-group
table) and a chat completion through the gateway, with both pipeline stages
running on the head node. This script prints the part that does not work,
on a real two-node cluster, with the exact error:

1. the engine arguments Ray Serve LLM gives vLLM for servesync's ``pipeline: 2``
   CPU model (the LLMConfig built from a model file, as the daemon builds it):
   ``distributed_executor_backend`` is ``mp``, also when ``engine_kwargs``
   ask for ``ray`` (Ray Serve LLM sets it for every CPU model), so vLLM starts
   both stages as processes of the replica, on the replica's node;
2. vLLM's own Ray executor, asked for directly on the CPU build, from an
   actor in a placement group with one bundle on each node (STRICT_SPREAD):
   vLLM's error, as raised (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, so the
   engine runs in the actor and its exception reaches us, not only its log).

Usage: ``flock /tmp/servesync-ray.lock python benchmarks/twonode_pipeline.py``.
Starts a two-node cluster on this machine (``tests/e2e/processes.py``:
:class:`RayHead` with ``node_a: 1``, :class:`RayWorker` with ``node_b: 1``),
joins it as a driver, ends both nodes by their session pids. Writes only to
temp dirs. About a minute on 2 cores.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.e2e

from tests.e2e.processes import RayHead, RayWorker

from servesync import tinymodel
from servesync.config import Config, RayConfig, ServingConfig
from servesync.desired.validating import validate_tree
from servesync.rayserve import llmconfigs

REPLICA_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}  # as tests/e2e
MODEL_YAML = """\
model_id: pp
model_source: $HOME/common/hf/tiny
parallelism: {pipeline: 2}
engine_kwargs:
  max_model_len: 256
"""


def serve_llm_engine_kwargs(storage: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """vLLM's engine arguments as Ray Serve LLM builds them for the model file
    (``extra`` added to its ``engine_kwargs`` after servesync's validation)."""
    from ray.llm._internal.serve.engines.vllm.vllm_models import VLLMEngineConfig
    from ray.serve.llm import LLMConfig

    root = storage / "desired"
    (root / "users" / "alice").mkdir(parents=True, exist_ok=True)
    (root / "users" / "alice" / "pp.yaml").write_text(MODEL_YAML)
    config = Config(storage_root=str(storage), ray=RayConfig(address="local"),
                    serving=ServingConfig(accelerator_type="cpu", replica_env=REPLICA_ENV))
    state = validate_tree(root, config)
    if not state.ok:
        raise RuntimeError(f"the model file does not validate: {state}")
    (spec,) = state.specs
    kwargs = llmconfigs.llm_config_kwargs(spec, public_id="alice-pp", serving=config.serving)
    kwargs["engine_kwargs"].update(extra)
    engine = VLLMEngineConfig.from_llm_config(LLMConfig(**kwargs))
    out: dict[str, Any] = engine.get_initialization_kwargs()
    return out


def ray_executor_attempt(model: Path) -> tuple[list[str], dict[str, str]]:
    """vLLM's Ray executor with ``pipeline_parallel_size=2`` on the CPU build,
    from an actor in a placement group with one bundle on each node: (what
    happened, bundle index → node resource)."""
    import ray
    from ray.util.placement_group import placement_group, placement_group_table
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = placement_group([{"CPU": 1, "node_a": 0.01}, {"CPU": 1, "node_b": 0.01}],
                            strategy="STRICT_SPREAD")
    ray.get(group.ready(), timeout=120)
    names = {n["NodeID"]: next(r for r in ("node_a", "node_b") if r in n["Resources"])
             for n in ray.nodes() if n["Alive"]}
    table = placement_group_table(group)
    placed = {str(i): names[node] for i, node in table["bundles_to_node_id"].items()}

    @ray.remote(num_cpus=0)
    class Probe:
        def run(self, model: str) -> list[str]:
            import vllm

            try:
                llm = vllm.LLM(model=model, pipeline_parallel_size=2, max_model_len=256,
                               distributed_executor_backend="ray")
            except BaseException as e:  # the point: what vLLM raises, whatever it is
                lines: list[str] = []
                cause: BaseException | None = e
                while cause is not None:
                    lines += traceback.format_exception_only(cause)
                    frames = traceback.extract_tb(cause.__traceback__)
                    if frames:  # where it was raised, from the package on
                        where = frames[-1].filename.split("site-packages/")[-1]
                        lines.append(f"  raised at {where}:{frames[-1].lineno} "
                                     f"in {frames[-1].name}")
                    cause = cause.__cause__ or cause.__context__
                return [line.rstrip() for line in lines]
            out = llm.generate("Hello", vllm.SamplingParams(max_tokens=8))
            return [f"answered: {out[0].outputs[0].text!r}"]

    probe = Probe.options(  # type: ignore[attr-defined]
        scheduling_strategy=PlacementGroupSchedulingStrategy(
            group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True),
        runtime_env={"env_vars": {**REPLICA_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}},
    ).remote()
    result: list[str] = ray.get(probe.run.remote(str(model)), timeout=600)
    return result, placed


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="twonode-"))
    model = tinymodel.generate(work / "private" / "hf" / "tiny")
    head = RayHead(num_cpus=4, resources={"node_a": 1})
    second = RayWorker(head, num_cpus=4, resources={"node_b": 1})
    try:
        print(f"== two nodes: head {head.start():.1f} s, second node {second.start():.1f} s")
        os.environ.update(head.driver_env())  # before Ray is imported: it reads them once
        print("== 1. Ray Serve LLM's engine arguments for `parallelism: {pipeline: 2}` (CPU)")
        for extra in ({}, {"distributed_executor_backend": "ray"}):
            kwargs = serve_llm_engine_kwargs(work / "private", extra)
            print(f"   engine_kwargs + {extra}: distributed_executor_backend="
                  f"{kwargs['distributed_executor_backend']!r}, "
                  f"pipeline_parallel_size={kwargs['pipeline_parallel_size']}")
        import ray

        ray.init(address=head.address, logging_level="WARNING")
        print("== 2. vLLM's Ray executor, pipeline_parallel_size=2, CPU build")
        started = time.monotonic()
        result, placed = ray_executor_attempt(model)
        print(f"   placement group bundles: {placed}")
        print(f"   after {time.monotonic() - started:.1f} s:")
        for line in result:
            print(f"   {line}")
        ray.shutdown()
    finally:
        left = second.stop() + head.stop()
        if left:
            print(f"processes that survived SIGKILL: {left}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
