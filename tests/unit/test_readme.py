"""The README's examples stay true: its config loads, its model file validates."""

from __future__ import annotations

import re
from pathlib import Path

from servesync import config
from servesync.desired import validating

README = Path(__file__).resolve().parents[2] / "README.md"


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_config_example_loads(tmp_path: Path) -> None:
    (block,) = [b for b in yaml_blocks() if "state_dir:" in b]
    path = tmp_path / "servesync.yaml"
    path.write_text(block)
    cfg = config.load(path)
    assert cfg.serving.accelerator_type == "H20"
    assert cfg.source.git_url is not None and cfg.ray.address == "auto"


def test_readme_model_example_validates(desired_tree: Path, storage_root: Path) -> None:
    block = next(b for b in yaml_blocks() if "model_id:" in b)  # the first: the field table's
    (desired_tree / "users" / "alice" / "chat.yaml").write_text(block)
    cfg = config.Config(storage_root=str(storage_root))
    state = validating.validate_tree(desired_tree, cfg)
    assert state.ok, [i.render() for i in state.issues()]
    (spec,) = state.specs
    assert spec.suffix == "qwen-0.5b" and spec.num_replicas == 2
    assert spec.resolved_source == str(storage_root / "hf" / "Qwen2.5-0.5B-Instruct")


def test_readme_scheduled_stop_example_validates(desired_tree: Path,
                                                 storage_root: Path) -> None:
    (block,) = [b for b in yaml_blocks() if "schedule:" in b and "model_id:" in b]
    (storage_root / "hf" / "Qwen" / "Qwen2.5-7B-Instruct").mkdir(parents=True)
    (desired_tree / "users" / "alice" / "office.yaml").write_text(block)
    state = validating.validate_tree(desired_tree, config.Config(storage_root=str(storage_root)))
    assert state.ok, [i.render() for i in state.issues()]
    (spec,) = state.specs
    assert spec.schedule is not None and spec.schedule.stop_after_s == 36000
    assert spec.schedule.active_hours is not None
    assert spec.schedule.active_hours.timezone == "Asia/Shanghai"


def test_readme_lora_example_validates_under_its_config(
        desired_tree: Path, storage_root: Path, tmp_path: Path) -> None:
    """The LoRA section's operator config loads, and its model file validates under it."""
    (offer,) = [b for b in yaml_blocks() if "prefix:" in b and "state_dir:" not in b]
    (model,) = [b for b in yaml_blocks() if "model_id:" in b and "lora:" in b]
    path = tmp_path / "servesync.yaml"
    path.write_text(offer + "  accelerator_type: cpu\n")
    cfg = config.load(path)
    (desired_tree / "users" / "alice" / "tiny.yaml").write_text(model)
    cfg = config.Config(storage_root=str(storage_root), serving=cfg.serving)
    state = validating.validate_tree(desired_tree, cfg)
    assert state.ok, [i.render() for i in state.issues()]
    (spec,) = [s for s in state.specs if s.suffix == "tiny"]
    assert spec.lora is not None and spec.lora.path == "s3://adapters/alice/tiny"
    assert spec.lora.max_adapters_per_replica == 2


def test_readme_versions_example_validates(desired_tree: Path, storage_root: Path) -> None:
    (block,) = [b for b in yaml_blocks() if "versions:" in b]
    (desired_tree / "users" / "alice" / "llama.yaml").write_text(block)
    cfg = config.Config(storage_root=str(storage_root))
    state = validating.validate_tree(desired_tree, cfg)
    assert state.ok, [i.render() for i in state.issues()]
    stable, canary = state.specs
    assert (stable.version, stable.weight, stable.num_replicas) == ("stable", 90, 2)
    assert (canary.version, canary.weight, canary.num_replicas) == ("canary", 10, 1)
    assert stable.gpus_per_replica == canary.gpus_per_replica == 1


def test_readme_layout_lists_every_module_of_the_package() -> None:
    text = README.read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    listed: list[str] = []
    folder = ""
    for line in block.splitlines()[2:]:  # after "daemon/servesync/"
        if not line.startswith("  ") or not line.strip():
            break
        name = line.split()[0]
        if name.endswith("/"):
            folder = name
        elif line.startswith("    "):
            listed.append(folder + name)
        else:
            listed.append(name)
    package = README.parent / "daemon" / "servesync"
    modules = {str(p.relative_to(package)) for p in package.rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")}
    assert sorted(listed) == sorted(modules)  # each once


def test_readme_model_table_documents_every_field() -> None:
    """Every field of the model-file schema has its row in README's table."""
    from servesync import schemas

    table = README.read_text().split("## Writing a model file", 1)[1].split("Unknown fields", 1)[0]
    rows = set(re.findall(r"^\| `([a-z_]+)`", table, flags=re.M))
    fields = set(schemas.load("serving-model")["properties"]) - {"apiVersion", "kind"}
    assert fields <= rows, sorted(fields - rows)
