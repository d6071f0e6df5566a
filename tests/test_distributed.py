"""Data parallel training on the CPU (gloo): the same episodes and the same parameters at any
world size, groups whole or split, any G; a killed rank stops the run; --resume finishes it.

Each test starts real processes with PyTorch's launcher (``torch.distributed.run``, what
``torchrun`` runs), on tiny settings of the multi-round recipe (``tests/distributed/worker.py``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from unigrpo_kit.distributed import shard

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "distributed" / "worker.py"
STEPS = 3


def run_worker(out: Path, nproc: int, *options: str) -> list[dict]:
    """The worker's per-rank results (``nproc`` 1: no launcher, a plain process)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        command = [sys.executable, str(WORKER)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={nproc}", str(WORKER)]  # fmt: skip
    done = subprocess.run(
        [*command, str(out), str(STEPS), *options], env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(nproc)]


def assert_same_run(single: dict, ranks: list[dict]) -> None:
    for rank in ranks:  # every replica holds the same parameters
        for name, value in rank["params"].items():
            assert torch.equal(value, ranks[0]["params"][name]), name
    for step, (one, many) in enumerate(zip(single["metrics"], ranks[0]["metrics"], strict=True)):
        assert many["reward/mean"] == one["reward/mean"], f"step {step + 1}"
        assert many["episodes/trained"] == one["episodes/trained"], f"step {step + 1}"
        if "reward/image_term" in one:  # a mean of floats, summed in another order
            term = pytest.approx(one["reward/image_term"], rel=1e-5)
            assert many["reward/image_term"] == term, f"step {step + 1}"
        assert set(many) == set(one)
        for key in ("loss/text", "loss/image", "reg/TokenKL", "reg/VelocityMSE", "grad_norm"):
            if key not in one:  # a step that trained nothing logs no regularizer
                continue
            assert many[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), (step + 1, key)
    assert sum(m["episodes/trained"] for m in single["metrics"]) > 0
    # The same parameters up to float rounding, which Adam amplifies where a gradient is near
    # zero: measured max |difference| 4.5e-6 (whole groups), 1.5e-5 on 1 of 2.1M entries (split
    # groups) and 3.7e-5 on 6 (split groups with a guided member and the sampled painter
    # advantage, whose zero image advantages leave more text entries with a near-zero
    # gradient) after 3 steps; bounded here at 5e-5, half of one Adam step at the worker's
    # lr_text (1e-4), and 1e-5 for all but 1 in 10^5.
    diffs = torch.cat(
        [(ranks[0]["params"][n] - v).abs().flatten() for n, v in single["params"].items()]
    )
    assert float(diffs.max()) <= 5e-5
    assert float((diffs > 1e-5).float().mean()) <= 1e-5


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return run_worker(tmp_path_factory.mktemp("w1"), 1)[0]


def test_two_ranks_with_whole_groups_equal_one_process(single, tmp_path):
    ranks = run_worker(tmp_path, 2)
    # 3 prompts over 2 ranks: one group on rank 0, two on rank 1 (G = 4 rows each)
    assert [r["rows"] for r in ranks] == [list(range(0, 4)), list(range(4, 12))]
    assert_same_run(single, ranks)


def test_split_groups_with_an_odd_group_size_equal_one_process(tmp_path):
    """Also with the painter's own reward term, whose group statistics need every rank's q,
    and with a guided member whose picture the painter's advantage leaves out (each rank
    marks the guided rows of the whole step)."""
    options = (
        "rollout.group_size=3",
        "rollout.split_groups=True",
        "algorithm.image_reward={'type': 'QualityReward'}",
        "rollout.guided_members=1",
        "algorithm.guided_image_advantage=sampled",
    )
    one = run_worker(tmp_path / "one", 1, *options)[0]
    ranks = run_worker(tmp_path / "two", 2, *options)
    # 9 rows over 2 ranks: the second group straddles them
    assert [r["rows"] for r in ranks] == [list(range(0, 4)), list(range(4, 9))]
    assert_same_run(one, ranks)


def test_a_rank_with_no_episode_takes_part_and_changes_nothing(tmp_path):
    """3 processes, 2 prompts: rank 0 holds no episode (it still joins every reduction and
    writes the logs); the run equals one process's."""
    options = ("rollout.prompts_per_step=2", "seed=1")
    one = run_worker(tmp_path / "one", 1, *options)[0]
    ranks = run_worker(tmp_path / "three", 3, *options)
    assert [r["rows"] for r in ranks] == [[], list(range(0, 4)), list(range(4, 8))]
    assert_same_run(one, ranks)


@pytest.mark.parametrize("world", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("split", [False, True])
def test_shards_cover_every_row_once_at_any_world_size(world, split):
    for groups, size in [(1, 1), (3, 4), (5, 3), (7, 2)]:
        shards = [
            shard(groups, size, split_groups=split, rank_=r, world=world) for r in range(world)
        ]
        rows = [row for held in shards for row in held.rows]
        assert rows == list(range(groups * size))
        if not split:  # whole groups: a group's rows on one rank
            for rank in range(world):
                held = shard(groups, size, split_groups=False, rank_=rank, world=world).rows
                assert len(held) % size == 0


# ----------------------------------------------------------------------------- a killed rank
CLI_TINY = [
    "threads=1", "rollout.prompts_per_step=2", "rollout.group_size=3", "rollout.num_steps=4",
    "rollout.window.window_range=(0,4)", "rollout.text_sampler.max_new_tokens=12",
    "rollout.reflection_sampler.max_new_tokens=6", "algorithm.minibatch_size=6",
    "schedule.steps=4", "schedule.save_every=1", "schedule.sample_every=0",
    "evaluation.num_prompts=2",
]  # fmt: skip


def cli_train(work_dir: Path, *extra: str, wait: bool = True, nproc: int = 2, options=CLI_TINY):
    command = [sys.executable, "-m", "unigrpo_kit.cli", "train",
               str(REPO / "recipes" / "unified_multiround.py"), "--work-dir", str(work_dir),
               "--quiet", "--nproc", str(nproc), *extra]  # fmt: skip
    for option in options:
        command += ["--cfg-options", option]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def metrics(work_dir: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (work_dir / "metrics.jsonl").read_text().splitlines()]


def worker_pids(parent: int) -> list[int]:
    """The launcher's worker processes (children of the torchrun agent's process)."""
    out = subprocess.run(["ps", "-o", "pid=,ppid=,args=", "-e"], capture_output=True, text=True)
    return [
        int(line.split()[0])
        for line in out.stdout.splitlines()
        if int(line.split()[1]) == parent and "unigrpo_kit.cli" in line
    ]


def test_a_killed_rank_stops_the_run_and_resume_finishes_it(tmp_path):
    straight = tmp_path / "straight"
    done = cli_train(straight)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = metrics(straight)
    assert [m["step"] for m in expected] == [1, 2, 3, 4]

    killed = tmp_path / "killed"
    launcher = cli_train(killed, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait for step 2's checkpoint, then kill rank 1
        if (killed / "checkpoints" / "step_000002").is_dir():
            break
        time.sleep(0.2)
    pids = worker_pids(launcher.pid)
    assert len(pids) == 2, pids
    os.kill(max(pids), signal.SIGKILL)  # the second worker started: rank 1
    killed_at = time.time()
    _, stderr = launcher.communicate(timeout=120)
    assert time.time() - killed_at < 60
    assert launcher.returncode != 0
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: rank 1") and "SIGKILL" in last and "intact" in last, last
    assert "--resume" in last

    alone = tmp_path / "alone"  # the same checkpoint resumed by one process
    shutil.copytree(killed, alone)
    resumed = cli_train(killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    resumed = cli_train(alone, "--resume", nproc=1)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for work_dir in (killed, alone):
        again = metrics(work_dir)
        assert [m["step"] for m in again] == [1, 2, 3, 4]
        for one, other in zip(expected, again, strict=True):
            assert other["reward/mean"] == one["reward/mean"], (work_dir.name, one["step"])
            for key in ("loss/text", "loss/image", "grad_norm"):
                assert other[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), (
                    work_dir.name, one["step"], key,
                )  # fmt: skip
