"""recipes/slurm/sft-multinode.sbatch renders, for every node of a 2-node job, the `accelerate launch` command
that accelerate itself turns into the right torchrun launch: 2 nodes x 8 processes, this node's rank, c10d
rendezvous at the first node, the stage run as a module with the user's arguments intact."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from tests.conftest import REPO

SCRIPT = "recipes/slurm/sft-multinode.sbatch"


def render(
    slurm_cluster, *args: str, nodes: int = 2, nodelist: str = "gpu-[07-08]", gpus: int = 8
) -> subprocess.CompletedProcess:
    """The script as the batch step of a `nodes`-node job would run it, printing instead of launching."""
    env = {
        **slurm_cluster.env,  # SLURM_CONF: `scontrol show hostnames` reads it
        "SLURM_NNODES": str(nodes),
        "SLURM_JOB_NODELIST": nodelist,
        "SLURM_SUBMIT_DIR": str(REPO),
        "DISTILL_DRY_RUN": "1",
        "GPUS_PER_NODE": str(gpus),
    }
    return subprocess.run(
        ["bash", str(REPO / SCRIPT), *args], cwd="/", env=env, capture_output=True, text=True, timeout=120
    )


def torchrun_launch(argv: list[str]) -> tuple[object, object, int]:
    """What accelerate's own launcher makes of `accelerate launch ARGV` (its DeepSpeed path, as zero3.yaml):
    torchrun's launch config, the command each worker runs, and the node rank."""
    import torch.distributed.run as distrib_run
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import prepare_deepspeed_cmd_env
    from accelerate.utils.launch import _filter_args

    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    assert args.use_deepspeed
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    # sets torchrun's nnodes / node_rank / rdzv fields on args, as `accelerate launch` does
    prepare_deepspeed_cmd_env(args)
    torch_args = _filter_args(
        args,
        distrib_run.get_args_parser(),
        ["--training_script", args.training_script, "--training_script_args", args.training_script_args],
    )
    config, entry, cmd_args = distrib_run.config_from_args(torch_args)
    return config, (entry, cmd_args), torch_args.node_rank


def test_two_nodes_render_the_accelerate_launch_of_each_node(slurm_cluster):
    r = render(
        slurm_cluster, "sft", "recipes/students/qwen2.5-14b/sft.yaml", "trainer.seed=3", "output=runs/a b"
    )
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("node ")]
    assert [line.split(":")[0] for line in lines] == ["node 0", "node 1"]
    for rank, line in enumerate(lines):
        words = shlex.split(line.split(": ", 1)[1])
        assert words[:4] == ["DISTILL_LAUNCHED=1", ".venv/bin/python", "-m", "accelerate.commands.launch"]
        config, (entry, cmd_args), node_rank = torchrun_launch(words[4:])
        assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (2, 2, 8)
        assert (config.rdzv_backend, config.rdzv_endpoint, node_rank) == ("c10d", "gpu-07:29500", rank)
        assert entry.endswith("python") and cmd_args == [
            "-u", "-m", "pipeline.cli", "sft", "--config", "recipes/students/qwen2.5-14b/sft.yaml",
            "trainer.seed=3", "output=runs/a b",
        ]  # fmt: skip


def test_gpus_per_node_and_the_recipes_accelerate_config_are_followed(slurm_cluster):
    r = render(
        slurm_cluster, "kd", "recipes/students/qwen2.5-math-7b/kd.yaml", nodes=3, nodelist="n[1-3]", gpus=4
    )
    assert r.returncode == 0, r.stderr
    words = shlex.split(r.stdout.splitlines()[-1].split(": ", 1)[1])
    assert words[words.index("--config_file") + 1] == "recipes/accelerate/zero2.yaml"
    assert (
        words[words.index("--num_processes") + 1] == "12" and words[words.index("--machine_rank") + 1] == "2"
    )
    assert words[words.index("--main_process_ip") + 1] == "n1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sft"], "expected a stage and a recipe"),
        (["train", "recipes/students/qwen2.5-14b/sft.yaml"], "stage 'train' is not a training stage"),
        (
            ["sft", "recipes/students/qwen2.5-0.5b/sft.yaml"],
            "field 'launch.accelerate_config': not set",
        ),
    ],
    ids=["no-recipe", "not-a-stage", "no-accelerate-config"],
)
def test_a_launch_it_cannot_make_is_one_error_line(slurm_cluster, args, message):
    r = render(slurm_cluster, *args)
    assert r.returncode == 2 and "node " not in r.stdout
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"error: {SCRIPT}: ") and message in line
