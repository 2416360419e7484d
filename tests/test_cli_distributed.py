"""The headless trainer (python -m dice_cli train), single-process and under torchrun with 2 CPU ranks (gloo).

The model is a tiny in-process SD1.5 with a stand-in text encoder and VAE, reached through dice_cli's model
registry as `--checkpoint tiny-sd15:SEED` (dice_testkit/cli_tiny_model.py). torchrun runs that module
(`-m dice_testkit.cli_tiny_model`), which registers the tiny model and calls dice_cli's main.
"""

import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from dice_cli import cli
from dice_core.fileformat import load_refiner
from dice_testkit import tiny_models, tolerances
from dice_testkit.cli_tiny_model import inject_failure  # also registers the tiny-sd15 checkpoint name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


K, N = 4, 7  # runs of N steps; the interrupted ones stop after K (--stop-after, as a time-limited job would)
COMMON = ["--checkpoint", "tiny-sd15:3", "--width", "64", "--height", "64", "--teacher-steps", "3", "--samples-per-prompt",
          "2", "--seed", "5", "--recipe", "dice-pack", "--lr", "0.003", "--save-every", "0", "--cpu"]
PROMPTS = ["a red cube", "a blue sphere on grass", "two green cones", "a yellow torus at night", "an orange pyramid"]


def run_inprocess(*args) -> int:
    return cli.main(["train", *COMMON, "--no-progress", *args])


def torchrun(*args, nproc=2, env_extra=None, timeout=180) -> subprocess.CompletedProcess:
    """The real launcher, as users run it: torchrun starts dice_testkit.cli_tiny_model, which calls dice_cli."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
           "dice_testkit.cli_tiny_model", "train",
           *COMMON, "--dist-timeout", "60", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    t = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    print(f"torchrun x{nproc}: {time.monotonic() - t:.1f}s, rc {proc.returncode}")
    return proc


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, argv: list[str], fail: str | None) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if fail:
        inject_failure(fail)
    code = cli.main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def fork_ranks(*args, nproc=2, fail=None, timeout=120) -> list[int]:
    """torchrun's environment for each rank, in forked copies of this process (ComfyUI is already imported,
    so a rank starts in milliseconds instead of seconds). Like torchrun, once a rank fails the others get
    SIGTERM. Returns the exit codes. Forking is only safe single-threaded: with other threads alive (some
    other test's fixture), this falls back to torchrun."""
    if threading.active_count() > 1:
        proc = torchrun(*args, "--no-progress", nproc=nproc, env_extra={"DICE_TEST_FAIL": fail} if fail else None)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        return [proc.returncode] * nproc
    port = _free_port()
    mp = multiprocessing.get_context("fork")
    argv = ["train", *COMMON, "--no-progress", "--dist-timeout", "30", *args]
    t = time.monotonic()
    procs = [mp.Process(target=_rank_main, args=(r, nproc, port, argv, fail)) for r in range(nproc)]
    for p in procs:
        p.start()
    failed_at = None
    while any(p.is_alive() for p in procs) and time.monotonic() - t < timeout:
        time.sleep(0.05)
        if failed_at is None and any(p.exitcode not in (None, 0) for p in procs):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > 2.0:
            for p in procs:
                if p.is_alive():
                    p.terminate()  # SIGTERM, as torchrun does
            failed_at = float("inf")
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join()
    print(f"forked x{nproc}: {time.monotonic() - t:.1f}s, exit codes {[p.exitcode for p in procs]}")
    return [p.exitcode for p in procs]


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"torchrun failed (rc {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"


# Each refiner-weight gradient sums global batch x 77 tokens x 8x8 latent positions of float32 terms.
GRADIENT_TERMS = 4 * tiny_models.CLIP_TOKENS * 8 * 8


def assert_same_refiner(a_path, b_path, optimizer=True) -> None:
    """Same step, weights, optimizer moments and loss history, within the float32 bounds for sums taken
    in another order (the ranks all-reduce the batch's gradients; one process sums them in one go).
    The bounds come from dice_testkit/tolerances.py; AdamW makes them per element."""
    a, b = load_refiner(str(a_path)), load_refiner(str(b_path))
    assert a.train_step == b.train_step
    steps, lr = a.train_step, float(a.recipe["lr"])
    global_batch = int(a.recipe.get("global_batch_size") or a.recipe["batch_size"])
    worst = 0.0
    for k, want in a.module.state_dict().items():
        bounds = tolerances.adam_tolerances(a.optimizer_state["tensors"][f"{k}.exp_avg_sq"], want, lr, steps,
                                            GRADIENT_TERMS, global_batch)
        worst = max(worst, tolerances.assert_within(b.module.state_dict()[k], want, bounds["weight"], k))
        if optimizer:
            for moment in ("exp_avg", "exp_avg_sq"):
                name = f"{k}.{moment}"
                worst = max(worst, tolerances.assert_within(b.optimizer_state["tensors"][name],
                                                            a.optimizer_state["tensors"][name], bounds[moment], name))
    rel = tolerances.summation_error(GRADIENT_TERMS)
    assert b.loss_history == pytest.approx(a.loss_history, rel=rel, abs=0.0)
    print(f"{a_path.parent.name} vs {b_path.parent.name}: step {a.train_step}, used {worst:.2%} of the float32 bound")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Shared runs on the prompts file (data-free teacher trajectories). 1-rank runs are in-process."""
    from dice_testkit import harness

    harness.setup_comfy()
    root = tmp_path_factory.mktemp("cli")
    prompts = root / "prompts.txt"
    prompts.write_text("# training prompts\n" + "\n\n".join(PROMPTS) + "\n")
    paths = {name: root / name for name in ("one_k", "one_full", "two_k", "two_to_one", "one_to_two")}
    t = time.monotonic()
    assert run_inprocess("--prompts", str(prompts), "--run-dir", str(paths["one_k"]), "--steps", str(N), "--stop-after", str(K),
                         "--batch-size", "4") == 0
    assert run_inprocess("--prompts", str(prompts), "--run-dir", str(paths["one_full"]), "--steps", str(N), "--batch-size", "4") == 0
    print(f"two in-process runs: {time.monotonic() - t:.1f}s")
    _ok(torchrun("--prompts", str(prompts), "--run-dir", str(paths["two_k"]), "--steps", str(N), "--stop-after", str(K),
                 "--batch-size", "2"))
    return prompts, paths


@pytest.mark.distributed
def test_two_ranks_at_batch_2_equal_one_rank_at_batch_4(runs):
    _, paths = runs
    assert (paths["two_k"] / "train.log").read_text().count("2 rank(s) (gloo), batch 2 per rank, global batch 4") == 1
    assert_same_refiner(paths["one_k"] / "checkpoint.safetensors", paths["two_k"] / "checkpoint.safetensors")
    saved = load_refiner(str(paths["two_k"] / "checkpoint.safetensors"))
    assert saved.train_step == K and not (paths["two_k"] / "refiner.safetensors").exists()
    assert saved.recipe["world_size"] == 2 and saved.recipe["global_batch_size"] == 4 and saved.recipe["batch_size"] == 2


@pytest.mark.distributed
def test_a_two_rank_checkpoint_resumed_on_one_rank_matches_an_uninterrupted_run(runs):
    prompts, paths = runs
    code = run_inprocess("--prompts", str(prompts), "--run-dir", str(paths["two_to_one"]), "--steps", str(N),
                         "--global-batch-size", "4", "--resume", str(paths["two_k"] / "checkpoint.safetensors"))
    assert code == 0
    assert_same_refiner(paths["one_full"] / "checkpoint.safetensors", paths["two_to_one"] / "checkpoint.safetensors")


@pytest.mark.distributed
def test_a_one_rank_checkpoint_resumed_on_two_ranks_matches_an_uninterrupted_run(runs):
    prompts, paths = runs
    run_dir = paths["one_to_two"]
    run_dir.mkdir()
    (run_dir / "checkpoint.safetensors").write_bytes((paths["one_k"] / "checkpoint.safetensors").read_bytes())
    codes = fork_ranks("--prompts", str(prompts), "--run-dir", str(run_dir), "--steps", str(N), "--global-batch-size", "4",
                       "--resume", "--log-every", "1")
    assert codes == [0, 0]
    assert_same_refiner(paths["one_full"] / "checkpoint.safetensors", run_dir / "checkpoint.safetensors")
    log = (run_dir / "train.log").read_text()
    assert f"resuming {run_dir / 'checkpoint.safetensors'} at step {K} of {N}" in log
    assert f"step {N}/{N} loss" in log and "steps/s ETA" in log


def _image_folder(root, sizes=((64, 64), (80, 72), (96, 64), (64, 64), (72, 88))):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    folder = root / "images"
    folder.mkdir()
    for i, (w, h) in enumerate(sizes):
        px = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(px).save(folder / f"img{i:02d}.png")
        (folder / f"img{i:02d}.txt").write_text(PROMPTS[i % len(PROMPTS)] + "\n")
    Image.fromarray(px).save(folder / "no_caption.png")  # skipped with a warning
    return folder


@pytest.mark.distributed
def test_image_folder_on_two_ranks_shards_the_vae_and_matches_one_rank(runs, tmp_path):
    from safetensors.torch import load_file

    folder = _image_folder(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    args = ("--images", str(folder), "--steps", "3", "--recipe", "paper", "--lr", "0.001")
    assert run_inprocess(*args, "--run-dir", str(one), "--batch-size", "4") == 0
    assert fork_ranks(*args, "--run-dir", str(two), "--batch-size", "2") == [0, 0]
    cache_one, cache_two = sorted(one.glob("latents-*.safetensors")), sorted(two.glob("latents-*.safetensors"))
    assert len(cache_one) == len(cache_two) == 1 and cache_one[0].name == cache_two[0].name  # same key: files + model
    latents = load_file(str(cache_two[0]))["latents"]
    assert latents.shape == (5, 4, 8, 8)
    torch.testing.assert_close(latents, load_file(str(cache_one[0]))["latents"])  # rank blocks gathered in order
    assert_same_refiner(one / "checkpoint.safetensors", two / "checkpoint.safetensors")
    assert load_refiner(str(two / "refiner.safetensors")).recipe["data"] == "noised"
    # A second run reads the cache instead of encoding again.
    assert run_inprocess(*args, "--run-dir", str(one), "--batch-size", "4", "--steps", "4", "--resume") == 0
    assert "read from the cache" in (one / "train.log").read_text()


@pytest.mark.distributed
def test_a_rank_that_dies_is_named_and_the_last_checkpoint_stays(runs, tmp_path, capfd):
    prompts, _ = runs
    run_dir = tmp_path / "crash"
    codes = fork_ranks("--prompts", str(prompts), "--run-dir", str(run_dir), "--steps", "20", "--batch-size", "2",
                       "--save-every", "2", fail="1:5")
    err = capfd.readouterr().err
    assert codes[1] == 1 and codes[0] != 0, err
    assert "rank 1 failed: RuntimeError: injected failure at step 5" in err
    saved = load_refiner(str(run_dir / "checkpoint.safetensors"))
    assert saved.train_step == 4 and saved.optimizer_state is not None  # rank 0 kept the last finished step
    assert "rank 0 failed: " in err
    assert f"the last checkpoint (step 4) is kept at {run_dir / 'checkpoint.safetensors'}; continue with --resume" in err


# ---- building blocks without processes -------------------------------------------------------------
class _LinearDenoiser(tiny_models.LinearDenoiser):
    """A prompt-dependent teacher, for checking the data layout alone."""

    sigma_max = 8.0

    def teacher(self, x, sigma, idx):
        shift = idx.float().view(-1, 1, 1, 1) * 0.1
        return x * 0.5 + shift, x * 0.4


@pytest.mark.parametrize("world", [1, 2, 3, 5, 8])
def test_teacher_blocks_of_all_ranks_concatenate_to_the_single_process_data(world):
    from dice_core.training import TrainConfig, shard_range, teacher_trajectories

    cfg = TrainConfig(teacher_steps=3, samples_per_prompt=2, batch_size=3, seed=1)
    whole = teacher_trajectories(_LinearDenoiser(), 5, (2, 4, 4), cfg)  # 10 samples: 4 batches of 3, 3, 3, 1
    parts = [teacher_trajectories(_LinearDenoiser(), 5, (2, 4, 4), cfg, shard=(r, world)) for r in range(world)]
    for name in ("x", "idx", "sigma", "target", "step_of_sample"):
        torch.testing.assert_close(torch.cat([getattr(p, name) for p in parts]), getattr(whole, name), rtol=0, atol=0)
    blocks = [shard_range(4, r, world) for r in range(world)]
    assert [i for b in blocks for i in b] == [0, 1, 2, 3]  # contiguous, in order, empty blocks when world > 4


@pytest.mark.distributed
def test_toyworld_checkpoint_trains_from_images(tmp_path):
    """The pack's own demo model through the production registry, with its VAE encoding real images."""
    from PIL import Image

    from dice_testkit import harness

    harness.setup_comfy()
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, caption in enumerate(["a red square on the left", "a blue cross at the top"]):
        Image.new("RGB", (128, 128), (200 * (i == 0), 0, 200 * (i == 1))).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(caption)
    run = tmp_path / "run"
    code = cli.main(["train", "--checkpoint", "toyworld", "--images", str(folder), "--run-dir", str(run), "--steps", "2",
                     "--batch-size", "2", "--width", "128", "--height", "128", "--cpu", "--no-progress"])
    assert code == 0
    bundle = load_refiner(str(run / "refiner.safetensors"))
    assert bundle.train_step == 2 and bundle.family == "SD15" and bundle.embed_dim == 64 and bundle.optimizer_state is None
    assert len(list(run.glob("latents-*.safetensors"))) == 1


def test_the_cli_trains_a_negative_aware_dial_refiner(tmp_path):
    """--negative-prompts, --guidance-range and --dial-targets reach the file as the node's inputs do."""
    from dice_testkit import harness

    harness.setup_comfy()
    prompts, negatives = tmp_path / "p.txt", tmp_path / "n.txt"
    prompts.write_text("a red square on the left\na blue cross at the top\n")
    negatives.write_text("green\n# skipped\nyellow\n")
    run = tmp_path / "run"
    code = cli.main(["train", "--checkpoint", "toyworld", "--prompts", str(prompts), "--negative-prompts", str(negatives),
                     "--guidance-range", "2", "10", "--dial-targets", "resampled", "--run-dir", str(run), "--steps", "2",
                     "--batch-size", "2",
                     "--samples-per-prompt", "1", "--teacher-steps", "2", "--width", "128", "--height", "128", "--cpu",
                     "--no-progress"])
    assert code == 0
    bundle = load_refiner(str(run / "refiner.safetensors"))
    assert bundle.recipe["negative_prompts"] == ["green", "yellow"] and bundle.guidance_range == (2.0, 10.0)
    assert bundle.module.guidance_reference == 5.0 and bundle.recipe["dial_targets"] == "resampled"


def test_the_cli_trains_a_staged_refiner_and_refuses_edges_that_do_not_split_the_sampling(tmp_path, capsys):
    """--timestep-stages reaches the file as the node's timestep_stages does; bad edges get the sentence, not a trace."""
    from dice_testkit import harness

    harness.setup_comfy()
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square on the left\na blue cross at the top\n")
    common = ["train", "--checkpoint", "toyworld", "--prompts", str(prompts), "--steps", "2", "--batch-size", "2",
              "--samples-per-prompt", "1", "--teacher-steps", "4", "--width", "128", "--height", "128", "--cpu",
              "--no-progress"]
    run = tmp_path / "run"
    assert cli.main([*common, "--run-dir", str(run), "--timestep-stages", "0.5"]) == 0
    bundle = load_refiner(str(run / "refiner.safetensors"))
    assert bundle.module.stage_edges == (0.5,) and bundle.stage_ranges == [(0.0, 0.5), (0.5, 1.0)]
    assert cli.main([*common, "--run-dir", str(tmp_path / "bad"), "--timestep-stages", "0.5, 0.2"]) != 0
    assert "timestep stage edges must increase strictly between 0 and 1" in capsys.readouterr().err


def test_a_real_checkpoint_file_loads_with_comfyuis_loader_and_trains(tiny_checkpoint, tmp_path):
    """The tiny SD1.5 checkpoint file of the e2e tests: full CLIP-L text encoder and TAESD VAE encoding images."""
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, caption in enumerate(["a photo of a cat", "a watercolor painting of a lighthouse"]):
        Image.new("RGB", (64, 64), (40 + 150 * i, 90, 200 - 150 * i)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(caption)
    run = tmp_path / "run"
    code = cli.main(["train", "--checkpoint", tiny_checkpoint, "--images", str(folder), "--run-dir", str(run), "--steps", "2",
                     "--batch-size", "2", "--width", "64", "--height", "64", "--cpu", "--no-progress"])
    assert code == 0
    bundle = load_refiner(str(run / "refiner.safetensors"))
    assert bundle.family == "SD15" and bundle.embed_dim == 768 and bundle.train_step == 2
    assert bundle.base_model_hash and bundle.null_uc.shape == (1, 77, 768)


def test_coco_captions_pair_each_caption_with_its_image_encoded_once(tmp_path):
    import json

    from PIL import Image

    from dice_cli import data
    from dice_cli.errors import CliError
    from dice_testkit import harness

    harness.setup_comfy()
    (tmp_path / "train2017").mkdir()
    for name in ("b.jpg", "a.jpg", "c.jpg"):
        Image.new("RGB", (80, 64), (30, 60, 90)).save(tmp_path / "train2017" / name)
    doc = {"images": [{"id": 9, "file_name": "b.jpg"}, {"id": 3, "file_name": "a.jpg"}, {"id": 5, "file_name": "c.jpg"}],
           "annotations": [{"id": 20, "image_id": 9, "caption": "second of b"}, {"id": 2, "image_id": 9, "caption": "first of b"},
                           {"id": 7, "image_id": 3, "caption": " a   cat "}, {"id": 1, "image_id": 5, "caption": ""}]}
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(doc))
    ds = data.coco_captions(str(path), str(tmp_path / "train2017"), captions_per_image=0)
    assert [os.path.basename(p) for p in ds.images] == ["a.jpg", "b.jpg"]  # by image id; c has no caption text
    assert ds.captions == ["a cat", "first of b", "second of b"] and ds.image_of == [0, 1, 1]
    assert data.coco_captions(str(path), str(tmp_path / "train2017")).captions == ["a cat", "first of b"]
    with pytest.raises(CliError, match="point --image-root at the folder"):
        data.coco_captions(str(path))  # the images are not next to the JSON
    path.write_text(json.dumps({**doc, "annotations": doc["annotations"] + [{"image_id": 4, "caption": "x"}]}))
    with pytest.raises(CliError, match="image id 4, which is not in its 'images' list"):
        data.coco_captions(str(path), str(tmp_path / "train2017"))
    path.write_text(json.dumps(doc))
    run = tmp_path / "run"
    assert run_inprocess("--coco", str(path), "--image-root", str(tmp_path / "train2017"), "--captions-per-image", "0",
                         "--run-dir", str(run), "--steps", "2", "--batch-size", "2") == 0
    assert "3 captions of 2 images" in (run / "train.log").read_text()


# ---- clear errors ----------------------------------------------------------------------------------
def test_unknown_checkpoint_family_names_the_file(tmp_path, capsys):
    from safetensors.torch import save_file

    from dice_testkit import harness

    harness.setup_comfy()
    bogus = tmp_path / "not_a_model.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(4, 4), "head.bias": torch.zeros(4)}, str(bogus))
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    code = cli.main(["train", "--checkpoint", str(bogus), "--prompts", str(prompts), "--run-dir", str(tmp_path / "r"), "--cpu"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{bogus}: ComfyUI did not recognise the model type of this checkpoint" in err, err


@pytest.mark.parametrize("case", ["empty_prompts", "uncaptioned_images", "missing_checkpoint", "reused_run_dir", "bad_batch"])
def test_bad_inputs_get_one_clear_line(tmp_path, capsys, case):
    from dice_testkit import harness

    harness.setup_comfy()
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    args = ["--prompts", str(prompts)]
    expected = None
    if case == "empty_prompts":
        prompts.write_text("\n   \n# only a comment\n")
        expected = f"prompts file {prompts} has no prompts"
    elif case == "uncaptioned_images":
        from PIL import Image

        (tmp_path / "imgs").mkdir()
        for name in ("a.png", "b.jpg"):
            Image.new("RGB", (64, 64)).save(tmp_path / "imgs" / name)
        args = ["--images", str(tmp_path / "imgs")]
        expected = f"image folder {tmp_path / 'imgs'} has 2 images but no captions"
    elif case == "missing_checkpoint":
        args += ["--checkpoint", str(tmp_path / "nope.safetensors")]
        expected = f"checkpoint not found: {tmp_path / 'nope.safetensors'}"
    elif case == "reused_run_dir":
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / "checkpoint.safetensors").write_bytes(b"x")
        expected = f"{tmp_path / 'r'} already holds a run"
    elif case == "bad_batch":
        args += ["--global-batch-size", "0"]
        expected = "--global-batch-size 0 does not divide"
    code = cli.main(["train", *COMMON, *args, "--run-dir", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and f"dice_cli: error: {expected}" in err, err
    assert "Traceback" not in err
