"""``speechattn audio2clip train | eval | generate | demo``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_parser"]


def _train(args: argparse.Namespace) -> int:
    from speechattn.recipes.audio2clip.train import train

    out = train(
        manifest=args.manifest,
        output_dir=args.output_dir,
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
    )
    import os

    if os.environ.get("RANK", "0") == "0":
        print(f"saved audio encoder to {out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from speechattn.recipes.audio2clip.train import evaluate, format_metrics

    m = evaluate(
        manifest=args.manifest,
        model=args.model,
        text_model=args.text_model,
        mask_text_padding=args.mask_text_padding,
    )
    print(format_metrics(m))
    if args.json:
        Path(args.json).write_text(json.dumps(m._asdict(), indent=2))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from speechattn.recipes.audio2clip.data import load_audio_16k
    from speechattn.recipes.audio2clip.generate import generate_images, load_pipeline
    from speechattn.recipes.audio2clip.model import AudioToTextEncoder

    encoder = AudioToTextEncoder.from_pretrained(args.model)
    pipe = load_pipeline(args.pipeline, device=args.device)
    encoder.to(pipe.device)
    waves = [load_audio_16k(p) for p in args.audio]
    images = generate_images(
        encoder,
        pipe,
        waves,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        height=args.height,
        width=args.width,
        seed=args.seed,
    )
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, img in zip(args.audio, images):
        dest = out_dir / f"{Path(path).stem}.png"
        img.save(dest)
        print(dest)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from speechattn.recipes.audio2clip.demo import DemoConfig, run_demo

    config = None
    if args.set:
        if args.quick:
            raise SystemExit("error: --set cannot be combined with --quick")
        config = DemoConfig.from_overrides(args.set)
    report = run_demo(
        output_dir=Path(args.output_dir), quick=args.quick, seed=args.seed, config=config
    )
    print(json.dumps(report, indent=2))
    return 0


def _bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes"):
        return True
    if s.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false; found {s!r}")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``audio2clip`` and its subcommands."""
    p = sub.add_parser(
        "audio2clip",
        help="audio encoder standing in for a text encoder (seed 004): train, eval, generate, demo",
    )
    s = p.add_subparsers(dest="audio2clip_command", metavar="ACTION", required=True)

    t = s.add_parser("train", help="fine-tune on a JSONL manifest of (audio, caption)")
    t.add_argument("--manifest", required=True)
    t.add_argument("--output-dir", required=True)
    t.add_argument("--audio-model", default="facebook/w2v-bert-2.0")
    t.add_argument("--text-model", required=True, help="folder/id of the frozen text encoder")
    t.add_argument(
        "--text-length", type=int, default=None, help="L (default: tokenizer max, 77 for CLIP)"
    )
    t.add_argument("--length-mode", choices=("resample", "pad_crop"), default="resample")
    t.add_argument("--num-heads", type=int, default=8)
    t.add_argument("--epochs", type=float, default=10.0)
    t.add_argument("--max-steps", type=int, default=-1)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--temperature", type=float, default=0.15)
    t.add_argument("--learnable-temperature", action="store_true")
    t.add_argument(
        "--direction", choices=("audio_to_text", "text_to_audio", "both"), default="audio_to_text"
    )
    t.add_argument("--mask-text-padding", type=_bool, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_train)

    e = s.add_parser(
        "eval", help="retrieval R@1/5/10 both ways and the matched/mismatched cosine gap"
    )
    e.add_argument("--manifest", required=True)
    e.add_argument("--model", required=True, help="folder written by train")
    e.add_argument("--text-model", required=True)
    e.add_argument("--mask-text-padding", type=_bool, default=None)
    e.add_argument("--json", default=None, help="write the metrics here")
    e.set_defaults(func=_eval)

    g = s.add_parser("generate", help="audio files -> PNG images with a Stable Diffusion pipeline")
    g.add_argument("audio", nargs="+")
    g.add_argument("--model", required=True)
    g.add_argument("--pipeline", default="stabilityai/stable-diffusion-2-1")
    g.add_argument("--output-dir", default="images")
    g.add_argument("--steps", type=int, default=25)
    g.add_argument("--guidance-scale", type=float, default=7.5)
    g.add_argument("--height", type=int, default=None)
    g.add_argument("--width", type=int, default=None)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default=None)
    g.set_defaults(func=_generate)

    d = s.add_parser(
        "demo", help="offline: espeak captions -> MiniLM token states, retrieval report"
    )
    d.add_argument("--output-dir", default="audio2clip_demo")
    d.add_argument("--quick", action="store_true", help="tiny run (seconds), for tests")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument(
        "--set",
        nargs="+",
        metavar="KEY=VALUE",
        default=[],
        help="override DemoConfig fields, e.g. --set passes=4 epochs=4 spec_augment=false",
    )
    d.set_defaults(func=_demo)
