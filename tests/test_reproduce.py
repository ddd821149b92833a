"""The one-command reproduction: a smoke run of two experiments and the report built
from what they wrote."""

from __future__ import annotations

import json
import re

from experiments import reproduce


def test_smoke_run_writes_a_report_with_tables_paper_numbers_and_live_links(tmp_path):
    code = reproduce.main(["--smoke", "--only", "ode_demo,latent_ode", "--out", str(tmp_path)])
    assert code == 0
    report = (tmp_path / "REPORT.md").read_text()
    assert re.search(r"^Machine: .+, \d+ cores, ", report, re.M)
    # The latent ODE's Table 2 with the paper's rows beside ours.
    assert "| Latent ODE (paper) | odeint 1.49e-08 (adjoint) | unpublished |  | 0.1642 |" in report
    assert re.search(
        r"\| Latent ODE \| odeint 0\.0001 \(adjoint\) \| 0\.3 \| \d+ \| \d+\.\d{4} \|", report)
    assert "test log-likelihood per event" in report
    # A run without seed headlines still reports its training time and solver statistics.
    assert re.search(r"Training time of these \d+ models: ", report)
    assert "Latent ODE solver statistics" in report
    # Experiments not run are named as such; every figure link points at a file.
    assert "Not run (no `mnist/results.json`)" in report
    links = re.findall(r"\]\(([^)]+\.png)\)", report)
    assert {"ode_demo/trajectories.png", "latent_ode/figure8_spirals.png",
            "latent_ode/figure7_poisson.png"} <= set(links)
    for link in links:
        assert (tmp_path / link).is_file(), link
    assert "| ode_demo | 0 |" in report and "| latent_ode | 0 |" in report
    # Every section run names its mode and its exact command (not --quick).
    assert report.count("Mode: **smoke**") == 2
    assert "python -m experiments.ode_demo --niters 6 --test-every 3 --out" in report
    assert "experiments.latent_ode --quick" not in report
    # --report-only rebuilds the same report from the results on disk.
    before = report.split("## Runs")[0]
    assert reproduce.main(["--report-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "REPORT.md").read_text().split("## Runs")[0] == before
    # A hand-written summary of the verdicts leads the report, before every section.
    (tmp_path / "SUMMARY.md").write_text("## At a glance\n\nTable 2: not yet.\n")
    assert reproduce.main(["--report-only", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    assert report.index("Table 2: not yet.") < report.index("## Spiral demo")
    assert report.replace("## At a glance\n\nTable 2: not yet.\n\n", "").split(
        "## Runs")[0] == before
    # A long run's folder joins the report, with its hand-written notes.
    import shutil

    assert "Table 2 at paper scale" not in before
    shutil.copytree(tmp_path / "latent_ode", tmp_path / "latent_ode_paper")
    (tmp_path / "latent_ode_paper" / "NOTES.md").write_text("Reproduced: nothing yet.\n")
    results = tmp_path / "latent_ode_paper" / "results.json"
    d = json.loads(results.read_text())
    d["noise_calibration"] = {"chosen_noise": 0.1, "closest_model": "rnn_dt", "levels": [
        {"noise": 0.1, "distance": 0.5, "closest": "rnn_dt"}], "seeds": [0]}
    # Table 2's columns go by n, whatever order the rows were written in.
    d["table2"].insert(0, {"model": "RNN", "noise": 0.1, "iterations": 2, "100/100": "0.2",
                           "50/100": "0.3"})
    d["headline"] = [{"n": 30, "noise": 0.1, "iterations": 2, "rmse": "0.5 ± 0.1 (3)",
                      "late_curve": "0.6 ± 0.2 (3)", "paper": 0.1642,
                      "methods": "odeint: seed 0; tf_dopri5: seed 1, 2"}]
    results.write_text(json.dumps(d))
    assert reproduce.main(["--report-only", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    section = report.split("## Table 2 at paper scale, the first design")[1].split("\n## ")[0]
    assert "Reproduced: nothing yet." in section and "| Latent ODE (paper) |" in section
    assert "(training seeds 0, which every level has); the nearest level is **0.1** (rnn_dt)" \
        in section
    assert "| iterations | 30/100 | 50/100 | 100/100 |" in section
    assert ("| 30 | 0.1 | 2 | 0.5 ± 0.1 (3) | 0.6 ± 0.2 (3) | 0.164 | odeint: seed 0; "
            "tf_dopri5: seed 1, 2 |") in section


def test_unknown_experiment_is_refused(capsys):
    import pytest

    with pytest.raises(SystemExit):
        reproduce.main(["--only", "mnist,spirals"])
    assert "unknown experiment(s) ['spirals']" in capsys.readouterr().err


def test_a_smoke_run_never_writes_into_results_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert reproduce.main(["--smoke", "--report-only"]) == 0
    assert (tmp_path / "results-smoke" / "REPORT.md").is_file()
    assert not (tmp_path / "results").exists()
