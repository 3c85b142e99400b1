"""The collector on synthetic records (real record schema, real config, real identity) and one real tiny run:
layouts filled cell by cell, seeds averaged and deduplicated, verdicts, protocol flags, renderings, CLI errors."""
from __future__ import annotations

import copy
import json
import re
import textwrap
from pathlib import Path

import pytest

from conftest import compose_run
from repro.collect import build_paper, cells_frame, load_records, paper_html, paper_latex, paper_markdown
from repro.collect.records import load as records_mod
from repro.record import SCHEMA_VERSION
from repro.collect.cli import diff_main, tables_main
from repro.collect.compare.runs import diff_records
from repro.config import to_plain
from repro.record import identity, identity_fields

_BASE = {}


def base_config() -> dict:
    if not _BASE:
        _BASE["cfg"] = to_plain(compose_run("model=llama2-7b", "score=wanda"))
    return copy.deepcopy(_BASE["cfg"])


def make_record(model="llama2-7b", score="wanda", sparsity=0.5, seed=0, ppl=6.5, allocation="uniform",
                pattern=None, seqlen=4096, source_kind="hub", max_windows=None, zeroshot=None, finished="2026-11-23T08:00"):
    """A run record shaped exactly as repro.run.execute writes it (docs/record.md)."""
    cfg = base_config()
    cfg["model"]["name"], cfg["score"]["name"], cfg["sparsity"], cfg["seed"] = model, score, sparsity, seed
    cfg["allocation"]["name"] = allocation
    if pattern:
        cfg["pattern"] = {"name": "nm", "n": pattern[0], "m": pattern[1]}
    dense = score == "dense"
    fields = identity_fields(cfg, dense=dense)
    ident = identity(cfg, dense=dense)
    metrics = {"ppl": {"wikitext2": ppl}}
    if zeroshot:
        metrics["zeroshot"] = zeroshot
    protocol = {"dtype": "float16", "seqlen": seqlen, "model_class": "LlamaForCausalLM",
                "ppl": {"wikitext2": {"seqlen": seqlen, "windows": 83, "max_windows": max_windows,
                                      "source": {"kind": source_kind}}}}
    if zeroshot:
        protocol["zeroshot"] = {"lm_eval_version": "0.4.13", "bos_in_inputs": False, "limit": None,
                                "tasks": {t: {"metric": "acc"} for t in zeroshot if t != "mean"}}
    if not dense:
        protocol["calibration"] = {"name": "c4", "nsamples": 128, "seqlen": seqlen, "seed": 0}
    return {"schema_version": 1, "identity": ident, "status": "ok", "config": cfg, "identity_fields": fields,
            "finished_at": finished, "metrics": metrics, "protocol": protocol, "sparsity": {"overall": sparsity},
            "timings": {"prune_s": 10.0}, "versions": {"torch": "2.13.0+cpu"}}


def write_record(results: Path, rec: dict) -> Path:
    d = Path(results) / "runs" / rec["identity"]
    d.mkdir(parents=True, exist_ok=True)
    (d / "result.json").write_text(json.dumps(rec))
    rec["run_dir"] = str(d)
    return d


LAYOUT = """\
paper: toy
protocol: {seqlen: 4096, ppl_source: hub, ppl_all_windows: true}
tolerances: {ppl: {rel: 0.02, close: 3}}
tables:
  t1:
    title: toy table
    metric: ppl.wikitext2
    format: ".2f"
    fixed: {sparsity: 0.5}
    model_axis: columns
    rows:
      - {label: Dense, score: dense}
      - {label: Wanda, score: wanda}
      - {label: "2:4 Wanda", score: wanda, pattern: "2:4"}
      - {label: Magnitude, score: magnitude}
    columns:
      - {label: L2-7B, model: llama2-7b}
      - {label: L2-13B, model: llama2-13b}
"""
REPORTED = """\
paper: toy
sources:
  s: {cite: "toy source, Table 1", status: seen}
cells:
  - {table: t1, model: llama2-7b, score: dense, metric: ppl.wikitext2, value: 5.12, source: s}
  - {table: t1, model: llama2-7b, score: wanda, sparsity: 0.5, metric: ppl.wikitext2, value: 6.42, source: s}
  - {table: t1, model: llama2-7b, score: wanda, pattern: "2:4", sparsity: 0.5, metric: ppl.wikitext2, value: 11.02, source: s}
  - {table: t1, model: llama2-7b, score: magnitude, sparsity: 0.5, metric: ppl.wikitext2, value: 14.89, source: s}
  - {table: t1, model: llama2-13b, score: wanda, sparsity: 0.5, metric: ppl.wikitext2, value: 5.56, source: s}
  - {table: t1, model: llama2-13b, score: [dense], metric: ppl.wikitext2, value: null, missing: "not read", source: s}
  - {table: t1, model: llama2-13b, score: [magnitude], sparsity: 0.5, metric: ppl.wikitext2, value: null,
     missing: "not read", source: s}
  - {table: t1, model: llama2-13b, score: wanda, pattern: ["2:4"], sparsity: 0.5, metric: ppl.wikitext2,
     value: null, missing: "not read", source: s}
"""


def toy_experiments(tmp_path, layout=LAYOUT, reported=REPORTED) -> Path:
    d = tmp_path / "experiments" / "toy"
    d.mkdir(parents=True)
    (d / "tables.yaml").write_text(layout)
    (d / "reported.yaml").write_text(reported)
    return d.parent


@pytest.fixture
def toy(tmp_path):
    results = tmp_path / "results"
    recs = [make_record(score="dense", ppl=5.13),                                  # reproduced (|Δ| 0.01)
            make_record(ppl=6.40, seed=0), make_record(ppl=6.60, seed=1),          # mean 6.50: Δ 0.08 ≤ 0.128
            make_record(score="wanda", pattern=(2, 4), ppl=12.0),                  # Δ 0.98: > 0.22, ≤ 0.66? no -> off
            make_record(score="magnitude", ppl=15.5, max_windows=16, source_kind="local"),   # close, protocol differs
            make_record(model="llama2-13b", score="dense", ppl=4.6)]               # a run, nothing reported
    for r in recs:
        write_record(results, r)
    # The same identity copied into a second results directory is one experiment, not two seeds.
    write_record(tmp_path / "results_copy", copy.deepcopy(recs[1]))
    return toy_experiments(tmp_path), [results, tmp_path / "results_copy"]


def test_layout_filled_exactly(toy):
    experiments, results = toy
    recs = load_records(results)
    assert len(recs) == 6 and recs.duplicates == 1
    t = build_paper("toy", recs, experiments).tables["t1"]
    got = {(c.row, c.column): (c.verdict, c.n, None if c.mean is None else round(c.mean, 4)) for c in t.cells}
    assert got == {
        ("Dense", "L2-7B"): ("reproduced", 1, 5.13),
        ("Wanda", "L2-7B"): ("reproduced", 2, 6.5),
        ("2:4 Wanda", "L2-7B"): ("off", 1, 12.0),
        ("Magnitude", "L2-7B"): ("close", 1, 15.5),
        ("Dense", "L2-13B"): ("not reported", 1, 4.6),
        ("Wanda", "L2-13B"): ("not run", 0, None),
        ("2:4 Wanda", "L2-13B"): ("not run", 0, None),
        ("Magnitude", "L2-13B"): ("not run", 0, None)}
    wanda = t.cell("Wanda", "L2-7B")
    assert wanda.std == pytest.approx(0.141421, rel=1e-4)
    assert wanda.delta == pytest.approx(0.08) and wanda.rel_delta == pytest.approx(0.08 / 6.42)
    assert wanda.tolerance == pytest.approx(0.02 * 6.42)
    mag = t.cell("Magnitude", "L2-7B")
    assert mag.protocol_differs and not wanda.protocol_differs
    assert set(mag.deviations) == {"ppl data source local (paper: hub)", "all ppl windows: no (paper: yes)"}
    assert "coverage: 5/8 paper cells reported, 5/8 run" in t.coverage


def test_tolerance_override_changes_verdicts(toy):
    experiments, results = toy
    loose = build_paper("toy", load_records(results), experiments, tolerances={"ppl": {"rel": 0.10}})
    t = loose.tables["t1"]
    assert t.cell("2:4 Wanda", "L2-7B").verdict == "reproduced"      # 0.98 ≤ 1.10
    assert t.cell("Magnitude", "L2-7B").verdict == "reproduced"      # 0.61 ≤ 1.49


def test_closest_protocol_variant_wins_and_others_counted(tmp_path):
    results = tmp_path / "results"
    write_record(results, make_record(ppl=6.42))
    odd = make_record(ppl=9.0, seqlen=512)
    odd["config"]["model"]["seqlen"] = 512
    odd["identity"] = identity(odd["config"])
    odd["identity_fields"] = identity_fields(odd["config"])
    write_record(results, odd)
    exp = toy_experiments(tmp_path)
    cell = build_paper("toy", load_records(results), exp).tables["t1"].cell("Wanda", "L2-7B")
    assert cell.values == [6.42] and cell.other_variants == 1 and cell.verdict == "reproduced"


def test_extra_model_column_and_stand_in(toy, tmp_path):
    experiments, results = toy
    write_record(results[0], make_record(model="smollm2-135m", ppl=40.0))
    result = build_paper("toy", load_records(results), experiments)
    extra = [c for c in result.tables["t1"].cells if c.extra]
    assert {c.column for c in extra} == {"smollm2-135m"}
    assert next(c for c in extra if c.row == "Wanda").verdict == "not reported"
    stood = build_paper("toy", load_records(results[:1]), experiments, stand_ins={"smollm2-135m": "llama2-13b"})
    cell = stood.tables["t1"].cell("Wanda", "L2-13B")
    assert cell.verdict == "off" and "model smollm2-135m stands in for llama2-13b" in cell.deviations


def test_renderings(toy):
    experiments, results = toy
    result = build_paper("toy", load_records(results), experiments)
    md = paper_markdown(result)
    assert "| Wanda | 6.50 ± 0.14 (n=2) / 6.42 ✓ | — / 5.56 · |" in md
    assert "| Magnitude | 15.50 / 14.89 ≈† | — / ? · |" in md
    tex = paper_latex(result)
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 1
    body = tex[tex.index(r"\midrule"):tex.index(r"\bottomrule")].splitlines()[1:]
    ncols = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1))
    for line in body:
        assert line.endswith(r"\\") and len(re.findall(r"(?<!\\)&", line)) == ncols - 1
    unescaped = re.sub(r"\\[{}]", "", tex)
    assert unescaped.count("{") == unescaped.count("}") and tex.count("$") % 2 == 0
    assert r"6.50$\pm$0.14 (6.42)\textsuperscript{r}" in tex
    df = cells_frame(result)
    assert len(df) == 8 and set(df.verdict) == {"reproduced", "off", "close", "not reported", "not run"}
    page = paper_html(result)
    assert page.count("data:image/png;base64,") >= 1 and "<table>" in page and "toy source, Table 1" in page


def test_tables_cli_writes_every_format(toy, tmp_path, capsys):
    experiments, results = toy
    out = tmp_path / "tables"
    tables_main(["toy", "--format", "all", "--out", str(out), "--experiments", str(experiments),
                 "--results", str(results[0])])
    for name in ("toy/t1.md", "toy/t1.tex", "toy/t1.csv", "toy/all.md", "toy.html"):
        assert (out / name).stat().st_size > 0
    tables_main(["toy", "--format", "md", "--experiments", str(experiments), "--results", str(results[0])])
    assert "6.42 ✓" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["nosuchpaper"], "Expected one of"),
    (["toy", "--table", "t9"], "`--table` = 't9'"),
    (["toy", "--tol", "ppl.relative=2"], "FAMILY.KIND=VALUE"),
    (["toy", "--results", "/nonexistent/dir"], "an existing results directory"),
])
def test_tables_cli_user_mistakes_exit_cleanly(toy, argv, message, capsys):
    experiments, results = toy
    extra = [] if "--results" in argv else ["--results", str(results[0])]
    with pytest.raises(SystemExit) as e:
        tables_main(argv + ["--experiments", str(experiments)] + extra)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err


def test_empty_results_dir_says_so(toy, tmp_path, capsys):
    experiments, _ = toy
    (tmp_path / "empty").mkdir()
    tables_main(["toy", "--experiments", str(experiments), "--results", str(tmp_path / "empty")])
    cap = capsys.readouterr()
    assert "no usable run record" in cap.err and "— / 6.42 ·" in cap.out


def test_layout_with_unknown_field_fails_with_line(tmp_path, capsys):
    bad = LAYOUT.replace("{label: Wanda, score: wanda}", "{label: Wanda, scroe: wanda}")
    exp = toy_experiments(tmp_path, layout=bad)
    with pytest.raises(SystemExit):
        tables_main(["toy", "--experiments", str(exp), "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert "tables.yaml:13:" in err and "scroe" in err and "Traceback" not in err


def test_reported_cell_outside_layout_is_an_error(tmp_path):
    from repro.collect import load_paper
    from repro.collect.yamlio import DataFileError

    exp = toy_experiments(tmp_path, reported=REPORTED + "  - {table: t1, model: llama2-70b, score: dense, "
                          "metric: ppl.wikitext2, value: 3.12, source: s}\n")
    with pytest.raises(DataFileError, match=r"reported.yaml:15: .*a cell of table 't1'"):
        load_paper("toy", exp)


def test_record_versions(tmp_path, monkeypatch):
    results = tmp_path / "results"
    ok = make_record()
    write_record(results, ok)
    newer = make_record(ppl=7.0, seed=3)
    newer["schema_version"] = 99
    write_record(results, newer)
    old = make_record(ppl=8.0, seed=4)
    old["schema_version"] = 0
    old_dir = write_record(results, old)
    (results / "runs" / "garbage").mkdir()
    (results / "runs" / "garbage" / "result.json").write_text("{not json")
    recs = load_records(results)
    reasons = " | ".join(r for _, r in recs.skipped)
    assert len(recs) == 1
    assert "newer than this repro reads" in reasons and "has no migration" in reasons and "Expecting" in reasons
    # A migration registered for version 0 is applied, and the record becomes readable.
    monkeypatch.setitem(records_mod.MIGRATIONS, 0, lambda r: {**r, "migrated": True})
    recs = load_records(results)
    assert len(recs) == 2 and any(r.get("migrated") and r["schema_version"] == SCHEMA_VERSION for r in recs.records)
    assert old_dir.exists()


def test_diff_names_what_differs(tmp_path, capsys):
    results = tmp_path / "results"
    a = make_record(ppl=6.42)
    b = make_record(ppl=7.0, seqlen=2048)
    b["config"]["calib"]["nsamples"] = 64
    a["runtime"], b["runtime"] = {"torch_threads": 1}, {"torch_threads": 2}
    b["identity"] = identity(b["config"])
    b["identity_fields"] = identity_fields(b["config"])
    da, db = write_record(results, a), write_record(results, b)
    d = diff_records(a, b)
    fields = {c["field"]: c for c in d["config"]}
    assert fields["calib.nsamples"]["identity"] and (fields["calib.nsamples"]["a"], fields["calib.nsamples"]["b"]) == (128, 64)
    assert {p["field"] for p in d["protocol"]} >= {"seqlen", "ppl.wikitext2.seqlen", "calibration.seqlen"}
    m = next(m for m in d["metrics"] if m["metric"] == "ppl.wikitext2")
    assert m["delta"] == pytest.approx(0.58) and m["rel_delta"] == pytest.approx(0.58 / 6.42)
    diff_main([a["identity"][:8], str(db), "--results", str(results)])
    out = capsys.readouterr().out
    assert "* calib.nsamples: 128 -> 64" in out and "Δ +0.58" in out and "torch_threads: 1 -> 2" in out
    with pytest.raises(SystemExit):
        diff_main(["ffffffff", str(da), "--results", str(results)])
    assert "an identity under" in capsys.readouterr().err


def test_real_tiny_run_is_collected(tmp_path):
    """One real run (tiny random LLaMA, offline) through execute(), then into a layout cell."""
    from repro.run import execute

    results = tmp_path / "results"
    rec = execute(compose_run("env=offline", "model=tiny-llama", "score=magnitude", f"paths.results={results}",
                              "eval.ppl.max_windows=2"))
    layout = textwrap.dedent("""\
        paper: toy
        protocol: {seqlen: 2048, ppl_source: hub, ppl_all_windows: true}
        tables:
          t1:
            metric: ppl.wikitext2
            fixed: {sparsity: 0.5}
            rows: [{label: Magnitude, score: magnitude}]
            columns: [{label: tiny, model: tiny-llama}]
        """)
    reported = ("paper: toy\nsources: {s: {cite: synthetic, status: seen}}\ncells:\n"
                "  - {table: t1, model: tiny-llama, score: magnitude, sparsity: 0.5, metric: ppl.wikitext2, "
                f"value: {rec['metrics']['ppl']['wikitext2']:.6f}, source: s}}\n")
    cell = build_paper("toy", load_records(results), toy_experiments(tmp_path, layout, reported)).tables["t1"].cells[0]
    assert cell.verdict == "reproduced" and cell.run_dirs == [rec["run_dir"]]
    assert "seqlen 512 (paper: 2048)" in cell.deviations and "ppl data source local (paper: hub)" in cell.deviations


def test_zeroshot_cells_scale_to_percent_and_flag_the_harness(tmp_path):
    layout = textwrap.dedent("""\
        paper: toy
        protocol: {seqlen: 2048, zeroshot_metric: acc, zeroshot_bos: false, zeroshot_harness: "lm-eval df3da98"}
        tables:
          t1:
            fixed: {model: llama2-7b, score: wanda, sparsity: 0.5}
            rows: [{label: Wanda, score: wanda}]
            columns: [{label: BoolQ, metric: zeroshot.boolq}, {label: Mean, metric: zeroshot.mean}]
        """)
    reported = textwrap.dedent("""\
        paper: toy
        sources: {s: {cite: synthetic, status: seen}}
        cells:
          - {table: t1, model: llama2-7b, score: wanda, sparsity: 0.5, metric: zeroshot.boolq, value: 71.07, source: s}
          - {table: t1, model: llama2-7b, score: wanda, sparsity: 0.5, metric: zeroshot.mean, value: 54.09, source: s}
        """)
    results = tmp_path / "results"
    write_record(results, make_record(zeroshot={"boolq": 0.7150, "rte": 0.55, "mean": 0.5650}))
    t = build_paper("toy", load_records(results), toy_experiments(tmp_path, layout, reported)).tables["t1"]
    boolq, mean = t.cell("Wanda", "BoolQ"), t.cell("Wanda", "Mean")
    assert boolq.mean == pytest.approx(71.50) and boolq.verdict == "reproduced"     # |0.43| <= 1 point
    assert mean.mean == pytest.approx(56.50) and mean.verdict == "close"            # 2.41 <= 3 points
    assert boolq.deviations == ["harness lm-eval 0.4.13 (paper: lm-eval df3da98)"]


def test_non_default_method_option_is_flagged_unless_selected(tmp_path):
    results = tmp_path / "results"
    rec = make_record(score="magnitude", ppl=14.9)
    rec["config"]["score"] = {"name": "magnitude", "granularity": "row"}
    rec["identity"] = identity(rec["config"])
    rec["identity_fields"] = identity_fields(rec["config"])
    write_record(results, rec)
    cell = build_paper("toy", load_records(results), toy_experiments(tmp_path)).tables["t1"].cell("Magnitude", "L2-7B")
    assert cell.verdict == "reproduced" and cell.deviations == ["score.granularity=row (default layer)"]


def test_plot_points_take_a_cell_from_whichever_table_has_its_number():
    """Lua-LLM's Table 1 holds LLaMA-2-7B 80% Lua-LLM empty, Table 3 holds 30.27: the plot shows 30.27."""
    from repro.collect.render.plots import ppl_figures, ppl_points

    result = build_paper("lua_llm", [])
    points = ppl_points(result)[("llama2-7b", "ppl.wikitext2")]
    assert points["wanda +lua_llm"]["reported"] == [(0.8, 30.27)]
    assert {m for m, s in points.items() if s["reported"]} == {"wanda +lua_llm", "wanda +alpha", "wanda +atp"}
    assert [title for title, _ in ppl_figures(result)] == ["llama2-7b — ppl.wikitext2"]


def test_method_options_of_the_paper_are_judged_not_selected(tmp_path):
    from repro.registry import validate_method_node

    layout = LAYOUT.replace("tables:", "method_options: {allocation.owl.clamp: neuronal}\ntables:", 1).replace(
        "- {label: Magnitude, score: magnitude}", "- {label: Magnitude, score: magnitude, allocation: owl}")
    reported = REPORTED.replace("score: magnitude, sparsity: 0.5, metric: ppl.wikitext2, value: 14.89",
                                "score: magnitude, allocation: owl, sparsity: 0.5, metric: ppl.wikitext2, value: 14.89")
    reported = reported.replace("score: [magnitude], sparsity: 0.5", "score: [magnitude], allocation: owl, sparsity: 0.5")
    results = tmp_path / "results"
    owl_default = {"name": "owl", **{k: v for k, v in vars(validate_method_node("allocation", {"name": "owl"})).items()}}
    for clamp, ppl in (("owl", 15.0), ("neuronal", 14.9)):
        rec = make_record(score="magnitude", allocation="owl", ppl=ppl)
        rec["config"]["allocation"] = {**owl_default, "clamp": clamp}
        rec["identity"], rec["identity_fields"] = identity(rec["config"]), identity_fields(rec["config"])
        write_record(results, rec)
    cell = build_paper("toy", load_records(results), toy_experiments(tmp_path, layout, reported)) \
        .tables["t1"].cell("Magnitude", "L2-7B")
    assert cell.values == [14.9] and cell.deviations == [] and cell.other_variants == 1   # the paper's clamp wins
    only_default = tmp_path / "only_default"
    write_record(only_default, _first_with_clamp(results, "owl"))
    cell = build_paper("toy", load_records(only_default), tmp_path / "experiments").tables["t1"].cell("Magnitude", "L2-7B")
    assert cell.deviations == ["allocation.clamp=owl (paper neuronal)"]


def _first_with_clamp(results: Path, clamp: str) -> dict:
    for path in (results / "runs").glob("*/result.json"):
        rec = json.loads(path.read_text())
        if rec["config"]["allocation"].get("clamp") == clamp:
            return rec
    raise AssertionError(clamp)


def test_collector_vocabulary_agrees_with_the_registry():
    """The collector names the scores that remove no weight without importing the methods (no torch);
    they are exactly the registered scorers whose `prunes` is False."""
    from repro.collect import vocab
    from repro.registry import method_class, names

    assert set(vocab.UNPRUNED) == {n for n in names("score") if not method_class("score", n).prunes}
    assert set(vocab.UNPRUNED) <= set(vocab.SCORES)


def test_collector_stages_import_in_one_direction():
    """records/ -> cells/ -> compare/ -> render/: a stage imports from itself and earlier stages only."""
    import ast

    stages = ["records", "cells", "compare", "render"]
    root = Path(__file__).resolve().parents[1] / "repro" / "collect"
    for i, stage in enumerate(stages):
        files = sorted((root / stage).glob("*.py"))
        assert files, stage
        for path in files:
            for node in ast.walk(ast.parse(path.read_text())):
                mods = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                    [a.name for a in node.names] if isinstance(node, ast.Import) else []
                for mod in mods:
                    parts = mod.split(".")
                    if parts[:2] == ["repro", "collect"] and len(parts) > 2 and parts[2] in stages:
                        assert stages.index(parts[2]) <= i, f"{path.relative_to(root)} imports {mod}"


def test_neuronal_lambda_grid_differs_from_the_paper_is_flagged():
    """The default block grid (the reference code's 14 values, 13 at s >= 0.8) vs the paper's 13 (tables.yaml)."""
    from repro.allocation.neuronal import block_lambda_grid
    from repro.collect.cells.layouts import load_layout
    from repro.collect.compare.protocol import deviations
    from tests.conftest import REPO

    expected = load_layout(REPO / "experiments" / "neuronal" / "tables.yaml", "neuronal").tables["ppl_c4"].protocol
    for s, want in ((0.7, ["NeuronAL block λ candidates 14 (paper: 13)"]), (0.8, [])):
        rec = make_record(allocation="neuronal", sparsity=s, seqlen=2048)
        rec["prune"] = {"allocation_report": {"block_objectives": {str(v): 1.0 for v in block_lambda_grid(s)}}}
        assert deviations(rec, "ppl.wikitext2", expected) == want
    assert deviations(make_record(allocation="owl", seqlen=2048), "ppl.wikitext2", expected) == []


def test_lua_llm_declared_protocol_choices_are_flagged():
    """Lua-LLM tables: WikiText-2 test (ours, the released code) vs validation (the paper's text), and the effective
    batch (paper: 2 GPUs x 1 window) read from the record's allocation report."""
    from repro.collect.cells.layouts import load_layout
    from repro.collect.compare.protocol import deviations
    from tests.conftest import REPO

    expected = load_layout(REPO / "experiments" / "lua_llm" / "tables.yaml", "lua_llm").tables["table1"].protocol
    rec = make_record(allocation="lua_llm", sparsity=0.7, seqlen=2048)
    rec["protocol"]["ppl"]["wikitext2"]["source"]["split"] = "test"
    rec["prune"] = {"allocation_report": {"effective_batch": 1}}
    assert deviations(rec, "ppl.wikitext2", expected) == ["ppl split test (paper: validation)",
                                                          "Lua-LLM windows per step 1 (paper: 2)"]
    rec["prune"]["allocation_report"]["effective_batch"] = 2
    assert deviations(rec, "ppl.wikitext2", expected) == ["ppl split test (paper: validation)"]
    assert deviations(rec, "zeroshot.boolq", {"ppl_split": "validation", "lua_effective_batch": 2}) == []
    del rec["prune"]                          # a record from before `effective_batch`: the config's batch, 1 process
    rec["config"]["allocation"]["batch_size"] = 1
    assert "Lua-LLM windows per step 1 (paper: 2)" in deviations(rec, "ppl.wikitext2", expected)


def test_method_deviations_name_only_the_differing_leaves_of_a_nested_node():
    from repro.collect.compare.protocol import _method_defaults, method_deviations

    defaults = _method_defaults("recovery", "lora")
    training = {**defaults["training"], "learning_rate": 1e-4}
    record = {"config": {"recovery": {"name": "lora", "r": defaults["r"], "training": training}}}
    out = method_deviations(record)
    assert out == [f"recovery.training.learning_rate=0.0001 (default {defaults['training']['learning_rate']})"]
