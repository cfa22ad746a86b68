"""The results table and the report, from job outputs written by hand (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import refused_by_cli
from synthmed.benchmark.jobs import Job
from synthmed.benchmark.results import collect_results
from synthmed.report import build_report
from synthmed.report.build import pooled_gaps

# Per (setting, seed) of one model on the samples axis: AUC_real (both labels alike) and each label's
# AUC_syn; two synthetic classifiers rank "Cyst" backwards (AUROC below 0.5)
AUC_REAL = {"n1000": [0.97, 0.96, 0.98], "n50": [0.65, 0.63, 0.64]}
AUC_SYN = {"n1000": [(0.73, 0.71), (0.71, 0.69), (0.75, 0.77)], "n50": [(0.61, 0.45), (0.62, 0.58), (0.58, 0.40)]}


def auroc(per_label: dict[str, float]) -> dict:
    """What ``auroc_per_label`` writes, for defined labels."""
    return {"per_label": per_label, "mean": float(np.mean(list(per_label.values()))), "undefined": [], "reasons": {}}


def fake_benchmark(root: Path) -> list[Job]:
    """A benchmark directory whose real-classifier and utility jobs are done, with their JSON files."""
    jobs = []
    for setting, reals in AUC_REAL.items():
        for seed, (auc_real, (tumor, cyst)) in enumerate(zip(reals, AUC_SYN[setting])):
            where = {"dataset": "br35h", "dimension": "samples", "setting": setting, "seed": seed}
            real = Job(f"real-{setting}-{seed}", "real-classifier", {}, {}, {**where, "model": "real"})
            utility = Job(f"utility-{setting}-{seed}", "utility", {}, {}, {**where, "model": "cpdgan"})
            real_auc, syn_auc = auroc({"Tumor": auc_real, "Cyst": auc_real}), auroc({"Tumor": tumor, "Cyst": cyst})
            outputs = [(real, {"real.json": {"auc_real": real_auc}}),
                       (utility, {"utility.json": {
                           "auc_real": real_auc, "auc_syn": syn_auc, "auc_syn_on_syn": auroc({"Tumor": 0.9}),
                           "auc_real_on_syn": auroc({"Tumor": 0.8}),
                           "auc_real_minus_auc_syn": real_auc["mean"] - syn_auc["mean"],
                           "delta_syn": 0.9 - syn_auc["mean"]}})]
            for job, files in outputs:
                folder = root / "jobs" / job.id
                folder.mkdir(parents=True)
                for name, content in {**files, "done.json": {"seconds": 1.0}}.items():
                    (folder / name).write_text(json.dumps(content))
                jobs.append(job)
    preset = {"name": "fake", "fidelity": {"max_images": 150}}
    (root / "benchmark.json").write_text(json.dumps({"preset": preset, "runs": [],
                                                     "jobs": [job.to_dict() for job in jobs]}))
    return jobs


def test_results_table_carries_the_release_flip_beside_the_honest_auroc(tmp_path):
    table = collect_results(fake_benchmark(tmp_path), tmp_path)
    value = table.set_index(["setting", "seed", "model", "metric"]).value
    for setting, runs in AUC_SYN.items():
        for seed, (tumor, cyst) in enumerate(runs):
            key = (setting, seed, "cpdgan")
            assert value[(*key, "auc_syn/Cyst")] == pytest.approx(cyst)  # the honest value stays as it is
            assert value[(*key, "auc_syn_release_flip/Cyst")] == pytest.approx(max(cyst, 1 - cyst))
            assert value[(*key, "auc_syn_release_flip/Tumor")] == pytest.approx(tumor)
            flipped_mean = (tumor + max(cyst, 1 - cyst)) / 2
            assert value[(*key, "auc_syn_release_flip")] == pytest.approx(flipped_mean)
            assert value[(*key, "auc_real_minus_auc_syn_release_flip")] == pytest.approx(
                AUC_REAL[setting][seed] - flipped_mean)
            assert value[(setting, seed, "real", "auc_real_release_flip")] == pytest.approx(AUC_REAL[setting][seed])
    # the flip flatters exactly the runs with a backwards label: n50 seeds 0 and 2
    flattery = (table[table.metric == "auc_syn_release_flip"].set_index(["setting", "seed"]).value
                - table[table.metric == "auc_syn"].set_index(["setting", "seed"]).value)
    assert flattery[flattery > 1e-12].index.tolist() == [("n50", 0), ("n50", 2)]


def test_pooled_gap_over_all_settings_of_an_axis(tmp_path):
    table = collect_results(fake_benchmark(tmp_path), tmp_path)
    gaps = [real - np.mean(syn) for setting in AUC_REAL for real, syn in zip(AUC_REAL[setting], AUC_SYN[setting])]
    [pooled] = pooled_gaps(table, "samples")
    assert pooled == {"model": "cpdgan", "settings": 2, "mean": pytest.approx(np.mean(gaps)),
                      "std": pytest.approx(np.std(gaps, ddof=0)), "ddof": 0, "n": 6}
    html = " ".join(build_report(tmp_path).read_text().split())
    assert (f"samples axis, all settings pooled: cpdgan AUC_real − AUC_syn {np.mean(gaps):.3f} ± "
            f"{np.std(gaps, ddof=0):.3f} (std, ddof 0, n = 6 runs over 2 settings)") in html
    # no privacy or attribution job here, so no real image: the top still says the paths make it internal
    assert "Internal: keep this report with the real data.</strong> It shows this machine's file paths." in html


def stats(mean: float | None, std: float = 0.0, n: int = 0) -> dict:
    """What ``importance.summary`` writes."""
    return {"mean": mean, "std": std if mean is not None else None, "ddof": 0, "n_defined": n}


def scored(area: dict, real: tuple[dict, int], synthetic: tuple[dict, int], n: int) -> dict:
    """What ``importance.lesion_scores`` summarises: area share, per role in-mask share and pointing hits."""
    def role(share: dict, hits: int) -> dict:
        return {"in_mask_share": share,
                "pointing": {"rate": hits / share["n_defined"] if share["n_defined"] else None, "hits": hits,
                             "n_defined": share["n_defined"]}}
    return {"n_images": n, "area_share": area, "real": role(*real), "synthetic": role(*synthetic)}


def test_report_shows_the_maps_scored_against_lesion_masks_and_works_without(tmp_path):
    jobs = fake_benchmark(tmp_path)
    phantom = {"images": {}, "by_label": {
        "Tumor": scored(stats(0.08, 0.02, 3), (stats(0.55, 0.1, 3), 3), (stats(0.09, 0.03, 3), 0), 3),
        "Cyst": scored(stats(None), (stats(None), 0), (stats(None), 0), 1)}}  # on an image, but without a lesion
    phantom["images"] = scored(stats(0.1, 0.02, 4), (stats(0.62, 0.1, 4), 3), (stats(0.3, 0.05, 4), 1), 5)
    for setting, lesions in (("n1000", phantom), ("n50", None)):  # br35h-like data has no masks: no key
        job = Job(f"importance-{setting}", "importance", {}, {},
                  {"dataset": "br35h", "dimension": "samples", "setting": setting, "seed": 0, "model": "cpdgan"})
        folder = tmp_path / "jobs" / job.id
        folder.mkdir(parents=True)
        result = {"images": [{}] * 5, "pearson": stats(0.4, 0.1, 5), "ssim": stats(0.5, 0.1, 5)}
        if lesions is not None:
            result["lesion_masks"] = lesions
        (folder / "importance.json").write_text(json.dumps(result))
        (folder / "done.json").write_text(json.dumps({"seconds": 1.0}))
        jobs.append(job)
    (tmp_path / "benchmark.json").write_text(json.dumps({"preset": {"name": "fake", "fidelity": {"max_images": 150}},
                                                         "runs": [], "jobs": [job.to_dict() for job in jobs]}))
    html = " ".join(build_report(tmp_path).read_text().split())
    assert ("Internal: keep this report with the real data.</strong> It shows real patient images (attribution maps over "
            "real test images) and this machine's file paths.") in html
    assert html.count("Mean Pearson r 0.400") == 2 and html.count("Against the truth") == 1
    assert ("4 of the 5 explained images show a finding with a lesion mask (the others are not scored). Their lesions "
            "cover 10 % (± 2 %) of the image") in html
    assert ("The real-data classifier puts 62 % (± 10 %) of its attribution inside the lesions; its strongest point "
            "lies inside them in 3 of 4 images (pointing game).") in html
    assert "The synthetic-data classifier puts 30 % (± 5 %) of its attribution inside the lesions" in html
    assert ('<td class="l">Tumor</td><td>3</td><td>8 % (± 2 %)</td> <td>55 % (± 10 %)</td><td>3 of 3</td>'
            '<td>9 % (± 3 %)</td><td>0 of 3</td>') in html
    assert '<td class="l">Cyst</td>' not in html  # no image of it had a lesion to score
    table = collect_results(jobs, tmp_path)  # the results table carries the same numbers
    lesion = table[table.setting == "n1000"].set_index("metric").value
    assert lesion[["map_in_lesion", "map_pointing", "map_in_lesion_real", "map_pointing_real",
                   "lesion_area_share"]].tolist() == pytest.approx([0.3, 0.25, 0.62, 0.75, 0.1])
    assert not table[table.setting == "n50"].metric.isin(["map_in_lesion", "lesion_area_share"]).any()


# ---- bad input: exit status 2, one `error:` line naming what is wrong, nothing written ----------------


@pytest.mark.parametrize("case, words", [
    ("missing", ["holds no benchmark (no benchmark.json)"]),
    ("empty", ["holds no benchmark (no benchmark.json)"]),
    ("store", ["holds no benchmark (no benchmark.json)"]),
    ("file", ["holds no benchmark (no benchmark.json)"]),
    ("{", ["benchmark.json: is damaged", "not valid JSON"]),
    ("[]", ["benchmark.json: is damaged", "list"]),
    ('{"preset": {}}', ["benchmark.json: is damaged", "'jobs'"]),
    ('{"preset": {}, "jobs": [1], "runs": []}', ["benchmark.json: is damaged", "job entry"]),
])
@pytest.mark.parametrize("command", [["report"], ["benchmark", "status"]])
def test_report_and_status_refuse_a_folder_that_holds_no_readable_benchmark(tmp_path, command, case, words):
    target = tmp_path / "dir"
    if case == "empty":
        target.mkdir()
    elif case == "store":  # another stage's folder
        target.mkdir()
        (target / "manifest.json").write_text("{}")
    elif case == "file":
        target.write_text("x")
    elif case != "missing":
        target.mkdir()
        (target / "benchmark.json").write_text(case)
    refused_by_cli([*command, str(target)], tmp_path, *words)


def _set(*path, value):
    """An edit of benchmark.json: the key at ``path`` set to ``value``."""
    def edit(manifest: dict) -> None:
        *parents, last = path
        for key in parents:
            manifest = manifest[key]
        manifest[last] = value
    return edit


@pytest.mark.parametrize("edit, words", [
    (_set("jobs", 0, "id", value=5), ["job entry 1 id = 5 must be text"]),
    (_set("jobs", 0, "id", value="../../../etc"), ["job entry 1 names the job '../../../etc', which is not a folder"]),
    (_set("jobs", 1, "inputs", value={"real": ".."}), ["job entry 2 names the job '..', which is not a folder"]),
    (_set("jobs", 0, "labels", value={}), ["job entry 1 labels has no 'dataset'"]),
    (_set("jobs", 0, "labels", value=[1]), ["job entry 1 labels = [1] must be a mapping of texts to values"]),
    (_set("jobs", 0, "labels", "seed", value="x"), ["job entry 1 labels.seed = 'x' must be a whole number"]),
    (_set("jobs", 0, "labels", "setting", value=7), ["job entry 1 labels.setting = 7 must be text"]),
    (_set("jobs", 0, "stage", value="bake"), ["job entry 1 stage = 'bake' is not one of"]),
    (_set("jobs", 0, "stage", value="train"),  # a train job without the config the FID panel's caption reads
     ["job entry 1 params.config must be a training config with fid_extractor (text), fid_samples (a whole number)"]),
    (_set("jobs", 0, "colour", value="red"), ["job entry 1 = {"]),
    (_set("preset", "fidelity", value="x"), ["preset.fidelity = 'x' must be a mapping"]),
    (_set("preset", "name", value=None), ["preset.name = None must be text"]),
    (_set("runs", value=[1, "x"]), ["run 1 = 1 must be a mapping with a time 'started'"]),
])
@pytest.mark.parametrize("command", [["report"], ["benchmark", "status"]])
def test_report_and_status_refuse_a_hand_edited_benchmark_json(tmp_path, command, edit, words):
    """What the status, the results table and the report read of benchmark.json is checked, by name."""
    fake_benchmark(tmp_path)
    manifest = json.loads((tmp_path / "benchmark.json").read_text())
    edit(manifest)
    (tmp_path / "benchmark.json").write_text(json.dumps(manifest))
    refused_by_cli([*command, tmp_path], tmp_path, "benchmark.json: is damaged: ", *words)


@pytest.mark.parametrize("file, content, words", [
    ("utility.json", {}, ["utility.json: is damaged: auc_syn is missing"]),
    ("utility.json", {"auc_syn": 3}, ["utility.json: is damaged: auc_syn = 3 must be a mapping"]),
    ("utility.json", {"auc_syn": {"mean": "high"}}, ["utility.json: is damaged: auc_syn.mean = 'high' must be a number"]),
    ("real.json", {"auc_real": {"mean": 0.9, "per_label": [0.9]}},
     ["real.json: is damaged: auc_real.per_label = [0.9] must be a mapping"]),
    ("done.json", {}, ["done.json: is damaged: seconds is missing"]),
])
def test_report_refuses_damaged_job_outputs_naming_the_file(tmp_path, file, content, words):
    jobs = fake_benchmark(tmp_path)
    job = next(j for j in jobs if (tmp_path / "jobs" / j.id / file).exists())
    (tmp_path / "jobs" / job.id / file).write_text(json.dumps(content))
    refused_by_cli(["report", tmp_path], tmp_path, *words)


@pytest.mark.parametrize("out, words", [
    ("folder", ["--out", "is a folder"]),
    ("", ["--out .: is a folder"]),
    ("a-file/report.html", ["--out", "lies under", "a-file, which is a file"]),
])
def test_report_out_must_be_a_file_that_can_be_written(tmp_path, out, words):
    fake_benchmark(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "a-file").write_text("x")
    refused_by_cli(["report", str(tmp_path), "--out", out and str(tmp_path / out)], tmp_path, *words)
