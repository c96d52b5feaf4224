"""tools/gpu_check.py --tiny: the GPU check's code (precisions through the engine, the batch doubling, the loader
against the step, the two decoding paths, one DDP step) run on tiny models on the CPU, so it cannot rot."""
import json

import pytest
import torch

from tools import gpu_check


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    assert gpu_check.main(["--tiny", "--presets", "cten_*_official,mbt_*_official,mart_*_official", "--max-batch", "4",
                           "--parts", "precision,max_batch,loader,decode", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_every_precision_trains_with_finite_losses_and_amp_logits_close_to_fp32(results):
    rows = results["precision"]
    assert {(r["preset"], r["precision"]) for r in rows} == {(p, q) for p in results["presets"]
                                                             for q in ("fp32", "bf16", "fp16")}
    assert [p.split("_")[0] for p in results["presets"]] == ["cten", "mbt", "mart"]
    for r in rows:
        assert r["finite"] and r["s_per_iter"] > 0, r
        limit = {"fp32": 0.0, "bf16": 0.1, "fp16": 0.01}[r["precision"]]  # fp32 is the reference itself
        assert r["logit_rel_diff"] <= limit, r
        assert r["peak_gib"] is None  # CUDA only
    assert any(r["logit_rel_diff"] > 0 for r in rows if r["precision"] != "fp32")  # autocast really ran on the CPU


def test_batch_doubling_loader_and_decoding_report(results):
    assert [mb["preset"].split("_")[0] for mb in results["max_batch"]] == ["mbt", "mart"]
    for mb in results["max_batch"]:
        assert mb["max_batch"] == 4 and mb["limit"] == "--max-batch 4"
    for r in results["loader"]:
        assert r["loader_frames_per_s"] > 0 and r["step_frames_per_s"] > 0
        assert r["bound"] == ("loader" if r["loader_frames_per_s"] < r["step_frames_per_s"] else "GPU step")
    assert [r["decode"] for r in results["decode"]] == ["PIL, CPU threads", "decode_jpeg on cpu"]
    assert all(r["finite"] for r in results["decode"])
    assert set(results["skipped"]) == {"peak_memory", "nccl", "decode_cuda", "out_of_memory"}


def test_one_ddp_step_agrees_across_ranks_of_one_gloo_process(tmp_path, monkeypatch):
    """The DDP worker in this process (world size 1, gloo); the 2-process run is tools/gpu_check.py --tiny."""
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(k, "0")  # the worker sets them; restored (removed) after the test
    out = tmp_path / "ddp.json"
    port = gpu_check._free_port()
    # init_distributed leaves a world of one alone: the group is made here and the worker's cleanup ends it
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    gpu_check._ddp_worker(0, 1, port, "cten_ve8_official", True, str(out))
    result = json.loads(out.read_text())
    assert result["grad_rel_diff"] == 0 and result["weight_max_diff"] == 0 and result["n_grads"] > 0
    assert not torch.distributed.is_initialized()


def test_without_cuda_the_full_check_refuses_with_a_pointer_to_tiny(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    assert gpu_check.main(["--parts", "precision"]) == 2
    assert "--tiny" in capsys.readouterr().err
