"""Fixtures of the torch bridge tests (the toys themselves live in ``bridge_toys``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import torch.distributed as dist
from bridge_toys import RecapToyModel, shard_fused
from torch import nn


@pytest.fixture
def model() -> RecapToyModel:
    return RecapToyModel()


@pytest.fixture(scope="module")
def process_group() -> Iterator[None]:
    """A single-process gloo group (world size 1) on a free local port, destroyed after the module.

    A group that something else already started is used as it is and left alone.
    """
    if dist.is_initialized():
        yield
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = dist.TCPStore("127.0.0.1", port, world_size=1, is_master=True)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.fixture
def fused_model(process_group: None) -> nn.Module:
    return shard_fused(RecapToyModel())
