"""``edgewatch train|evaluate|bench``: thin commands over :mod:`models`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from agent.cli._common import console, emit_json, err_console
from agent.errors import DatasetError
from agent.logs import printable

if TYPE_CHECKING:
    from models.cv import RulCrossValidation
    from models.train import Progress as TrainProgress
    from models.train import RulTrainConfig

#: The shipped pump recipe's RUL cap in hours (models.retrain_shipped.PUMP_RUL.cap);
#: a literal so that `--help` does not import torch. A test keeps them equal.
PUMP_RUL_CAP_H = 24.0

train_app = typer.Typer(name="train", help="Train models and write a bundle.", no_args_is_help=True)
evaluate_app = typer.Typer(
    name="evaluate",
    help="Score a bundle with a published or labelled protocol.",
    no_args_is_help=True,
)


def _metric(v: Any) -> str:
    """A score to three decimals; '-' where there is none (None or NaN)."""
    return "-" if v is None or v != v else f"{v:.3f}"


@contextmanager
def _bar(description: str, enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar fed by the library's progress callback (stderr, transient)."""
    progress = Progress(
        TextColumn("{task.description}", style="progress.description", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}", markup=False),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not enabled,
    )
    with progress:
        task = progress.add_task(description, total=None, info="")

        def update(p: TrainProgress) -> None:
            info = " ".join(
                f"{k}={v:.4g}" for k, v in p.metrics.items() if k not in ("epoch", "member")
            )
            progress.update(
                task,
                total=p.total,
                completed=p.step,
                info=info,
                description=f"{description} [{p.stage}]",
            )

        yield update


def _resolve_bundle(bundle: str) -> Path:
    """A path, or the name of a shipped bundle (``pump``, ``cmapss-fd001``)."""
    from models.bundles import default_bundle_path

    p = Path(bundle)
    if p.exists():
        return p
    try:
        return default_bundle_path(bundle)
    except DatasetError:
        return p  # load_bundle reports "not found" with the path the user typed


def _metrics_table(title: str, metrics: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    return table


def _ints(values: str | None, flag: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in _split(values) or ())
    except ValueError:
        raise typer.BadParameter("comma-separated whole numbers", param_hint=flag) from None
    if any(v < 1 for v in out):
        raise typer.BadParameter("each must be at least 1", param_hint=flag)
    return out


def _split(values: str | None) -> tuple[str, ...] | None:
    if not values:
        return None
    return tuple(v.strip() for v in values.split(",") if v.strip())


# --------------------------------------------------------------------------- train


def _cv_tables(cvs: list[RulCrossValidation]) -> list[Table]:
    """One row per fold of each configuration, then mean +- sd per configuration."""
    folds = Table(title="cross-validation folds (each scored at the epoch the others chose)")
    for name in ("config", "fold", "units", "windows", "best epoch", "epoch", "RMSE", "NASA"):
        folds.add_column(name, justify="left" if name == "config" else "right")
    summary = Table(title="cross-validation, mean +- sd over folds")
    for name in ("config", "params", "RMSE", "NASA score", "80% cover", "epochs"):
        summary.add_column(name, justify="left" if name == "config" else "right", no_wrap=True)
    for i, cv in enumerate(cvs, start=1):
        for f in cv.folds:
            folds.add_row(
                str(i), str(f.fold), str(len(f.units)), str(f.windows), str(f.best_epoch),
                str(f.epoch), f"{f.rmse:.2f}", f"{f.nasa_score:.0f}",
            )  # fmt: skip
        (rm, rs), (nm, ns), cover = cv.rmse, cv.nasa_score, cv.coverage
        summary.add_row(
            f"{i}: {_config_label(cv.config)}",
            f"{cv.parameters_per_network:,} x {cv.config.ensemble}",
            f"{rm:.2f} +- {rs:.2f}",
            f"{nm:.0f} +- {ns:.0f}",
            "-" if cover is None else f"{cover[0]:.2f} +- {cover[1]:.2f}",
            str(cv.epochs),
        )
    return [folds, summary]


def _config_label(cfg: RulTrainConfig) -> str:
    channels = "x".join(str(c) for c in cfg.channels)
    return f"w{cfg.window} {channels}"


@train_app.command("rul")
def train_rul(
    data: Annotated[Path, typer.Option("--data", help="Training file (e.g. train_FD001.txt).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Bundle directory (or .tar.gz) to write.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="Data format: cmapss.")] = "cmapss",
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same model).")] = 0,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Max epochs per member (recipe's).")
    ] = None,
    window: Annotated[
        int | None, typer.Option("--window", min=2, help="Window length (cycles).")
    ] = None,
    min_rows: Annotated[
        int | None,
        typer.Option(
            "--min-rows",
            min=1,
            help="Cycles before the first estimate (windows front-padded until whole).",
        ),
    ] = None,
    stride: Annotated[
        int | None, typer.Option("--stride", min=1, help="Stride of the first convolution.")
    ] = None,
    cap: Annotated[float, typer.Option("--cap", min=1.0, help="RUL target cap.")] = 125.0,
    ensemble: Annotated[
        int | None, typer.Option("--ensemble", min=1, help="Networks averaged (recipe's).")
    ] = None,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", min=0.05, max=0.5, help="Units held out.")
    ] = 0.2,
    test_fraction: Annotated[
        float,
        typer.Option(
            "--test-fraction",
            min=0.0,
            max=0.4,
            help="Units held out from training AND early stopping (unbiased RMSE).",
        ),
    ] = 0.0,
    patience: Annotated[int, typer.Option("--patience", min=1, help="Early-stopping epochs.")] = 40,
    max_units: Annotated[
        int | None, typer.Option("--max-units", min=2, help="Use only the first N units.")
    ] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Torch threads.")] = 1,
    channels: Annotated[
        str | None, typer.Option("--channels", help="Convolution channels, e.g. 24,24,24.")
    ] = None,
    dilations: Annotated[
        str | None, typer.Option("--dilations", help="Dilation per convolution, e.g. 1,2,4.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Training batch size.")
    ] = None,
    name: Annotated[
        str, typer.Option("--name", help="Bundle name (model_version prefix).")
    ] = "cmapss",
    cv: Annotated[
        int | None,
        typer.Option(
            "--cv",
            min=2,
            help="k-fold cross-validation by unit (test-split protocol on each fold); the "
            "bundle is then trained on every unit for the epochs the folds chose.",
        ),
    ] = None,
    cv_only: Annotated[
        bool, typer.Option("--cv-only", help="With --cv: print the table, write no bundle.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
) -> None:
    """Train the RUL 1D-CNN: split by unit, truncated validation units, early stopping;
    or, with --cv K, choose the epochs by K-fold cross-validation and train on every unit."""
    from models.bundle import load_bundle
    from models.retrain_shipped import FD001_CONFIG

    if fmt.lower() != "cmapss":
        raise typer.BadParameter("only cmapss is supported", param_hint="--format")
    if cv_only and cv is None:
        raise typer.BadParameter("--cv-only needs --cv K", param_hint="--cv-only")
    if out is None and not cv_only:
        raise typer.BadParameter("where to write the bundle", param_hint="--out")
    from models.pipelines import train_rul_bundle_cmapss

    # The shipped FD001 recipe is the starting point; flags override its fields.
    window = window or FD001_CONFIG.window
    if min_rows is None and window == FD001_CONFIG.window:
        min_rows = FD001_CONFIG.min_rows
    if min_rows is not None and min_rows > window:
        raise typer.BadParameter(f"at most the window ({window})", param_hint="--min-rows")
    cfg = replace(
        FD001_CONFIG,
        window=window,
        min_rows=min_rows,
        stride=stride or FD001_CONFIG.stride,
        cap=cap,
        epochs=epochs or FD001_CONFIG.epochs,
        seed=seed,
        ensemble=ensemble or FD001_CONFIG.ensemble,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        patience=patience,
        max_units=max_units,
        threads=threads,
        channels=_ints(channels, "--channels") or FD001_CONFIG.channels,
        # New channels without --dilations: undilated (the recipe's match its channels).
        dilations=_ints(dilations, "--dilations") or (() if channels else FD001_CONFIG.dilations),
        batch_size=batch_size or FD001_CONFIG.batch_size,
    )
    if cfg.dilations and len(cfg.dilations) != len(cfg.channels):
        raise typer.BadParameter("give one dilation per channel entry", param_hint="--dilations")
    if cv is not None:
        _train_rul_cv(data, None if cv_only else out, cfg, cv, name=name, as_json=as_json)
        return
    assert out is not None
    with _bar("training RUL", enabled=not as_json) as update:
        path, metrics = train_rul_bundle_cmapss(data, out, cfg, name=name, progress=update)
    bundle = load_bundle(path)
    if as_json:
        emit_json({"bundle": str(path), "version": bundle.version, "metrics": metrics})
        return
    console.print(_metrics_table(f"RUL model {bundle.version}", metrics))
    console.print(Text.assemble("bundle written to ", (str(path), "bold")))


def _train_rul_cv(
    data: Path, out: Path | None, cfg: RulTrainConfig, folds: int, *, name: str, as_json: bool
) -> None:
    from models.bundle import load_bundle
    from models.cv import cross_validate_rul
    from models.pipelines import train_rul_bundle_cv
    from models.preprocessing import load_cmapss

    with _bar(f"{folds}-fold cross-validation", enabled=not as_json) as update:
        if out is None:
            result = cross_validate_rul(load_cmapss(data), cfg, folds, update)
            path, metrics = None, result.metrics()
        else:
            path, metrics, result = train_rul_bundle_cv(
                data, out, cfg, folds=folds, name=name, progress=update
            )
    if as_json:
        doc: dict[str, Any] = {"cross_validation": result.as_dict(), "metrics": metrics}
        if path is not None:
            doc.update(bundle=str(path), version=load_bundle(path).version)
        emit_json(doc)
        return
    for table in _cv_tables([result]):
        console.print(table)
    if path is not None:
        bundle = load_bundle(path)
        console.print(
            Text.assemble(
                f"trained on every unit for {result.epochs} epochs: ",
                (bundle.version, "bold"),
                " written to ",
                (str(path), "bold"),
            )
        )


@train_app.command("anomaly")
def train_anomaly(
    data: Annotated[
        Path, typer.Option("--data", help="Simulator output dir/telemetry file, or CSV dir.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory (or .tar.gz) to write.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Max epochs.")] = 40,
    window: Annotated[int, typer.Option("--window", min=4, help="Window length (samples).")] = 32,
    time_column: Annotated[
        str | None, typer.Option("--time-column", help="CSV time column.")
    ] = None,
    label_column: Annotated[
        str | None, typer.Option("--label-column", help="CSV label column (non-zero = fault).")
    ] = None,
    sep: Annotated[str, typer.Option("--sep", help="CSV separator.")] = ",",
    sensors: Annotated[str | None, typer.Option("--sensors", help="a,b,c: sensor columns.")] = None,
    exclude: Annotated[str | None, typer.Option("--exclude", help="Columns to ignore.")] = None,
    with_rul: Annotated[
        bool, typer.Option("--with-rul", help="Also train a RUL head (simulator data, hours).")
    ] = False,
    rul_cap_h: Annotated[
        float, typer.Option("--rul-cap-h", help="RUL cap in hours.")
    ] = PUMP_RUL_CAP_H,
    sample_period_s: Annotated[
        float, typer.Option("--sample-period-s", help="Seconds between samples.")
    ] = 60.0,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Torch threads.")] = 1,
    name: Annotated[str, typer.Option("--name", help="Bundle name.")] = "fleet",
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
) -> None:
    """Train the fleet autoencoder (the starting point of per-asset commissioning)."""
    from models.bundle import load_bundle
    from models.pipelines import load_tables, train_fleet_bundle
    from models.retrain_shipped import PUMP_ANOMALY, PUMP_RUL
    from models.scoring import ThresholdRule

    tables = load_tables(
        data,
        time_column=time_column,
        label_column=label_column,
        sep=sep,
        sensors=_split(sensors),
        exclude=_split(exclude) or (),
    )
    # The shipped pump recipe is the starting point; flags override its fields.
    acfg = replace(PUMP_ANOMALY, window=window, epochs=epochs, seed=seed, threads=threads)
    rcfg = replace(PUMP_RUL, cap=rul_cap_h, seed=seed, threads=threads) if with_rul else None
    with _bar("training", enabled=not as_json) as update:
        path, metrics = train_fleet_bundle(
            tables,
            out,
            name=name,
            anomaly=acfg,
            rule=ThresholdRule(),
            rul=rcfg,
            time_step_s=sample_period_s,
            source=str(data),
            progress=update,
        )
    bundle = load_bundle(path)
    if as_json:
        emit_json({"bundle": str(path), "version": bundle.version, "metrics": metrics})
        return
    console.print(_metrics_table(f"fleet model {bundle.version}", metrics))
    console.print(Text.assemble("bundle written to ", (str(path), "bold")))


# --------------------------------------------------------------------------- evaluate


@evaluate_app.command("rul")
def evaluate_rul(
    bundle: Annotated[str, typer.Option("--bundle", help="Bundle path or shipped name.")],
    test: Annotated[Path, typer.Option("--test", help="test_FD00x.txt")],
    truth: Annotated[Path, typer.Option("--truth", help="RUL_FD00x.txt")],
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
    per_unit: Annotated[bool, typer.Option("--per-unit", help="Show every unit.")] = False,
) -> None:
    """RMSE and NASA score over the last window of each test unit (published protocol)."""
    from models.bundle import load_bundle
    from models.evaluate import evaluate_rul_cmapss

    b = load_bundle(_resolve_bundle(bundle))
    result = evaluate_rul_cmapss(b, test, truth)
    if as_json:
        emit_json({"bundle": b.version, **result.as_dict(with_units=True)})
        return
    summary = {k: v for k, v in result.as_dict(with_units=False).items() if v is not None}
    summary.pop("protocol")
    console.print(_metrics_table(f"{b.version} on {test.name}", summary))
    if per_unit:
        interval = result.interval_level is not None
        t = Table("unit", "cycles", "true RUL", "predicted", *(["interval"] if interval else []))
        for row in result.per_unit:
            bounds = [f"{row['rul_low']:.0f}-{row['rul_high']:.0f}"] if interval else []
            t.add_row(
                f"{row['unit']:.0f}",
                f"{row['cycles']:.0f}",
                f"{row['true_rul']:.0f}",
                f"{row['predicted_rul']:.1f}",
                *bounds,
            )
        console.print(t)


@evaluate_app.command("anomaly")
def evaluate_anomaly(
    bundle: Annotated[str, typer.Option("--bundle", help="Bundle path or shipped name.")],
    csv_dir: Annotated[Path, typer.Option("--csv-dir", help="One CSV file per asset.")],
    label_column: Annotated[str, typer.Option("--label-column", help="Non-zero/true = anomaly.")],
    time_column: Annotated[
        str | None, typer.Option("--time-column", help="Rows are ordered by it.")
    ] = None,
    sep: Annotated[str, typer.Option("--sep", help="CSV separator.")] = ",",
    train_rows: Annotated[
        int, typer.Option("--train-rows", min=10, help="Leading healthy rows per file.")
    ] = 400,
    sensors: Annotated[str | None, typer.Option("--sensors", help="a,b,c: sensor columns.")] = None,
    exclude: Annotated[
        str | None, typer.Option("--exclude", help="c,d: columns to ignore.")
    ] = None,
    quantile: Annotated[
        float | None, typer.Option("--quantile", help="Threshold rule: held-out score quantile.")
    ] = None,
    margin: Annotated[
        float | None, typer.Option("--margin", help="Threshold rule: margin over that quantile.")
    ] = None,
    cpu_budget_s: Annotated[
        float, typer.Option("--cpu-budget-s", help="Commissioning CPU budget per file.")
    ] = 30.0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    epochs: Annotated[
        int, typer.Option("--fine-tune-epochs", min=0, help="Commissioning epochs (max).")
    ] = 60,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Labelled-CSV protocol: commission on each file's first rows, flag the rest."""
    from models.bundle import load_bundle
    from models.evaluate import AnomalyOptions, evaluate_anomaly_csv
    from models.scoring import ThresholdRule

    b = load_bundle(_resolve_bundle(bundle))
    rule = b.anomaly.rule if b.anomaly else ThresholdRule()
    if quantile is not None:
        rule = replace(rule, quantile=quantile)
    if margin is not None:
        rule = replace(rule, margin=margin)
    options = AnomalyOptions(
        time_column=time_column,
        label_column=label_column,
        sep=sep,
        train_rows=train_rows,
        sensors=_split(sensors),
        exclude=_split(exclude) or (),
        rule=rule,
        cpu_budget_s=cpu_budget_s,
        seed=seed,
        epochs=epochs,
    )
    with Progress(
        TextColumn("commissioning + scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[name]}", markup=False),  # a file name, shown as it is
        console=err_console,
        transient=True,
        disable=as_json,
    ) as progress:
        task = progress.add_task("files", total=None, name="")

        def on_file(done: int, total: int, name: str) -> None:
            progress.update(task, completed=done, total=total, name=name)

        result = evaluate_anomaly_csv(b, csv_dir, options, on_file)
    out = result.as_dict()
    if as_json:
        emit_json({"bundle": b.version, **out})
        return
    table = Table(title=f"{b.version} on {csv_dir}")
    for col in ("file", "rows", "anomalous", "precision", "recall", "F1", "FAR", "MAR", "init"):
        table.add_column(col, justify="left" if col in ("file", "init") else "right")

    for f in out["files"]:
        table.add_row(
            printable(f["file"]),
            str(f["rows"]),
            str(f["anomalous_rows"]),
            _metric(f["precision"]),
            _metric(f["recall"]),
            _metric(f["f1"]),
            _metric(f["far"]),
            _metric(f["mar"]),
            f["initialised_from"].split("@")[0],
        )
    p = out["pooled"]
    table.add_row(
        Text("pooled", style="bold"),
        str(p["rows"]),
        str(p["anomalous_rows"]),
        _metric(p["precision"]),
        _metric(p["recall"]),
        _metric(p["f1"]),
        _metric(p["far"]),
        _metric(p["mar"]),
        "",
    )
    console.print(table)
    delay = p["median_detection_delay_rows"]
    shown = "-" if delay is None else f"{delay:.0f}"
    console.print(
        f"anomalies detected in {p['files_detected']} of {p['files_with_anomalies']} files; "
        f"median delay after the first labelled row: {shown} rows"
    )


@evaluate_app.command("export-csv")
def export_csv(
    data: Annotated[Path, typer.Option("--data", help="Simulator output dir or telemetry file.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for one CSV per asset.")],
) -> None:
    """Turn simulator output into the labelled-CSV layout `evaluate anomaly` reads
    (columns ts, sensors, anomaly)."""
    from models.datasets import read_simulator_output, write_labelled_csv_dir

    paths = write_labelled_csv_dir(read_simulator_output(data), out)
    console.print(
        Text.assemble(
            f"wrote {len(paths)} files to ",
            (str(out), "bold"),
            " (use --time-column ts --label-column anomaly)",
        )
    )


# --------------------------------------------------------------------------- bench


def bench_models(
    bundle: Annotated[
        str, typer.Option("--bundle", help="Bundle path or shipped name.")
    ] = "cmapss-fd001",
    threads: Annotated[int, typer.Option("--threads", min=1, help="Torch threads.")] = 1,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Windows per batch.")] = 1024,
    seconds: Annotated[float, typer.Option("--seconds", min=0.1, help="Time per figure.")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print figures as JSON.")] = False,
) -> None:
    """Parameter counts, batched windows/s and single-window latency on N threads."""
    from models.bench import benchmark
    from models.bundle import load_bundle

    result = benchmark(
        load_bundle(_resolve_bundle(bundle)), threads=threads, batch=batch, seconds=seconds
    )
    if as_json:
        emit_json(result.as_dict())
        return
    console.print(_metrics_table(f"inference benchmark, {threads} thread(s)", result.as_dict()))


@evaluate_app.command("live")
def evaluate_live(
    ctx: typer.Context,
    truth: Annotated[
        Path, typer.Option("--truth", help="Truth file of a replay or fleet run (.csv/.parquet).")
    ],
    label: Annotated[
        str, typer.Option("--label", help="Truth column: non-zero / non-empty = anomaly.")
    ] = "fault",
    db: Annotated[
        Path | None, typer.Option("--db", help="Database file (default: from the configuration).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """What the running agent recorded, scored against the truth of what was sent."""
    from agent.cli._common import invocation
    from agent.reporting.live_eval import VERDICTS
    from agent.reporting.live_eval import evaluate_live as score_live
    from agent.sqlite import open_engine

    path = db or invocation(ctx).settings().storage.database_path
    engine = open_engine(path, create=False, read_only=True)
    try:
        result = score_live(engine, truth, label)
    finally:
        engine.dispose()
    out = result.as_dict()
    if as_json:
        emit_json(out)
        return
    table = Table(title=f"the agent's records in {path} against {truth} ({label})")
    for col in ("verdict", "rows", "anomalous", "precision", "recall", "F1", "FAR", "detected"):
        table.add_column(col, justify="left" if col == "verdict" else "right")

    for verdict in VERDICTS:
        p = out["pooled"][verdict]
        delay = "-" if p["median_delay_s"] is None else f"{p['median_delay_s']:.0f} s"
        table.add_row(
            verdict,
            str(p["rows"]),
            str(p["anomalous_rows"]),
            _metric(p["precision"]),
            _metric(p["recall"]),
            _metric(p["f1"]),
            _metric(p["far"]),
            f"{p['assets_detected']}/{p['assets_with_anomalies']}, median delay {delay}",
        )
    console.print(table)
    unscored = sum(a["unscored_rows"] for a in out["assets"])
    console.print(
        f"{len(out['assets'])} assets scored; {unscored} rows before their first scored window "
        f"(baseline) or after their last were not scored"
        + (
            f"; not in the database: {printable(', '.join(out['missing_assets']))}"
            if out["missing_assets"]
            else ""
        )
    )
