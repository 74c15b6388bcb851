"""Every config torchtune 0.6.1 ships, for a recipe and model family this library has,
passes `tune validate` unchanged and runs through `tune run` with tiny-model overrides.

The configs come from the torchtune==0.6.1 wheel (fetched with pip into a cache; see
compat_061.py). Without a reachable package index the tests skip, saying so.
"""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

import compat_061
from recipe_helpers import REPO
from torchtune._cli.tune import main as tune
from torchtune._recipe_registry import get_all_recipes


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    """[(recipe, config name, yaml path, parsed yaml, reason it does not apply or None)]."""
    try:
        wheel = compat_061.fetch_wheel()
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"torchtune 0.6.1 unavailable (package index unreachable?): {e}")
    root = compat_061.extract_configs(wheel, tmp_path_factory.mktemp("tt061"))
    here = {r.name for r in get_all_recipes()}
    out = []
    for recipe, name, file_path in compat_061.registry(wheel):
        path = root / file_path
        if not path.is_file():  # the registry lists a few dev configs the wheel leaves out
            out.append((recipe, name, path, {}, "listed in 0.6.1's registry, not in its wheel"))
            continue
        cfg = yaml.safe_load(path.read_text())
        out.append((recipe, name, path, cfg, compat_061.why_not_applicable(recipe, cfg, here)))
    return out


def _report(configs, title: str, passed: int, applicable: int) -> None:
    skipped = Counter(reason for *_, reason in configs if reason)
    lines = [f"{title}: {passed} pass of {applicable} applicable "
             f"({len(configs)} configs in torchtune 0.6.1)"]
    lines += [f"  skipped {n}: {reason}" for reason, n in sorted(skipped.items())]
    print("\n".join(lines))


def test_061_configs_validate_unchanged(configs, capsys):
    failures = {}
    applicable = [c for c in configs if c[4] is None]
    for recipe, name, path, _, _ in applicable:
        code = tune(["validate", str(path), "--recipe", compat_061.RECIPES[recipe]])
        err = capsys.readouterr().err
        if code != 0:
            failures[f"{recipe} {name}"] = err.strip().splitlines()
    with capsys.disabled():
        _report(configs, "tune validate", len(applicable) - len(failures), len(applicable))
    assert len(applicable) >= 89, "fewer applicable 0.6.1 configs than this library covered"
    assert not failures, json.dumps(failures, indent=1)


@pytest.mark.slow
def test_061_configs_run_with_tiny_overrides(configs, tmp_path, capsys):
    """One `tune run` per distinct code path: configs that differ only in numbers (model
    size, learning rate, batch size) run the same way once the tiny overrides apply."""
    groups: dict[str, list] = {}
    for entry in configs:
        recipe, _, _, cfg, reason = entry
        if reason is None:
            groups.setdefault(compat_061.run_signature(recipe, cfg), []).append(entry)
    jobs, covered = [], {}
    for i, members in enumerate(groups.values()):
        recipe, name, path, cfg, _ = members[0]
        work = tmp_path / f"run{i}"
        overrides = compat_061.run_overrides(recipe, cfg, compat_061.family_of(cfg), work)
        argv = ["run", compat_061.RECIPES[recipe], "--config", str(path), *overrides]
        jobs.append({"id": f"{recipe} {name}", "argv": argv,
                     "refusal": compat_061.expected_refusal(recipe, cfg)})
        covered[f"{recipe} {name}"] = [m[1] for m in members]
    # Two runner processes, one per core; each runs its half of the jobs in turn.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    runner = REPO / "tests" / "recipes" / "compat_061_runner.py"
    procs, results, text = [], {}, ""
    for half in (0, 1):
        jobs_path = tmp_path / f"jobs{half}.json"
        jobs_path.write_text(json.dumps(jobs[half::2]))
        log = open(tmp_path / f"runs{half}.log", "w")
        procs.append((jobs_path, log, subprocess.Popen(
            [sys.executable, str(runner), str(jobs_path)], cwd=REPO, env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )))
    for jobs_path, log, proc in procs:
        proc.wait(timeout=1200)
        log.close()
        done = Path(str(jobs_path) + ".results.json")
        results.update(json.loads(done.read_text()) if done.exists() else {})
        text += Path(log.name).read_text()
    missing = [j["id"] for j in jobs if j["id"] not in results]

    def output(job_id):
        return text.split(f"=== {job_id}\n")[-1].split("\n=== ")[0].strip().splitlines()

    failed, refused = {}, 0
    for job in jobs:
        code, refusal = results.get(job["id"]), job["refusal"]
        if refusal is None and code != 0:
            failed[job["id"]] = code
        elif refusal is not None:  # must stop with exactly that one line, no traceback
            lines = output(job["id"])
            if code != 1 or not lines or not lines[-1].startswith(f"error: {refusal}") or any(
                "Traceback" in line for line in lines
            ):
                failed[job["id"]] = code
            refused += len(covered[job["id"]])
    details = {job_id: output(job_id)[-12:] for job_id in list(failed) + missing}
    with capsys.disabled():
        ran_ok = sum(len(covered[k]) for k, v in results.items() if v == 0 and k not in failed)
        applicable = sum(len(v) for v in covered.values())
        _report(configs, f"tune run ({len(jobs)} distinct runs)", ran_ok, applicable)
        print(f"  as one rank, {refused} distributed QLoRA configs stop with the one-line "
              "refusal (they run on 2 ranks in test_qlora_dora_recipes.py)")
    assert not failed and not missing, json.dumps(details, indent=1)


def test_061_names_doc_is_generated_from_the_code(configs):
    """docs/compat_061.md lists 0.6.1's public names present and absent here; it is
    regenerated, never hand-edited."""
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "compat_061_names.py"), "--check",
         "--wheel", str(compat_061.fetch_wheel())],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
