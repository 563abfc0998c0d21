"""The model store and its checksums, on real files: a local folder and a local S3 server (moto).
A model directory whose files do not match its marker is named, never used; a damaged published
copy is re-published from a good one; a fetch lands in the node's cache only when verified."""

from __future__ import annotations

import json

import pytest

from fsv.errors import ConfigError, FsvError
from fsv.models.cache import MARKER, read_marker, verify, write_marker
from fsv.models.store import ModelStore, ModelStoreError, local_model, prepare
from test_remote_storage import BUCKET, s3  # noqa: F401 - the moto S3 server fixture


def _model(path, value: float = 1.0):
    """A model directory as pretraining leaves it: safetensors weights, a config, the marker last."""
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    save_file({"w": torch.full((64, 64), value)}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    write_marker(path, {"name": "world-xs", "seed": 0})
    return path


def _damage(file):
    data = bytearray(file.read_bytes())
    data[-5] ^= 0xFF
    file.write_bytes(bytes(data))


def test_the_marker_holds_checksums_and_damage_is_named(tmp_path):
    model = _model(tmp_path / "world-xs-s0-abc")
    assert set(read_marker(model)["files"]) == {"model.safetensors", "config.json"}
    assert verify(model) is None
    _damage(model / "model.safetensors")
    assert "model.safetensors does not match the SHA-256" in verify(model)
    (model / "config.json").write_text("{}")
    assert "config.json has 2 bytes" in verify(model)
    with pytest.raises(FsvError, match="world-xs.*not usable.*config.json has 2 bytes"):
        local_model(model, None, "ladder model world-xs (pretrain seed 0)")


def test_an_older_marker_is_trusted_once_then_checked(tmp_path):
    model = _model(tmp_path / "m")
    marker = read_marker(model)
    del marker["files"]
    (model / MARKER).write_text(json.dumps(marker))
    assert verify(model) is None and "files" in read_marker(model)
    _damage(model / "model.safetensors")
    assert verify(model) is not None


@pytest.mark.parametrize("where", ["local", "s3"])
def test_publish_fetch_and_repair(where, tmp_path, request, monkeypatch):
    if where == "s3":
        for key, value in request.getfixturevalue("s3").items():
            monkeypatch.setenv(key, value)
    uri = str(tmp_path / "store") if where == "local" else f"s3://{BUCKET}/store-{tmp_path.name}"
    store, said = ModelStore(uri), []
    head = _model(tmp_path / "head" / "world-xs-s0-abc")
    assert prepare(head, store, said.append) and store.marker(head.name)["files"] == read_marker(head)["files"]

    node = tmp_path / "node" / head.name  # another node's cache: fetched, verified
    assert local_model(node, uri, "world-xs") == node and verify(node) is None
    assert not [p for p in node.parent.iterdir() if p.name.endswith(".partial")]

    _damage(node / "model.safetensors")  # damaged in a node's cache: fetched again
    assert local_model(node, uri, "world-xs") == node and verify(node) is None

    # damaged where it is published: a fetch names it, the driver re-publishes from its good copy
    published = f"{store.base}/{head.name}/model.safetensors"
    with store.fs.open_output_stream(published) as out:
        out.write(b"torn")
    with pytest.raises(ModelStoreError, match="model.safetensors has 4 bytes"):
        store.fetch(head.name, tmp_path / "other" / head.name)
    assert prepare(head, store, said.append) and "re-publishing" in said[-1]
    assert store.fetch(head.name, tmp_path / "other" / head.name)

    _damage(head / "model.safetensors")  # damaged in the driver's cache: named, replaced from the store
    assert prepare(head, store, said.append) and verify(head) is None and "damaged" in said[-1]


def test_a_model_nowhere_must_be_pretrained(tmp_path):
    assert not prepare(tmp_path / "cache" / "world-s-s0-x", ModelStore(str(tmp_path / "store")), print)
    assert not prepare(tmp_path / "cache" / "world-s-s0-x", None, print)


def test_a_store_that_cannot_be_written_is_refused(tmp_path, s3, monkeypatch):  # noqa: F811
    not_a_folder = tmp_path / "a-file"  # refused even for root, whom permissions do not stop
    not_a_folder.write_text("")
    with pytest.raises(ConfigError, match="cannot write there") as err:
        ModelStore(str(not_a_folder / "models")).check_writable()
    assert err.value.field == "--models"
    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    ModelStore(f"s3://{BUCKET}/models").check_writable()
    with pytest.raises(ConfigError, match="cannot write there") as err:
        ModelStore("s3://no-such-bucket/models").check_writable()
    assert err.value.field == "--models" and err.value.value == "s3://no-such-bucket/models"
