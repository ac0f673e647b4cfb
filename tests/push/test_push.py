"""`distill push` with the real `huggingface_hub` client against a loopback Hub (tests/local_hub.py).

Uploads of real stage outputs (tests/stage_outputs.py), in-process and in a subprocess, through both upload
paths the client has (inline "regular" files in the hf_xet pipeline; LFS batch + PUT with hf_xet disabled), and
the token: sent in the Authorization header, never in what we print or log, even when the Hub quotes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

from pipeline.push import hub
from pipeline.records.write import write_json
from tests.conftest import REPO
from tests.local_hub import LocalHub
from tests.stage_outputs import made_fixture  # noqa: F401  (the `made` fixture)

pytestmark = pytest.mark.slow
TOKEN = "hf_test_secret_123"
MODEL = {".gitattributes", "README.md", "config.json", "generation_config.json", "model.safetensors",
         "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}  # fmt: skip


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """The token in the environment, and huggingface_hub out of the offline mode conftest puts every test in."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # Its user agent would fetch an agent registry from huggingface.co (constants.ENDPOINT), not --endpoint.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)


def run_module(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python -m pipeline.push.hub ...` in a subprocess (the module entry point `distill push` will share)."""
    command = [sys.executable, "-m", "pipeline.push.hub", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_push_model_with_checkpoints_to_a_local_hub(made, online, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    with LocalHub() as server:  # every file "regular": the hf_xet pipeline sends them inline in the commit
        code = hub.main([str(made["student"]), "--repo-id", "test-org/student", "--private", "--checkpoints",
                         "--endpoint", server.url])  # fmt: skip
    out, err = capfd.readouterr()
    assert code == 0, err
    create = next(r for r in server.requests if r.path == "/api/repos/create")
    assert create.body == {
        "name": "student",
        "organization": "test-org",
        "visibility": "private",
        "type": "model",
    }
    main = server.files("test-org/student")
    assert set(main) == MODEL | {"manifest.json", "eval/results.json"}
    assert main["model.safetensors"] == (made["student"] / "model.safetensors").read_bytes()
    assert b"- distillation" in main["README.md"] and "41.2 ± 2.1".encode() in main["README.md"]
    branches = [r.path.rsplit("/", 1)[1] for r in server.requests if "/branch/" in r.path]
    assert branches == ["checkpoint-6", "checkpoint-12"]
    for step in (6, 12):
        files = server.files("test-org/student", f"checkpoint-{step}")
        assert set(files) == MODEL | {
            "trainer_state.json"
        }  # main's manifest and eval deleted from the branch
        assert (
            files["model.safetensors"]
            == (made["student"] / f"checkpoint-{step}/model.safetensors").read_bytes()
        )
    assert all(r.status < 400 for r in server.requests)
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in server.requests)
    assert TOKEN not in out + err + caplog.text and "pushed to" in out


def test_push_dataset_through_lfs_in_a_subprocess(made, tmp_path):
    env = {**os.environ, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_VERBOSITY": "debug", "DISTILL_LOG_LEVEL": "DEBUG"}  # fmt: skip
    with LocalHub(lfs_suffixes=(".parquet", ".png")) as server:
        env["HF_ENDPOINT"] = server.url  # the endpoint comes from the environment this time
        result = run_module(str(made["data"]), "--repo-id", "test-org/traces", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    create = next(r for r in server.requests if r.path == "/api/repos/create")
    assert create.body == {"name": "traces", "organization": "test-org", "type": "dataset"}  # not private
    local = {p: (made["data"] / p).read_bytes() for p in ("data/train-00000-of-00001.parquet", "report.png")}
    batch = next(
        r for r in server.requests if r.path == "/datasets/test-org/traces.git/info/lfs/objects/batch"
    )
    assert {o["oid"] for o in batch.body["objects"]} == {
        hashlib.sha256(b).hexdigest() for b in local.values()
    }
    puts = [r for r in server.requests if r.method == "PUT"]
    assert len(puts) == 2 and not any("authorization" in r.headers for r in puts)  # storage never sees it
    commit = next(r for r in server.requests if "/commit/" in r.path)
    assert sorted(line["value"]["path"] for line in commit.body if line["key"] == "lfsFile") == sorted(local)
    files = server.files("test-org/traces")
    assert set(files) == {
        ".gitattributes",
        "README.md",
        "report.json",
        "rejected.jsonl",
        "manifest.json",
        *local,
    }
    assert all(files[p] == b for p, b in local.items())
    # huggingface_hub also fetches an agent registry from the endpoint for its user agent, unauthenticated.
    api = [r for r in server.requests if r.method != "PUT" and r.path != "/api/agent-harnesses"]
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in api)
    assert TOKEN not in result.stdout + result.stderr


def test_xet_uploads_ask_the_hub_for_a_write_token(made, online, capfd):
    # With hf_xet installed, "lfs" files go to a Xet storage server whose address and token the Hub hands out
    # (GET .../xet-write-token/main); this Hub has none, so the request is recorded and the push fails cleanly.
    with LocalHub(lfs_suffixes=(".safetensors",)) as server:
        code = hub.main([str(made["student"]), "--repo-id", "test-org/xet", "--endpoint", server.url])
    out, err = capfd.readouterr()
    asked = [r for r in server.requests if r.path == "/api/models/test-org/xet/xet-write-token/main"]
    assert code == 1 and asked and asked[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert "xet-write-token" in err and TOKEN not in out + err
    assert not any("/commit/" in r.path for r in server.requests)  # nothing half-published


def test_a_hub_error_quoting_the_token_is_printed_scrubbed(made, online, capfd):
    with LocalHub() as server:  # it answers the repo creation with a 403 that quotes the Authorization header
        code = hub.main([str(made["data"]), "--repo-id", "test-org/leaky", "--endpoint", server.url])
    out, err = capfd.readouterr()
    assert code == 1 and "error: push failed:" in err and "token Bearer *** may not create" in err
    assert TOKEN not in out + err


def test_private_push_refuses_an_existing_public_repo(made, online, capfd):
    with LocalHub() as server:
        assert hub.main([str(made["data"]), "--repo-id", "test-org/public", "--endpoint", server.url]) == 0
        code = hub.main(
            [str(made["data"]), "--repo-id", "test-org/public", "--endpoint", server.url, "--private"]
        )
    assert code == 2 and "already exists and is public" in capfd.readouterr().err
    assert sum("/commit/" in r.path for r in server.requests) == 1


def test_missing_token_is_a_clear_error_without_dry_run(made, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env |= {
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_ENDPOINT": "http://127.0.0.1:9",
    }  # no saved login either
    result = run_module(str(made["data"]), "--repo-id", "o/d", env=env)
    assert result.returncode == 2
    assert "error: no Hugging Face token: set HF_TOKEN or run `hf auth login`" in result.stderr


def test_adapter_with_a_local_base_is_not_pushed(made, online, tmp_path, capfd):
    folder = shutil.copytree(
        made["student"], tmp_path / "a", ignore=shutil.ignore_patterns("checkpoint-*", "*.safetensors")
    )
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/somewhere/base"}))
    assert hub.main([str(folder), "--repo-id", "o/a", "--endpoint", "http://127.0.0.1:9"]) == 2
    assert "pass --base-model owner/name" in capfd.readouterr().err


def test_a_staged_file_holding_the_token_is_refused(made, online, tmp_path, capfd):
    folder = shutil.copytree(made["data"], tmp_path / "filtered")
    report = json.loads((folder / "report.json").read_text())
    write_json(folder / "report.json", {**report, "command": f"distill filter hub_token={TOKEN}"})
    assert (
        hub.main([str(folder), "--repo-id", "o/d", "--dry-run", "--stage-dir", str(tmp_path / "stage")]) == 2
    )
    out, err = capfd.readouterr()
    assert "report.json: holds your Hub token" in err and TOKEN not in out + err


def test_tokens_in_the_manifest_are_redacted_and_a_file_still_holding_one_is_refused(made, tmp_path, capfd):
    folder = shutil.copytree(
        made["student"], tmp_path / "student", ignore=shutil.ignore_patterns("checkpoint-*")
    )
    fake = "hf_" + "A1b2" * 9  # not the user's token: found by its shape
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["config"]["trainer"]["hub_token"] = fake
    manifest["command"] += [f"trainer.hub_token={fake}", "kd.api_key=sk-" + "x1" * 15]
    write_json(folder / "manifest.json", manifest)
    stage = tmp_path / "stage"
    args = [str(folder), "--repo-id", "o/m", "--dry-run", "--stage-dir", str(stage)]
    assert hub.main(args) == 0, capfd.readouterr().err
    for staged in (stage / "main" / "manifest.json", stage / "main" / "README.md"):
        text = staged.read_text()
        assert fake not in text and "sk-x1" not in text, staged
    assert "<redacted>" in (stage / "main" / "manifest.json").read_text()
    assert fake in (folder / "manifest.json").read_text()  # the user's own file is left as it was
    capfd.readouterr()
    (folder / "notes.md").write_text(f"the token for later: {fake}\n")
    assert hub.main(args) == 2
    out, err = capfd.readouterr()
    assert "notes.md: holds a token-shaped value (hf_...)" in err and fake not in out + err
    (folder / "notes.md").unlink()
    (folder / "extra_config.json").write_text(json.dumps({"wandb_api_key": "abcd1234efgh5678"}))
    assert hub.main(args) == 2
    out, err = capfd.readouterr()
    assert "extra_config.json: holds a value for 'wandb_api_key'" in err and "abcd1234" not in out + err


def test_push_refuses_a_training_folder_without_its_manifest(made, tmp_path, capfd):
    folder = shutil.copytree(
        made["student"], tmp_path / "student", ignore=shutil.ignore_patterns("checkpoint-*")
    )
    (folder / "manifest.json").unlink()  # sft was killed after saving the model, before its manifest
    assert hub.main([str(folder), "--repo-id", "o/m", "--dry-run", "--stage-dir", str(tmp_path / "s")]) == 2
    assert "field 'folder': no manifest.json: the sft/kd/opd/filter run" in capfd.readouterr().err
