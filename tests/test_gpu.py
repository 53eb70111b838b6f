"""The GPU tier (``pytest -m gpu``; skipped where no CUDA device is visible): every head algorithm on
CUDA against float64 on the CPU, fp16 (GradScaler) and bf16 training steps, channels_last, compile,
DDP over NCCL, image-folder batches pinned and moved, and the analysis commands on CUDA.
``benchmarks/gpu_check.sh`` runs this tier and the GPU benchmarks in one go."""

import json
import os
import socket

import pytest
import torch

from lgm_gcp.engine.train import run
from lgm_gcp.models.heads.covariance import CovarianceSqrt

from conftest import TINY, resolved

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
CUDA_RUN = [*TINY, "trainer.accelerator=cuda", "trainer.max_steps=30"]


def root_and_grad(head, maps, upstream):
    x = maps.clone().requires_grad_()
    out = head(x)
    (grad,) = torch.autograd.grad((out * upstream).sum(), x)
    return out.detach(), grad


@pytest.mark.parametrize("algorithm", ["matmul", "spectral", "gram"])
@pytest.mark.parametrize("d, hw", [(64, 7), (32, 4)])  # 49 and 16 positions: gram's M < d and M < d
def test_each_head_algorithm_on_cuda_float32_matches_float64_on_the_cpu(algorithm, d, hw):
    """The iSQRT-COV root of ReLU-like maps (4, d, hw, hw): CUDA float32 within 1e-3 (relative to the
    largest entry) of the CPU float64 result, forward and backward, non-symmetric upstream gradient."""
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(4, d, hw, hw, generator=g, dtype=torch.float64).relu()
    upstream = torch.randn(4, d * (d + 1) // 2, generator=g, dtype=torch.float64)
    head = CovarianceSqrt(iterations=5, algorithm=algorithm)
    ref, ref_grad = root_and_grad(head, maps, upstream)
    out, grad = root_and_grad(head, maps.float().cuda(), upstream.float().cuda())
    assert ((out.double().cpu() - ref).abs().max() / ref.abs().max()) < 1e-3
    assert ((grad.double().cpu() - ref_grad).abs().max() / ref_grad.abs().max()) < 1e-3


@pytest.mark.parametrize("options", [["trainer.amp=fp16"], ["trainer.amp=bf16"], ["trainer.channels_last=true"],
                                     ["trainer.compile=true"], ["head=gcp", "head.dim=16", "trainer.amp=fp16"],
                                     ["loss=lgm", "head=gcp", "head.dim=16", "trainer.amp=bf16"]],
                         ids=lambda o: " ".join(o))
def test_training_options_run_on_cuda_and_learn(tmp_path, options):
    """30 steps on digits: a finished run whose loss fell and stayed finite (chance loss is ln 10 = 2.30)."""
    summary = run(resolved(*CUDA_RUN, *options), tmp_path / "run")
    assert summary["status"] == "finished"
    epoch = summary["epochs"][-1]
    assert epoch["train_loss"] < 2.0 and epoch["test_top1"] > 30.0 and epoch["skipped_steps"] == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_over_nccl_with_one_process(tmp_path, monkeypatch):
    """World size 1 through the NCCL process group: the DDP-wrapped run trains like the plain one."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    import torch.distributed as dist

    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
    try:
        total = torch.ones(3, device="cuda")
        dist.all_reduce(total)
        assert total.tolist() == [1.0, 1.0, 1.0]
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2).cuda(), device_ids=[0])
        model(torch.randn(8, 4, device="cuda")).sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_ddp_over_nccl_with_two_processes_matches_one(tmp_path):
    from lgm_gcp.engine.launch import launch

    ddp = [*TINY, "trainer.accelerator=cuda", "backbone.norm=group", "trainer.deterministic=true"]
    one = launch(resolved(*ddp), tmp_path / "one")
    two = launch(resolved(*ddp, "trainer.devices=2"), tmp_path / "two")
    assert two["world_size"] == 2
    assert two["final"]["test_top1"] == pytest.approx(one["final"]["test_top1"], abs=1.0)


def test_image_folder_batches_are_pinned_and_arrive_on_cuda(tmp_path):
    from lgm_gcp.options.instantiate import instantiate

    from datafiles import make_tree

    make_tree(tmp_path / "t")
    data = instantiate(resolved("dataset=imagenet", "dataset.num_classes=3", "dataset.image_size=32",
                                "dataset.resize=36", f"dataset.root={tmp_path / 't'}")["dataset"], num_workers=1)
    images, labels = next(iter(data.train_batches(4, seed=0, epoch=0, device="cuda")))
    assert images.is_cuda and labels.is_cuda and data._train_loader.loader.pin_memory


def test_analysis_commands_default_to_cuda(tmp_path, capsys):
    from lgm_gcp.analysis.features import cli as features_cli
    from lgm_gcp.analysis.runs import resolve_device
    from lgm_gcp.detection.evaluate import cli as detect_cli
    from lgm_gcp.robustness.evaluate import cli as robustness_cli

    assert resolve_device("auto").type == "cuda"
    run(resolved(*CUDA_RUN, "experiment=digits_lgm_2d"), tmp_path / "run")
    features_cli([str(tmp_path / "run")])
    detect_cli([str(tmp_path / "run"), "--max-images", "64", "--inputs", "fgsm", "bim", "cw", "uniform",
                "--steps", "2"])
    robustness_cli([str(tmp_path / "run"), "--baseline", "none", "--corruptions", "gaussian_noise",
                    "--severities", "1", "--perturbations", "--max-images", "64"])
    assert (tmp_path / "run" / "features.png").is_file()
    result = json.loads((tmp_path / "run" / "detect.json").read_text())
    assert result["images"] == 64 and all(e["abnormal"] >= 0 for e in result["results"])
    assert os.path.getsize(tmp_path / "run" / "robustness.json") > 0
