"""`python -m dice_cli train`: distil a checkpoint's CFG into a DICE refiner without the ComfyUI server.

One process trains on one GPU (or the CPU). Under `torchrun --nproc_per_node N` every process is one
rank: the global batch is --batch-size x N, the teacher sampling and VAE encoding are split between
the ranks and gathered, gradients are averaged, and rank 0 alone writes the run folder.

The training itself is the node's: dice_comfy.session.run_training and dice_core.training.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
import traceback

from . import distributed
from .errors import CliError, StopAfter, Terminated

log = logging.getLogger("dice_cli")
trace = logging.getLogger("dice_trace")  # tracebacks for train.log only

CHECKPOINT = "checkpoint.safetensors"  # resumable: weights, optimizer state, step (rank 0 rewrites it atomically)
FINAL = "refiner.safetensors"  # the result, without optimizer state: load it with DICE Load Refiner


class _Help(argparse.HelpFormatter):
    """Shows a default only where it says something."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, "", argparse.SUPPRESS) or action.nargs == 0:
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    from dice_core.training import AUTOCAST_DTYPES, DEFAULT_RECIPE, RECIPES

    parser = argparse.ArgumentParser(
        prog="python -m dice_cli",
        description="Headless DICE trainer for ComfyUI checkpoints. Several GPUs: torchrun --nproc_per_node N -m dice_cli train ...",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a refiner", formatter_class=_Help,
                       description="Distil the checkpoint's CFG (the teacher at --guidance-scale) into a refiner so "
                       "that sampling at cfg 1.0 matches it.")
    t.add_argument("--checkpoint", required=True,
                   help="checkpoint file that ComfyUI's Load Checkpoint reads (SD1.5, SDXL, ...), or 'toyworld' "
                   "for the pack's small demo model")
    t.add_argument("--run-dir", required=True,
                   help=f"output folder: {CHECKPOINT} (resumable), {FINAL} (result), train.log, latent cache")
    source = t.add_argument_group("data (choose one)").add_mutually_exclusive_group(required=True)
    source.add_argument("--prompts", metavar="FILE", help="data-free: a text file with one prompt per line; the teacher "
                        "samples its own training latents")
    source.add_argument("--images", metavar="DIR", help="images, each with its caption in a same-name .txt file; "
                        "encoded once with the checkpoint's VAE (the paper's setting)")
    source.add_argument("--coco", metavar="JSON", help="COCO-style captions JSON (images + annotations)")
    t.add_argument("--image-root", metavar="DIR", help="folder of the --coco images (default: the JSON's folder)")
    t.add_argument("--captions-per-image", type=int, default=1, help="--coco: captions used per image (0: all)")
    t.add_argument("--limit", type=int, default=0, help="use only the first N prompts or images (0: all)")
    t.add_argument("--negative", default="", help="the uc prompt CFG is distilled against (default: the empty prompt)")
    t.add_argument("--negative-prompts", metavar="FILE",
                   help="negative-aware training: a text file with the negative prompts you sample with, one per line; "
                   "every prompt is trained with each of them and with --negative (the teacher's cost grows with their "
                   "number plus one)")
    t.add_argument("--steps", type=int, default=1000, help="total optimizer updates (when resuming: the total to reach)")
    batch = t.add_mutually_exclusive_group()
    batch.add_argument("--batch-size", type=int, default=None, help="samples per update on each rank (default 8); "
                       "the global batch is this times the number of ranks")
    batch.add_argument("--global-batch-size", type=int, default=None,
                       help="samples per update over all ranks; must divide by the number of ranks")
    t.add_argument("--guidance-scale", type=float, default=5.0, help="the teacher's CFG scale w (a dial's default)")
    t.add_argument("--guidance-range", type=float, nargs=2, metavar=("MIN", "MAX"), default=(0.0, 0.0),
                   help="train a dial refiner for every CFG scale in [MIN, MAX], for DICE Refine Conditioning's "
                   "guidance_scale (default: one scale, the paper's refiner)")
    t.add_argument("--dial-targets", choices=("trajectory", "resampled"), default=None,
                   help="a dial's training targets: CFG at each teacher trajectory's own w (default), or at a fresh w "
                   "per draw, rebuilt from the state's stored guidance gap at no extra teacher calls. In the toy world "
                   "(dial 2-10, 1500 steps, validation seeds) resampled came closer to CFG at w = 7 and 9 but not at "
                   "w = 3, so it is not the default")
    t.add_argument("--timestep-stages", default="", metavar="EDGES",
                   help="timestep-aware refinement: comma-separated sampling percents where the next stage's refiner "
                   "takes over, e.g. '0.08, 0.24, 0.5' for four stages (as DICE Train Refiner's timestep_stages); each "
                   "step trains every stage on a batch, so it costs the stage count times as much. Default: one refiner")
    t.add_argument("--recipe", choices=sorted(RECIPES), default=DEFAULT_RECIPE,
                   help="dice-pack: teacher trajectories, x0 loss, lr 3e-3 cosine (this pack's measured best); "
                   "paper: noised latents, eps loss, lr 2e-4 (Zhou et al.)")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's)")
    t.add_argument("--loss", choices=("auto", "l1", "l2"), default="auto", help="auto: the paper's choice per family")
    t.add_argument("--seed", type=int, default=0, help="refiner init, teacher noise and batch order")
    t.add_argument("--width", type=int, default=512, help="image width: data-free samples and image resizing")
    t.add_argument("--height", type=int, default=512, help="image height")
    t.add_argument("--frames", type=int, default=9,
                   help="video families only: frames per data-free teacher sample (cost grows with width x height x frames)")
    t.add_argument("--samples-per-prompt", type=int, default=4, help="data-free: teacher samples per prompt")
    t.add_argument("--teacher-steps", type=int, default=20, help="data-free: sampling steps of the teacher")
    t.add_argument("--teacher-batch-size", type=int, default=8,
                   help="data-free: samples per teacher call. The data's order depends on it, not on the number of "
                   "ranks, so keep it fixed to reproduce a run on other hardware")
    t.add_argument("--save-every", type=int, default=100, help=f"rewrite {CHECKPOINT} every N steps (0: only at the end)")
    t.add_argument("--resume", nargs="?", const="auto", metavar="FILE",
                   help=f"continue from FILE, or without FILE from RUN_DIR/{CHECKPOINT}; any number of ranks")
    t.add_argument("--overwrite", action="store_true", help="start afresh even though RUN_DIR holds a checkpoint")
    t.add_argument("--stop-after", type=int, default=0, metavar="N",
                   help="end this launch after N steps with a checkpoint (for time-limited jobs; continue with --resume)")
    t.add_argument("--autocast", choices=list(AUTOCAST_DTYPES), default="bf16", help="CUDA: compute precision for a model loaded in float32 (fp16/bf16 models keep theirs)")
    t.add_argument("--gradient-checkpointing", action="store_true", help="less memory, about 30%% slower")
    t.add_argument("--vae-batch-size", type=int, default=8, help="images per VAE call")
    t.add_argument("--cpu", action="store_true", help="run on the CPU even if CUDA is available (gloo between ranks)")
    t.add_argument("--comfyui", metavar="DIR", help="ComfyUI folder (default: $COMFYUI_PATH, else the ComfyUI whose "
                   "custom_nodes holds this pack)")
    t.add_argument("--dist-timeout", type=float, default=1800.0, help="seconds a rank waits for the others")
    t.add_argument("--log-every", type=int, default=0, help="log a line every N steps (0: about 50 lines per run)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    p = sub.add_parser("import-paper", formatter_class=_Help,
                       help="convert the paper's sharpener-snapshot.pkl into a refiner file (no ComfyUI needed)",
                       description="Reads the official code's pickled sharpener with a restricted unpickler (tensors "
                       "only, nothing executed) and writes it as a .safetensors refiner for DICE Load Refiner.")
    p.add_argument("snapshot", help="the paper's sharpener-snapshot.pkl")
    p.add_argument("out", help="the refiner file to write, e.g. ComfyUI/models/dice/paper_sd15.safetensors")
    p.add_argument("--family", default="SD15", help="ComfyUI model family it was trained for: SD15 or SDXL, as the paper's "
                   "checkpoints are")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.command == "train":
        return run_train(args)
    if args.command == "import-paper":
        return run_import_paper(args)
    return 2


def run_import_paper(args: argparse.Namespace) -> int:
    """The paper's pickled sharpener as a refiner file; a bad file or family is one line, not a traceback."""
    from dice_core.families import family_info
    from dice_core.fileformat import save_refiner
    from dice_core.legacy_import import import_paper_snapshot

    try:
        if not os.path.isfile(args.snapshot):
            raise ValueError(f"{args.snapshot}: no such file (give the paper's sharpener-snapshot.pkl)")
        info = family_info(args.family)
        bundle = import_paper_snapshot(args.snapshot, info.name, info.keep_rule)
        if not args.out.endswith(".safetensors"):
            raise ValueError(f"{args.out}: the refiner file must end in .safetensors (DICE Load Refiner lists only those)")
        save_refiner(args.out, bundle, include_optimizer=False)
    except (OSError, ValueError) as e:  # RefinerFileError and UnsupportedFamilyError are ValueErrors
        print(f"dice_cli: error: {e}", file=sys.stderr, flush=True)
        return 1
    print(f"wrote {args.out}: {info.label} refiner, embedding dim {bundle.embed_dim}, from {args.snapshot}")
    return 0


# ---------------------------------------------------------------------------------------------
def run_train(args: argparse.Namespace) -> int:
    """Train, and turn every failure into one line: 'rank R failed: ...' (or 'error: ...' alone)."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    state: dict = {}
    ctx = distributed.Context()
    restore_signal = _raise_on_sigterm()
    code, message = 0, None
    try:
        ctx = distributed.init(args.dist_timeout, args.cpu)
        train(args, ctx, state)
    except StopAfter as e:
        log.info("stopped after step %d as asked (--stop-after); continue with --resume", e.step)
        ctx.barrier()
    except CliError as e:
        code, message = 1, str(e)
    except ValueError as e:  # the training code's own checks (resume too far, token lengths, ...) are user errors
        code, message = 1, str(e)
        trace.info("traceback", exc_info=True)
    except Terminated:
        code, message = 143, "terminated by SIGTERM"
        if world > 1:
            message += " (torchrun stops every rank when one fails: look for that rank's 'failed' line)"
    except KeyboardInterrupt:
        code, message = 130, "interrupted"
    except Exception as e:
        code, message = 1, f"{type(e).__name__}: {e}"
        if ctx.enabled and _is_comm_error(e):
            message += " (a collective operation failed: another rank has probably failed or stopped; see its line)"
        else:
            traceback.print_exc()  # an unexpected error: the traceback matters
        trace.info("traceback", exc_info=True)
    finally:
        restore_signal()
        if "progress" in state:
            state["progress"].close()
    if code:
        line = f"rank {rank} failed: {message}" if world > 1 else f"dice_cli: error: {message}"
        kept = _kept_checkpoint(state) if rank == 0 else None
        if kept:
            line += f"\n{kept}"
        if "logs" in state:
            trace.error("%s", line)  # train.log
        print(line, file=sys.stderr, flush=True)
    if "logs" in state:
        state["logs"].close()
    if code == 0:
        distributed.shutdown(ctx)  # after a failure a dead peer could hang it; the process exits anyway
    return code


def _raise_on_sigterm():
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _is_comm_error(e: BaseException) -> bool:
    import torch.distributed as dist

    dist_error = getattr(dist, "DistError", ())
    text = str(e)
    return isinstance(e, dist_error) or any(s in text for s in ("Connection closed", "Connection reset", "Timed out", "timeout"))


def _kept_checkpoint(state: dict) -> str | None:
    path = state.get("checkpoint_path")
    if not path or not os.path.isfile(path):
        return None
    try:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            step = (f.metadata() or {}).get("train_step", "?")
    except Exception:
        return None
    return f"the last checkpoint (step {step}) is kept at {path}; continue with --resume"


# ---------------------------------------------------------------------------------------------
def _validated_batch_per_rank(args: argparse.Namespace, world: int) -> int:
    """Check the arguments that need no model, and return the batch size of each rank."""
    for name in ("steps", "samples_per_prompt", "teacher_steps", "teacher_batch_size", "vae_batch_size"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if min(args.save_every, args.limit, args.captions_per_image, args.stop_after) < 0:
        raise CliError("--save-every, --limit, --captions-per-image and --stop-after cannot be negative")
    if args.width % 8 or args.height % 8 or min(args.width, args.height) < 64:
        raise CliError(f"--width and --height must be multiples of 8 and at least 64, got {args.width}x{args.height}")
    if args.image_root and not args.coco:
        raise CliError("--image-root goes with --coco")
    if args.global_batch_size is not None:
        if args.global_batch_size < 1 or args.global_batch_size % world:
            raise CliError(f"--global-batch-size {args.global_batch_size} does not divide between {world} ranks")
        return args.global_batch_size // world
    batch = 8 if args.batch_size is None else args.batch_size
    if batch < 1:
        raise CliError(f"--batch-size must be at least 1, got {batch}")
    return batch


def _dataset(args: argparse.Namespace):
    from . import data

    if args.prompts:
        return data.read_prompts_file(args.prompts, args.limit)
    if args.images:
        return data.image_folder(args.images, args.limit)
    return data.coco_captions(args.coco, args.image_root, args.captions_per_image, args.limit)


def _negative_prompts(path: str | None) -> list[str]:
    """--negative-prompts: one negative per line, as the node's text box reads them; none without the flag."""
    if path is None:
        return []
    from . import data

    return data.read_prompts_file(path).captions


def _decide_resume(args: argparse.Namespace, run_dir: str):
    """Rank 0: the bundle to resume (or None), after checking the run folder is not silently reused."""
    from dice_core.fileformat import RefinerFileError, load_refiner

    own = os.path.join(run_dir, CHECKPOINT)
    if args.resume:
        path = own if args.resume == "auto" else os.path.abspath(os.path.expanduser(args.resume))
        if not os.path.isfile(path):
            raise CliError(f"nothing to resume: {path} does not exist")
        try:
            bundle = load_refiner(path)
        except RefinerFileError as e:
            raise CliError(str(e)) from None
        if not bundle.optimizer_state:
            log.warning("%s has no optimizer state (a final refiner file?): AdamW restarts from zero", path)
        return bundle, path
    if os.path.isfile(own) and not args.overwrite:
        raise CliError(f"{run_dir} already holds a run ({own}): pass --resume to continue it, "
                       "--overwrite to start again there, or choose another --run-dir")
    return None, None


def _check_resume(bundle, cfg, global_batch: int, model_hash: str, path: str) -> None:
    recipe = bundle.recipe or {}
    was = recipe.get("global_batch_size", recipe.get("batch_size"))
    if was is not None and int(was) != global_batch:
        log.warning("%s was trained with a global batch of %s; this run uses %d, so the steps after %d differ from an "
                    "uninterrupted run (give --global-batch-size %s to match)", path, was, global_batch, bundle.train_step, was)
    for key in ("seed", "recipe", "guidance_scale"):
        if key in recipe and recipe[key] != getattr(cfg, key):
            log.warning("%s was trained with %s=%r; this run uses %r", path, key, recipe[key], getattr(cfg, key))
    if bundle.base_model_hash and bundle.base_model_hash != model_hash:
        log.warning("%s was trained on a different model (fingerprint %s, this one %s)", path, bundle.base_model_hash,
                    model_hash)


def train(args: argparse.Namespace, ctx: distributed.Context, state: dict) -> None:
    import torch

    from dice_comfy.setup import ComfyUINotFoundError, setup_comfy

    from . import data as data_mod
    from . import models
    from .progress import Logs, Progress

    batch = _validated_batch_per_rank(args, ctx.world_size)
    run_dir = os.path.abspath(os.path.expanduser(args.run_dir))
    if ctx.is_main:  # only rank 0 touches the run folder (other nodes need not see it)
        try:
            os.makedirs(run_dir, exist_ok=True)
        except OSError as e:
            raise CliError(f"cannot create the run folder {run_dir}: {e}") from None
        state["checkpoint_path"] = os.path.join(run_dir, CHECKPOINT)
    state["logs"] = Logs(run_dir if ctx.is_main else None, ctx.rank, ctx.world_size)
    log.info("python -m dice_cli %s", " ".join(shlex.quote(a) for a in args.argv))
    dataset = _dataset(args)  # cheap checks (files, captions) before the model is loaded
    negative_texts = tuple(dict.fromkeys(_negative_prompts(args.negative_prompts)))
    global_batch = batch * ctx.world_size
    log.info("%d rank(s)%s, batch %d per rank, global batch %d; data: %s", ctx.world_size,
             f" ({ctx.backend})" if ctx.enabled else "", batch, global_batch, dataset.describe())

    try:
        setup_comfy(args.comfyui, args.cpu)
    except ComfyUINotFoundError as e:
        raise CliError(str(e)) from None
    from dice_comfy import bridge, session
    from dice_core.fileformat import save_refiner
    from dice_core.training import AUTOCAST_DTYPES, TrainConfig, TrainingEvents, guidance_range, parse_stage_edges

    resume, resume_path = ctx.on_main(lambda: _decide_resume(args, run_dir))
    t0 = time.monotonic()
    model = models.load(args.checkpoint)
    log.info("loaded %s (%s) in %.1fs", args.checkpoint, bridge.family_of(model.patcher), time.monotonic() - t0)

    with torch.no_grad():
        entries = [bridge.encode_prompt(model.clip, text)[0] for text in dataset.captions]
        uc_entry = bridge.encode_prompt(model.clip, args.negative)[0]
        negatives = [bridge.encode_prompt(model.clip, text)[0] for text in negative_texts]
    try:
        info = bridge.family_for(model.patcher)
    except ValueError as e:  # a guidance-distilled or unsupported family: the sentence says why
        raise CliError(str(e)) from None
    try:
        cfg = TrainConfig.from_inputs(args.recipe, args.loss, info.default_loss, args.lr, steps=args.steps, batch_size=batch,
                                      guidance_scale=args.guidance_scale, seed=args.seed, save_every=args.save_every,
                                      samples_per_prompt=args.samples_per_prompt, teacher_steps=args.teacher_steps,
                                      negative_prompts=negative_texts,
                                      guidance_range=guidance_range(*args.guidance_range),
                                      timestep_stages=parse_stage_edges(args.timestep_stages),
                                      **({"dial_targets": args.dial_targets} if args.dial_targets else {}))
        cfg.validate()
    except ValueError as e:
        raise CliError(str(e)) from None
    if resume is not None:
        _check_resume(resume, cfg, global_batch, bridge.model_fingerprint(model.patcher), resume_path)
        log.info("resuming %s at step %d of %d", resume_path, resume.train_step, cfg.steps)

    progress = Progress(ctx.is_main, not args.no_progress, cfg.steps, resume.train_step if resume else 0, args.log_every)
    state["progress"] = progress
    latents = None
    if dataset.images is not None:
        key = data_mod.cache_key(dataset.images, model.identity, args.width, args.height)
        cache = os.path.join(run_dir, f"latents-{key}.safetensors")
        unique = data_mod.encode_images(ctx, model.vae, dataset.images, args.width, args.height, args.vae_batch_size, cache,
                                        progress=lambda d, n: progress.phase("vae", d, n))
        latents = unique[torch.tensor(dataset.image_of)]

    if ctx.is_main:
        with open(os.path.join(run_dir, "config.json"), "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "world_size": ctx.world_size, "global_batch_size": global_batch,
                       "train_config": cfg.as_dict(), "family": info.name}, f, indent=2, default=str)

    def save_checkpoint(bundle) -> None:
        if state.get("saved_step") == bundle.train_step:
            return  # an interruption right after a periodic save: the file already holds this step
        bundle.recipe = {**bundle.recipe, "world_size": ctx.world_size, "global_batch_size": global_batch}
        save_refiner(state["checkpoint_path"], bundle)
        state["saved_step"] = bundle.train_step
        log.info("checkpoint at step %d written to %s", bundle.train_step, state["checkpoint_path"])

    stop_at = (resume.train_step if resume else 0) + args.stop_after if args.stop_after else None

    def on_step(step: int, loss: float) -> None:  # every rank: they all stop at the same step
        progress.step(step, loss)
        if step == stop_at and step < cfg.steps:
            raise StopAfter(step)  # train_refiner checkpoints the step on rank 0, then lets it through

    options = session.SessionOptions(width=args.width, height=args.height, frames=args.frames, latents=latents,
                                     resume=resume, gradient_checkpointing=args.gradient_checkpointing,
                                     autocast_dtype=AUTOCAST_DTYPES[args.autocast],
                                     teacher_batch_size=args.teacher_batch_size, negatives=negatives)
    events = TrainingEvents(
        on_step=on_step,
        on_teacher_progress=(lambda d, n: progress.phase("teacher", d, n)) if ctx.is_main else None,
        save_checkpoint=save_checkpoint if ctx.is_main else None,
    )
    result = session.run_training(model.patcher, entries, uc_entry, cfg, options, events, ctx)
    if ctx.is_main:
        save_checkpoint(result.bundle)
        final = os.path.join(run_dir, FINAL)
        save_refiner(final, result.bundle, include_optimizer=False)
        log.info("done: %s written to %s (final loss %.5f)", result.bundle.describe(), final, result.losses[-1])
    state["result"] = result
    ctx.barrier()
