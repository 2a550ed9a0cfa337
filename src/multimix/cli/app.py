"""The ``multimix`` command: thin commands over the library.

Every command turns a :class:`~multimix.core.errors.MultimixError` into one line on stderr and exit
code 2, so bad input never shows a traceback.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from multimix.core.errors import ConfigError, MultimixError
from multimix.core.writable import check_writable_dir, check_writable_file  # robust

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Label-efficient, multi-task chest X-ray analysis (MultiMix).",
)


def friendly(fn):
    """Report user errors as one line instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MultimixError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def parse_widths(widths: str) -> list[int]:
    """``16,32,64`` -> channel widths; anything else is a one-line error."""
    from multimix.data.labels import parse_list

    try:
        channels = [int(w) for w in parse_list(widths)]
    except ValueError:
        raise ConfigError(f"--widths must be numbers separated by commas, not {widths!r}") from None
    if not channels or min(channels) < 1:
        raise ConfigError(f"--widths must be positive numbers, not {widths!r}")
    return channels


Dirs = Annotated[list[Path] | None, typer.Option(metavar="DIR")]
BadInputOption = Annotated[
    str,
    typer.Option(
        metavar="error|skip",
        help="A bad image, mask or label row: stop with its error, or skip it (listed in "
        "RUN/skipped.csv, or in metrics.json for evaluate). All are checked before step 1.",
    ),
]
PRECISION_HELP = "auto (bf16 where the hardware runs it faster), fp32 or bf16."
AdaptLayersOption = Annotated[
    str | None,
    typer.Option(
        metavar="all|encoder",
        help="With --adapt: every batch norm, or the shared encoder's only "
        "(default: the measured choice, see docs/cli.md).",
        show_default=False,
    ),
]
AdaptWeightOption = Annotated[
    float | None,
    typer.Option(
        help="With --adapt: the target statistics' share, the rest the training ones "
        "(default: the measured choice, see docs/cli.md).",
        show_default=False,
    ),
]


def _adapt_spec(adapt: bool, layers: str | None, weight: float | None):
    """``--adapt``'s :class:`~multimix.models.adapt.AdaptSpec` (the measured defaults where an
    option is not given); None without ``--adapt``, which then ignores its two options."""
    if not adapt:
        return None
    from multimix.models.adapt import AdaptSpec

    given = {"layers": layers, "weight": weight}
    return AdaptSpec(**{k: v for k, v in given.items() if v is not None})


def _train(
    out: Annotated[Path | None, typer.Option(help="Run folder to create.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this folder.")] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Start from a saved config.json (its options; others override)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Any option by name, nested ones too: dropout=0.3, augment.cutout=0, "
            "method.threshold=0.9, task.aux=segmentation (repeatable).",
        ),
    ] = None,
    **options: Any,
) -> None:
    """Train a model, or resume one with --resume RUN."""
    from multimix.cli.options import apply_options
    from multimix.config import TrainConfig
    from multimix.engine.trainer import resume as resume_run
    from multimix.engine.trainer import train as train_run

    if resume is not None:
        given = [name for name, value in options.items() if value is not None] + (set_ or [])
        if given or config is not None or out is not None:
            raise ConfigError("--resume continues a run as it was configured; give no options")
        run = resume_run(resume)
    else:
        if out is None:
            raise ConfigError("give --out RUN for a new run, or --resume RUN")
        cfg = TrainConfig.from_file(config) if config is not None else TrainConfig(out=str(out))
        cfg.out = str(out)
        apply_options(cfg, options, TRAIN_OPTIONS, set_ or [])
        run = train_run(cfg)
    if int(os.environ.get("RANK", 0)) == 0:  # once under torchrun
        typer.echo(f"run saved in {run}")


def _train_options():
    from multimix.cli.options import option_table
    from multimix.config import TrainConfig
    from multimix.methods.base import METHODS
    from multimix.tasks import TASKS

    return option_table(TrainConfig, dict(METHODS.items()), dict(TASKS.items()))


TRAIN_OPTIONS = _train_options()


def _install_train() -> None:
    """Register ``train`` with _train's own parameters plus the generated options."""

    @friendly
    def train(**kwargs: Any) -> None:
        fixed = {k: kwargs.pop(k) for k in ("out", "resume", "config", "set_")}
        _train(**fixed, **kwargs)

    train.__doc__ = _train.__doc__
    base = inspect.signature(_train, eval_str=True)
    params = [p for p in base.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    annotations = {p.name: p.annotation for p in params}
    for name, (_, option, annotation) in TRAIN_OPTIONS.items():
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                              annotation=annotation)
        )  # fmt: skip
        annotations[name] = annotation
    train.__signature__ = base.replace(parameters=params)
    train.__annotations__ = annotations
    app.command("train")(train)


_install_train()


@app.command()
@friendly
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    data: Dirs = None,
    out: Annotated[Path, typer.Option(help="metrics.json to write.")] = Path("metrics.json"),
    classes: str | None = None,
    label_map: str = "",
    report: Annotated[Path | None, typer.Option(help="Also write an HTML report here.")] = None,
    part: Annotated[
        str, typer.Option(help="Split part of training sources: test or val.")
    ] = "test",
    device: str = "auto",
    batch_size: int = 32,
    explain: Annotated[
        str,
        typer.Option(
            metavar="saliency,gradcam,ig",
            help="Measure these explanation methods (lung share, deletion curve).",
        ),
    ] = "",
    explain_samples: Annotated[
        int, typer.Option(help="Images per source for the explanation metrics.")
    ] = 32,
    on_bad_input: BadInputOption = "error",
    adapt: Annotated[
        bool,
        typer.Option(help="Re-estimate batch-norm statistics on each source first (no labels)."),
    ] = False,
    adapt_layers: AdaptLayersOption = None,
    adapt_weight: AdaptWeightOption = None,
    precision: Annotated[str, typer.Option(help=PRECISION_HELP)] = "auto",
) -> None:
    """Metrics per source, on images the run never trained on."""
    from multimix.core.atomic import atomic_write_text
    from multimix.data.labels import parse_label_map, parse_list
    from multimix.models.adapt import Adaptation
    from multimix.pipelines.evaluate import evaluate_run

    if not data:
        raise ConfigError("give at least one --data DIR to evaluate on")
    if part not in ("test", "val"):
        raise ConfigError("--part must be test or val")
    check_writable_file(out)  # robust
    if report is not None:  # robust
        check_writable_dir(report, "--report")  # robust
    metrics, kept = evaluate_run(
        run,
        [str(d) for d in data],
        tuple(parse_list(classes)) if classes else None,
        parse_label_map(label_map),
        part,
        device,
        batch_size,
        keep=report is not None,
        explain=list(parse_list(explain)),
        explain_samples=explain_samples,
        on_bad_input=on_bad_input,
        adapt=_adapt_spec(adapt, adapt_layers, adapt_weight),
        precision=precision,
    )
    atomic_write_text(out, json.dumps(metrics, indent=2))
    typer.echo(f"metrics written to {out}")
    _print_summary(metrics)
    for name, block in metrics["sources"].items():
        if "adapted" in block:
            typer.echo(f"{name}: {Adaptation.from_json(block['adapted']).describe()}")
        shift = block.get("shift") or {}
        if shift.get("warning"):
            typer.echo(
                f"warning: {name} is unlike the training data ({shift['outside_share']:.0%} "
                "of its images lie outside the range of the validation images)"
                + ("" if "adapted" in block else "; consider --adapt")
            )
    if on_bad_input == "skip":
        from multimix.data.bad_inputs import BadInputs

        bad = BadInputs("skip", [(s["file"], s["reason"]) for s in metrics["skipped"]])
        typer.echo("\n".join(bad.summary(f'{out} ("skipped")')))
    if report is not None:
        from multimix.report.build import build_report

        path = build_report(report, run, metrics, kept, device=device)
        typer.echo(f"report written to {path}")


def _print_summary(metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from multimix.tasks.base import task_of_block

    table = Table("source", "part", "n", "accuracy", "AUC", "F1", "Dice", "HD95")
    for name, block in metrics["sources"].items():
        seg = block.get("segmentation") or {}
        found = task_of_block(block)  # the task's summary: e.g. mean AUC over findings
        cls = found[0].summary(found[1]) if found is not None else {}
        cells = [cls.get("accuracy"), cls.get("auc"), cls.get("f1_macro"), seg.get("dice")]
        cells.append(seg.get("hd95"))
        table.add_row(
            name,
            block["part"],
            str(block["n_images"]),
            *("-" if v is None else f"{v:.3f}" for v in cells),
        )
    Console().print(table)


@app.command()
@friendly
def predict(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    inputs: Annotated[
        list[Path],
        typer.Argument(metavar="INPUT", help="Image files (PNG, JPEG, DICOM) or folders."),
    ],
    out: Annotated[
        Path, typer.Option(help="Folder for masks, overlays, explanations, predictions.csv.")
    ],
    explain: Annotated[
        str, typer.Option(metavar="saliency,gradcam,ig", help="Explanation maps to write.")
    ] = "",
    batch_size: int = 16,
    device: str = "auto",
    checkpoint: Annotated[str, typer.Option(metavar="best|last")] = "best",
    backend: Annotated[
        str, typer.Option(metavar="torch|onnx", help="onnx: run the file of `multimix export`.")
    ] = "torch",
    onnx: Annotated[
        Path | None, typer.Option(help="The ONNX file for --backend onnx [RUN/model.onnx].")
    ] = None,
    dicom_seg: Annotated[
        bool, typer.Option(help="DICOM inputs: also a DICOM SEG of the masks + findings JSON.")
    ] = False,
    adapt: Annotated[
        bool,
        typer.Option(help="Re-estimate batch-norm statistics on these images first (no labels)."),
    ] = False,
    adapt_layers: AdaptLayersOption = None,
    adapt_weight: AdaptWeightOption = None,
    precision: Annotated[str, typer.Option(help=PRECISION_HELP)] = "auto",
) -> None:
    """Masks, overlays and class probabilities (optionally explanation maps) for new images."""
    from multimix.data.labels import parse_list
    from multimix.pipelines.predict import predict_paths

    summary = predict_paths(
        run, list(inputs), out, list(parse_list(explain)), batch_size=batch_size, device=device,
        backend=backend, onnx_path=onnx, dicom_seg=dicom_seg, checkpoint=checkpoint,
        adapt=_adapt_spec(adapt, adapt_layers, adapt_weight),
        precision=precision,
    )  # fmt: skip
    for note in summary.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"{summary.n_ok} predicted, {summary.n_failed} failed")
    for path, reason in summary.failures:
        typer.echo(f"  {path}: {reason}")
    if summary.n_ok:
        typer.echo(f"results written to {out}")
    else:
        raise typer.Exit(2)


@app.command()
@friendly
def serve(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    host: Annotated[str, typer.Option(help="Address to bind; not this machine needs --token.")] = (
        "127.0.0.1"
    ),
    port: int = 8000,
    token: Annotated[
        str | None,
        typer.Option(envvar="MULTIMIX_TOKEN", help="Require 'Authorization: Bearer TOKEN'."),
    ] = None,
    allow_open: Annotated[
        bool, typer.Option(help="Serve another address without a token (anyone may use it).")
    ] = False,
    max_upload_mb: Annotated[float, typer.Option(help="Larger uploads get 413.")] = 32.0,
    queue_size: Annotated[int, typer.Option(help="Requests waiting; more get 503.")] = 16,
    max_batch: Annotated[int, typer.Option(help="Waiting requests predicted together.")] = 8,
    checkpoint: Annotated[str, typer.Option(metavar="best|last")] = "best",
    backend: Annotated[str, typer.Option(metavar="torch|onnx")] = "torch",
    onnx: Annotated[Path | None, typer.Option(help="ONNX file [RUN/model.onnx].")] = None,
    device: str = "auto",
) -> None:
    """A local web page and JSON API (POST /predict, GET /health, GET /model) for a run."""
    from multimix.api import load
    from multimix.serve.app import ServeOptions
    from multimix.serve.app import serve as serve_model

    if queue_size < 1 or max_batch < 1:
        raise ConfigError("--queue-size and --max-batch must be at least 1")
    options = ServeOptions(token or None, max_upload_mb, queue_size, max_batch)
    model = load(run, checkpoint, device, backend, onnx)
    serve_model(model, host, port, options, allow_open=allow_open, log=typer.echo)


@app.command()
@friendly
def export(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    format_: Annotated[str, typer.Option("--format", metavar="onnx")] = "onnx",
    out: Annotated[Path | None, typer.Option(help="File to write [RUN/model.onnx].")] = None,
    checkpoint: Annotated[str, typer.Option(metavar="best|last")] = "best",
) -> None:
    """The classifier and segmentation as one ONNX file, checked against torch."""
    from multimix.api import CHECKPOINTS, DEFAULT_ONNX
    from multimix.pipelines.export import TOLERANCE, export_onnx

    if format_ != "onnx":
        raise ConfigError("--format must be onnx")
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"--checkpoint must be one of {', '.join(CHECKPOINTS)}")
    out = out or Path(run) / DEFAULT_ONNX
    check_writable_file(out, example="model.onnx")  # robust
    report = export_onnx(run, out, checkpoint)
    typer.echo(f"written to {report.path} (outputs: {', '.join(report.outputs)})")
    if report.saliency_in_graph:
        typer.echo("saliency bridge: in the graph (its gradient written as forward ops)")
    else:
        typer.echo("saliency bridge: none in this model")
    for name, diff in report.max_abs_diff.items():
        typer.echo(f"max abs diff onnxruntime vs torch, {name}: {diff:.3g} (tolerance "
                   f"{TOLERANCE[name]:g}, {report.images} images)")  # fmt: skip
    if not report.ok:
        typer.echo("error: onnxruntime does not match torch within the tolerance", err=True)
        raise typer.Exit(2)


@app.command()
@friendly
def finalize(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    device: str = "auto",
) -> None:
    """Redo a run's after-training decisions (calibration or thresholds, mask plan, shift
    reference) with this version of multimix, on the run's own split; weights untouched."""
    from multimix.models.postprocess import flip_average, read_plan
    from multimix.models.shift import read_reference
    from multimix.pipelines.finalize import refinalize

    check_writable_dir(run, option="RUN")  # robust
    refinalize(run, device)
    plan = read_plan(run)
    if plan is not None:
        typer.echo(f"masks averaged with the mirrored image's: {flip_average(plan)}")
    reference = read_reference(run)
    sources = ", ".join(reference["sources"]) if reference else "none"
    typer.echo(f"shift reference: {sources}")
    typer.echo(f"written to {run}")


@app.command()
@friendly
def phantom(
    out: Annotated[Path, typer.Option(help="Folder to write (shared layout).")],
    count: Annotated[int, typer.Option(help="Number of images.")] = 200,
    seed: int = 0,
    size: int = 256,
    style: Annotated[str, typer.Option(help="adult or pediatric")] = "adult",
    positive_fraction: float = 0.5,
    mask_fraction: float = 1.0,
    label_fraction: float = 1.0,
    multilabel: Annotated[
        bool, typer.Option(help="Several findings per image, boxes.csv, heart/clavicle masks.")
    ] = False,
    label_noise: Annotated[
        float, typer.Option(help="Multilabel: chance each finding's label is flipped.")
    ] = 0.0,
) -> None:
    """Write synthetic chest radiographs with exact masks and labels."""
    from multimix.data.phantom import write_source

    check_writable_dir(out)  # robust
    try:
        path = write_source(
            out, count, seed, size, positive_fraction, mask_fraction, label_fraction, style,
            multilabel=multilabel, label_noise=label_noise,
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    typer.echo(f"{count} phantom images written to {path}")


@app.command()
@friendly
def demo(
    out: Annotated[Path, typer.Option(help="Folder for data, run, metrics and report.")] = Path(
        "demo-output"
    ),
    minutes: Annotated[float, typer.Option(help="Training budget.")] = 4.0,
    seed: int = 0,
) -> None:
    """Phantom data -> MultiMix training -> metrics.json and report.html, in one go."""
    from multimix.pipelines.demo import run_demo

    check_writable_dir(out)  # robust
    run_demo(out, minutes, seed)


@app.command("pseudo-masks")
@friendly
def pseudo_masks(
    run: Annotated[Path, typer.Argument(help="Run whose classifier explains the images.")],
    data: Dirs = None,
    out: Annotated[Path, typer.Option(help="Folder to write (images/, masks/).")] = Path(
        "pseudo-masks"
    ),
    method: Annotated[str, typer.Option(help="ig, gradcam or saliency")] = "ig",
    part: Annotated[str, typer.Option(help="train: skip the run's val/test images; all")] = "train",
    limit: Annotated[int | None, typer.Option(help="At most this many images (seeded).")] = None,
    area: Annotated[float, typer.Option(help="Share of each image kept as mask.")] = 0.3,
    batch_size: int = 16,
    device: str = "auto",
) -> None:
    """Turn a classifier's explanations into pseudo-masks for pre-training segmentation."""
    from multimix.explain.pseudo_masks import MaskRecipe, write_pseudo_masks

    if not data:
        raise ConfigError("give at least one --data DIR")
    if part not in ("train", "all"):
        raise ConfigError("--part must be train or all")
    check_writable_dir(out)  # robust
    count = write_pseudo_masks(
        run, [str(d) for d in data], out, method, part, limit, MaskRecipe(area=area),
        batch_size, device,
    )  # fmt: skip
    typer.echo(f"{count} pseudo-masks written to {out}")


@app.command()
@friendly
def bench(
    out: Annotated[Path, typer.Option(help="bench.json to write.")] = Path("bench.json"),
    image_size: int = 256,
    batch_size: Annotated[int, typer.Option(help="Training images per stream.")] = 8,
    unlabeled_ratio: int = 1,
    infer_batch_size: int = 32,
    device: str = "auto",
    threads: int | None = None,
    widths: Annotated[
        str | None, typer.Option(help="Encoder widths per level [train's default].")
    ] = None,
    norm: str = "batch",
    warmup: Annotated[int, typer.Option(help="Untimed iterations before each timing.")] = 2,
    steps: Annotated[int | None, typer.Option(help="Timed iterations per timing [5].")] = None,
    seconds: Annotated[float | None, typer.Option(help="Or time each this long.")] = None,
    matmul_size: Annotated[int | None, typer.Option(help="[2048 CPU, 8192 GPU]")] = None,
    matmul_repeats: int = 5,
    profile_steps: Annotated[int, typer.Option(help="Profile this many training steps.")] = 0,
    precision: Annotated[
        str | None, typer.Option(help="auto, fp32, bf16 or both [both where bf16 is supported]")
    ] = None,
) -> None:
    """Training and inference speed here, against a matmul peak and a straightforward step."""
    from multimix.core.progress import console
    from multimix.engine.bench import BenchConfig, write_bench

    shape = {} if widths is None else {"widths": tuple(parse_widths(widths))}
    cfg = BenchConfig(
        image_size=image_size, batch_size=batch_size, unlabeled_ratio=unlabeled_ratio,
        infer_batch_size=infer_batch_size, device=device, threads=threads,
        **shape, norm=norm, warmup=warmup,
        steps=steps, seconds=seconds, matmul_size=matmul_size, matmul_repeats=matmul_repeats,
        profile_steps=profile_steps, precision=precision,
    )  # fmt: skip
    check_writable_file(out, example="bench.json")  # robust
    r = write_bench(cfg, out, log=console.log)
    typer.echo(
        f"peak {r['peak_gflops']:.1f} GFLOP/s | training {r['train_images_per_s']:.2f} img/s "
        f"({r['train_share_of_peak']:.0%} of peak), {r['train_speedup']:.2f}x the "
        f"straightforward step | inference {r['infer_images_per_s']:.2f} img/s "
        f"({r['infer_share_of_peak']:.0%} of peak)"
    )
    typer.echo(f"written to {out}")


def _options_line(options_cls: type) -> str:
    """``name=default`` for each field of an options dataclass."""
    import dataclasses

    if not dataclasses.is_dataclass(options_cls):
        return ""
    parts = []
    for f in dataclasses.fields(options_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        parts.append(f"{f.name}={default}")
    return ", ".join(parts)


@app.command()
def methods() -> None:
    """List the training methods, per task, with their options (set them with --set method.X=Y)."""
    from multimix.methods.base import METHODS

    for key, cls in METHODS.items():
        task, name = key.split("/", 1)
        typer.echo(f"{name:12s} {task:11s} {cls.description}")
        options = _options_line(cls.Options)
        if options:
            typer.echo(f"{'':25s} options: {options}")


@app.command()
def backbones() -> None:
    """List the encoders a run can use (--backbone NAME)."""
    from multimix.models.backbones import available_backbones

    for name, description in available_backbones().items():
        typer.echo(f"{name:12s} {description}")


@app.command()
def tasks() -> None:
    """List the tasks (--task NAME) with their options (set them with --set task.X=Y)."""
    from multimix.tasks import TASKS

    for name, cls in TASKS.items():
        typer.echo(f"{name:12s} {cls.description}")
        options = _options_line(cls.Options)
        if options:
            typer.echo(f"{'':12s} options: {options}")


def _tune_allocator() -> None:
    """Re-exec once with glibc's malloc thresholds raised (see engine.runtime.GLIBC_TUNABLES)."""
    from multimix.engine.runtime import GLIBC_TUNABLES

    if sys.platform != "linux" or "GLIBC_TUNABLES" in os.environ:
        return
    if os.environ.get("MULTIMIX_NO_REEXEC"):
        return
    env = {**os.environ, "GLIBC_TUNABLES": GLIBC_TUNABLES}
    os.execve(sys.executable, [sys.executable, "-m", "multimix", *sys.argv[1:]], env)


def main() -> None:
    _tune_allocator()
    app(prog_name="multimix")
