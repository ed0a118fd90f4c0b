"""``/v1/models`` when one tenant's adapter storage misbehaves: a malformed
``adapter_config.json`` or storage that cannot be listed leaves out that
adapter or that model's adapters, never another model's; the listing never
writes the gateway's LoRA paths (a ``reconfigure`` during it stands), and the
blocking storage listing runs off the event loop.

Runs the gateway's real replica class in this process with stand-ins for the
model deployments' handles and for Ray's object-storage calls, as
test_gateway_lora.py does."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from servesync.rayserve import gateway
from servesync.rayserve.gateway import user_config
from servesync.rayserve.llmconfigs import gateway_routes
from tests.unit.rayserve.test_gateway_lora import Handle

A, B = "alice-202601061230-a", "bob-202601061230-b"
MEMBERS = [(A, "app-a"), (B, "app-b")]
ALICE, BOB, MOVED = "s3://adapters/alice/a", "s3://adapters/bob/b", "s3://adapters/alice/a2"
LORA = [(A, ALICE), (B, BOB)]


class Storage:
    """Ray's object storage as the gateway sees it: the adapter folders under
    each path, each folder's ``adapter_config.json`` text (Ray parses it),
    paths whose listing fails, and what was listed from which thread."""

    def __init__(self) -> None:
        self.folders: dict[str, list[str]] = {ALICE: ["greet", "broken"], BOB: ["hi"],
                                              MOVED: ["new"]}
        self.configs: dict[str, str] = {}  # folder uri -> adapter_config.json text
        self.unlistable: set[str] = set()
        self.listed: list[tuple[str, bool]] = []  # (uri, listed on the event loop's thread)
        self.on_list: Any = None  # called with the uri before each listing

    def subfolders(self, uri: str) -> list[str]:
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        self.listed.append((uri, on_loop))
        if self.on_list is not None:
            self.on_list(uri)
        if uri in self.unlistable:
            raise ImportError("boto3 and botocore are required for S3 operations")
        return list(self.folders.get(uri, []))

    async def config(self, object_uri: str) -> str:
        return self.configs.get(object_uri.removesuffix("/adapter_config.json"), "{}")


@pytest.fixture
def replica(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Storage]:
    pytest.importorskip("ray.serve.llm")
    from ray import serve
    from ray.llm._internal.common.utils import lora_utils
    from ray.llm._internal.serve.utils import lora_serve_utils

    calls: list[tuple[str, ...]] = []

    def get_handle(deployment: str, app_name: str, _check_exists: bool = True) -> Handle:
        return Handle(app_name, calls)

    storage = Storage()
    monkeypatch.setattr(serve, "get_deployment_handle", get_handle)
    monkeypatch.setattr(lora_utils.CloudFileSystem, "list_subfolders",
                        staticmethod(storage.subfolders))
    # Ray's own metadata reading (its JSON parse of adapter_config.json), storage faked
    monkeypatch.setattr(lora_serve_utils, "get_object_from_cloud", storage.config)
    wrapped = gateway.ingress_class()
    cls = next(c for c in wrapped.__mro__ if c.__module__ == gateway.__name__)
    instance = cls()
    instance.reconfigure(user_config(gateway_routes(MEMBERS, (), lora=LORA)))
    return instance, storage


def names(instance: Any) -> list[str]:
    return sorted(m.id for m in asyncio.run(instance.models()).data)


@pytest.mark.parametrize("config", ["{not json", "[1, 2]", '"text"'])
def test_a_malformed_adapter_config_hides_only_that_adapter(
        replica: tuple[Any, Storage], config: str) -> None:
    """Ray raises on it (ValueError from the JSON parse, AttributeError from
    ``.get`` on a list or a string), catching only a missing file's
    HTTPException: alice's broken folder must not hide bob's adapters, nor
    her own good one."""
    from ray.llm._internal.serve.core.configs.openai_api_models import OpenAIHTTPException

    instance, storage = replica
    storage.configs[f"{ALICE}/broken"] = config
    storage.configs[f"{ALICE}/greet"] = json.dumps({"max_length": 512})
    assert names(instance) == sorted([A, B, f"{A}:greet", f"{B}:hi"])
    assert asyncio.run(instance.model_data(f"{A}:greet")).metadata[
        "max_request_context_length"] == 512
    with pytest.raises(OpenAIHTTPException) as missing:  # GET /v1/models/<id>: a 404
        asyncio.run(instance.model_data(f"{A}:broken"))
    assert missing.value.status_code == 404


def test_storage_that_cannot_be_listed_hides_only_that_models_adapters(
        replica: tuple[Any, Storage]) -> None:
    instance, storage = replica
    storage.unlistable.add(ALICE)
    assert names(instance) == sorted([A, B, f"{B}:hi"])
    assert instance._lora_paths == {A: ALICE, B: BOB}  # kept: the next listing tries again
    storage.unlistable.clear()
    assert names(instance) == sorted([A, B, f"{A}:broken", f"{A}:greet", f"{B}:hi"])


def test_the_listing_never_writes_the_lora_paths(replica: tuple[Any, Storage]) -> None:
    """Only ``reconfigure`` sets the paths: a listing that swapped them out
    and back across an ``await`` (alice's storage failing) would undo a
    ``reconfigure`` made meanwhile and answer 404 for every adapter asked
    about meanwhile."""
    instance, storage = replica
    writes: list[Any] = []

    class Watched(type(instance)):  # type: ignore[misc]
        def __setattr__(self, name: str, value: Any) -> None:
            if name == "_lora_paths":
                writes.append(dict(value))
            super().__setattr__(name, value)

    instance.__class__ = Watched
    storage.unlistable.add(ALICE)
    listed = names(instance)
    assert writes == []
    assert listed == sorted([A, B, f"{B}:hi"])

    def reconfigure(uri: str) -> None:  # Serve's new routes, mid-listing
        if uri == ALICE and storage.on_list is not None:
            storage.on_list = None
            instance.reconfigure(user_config(gateway_routes(MEMBERS, (), lora=[(A, MOVED)])))

    storage.on_list = reconfigure
    asyncio.run(instance.models())
    assert writes == [{A: MOVED}] and instance._lora_paths == {A: MOVED}
    storage.unlistable.clear()
    assert names(instance) == sorted([A, B, f"{A}:new"])


def test_the_storage_is_listed_off_the_event_loop(replica: tuple[Any, Storage]) -> None:
    """boto3 blocks: listing on the event loop's thread would stall every
    request the gateway replica holds."""
    instance, storage = replica
    assert names(instance) == sorted([A, B, f"{A}:broken", f"{A}:greet", f"{B}:hi"])
    assert storage.listed == [(ALICE, False), (BOB, False)]
    assert threading.current_thread() is threading.main_thread()  # the loop ran here
