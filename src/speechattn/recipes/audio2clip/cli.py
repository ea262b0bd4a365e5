"""``speechattn audio2clip train | eval | generate | demo | app``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from speechattn._cli import (
    CliError,
    add_hidden_alias,
    nonnegative_int,
    out_dir,
    positive_float,
    positive_int,
)
from speechattn._io import atomic_write, write_text_atomic

__all__ = ["PIPELINE_HELP", "add_image_arguments", "add_parser"]

PIPELINE_HELP = (
    "Stable Diffusion pipeline: a local diffusers folder, or a Hugging Face Hub id such as "
    "stabilityai/stable-diffusion-2-1 (a hub id not in the local cache downloads several GB; "
    "offline, with HF_HUB_OFFLINE=1, it must be cached)"
)
MASK_HELP = (
    "true: leave the caption's padding positions out of the loss; false: score them too "
    "(default: true for BERT-like text encoders, false for CLIP, whose padded states Stable "
    "Diffusion uses)"
)


def _require_out(args: argparse.Namespace) -> None:
    if getattr(args, "out", None) is None:
        raise CliError("the following arguments are required: --out", status=2)


def _train(args: argparse.Namespace) -> int:
    from speechattn.recipes._distributed import end_process_group, start_process_group
    from speechattn.recipes.audio2clip.train import CHECKPOINT_FOLDER, _checkpoint_steps, train

    _require_out(args)
    start_process_group()  # under torchrun (the Trainer takes it up): nccl with CUDA, else gloo
    ok = False
    try:
        out = train(
            manifest=args.manifest,
            output_dir=args.out,
            audio_model=args.audio_model,
            text_model=args.text_model,
            text_length=args.text_length,
            length_mode=args.length_mode,
            num_heads=args.num_heads,
            epochs=args.epochs,
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            temperature=args.temperature,
            learnable_temperature=args.learnable_temperature,
            direction=args.direction,
            mask_text_padding=args.mask_text_padding,
            seed=args.seed,
            progress=not args.no_progress,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
        )
        ok = True
    except KeyboardInterrupt:
        # the top-level handler adds the command that resumes (with --resume) when there is a
        # checkpoint to resume from
        found = _checkpoint_steps(Path(args.out) / CHECKPOINT_FOLDER)
        args.resumable = bool(found)
        if found:
            raise KeyboardInterrupt(f"checkpoint at step {found[0][0]} in {found[0][1]}") from None
        if args.checkpoint_every:
            raise KeyboardInterrupt(
                f"before the first checkpoint (every {args.checkpoint_every} steps)"
            ) from None
        raise
    finally:
        end_process_group(ok=ok)
    if os.environ.get("RANK", "0") == "0":
        print(f"saved audio encoder to {out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from speechattn.recipes.audio2clip.model import check_model_folder
    from speechattn.recipes.audio2clip.train import evaluate, format_metrics

    check_model_folder(args.model)
    skipped: list[str] = []
    m = evaluate(
        manifest=args.manifest,
        model=args.model,
        text_model=args.text_model,
        mask_text_padding=args.mask_text_padding,
        skipped=skipped,
    )
    print(format_metrics(m))
    if skipped:
        print(f"skipped: {len(skipped)} manifest line(s) or file(s) (see the warnings above)")
    if args.json:
        write_text_atomic(args.json, json.dumps({**m._asdict(), "skipped": len(skipped)}, indent=2))
    return 0


def _generate(args: argparse.Namespace) -> int:
    import warnings

    from speechattn.data.audio import AudioError
    from speechattn.recipes.audio2clip.data import load_audio_16k
    from speechattn.recipes.audio2clip.generate import (
        check_pipeline_source,
        generate_images,
        load_pipeline,
    )
    from speechattn.recipes.audio2clip.model import AudioToTextEncoder, check_model_folder

    check_model_folder(args.model)
    check_pipeline_source(args.pipeline)
    paths, waves = [], []
    for p in args.audio:
        try:
            waves.append(load_audio_16k(p, validate=True))
            paths.append(p)
        except AudioError as exc:
            warnings.warn(f"skipped: {exc}", stacklevel=1)
    if not waves:
        raise CliError(f"none of the {len(args.audio)} audio file(s) is usable (see the warnings)")
    encoder = AudioToTextEncoder.from_pretrained(args.model)
    pipe = load_pipeline(args.pipeline, device=args.device)
    encoder.to(pipe.device)
    images = generate_images(
        encoder,
        pipe,
        waves,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        height=args.height,
        width=args.width,
        seed=args.seed,
        progress=not args.no_progress,
    )
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, img in zip(paths, images):
        dest = out_dir / f"{Path(path).stem}.png"
        with atomic_write(dest) as tmp:
            img.save(tmp, format="PNG")
        print(dest)
    if len(paths) < len(args.audio):
        print(f"skipped: {len(args.audio) - len(paths)} file(s) (see the warnings above)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from speechattn.recipes.audio2clip.demo import DemoConfig, run_demo

    config = None
    if args.set:
        if args.quick:
            raise CliError("--set cannot be combined with --quick", status=2)
        try:
            config = DemoConfig.from_overrides(args.set)
        except ValueError as exc:
            raise CliError(str(exc), status=2) from None
    report = run_demo(
        output_dir=Path(args.out),
        quick=args.quick,
        seed=args.seed,
        config=config,
        progress=not args.no_progress,
    )
    print(json.dumps(report, indent=2))
    return 0


def _bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes"):
        return True
    if s.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false; found {s!r}")


def _max_steps(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or -1; found {text!r}"
        ) from None
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or -1; found {text!r}")
    return value


def add_image_arguments(p: argparse.ArgumentParser) -> None:
    """The image options ``generate`` and ``app`` share: denoising steps, guidance, size."""
    p.add_argument(
        "--steps", type=positive_int, default=25, help="denoising steps (default: %(default)s)"
    )
    p.add_argument(
        "--guidance-scale",
        type=positive_float,
        default=7.5,
        help="classifier-free guidance scale (default: %(default)s)",
    )
    p.add_argument(
        "--height", type=positive_int, default=None, help="image height (default: the pipeline's)"
    )
    p.add_argument(
        "--width", type=positive_int, default=None, help="image width (default: the pipeline's)"
    )


def _out(p: argparse.ArgumentParser, default: str | None, help: str) -> None:
    if default is None:  # required, checked in the handler (an alias may give it)
        p.add_argument("--out", type=out_dir, default=None, help=help + " (required)")
    else:
        p.add_argument(
            "--out", type=out_dir, default=default, help=help + " (default: %(default)s)"
        )
    add_hidden_alias(p, "--output-dir", "out", type=out_dir)
    add_hidden_alias(p, "--out-dir", "out", type=out_dir)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``audio2clip`` and its subcommands."""
    from speechattn.recipes.audio2clip.app import add_app_arguments

    p = sub.add_parser(
        "audio2clip",
        help="audio encoder standing in for a text encoder: train, eval, generate, demo, app",
    )
    s = p.add_subparsers(dest="audio2clip_command", metavar="ACTION", required=True)

    t = s.add_parser("train", help="fine-tune on a JSONL manifest of (audio, caption)")
    t.add_argument(
        "--manifest", required=True, help="JSONL manifest, one {audio, caption} object per line"
    )
    _out(t, None, "folder for the trained audio encoder")
    t.add_argument(
        "--audio-model",
        default="facebook/w2v-bert-2.0",
        help="w2v-BERT checkpoint: a local folder or a Hugging Face Hub id (default: %(default)s)",
    )
    t.add_argument("--text-model", required=True, help="folder/id of the frozen text encoder")
    t.add_argument(
        "--text-length",
        type=positive_int,
        default=None,
        help="L, the number of output positions: the text encoder's sequence length "
        "(default: the tokenizer's maximum, 77 for CLIP)",
    )
    t.add_argument(
        "--length-mode",
        choices=("resample", "pad_crop"),
        default="resample",
        help="how the audio states are matched to L positions: resample (cross-attention "
        "from L learned queries, any duration) or pad_crop (frame l, learned padding past the "
        "audio's end) (default: %(default)s)",
    )
    t.add_argument(
        "--num-heads",
        type=positive_int,
        default=8,
        help="attention heads of the resampler that matches the length (default: %(default)s)",
    )
    t.add_argument(
        "--epochs", type=positive_float, default=10.0, help="passes over the manifest (default: 10)"
    )
    t.add_argument(
        "--max-steps", type=_max_steps, default=-1, help="stop after this many steps (-1: epochs)"
    )
    t.add_argument(
        "--batch-size", type=positive_int, default=16, help="items per step (default: %(default)s)"
    )
    t.add_argument(
        "--lr", type=positive_float, default=1e-4, help="learning rate (default: %(default)s)"
    )
    t.add_argument(
        "--temperature",
        type=positive_float,
        default=0.15,
        help="contrastive loss temperature (default: %(default)s)",
    )
    t.add_argument(
        "--learnable-temperature",
        action="store_true",
        help="learn the temperature (as its log, so it stays positive)",
    )
    t.add_argument(
        "--direction",
        choices=("audio_to_text", "text_to_audio", "both"),
        default="audio_to_text",
        help="audio_to_text: each audio picks its caption among the batch's; text_to_audio: "
        "each caption picks its audio; both: the mean of the two (default: %(default)s)",
    )
    t.add_argument("--mask-text-padding", type=_bool, default=None, help=MASK_HELP)
    t.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    t.add_argument(
        "--no-progress",
        action="store_true",
        help="no training log lines (loss, learning rate) while training",
    )
    t.add_argument(
        "--checkpoint-every",
        type=nonnegative_int,
        default=0,
        metavar="STEPS",
        help="write a resumable checkpoint to OUT/trainer every STEPS steps, keeping the latest "
        "(default: %(default)s, none)",
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue from the latest checkpoint in OUT/trainer; pass the same other "
        "arguments as the interrupted run (the result equals an uninterrupted run; other "
        "settings than those recorded in OUT/trainer/run.json are refused)",
    )
    t.set_defaults(func=_train, resume_args=("--resume",))

    e = s.add_parser(
        "eval", help="retrieval R@1/5/10 both ways and the matched/mismatched cosine gap"
    )
    e.add_argument(
        "--manifest", required=True, help="JSONL manifest, one {audio, caption} object per line"
    )
    e.add_argument("--model", required=True, help="folder written by train")
    e.add_argument("--text-model", required=True, help="folder/id of the text encoder")
    e.add_argument("--mask-text-padding", type=_bool, default=None, help=MASK_HELP)
    e.add_argument("--json", default=None, help="write the metrics here")
    e.set_defaults(func=_eval)

    g = s.add_parser("generate", help="audio files -> PNG images with a Stable Diffusion pipeline")
    g.add_argument("audio", nargs="+", help="audio files, one image each")
    g.add_argument("--model", required=True, help="audio encoder folder written by train")
    g.add_argument("--pipeline", required=True, help=PIPELINE_HELP)
    _out(g, "images", "folder for the PNG images")
    add_image_arguments(g)
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the image noise; file i uses seed + i (default: %(default)s)",
    )
    g.add_argument(
        "--device", default=None, help="torch device (default: cuda when available, else cpu)"
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(func=_generate)

    d = s.add_parser(
        "demo", help="offline: espeak captions -> MiniLM token states, retrieval report"
    )
    _out(d, "audio2clip_demo", "folder for the model and report.json")
    d.add_argument("--quick", action="store_true", help="tiny run (seconds), for tests")
    d.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    d.add_argument(
        "--no-progress",
        action="store_true",
        help="no loss and per-epoch lines while training (the report is printed at the end)",
    )
    d.add_argument(
        "--set",
        nargs="+",
        action="extend",
        metavar="KEY=VALUE",
        default=[],
        help="override DemoConfig fields, e.g. --set passes=4 epochs=4 spec_augment=false",
    )
    d.set_defaults(func=_demo)

    a = s.add_parser("app", help="Gradio page: upload/record audio -> image (127.0.0.1:7860)")
    add_app_arguments(a)
