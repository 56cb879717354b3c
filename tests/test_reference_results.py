"""Published numbers (configs/reference_results.json) and `parse_test_res.py --reference` for every protocol."""
import json
import statistics

from clipadapt import results as ptr


def hm(a, b):
    return 2 * a * b / (a + b)


def column(table, header):
    i = table.headers.index(header)
    return {row[0]: row[i].text() for row in table.rows}


def test_no_pva_number_is_printed_as_published(tmp_path):
    """No PVA table could be read: the reference file has no PVA row, so a PVA run's table shows none."""
    reference = ptr.load_reference()
    assert all(entry["trainer"] != "PVA" for protocol in ("base2new", "fewshot", "gzsl", "xd", "dg")
               for entry in reference.get(protocol, {}).values())
    run = tmp_path / "base2new" / "test_new" / "imagenet" / "shots_16" / "PVA" / "vit_b16" / "seed1" / "log.txt"
    run.parent.mkdir(parents=True)
    run.write_text("=> result\n* total: 10\n* correct: 7\n* accuracy: 70.0%\n")
    table = ptr.build_base2new_table(tmp_path, trainers=["PVA"], reference=reference)
    assert not any("(paper)" in h for h in table.headers)


def test_kgcoop_rows_reproduce_its_readme_average():
    entry = json.loads(ptr.REFERENCE_FILE.read_text())["base2new"]["KgCoOp"]
    rows = [v for k, v in entry["results"].items() if k != "average"]
    assert len(rows) == 11 and all(v["checked"] for v in rows)
    for key in ("base", "new"):
        assert abs(statistics.mean(v[key] for v in rows) - entry["results"]["average"][key]) < 0.006
    for values in rows:  # each H is the HM of its base and new (all rounded to 0.01)
        assert abs(hm(values["base"], values["new"]) - values["hm"]) < 0.011


def test_cocoop_table_rows_are_read_from_a_named_reproduction():
    b2n = json.loads(ptr.REFERENCE_FILE.read_text())["base2new"]
    for method in ("CLIP", "CoOp", "CoCoOp"):
        entry = b2n[method]
        assert "TransAgent" in entry["source"] and "2410.12183" in entry["source"]
        rows = [v for k, v in entry["results"].items() if k != "average"]
        assert len(rows) == 11 and all(v["checked"] for v in rows)
        for key in ("base", "new"):  # the read rows reproduce the separately read README averages
            assert abs(statistics.mean(v[key] for v in rows) - entry["results"]["average"][key]) < 0.006


def test_reference_columns_for_base2new_show_kgcoop(tmp_path):
    run = tmp_path / "base2new" / "test_new" / "eurosat" / "shots_16" / "KgCoOp" / "vit_b16_ep100_ctxv1" / "seed1" / "log.txt"
    run.parent.mkdir(parents=True)
    run.write_text("=> result\n* total: 10\n* correct: 7\n* accuracy: 70.0%\n")
    table = ptr.build_base2new_table(tmp_path, trainers=["KgCoOp"], reference=ptr.load_reference())
    # The paper's Average is over its 11 datasets, ours over eurosat: marked as not the same datasets.
    assert column(table, "KgCoOp (paper) Base") == {"eurosat": "85.64", "Average (1 of 11)": "80.73‡"}
    assert column(table, "KgCoOp (paper) HM")["Average (1 of 11)"] == "77.00‡"
    assert any("KgCoOp readme.md" in note for note in table.footnotes)


def test_reference_columns_for_gzsl_and_xd_and_fewshot(tmp_path):
    reference = {"gzsl": {"X": {"trainer": "CoOp", "backbone": "ViT-B/16", "source": "a paper",
                                "results": {"cub": {"s": 60.0, "u": 50.0, "h": 54.5, "checked": True}}}},
                 "xd": {"Y": {"trainer": "CoOp", "backbone": "ViT-B/16", "source": "a paper",
                              "results": {"imagenet": {"accuracy": 71.5, "checked": False},
                                          "average": {"accuracy": 63.9, "checked": True}}}},
                 "fewshot": {"Z": {"trainer": "LinearProbeCLIP", "backbone": "RN50", "source": "a paper",
                                   "results": {"eurosat": {"16": 82.8, "checked": True}}}}}
    run = tmp_path / "gzsl" / "cub" / "shots_16" / "CoOp" / "vit_b16" / "seed1" / "log.txt"
    run.parent.mkdir(parents=True)
    run.write_text("Finish training\n=> result\n* accuracy: 50.0%\n* acc_seen: 62.0%\n* acc_unseen: 40.0%\n")
    gzsl = ptr.build_gzsl_table(tmp_path, reference=reference)  # published rows beside the datasets we ran
    assert column(gzsl, "CoOp (paper) S") == {"cub": "60.00", "Average (1 of 4)": "-"}
    assert column(gzsl, "CoOp (paper) H")["cub"] == "54.50" and column(gzsl, "CoOp S")["cub"] == "62.00"
    xd = ptr.build_transfer_table("xd", tmp_path, reference=reference)
    row = {r[0]: [c.text() for c in r[1:-1]] for r in xd.rows}["CoOp (paper)"]
    assert row[0] == "71.50*" and row[-1] == "63.90‡"  # no target of ours: not the paper's 10
    fewshot = ptr.build_fewshot_table(tmp_path, reference=reference)
    assert column(fewshot, "LinearProbeCLIP (paper) 16-shot") == {"Average": "-"}  # no eurosat run: no row


def test_ship_tables_as_read_hold_their_own_arithmetic():
    """SHIP's Tables 1-3 (read from the authors' PDF text layer): every H is the HM of its pair but the one
    cell the paper misprints, each Average is the mean of its 11 datasets, Table 2's Average the mean of
    its 10 targets, and the paper's claimed gains follow from the rows."""
    reference = json.loads(ptr.REFERENCE_FILE.read_text())
    b2n = reference["base2new"]
    for name in ("CLIP-Adapter", "CoOp + SHIP", "CLIP-Adapter + SHIP", "Tip-Adapter-F + SHIP"):
        results = b2n[name]["results"]
        assert "Table 1" in b2n[name]["source"] and len(results) == 12
        rows = [v for k, v in results.items() if k != "average"]
        for key in ("base", "new"):
            assert abs(statistics.mean(v[key] for v in rows) - results["average"][key]) < 0.006, (name, key)
        wrong = [d for d, v in results.items() if abs(hm(v["base"], v["new"]) - v["hm"]) > 0.011]
        assert wrong == (["caltech101"] if name == "CLIP-Adapter" else []), name
    ship, coop = b2n["CoOp + SHIP"]["results"]["average"], b2n["CoOp"]["results"]["average"]
    assert (round(ship["new"] - coop["new"], 2), round(ship["hm"] - coop["hm"], 2)) == (10.47, 5.07)
    for protocol, key, entries in (("xd", "accuracy", ("CLIP", "CoOp", "CoOp + SHIP")),):
        for name in entries:
            results = reference[protocol][name]["results"]
            targets = [v[key] for d, v in results.items() if d != "average"]
            assert len(targets) == 10 and abs(statistics.mean(targets) - results["average"][key]) < 0.006, name
    gzsl = reference["gzsl"]
    for name in ("CLIP", "CoOp", "CoOp + SHIP"):
        for dataset, v in gzsl[name]["results"].items():
            assert abs(hm(v["u"], v["s"]) - v["h"]) < 0.1, (name, dataset)  # one decimal in the paper, sometimes cut
    gains = [round(gzsl["CoOp + SHIP"]["results"][d]["u"] - gzsl["CoOp"]["results"][d]["u"], 1)
             for d in ("cub", "awa2", "flo")]
    assert gains == [6.1, 11.4, 16.8]  # the paper's text


def test_ship_rows_print_beside_our_runs_in_each_protocol(tmp_path):
    reference = ptr.load_reference()
    run = tmp_path / "base2new" / "test_new" / "eurosat" / "shots_16" / "SHIP" / "vit_b16" / "seed1" / "log.txt"
    run.parent.mkdir(parents=True)
    run.write_text("=> result\n* total: 10\n* correct: 7\n* accuracy: 70.0%\n")
    table = ptr.build_base2new_table(tmp_path, trainers=["SHIP"], reference=reference)
    assert column(table, "CoOp + SHIP (paper) New")["eurosat"] == "66.87"
    assert column(table, "Tip-Adapter-F + SHIP (paper) HM")["Average (1 of 11)"] == "79.94‡"
    gzsl_run = tmp_path / "gzsl" / "cub" / "shots_16" / "SHIP" / "vit_b16" / "seed1" / "log.txt"
    gzsl_run.parent.mkdir(parents=True)
    gzsl_run.write_text("Finish training\n=> result\n* accuracy: 50.0%\n* acc_seen: 62.0%\n* acc_unseen: 40.0%\n")
    gzsl = ptr.build_gzsl_table(tmp_path, trainers=["SHIP"], reference=reference)
    assert column(gzsl, "CoOp + SHIP (paper) U")["cub"] == "55.30"
    assert column(gzsl, "CoOp + SHIP (paper) S")["cub"] == "58.90"


def test_tip_adapter_rows_are_the_released_log_and_print_beside_our_few_shot_runs(tmp_path):
    """The exp.log rows average (11 datasets, RN50) to the published 70.32 (Tip-Adapter) and 75.83
    (Tip-Adapter-F) at 16 shots; a TipAdapterF run's table shows them."""
    reference = ptr.load_reference()
    for label, published in (("Tip-Adapter", 70.32), ("Tip-Adapter-F", 75.83)):
        rows = reference["fewshot"][label]["results"]
        assert len(rows) == 11 and round(statistics.mean(r["16"] for r in rows.values()), 2) == published
        assert all(r["1"] <= r["16"] for r in rows.values())
    run = tmp_path / "fewshot" / "eurosat" / "TipAdapterF" / "rn50_16shots" / "seed1" / "log.txt"
    run.parent.mkdir(parents=True)
    run.write_text("Finish training\n=> result\n* accuracy: 80.0%\n")
    table = ptr.build_fewshot_table(tmp_path, trainers=["TipAdapterF"], reference=reference)
    paper = [h for h in table.headers if "(paper)" in h and h.endswith("16-shot")]
    assert paper and column(table, paper[0])["eurosat"] == "84.54", table.headers


def test_ship_table_9_joint_rows_hold_their_arithmetic_and_print_beside_a_gzsl_run(tmp_path):
    """Table 9 (base-to-new over the joint label space): every H is the HM of its S and U to rounding,
    each average is the mean of the 11 datasets; a gzsl run on a CoOp dataset shows the rows."""
    reference = ptr.load_reference()
    joint = {label: entry for label, entry in reference["gzsl"].items() if label.endswith("joint (T9)")}
    assert len(joint) == 6
    for label, entry in joint.items():
        rows = {d: r for d, r in entry["results"].items() if d != "average"}
        assert len(rows) == 11
        for dataset, r in entry["results"].items():
            assert abs(hm(r["s"], r["u"]) - r["h"]) < 0.011, (label, dataset)
        for key in ("s", "u"):
            assert abs(statistics.mean(r[key] for r in rows.values()) - entry["results"]["average"][key]) < 0.011
    run = tmp_path / "gzsl" / "eurosat" / "shots_16" / "SHIP" / "vit_b16" / "seed1" / "log.txt"
    run.parent.mkdir(parents=True)
    run.write_text("Finish training\n=> result\n* accuracy: 50.0%\n* acc_seen: 62.0%\n* acc_unseen: 40.0%\n")
    table = ptr.build_gzsl_table(tmp_path, trainers=["SHIP"], reference=reference)
    header = next(h for h in table.headers if h.startswith("CoOp + SHIP, joint (T9)") and h.endswith(" U"))
    assert column(table, header)["eurosat"] == "16.74"
    cub = tmp_path / "cub_only" / "gzsl" / "cub" / "shots_16" / "SHIP" / "vit_b16" / "seed1" / "log.txt"
    cub.parent.mkdir(parents=True)
    cub.write_text(run.read_text())  # only a CUB run: Table 9 has no CUB column, so no T9 column
    table = ptr.build_gzsl_table(tmp_path / "cub_only", trainers=["SHIP"], reference=reference)
    assert not [h for h in table.headers if "(T9)" in h] and "CoOp + SHIP (paper) U" in table.headers


def test_ship_ablation_rows_as_read_and_the_switches_that_give_them():
    """Tables 4-6: the default row is Table 1's CoOp + SHIP average in all three tables, CoOp alone is
    Table 1's CoOp average, each switch names keys our SHIP trainer has, and the printed H is never
    above the HM of its Base and New (equal only for the two rows copied from Table 1)."""
    import importlib.util

    from helpers import REPO
    reference = json.loads(ptr.REFERENCE_FILE.read_text())
    rows, b2n = reference["ablation"], reference["base2new"]
    assert len(rows) == 13 and {label[:2] for label in rows} == {"T4", "T5", "T6"}
    def values(entry):
        return {k: entry["results"]["average"][k] for k in ("base", "new", "hm")}
    ship, coop = values(b2n["CoOp + SHIP"]), values(b2n["CoOp"])
    defaults = [e for e in rows.values() if e.get("switch") == {}]
    assert len(defaults) == 3 and all(values(e) == ship for e in defaults)
    assert values(rows["T4: CoOp alone"]) == coop and rows["T4: CoOp alone"]["trainer"] == "CoOp"
    for label, entry in rows.items():
        v = values(entry)
        assert v["hm"] <= hm(v["base"], v["new"]) + 0.006, label
        assert (abs(v["hm"] - hm(v["base"], v["new"])) < 0.006) == (v in (ship, coop)), label
    spec = importlib.util.spec_from_file_location("summary", f"{REPO}/scripts/ship/summarize_ablation.py")
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    import trainers  # noqa: F401
    from clipadapt.engine import TRAINER_REGISTRY
    from yacs.config import CfgNode
    node = CfgNode()
    TRAINER_REGISTRY.get("SHIP").config_defaults(node)
    switched = [e for e in rows.values() if "switch" in e]
    assert len(switched) == 10  # all but the two GAN rows and CoOp alone
    for entry in switched:
        assert all(k.startswith("TRAINER.SHIP.") and k.split(".")[-1] in node for k in entry["switch"])
        assert entry["switch"] in summary.VARIANTS.values()  # each has its variant in scripts/ship/ablation.sh


def test_a_world_table_shows_the_papers_averages_marked_as_other_datasets(tmp_path):
    """The world's datasets are in no paper: SHIP's Table 1 rows stand beside a Shapes run by their
    Averages, each marked ‡ (their 11 datasets are not ours); a CoOp dataset's table shows its own row."""
    reference = ptr.load_reference()
    run = tmp_path / "base2new" / "test_new" / "shapes" / "shots_16" / "SHIP" / "shapes" / "seed1" / "log.txt"
    run.parent.mkdir(parents=True)
    run.write_text("=> result\n* total: 10\n* correct: 7\n* accuracy: 70.0%\n")
    table = ptr.build_base2new_table(tmp_path, trainers=["SHIP"], reference=reference)
    assert column(table, "CoOp + SHIP (paper) HM") == {"shapes": "-", "Average": "76.73‡"}
    assert column(table, "Tip-Adapter-F + SHIP (paper) Base")["Average"] == "83.80‡"
    assert any(n.startswith("‡ a paper's mean over its 11 datasets; ours average shapes") for n in table.footnotes)
