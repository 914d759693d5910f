"""scripts/write_model_card.py: the card's tables come from the build's files and flag every missed target."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def card():
    spec = importlib.util.spec_from_file_location("write_model_card", REPO / "scripts" / "write_model_card.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench(model: dict) -> dict:
    return {"command": "soraflow eval bench --model m", "results": [
        {"name": "default", "overall": {**model, "n": 10}, "per_category": {"color": {"score": 0.9}, "gravity": {"score": 0.2}}},
        {"name": "simulator", "overall": {"color": 1.0, "shape": 1.0, "direction": 1.0, "gravity": 1.0, "permanence": 1.0}},
        {"name": "null", "overall": {"color": 0.1, "shape": 0.3, "direction": 0.1, "gravity": 0.4, "permanence": 0.5}},
    ]}


def test_bench_table_lists_the_model_next_to_its_references_and_flags_missed_targets(card):
    lines, failures = card.bench_section(_bench({"color": 0.95, "shape": 0.5, "direction": 0.85, "gravity": 0.79,
                                                 "permanence": 0.9, "first_frame": 36.2}))
    text = "\n".join(lines)
    assert "| this model | simulator | null |" in text
    assert "| color | 0.9 | 0.950 | 1.000 | 0.100 | yes |" in text
    assert "| shape | 0.85 | 0.500 | 1.000 | 0.300 | **no** |" in text
    assert "| first_frame | 35 dB | 36.2 | n/a | n/a | yes |" in text
    assert [f.split()[0] for f in failures] == ["shape", "gravity"]  # 0.85 exactly meets its target
    assert "gravity 0.20, color 0.90" in text  # weakest categories first


def test_speed_is_the_median_of_the_timed_runs_and_a_miss_is_a_failure(card):
    settings = {"frames": 33, "size": "128x128", "fps": 8, "steps": 8, "sampler": "euler", "guidance_scale": 4.0}
    speed = {"machine": "cpu", "load": [[1.0]], "variants": {"model": {
        "settings": settings, "peak_rss": 512 * 2**20, "warm": [{"wall": w} for w in (3.1, 5.0, 2.9, 3.3, 3.0)]}}}
    lines, failures = card.speed_section(speed)
    assert "**3.10 s**" in lines[0] and "512 MiB" in lines[0] and failures == []
    speed["variants"]["model"]["warm"] = [{"wall": w} for w in (4.5, 4.1, 6.0)]
    lines, failures = card.speed_section(speed)
    assert "**4.50 s**" in lines[0] and failures == ["speed 4.50 s for the 4 s clip (target 4 s)"]
    assert "CFG 4.0: text encoding" in lines[0]  # guided every step
    settings["guidance_min_t"] = 0.75
    assert "CFG 4.0 from t >= 0.75: text encoding" in card.speed_section(speed)[0][0]


def test_card_without_bench_or_speed_says_so(card, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "build.json").write_text(json.dumps({"command": ["python", "build.py", "--threads", "2"], "device": "cpu",
                                                  "seconds": {"vae": 1800.0, "dit": 3600.0}, "recipe": {"clips": 7}}))
    out = card.write_card(work, tmp_path / "no-model", tmp_path / "MODEL_CARD.md", tmp_path / "images", "- a note", samples=False)
    text = out.read_text()
    assert "The bench has not been run" in text and "Not measured yet" in text
    assert "3.0 CPU core-hours (2 threads, 1.50 h wall)" in text
    assert "`python scripts/build_default_model.py --recipe v2 --threads 2`" in text  # the build's command, not a restricted rerun
    assert "7 SoraWorld clips" in text and text.rstrip().endswith("- a note")


def test_main_appends_the_shipped_notes_only_to_the_shipped_card(card, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "build.json").write_text(json.dumps({"command": ["python", "build.py"], "device": "cpu", "seconds": {}}))
    notes = tmp_path / "notes.md"
    notes.write_text("- the shipped model's own note")
    monkeypatch.setattr(card, "DEFAULT_NOTES", notes)
    shipped = tmp_path / "repo" / "MODEL_CARD.md"
    shipped.parent.mkdir()
    monkeypatch.setattr(card, "REPO", shipped.parent)
    base = ["--work", str(work), "--model", str(tmp_path / "none"), "--images", str(tmp_path / "img"), "--no-samples"]
    assert card.main(base + ["--out", str(shipped)]) == 0
    assert shipped.read_text().rstrip().endswith("- the shipped model's own note")
    other = tmp_path / "other.md"
    assert card.main(base + ["--out", str(other)]) == 0
    assert "own note" not in other.read_text()
    assert card.main(base + ["--out", str(other), "--notes", str(tmp_path / "missing.md")]) == 2


def test_card_describes_a_two_phase_dit_with_the_pooled_prompt(card, tmp_path):
    work, model = tmp_path / "work", tmp_path / "model"
    (model / "dit").mkdir(parents=True)
    work.mkdir()
    (work / "build.json").write_text(json.dumps({"command": ["python", "build.py"], "device": "cpu", "seconds": {}}))
    recipe = {"dit_steps": 2000, "dit_batch_tokens": 2048, "dit_pooled_text": False, "dit_tune_steps": 2400, "dit_tune_lr": 2e-4}
    (model / "build.json").write_text(json.dumps({"dit_step": 2400, "dit_phases": [2000, 2400], "recipe": recipe}))
    (model / "dit" / "config.json").write_text(json.dumps({"num_layers": 8, "pooled_text": True}))
    text = card.write_card(work, model, tmp_path / "MODEL_CARD.md", tmp_path / "images", samples=False).read_text()
    assert "plus the pooled-prompt path" in text
    assert "- DiT: 2000 steps of 2048 tokens" in text and "with the pooled-prompt path;" not in text
    assert "- DiT second phase: 2400 more steps" in text and "lr 0.0002" in text
    # One phase, the path on from the start: no second-phase line.
    (model / "build.json").write_text(json.dumps({"dit_step": 500, "recipe": {**recipe, "dit_pooled_text": True, "dit_tune_steps": 0}}))
    text = card.write_card(work, model, tmp_path / "MODEL_CARD.md", tmp_path / "images", samples=False).read_text()
    assert "- DiT: 500 steps" in text and "with the pooled-prompt path;" in text and "second phase" not in text


def test_card_describes_the_timestep_phase_the_whole_clip_decoder_and_the_sampling_shift(card, tmp_path):
    work, model = tmp_path / "work", tmp_path / "model"
    (model / "dit").mkdir(parents=True)
    work.mkdir()
    (work / "build.json").write_text(json.dumps({"command": ["python", "build.py"], "device": "cpu", "seconds": {}}))
    recipe = {"dit_steps": 2000, "dit_batch_tokens": 2048, "dit_pooled_text": False, "dit_shift": None, "dit_terminal": 0.0,
              "dit_tune_steps": 2400, "dit_reshift_steps": 1200, "dit_reshift": 4.0, "dit_reshift_terminal": 0.1,
              "dit_reshift_lr": 2e-4, "decoder_steps": 600, "decoder_frames": None, "decoder_batch": 2, "max_frames": 33}
    (model / "build.json").write_text(json.dumps({"dit_step": 1200, "dit_phases": [2000, 2400, 1200], "recipe": recipe}))
    (model / "config.json").write_text(json.dumps({"shift": 4.0, "steps": 8}))
    text = card.write_card(work, model, tmp_path / "MODEL_CARD.md", tmp_path / "images", samples=False).read_text()
    assert "- DiT: 2000 steps of 2048 tokens" in text and "timestep shift 4 with" not in text.split("- DiT second")[0]
    assert "- DiT second phase: 2400 more steps" in text
    assert ("- DiT third phase: 1200 more steps from the second phase's EMA weights, at timestep shift 4 with 10% of "
            "samples at t = 1, lr 0.0002") in text
    assert "CFG ?, timestep shift 4.0, prompt expander" in text  # the sampling default, from config.json
    (model / "config.json").write_text(json.dumps({"shift": 4.0, "steps": 8, "guidance_scale": 4.0, "guidance_min_t": 0.75}))
    text = card.write_card(work, model, tmp_path / "MODEL_CARD.md", tmp_path / "images", samples=False).read_text()
    assert "CFG 4.0 on the steps at t >= 0.75 (the rest unguided), timestep shift 4.0" in text
    assert "batch 2 of whole 33-frame clips" in text
    # The gpu recipe: shift and t = 1 samples from step 0, one phase.
    gpu = {**recipe, "dit_shift": 4.0, "dit_terminal": 0.1, "dit_pooled_text": True, "dit_tune_steps": 0, "dit_reshift_steps": 0}
    (model / "build.json").write_text(json.dumps({"dit_step": 500, "dit_phases": [500], "recipe": gpu}))
    text = card.write_card(work, model, tmp_path / "MODEL_CARD.md", tmp_path / "images", samples=False).read_text()
    assert "with the pooled-prompt path, at timestep shift 4 with 10% of samples at t = 1;" in text
    assert "third phase" not in text and "second phase" not in text


def test_card_describes_the_second_round_whole_vae_and_fourth_dit_phase(card, tmp_path):
    work, model = tmp_path / "work", tmp_path / "model"
    (model / "dit").mkdir(parents=True)
    work.mkdir()
    (work / "build.json").write_text(json.dumps({"command": ["python", "build.py"], "device": "cpu", "seconds": {}}))
    recipe = {"dit_tune_steps": 2400, "dit_reshift_steps": 1200, "dit_reshift": 4.0, "dit_reshift_terminal": 0.1,
              "decoder_steps": 600, "decoder_frames": None, "max_frames": 33, "vae_long_steps": 1200,
              "vae_long_lr": 1e-4, "vae_long_image_prob": 0.1, "dit_long_steps": 900, "dit_long_lr": 2e-4}
    (model / "build.json").write_text(json.dumps({"dit_step": 900, "dit_phases": [2000, 2400, 1200, 900], "recipe": recipe}))
    text = card.write_card(work, model, tmp_path / "MODEL_CARD.md", tmp_path / "images", samples=False).read_text()
    assert "- DiT third phase: 1200 more steps" in text  # the third phase's own steps, not the last phase's
    assert ("- DiT fourth phase: 900 more steps from the third phase's EMA weights on the latents of the whole-clip "
            "VAE, at the same timestep settings, lr 0.0002.") in text
    assert "Then 1200 steps of the whole VAE, encoder too, on the same whole clips (lr 0.0001, 10% single frames)" in text
    # After an objects stage the round keeps its weighting, and the card says so.
    (model / "build.json").write_text(json.dumps({"dit_step": 900, "dit_phases": [2000, 2400, 1200, 900],
                                                  "recipe": {**recipe, "objects_steps": 800, "object_weight": 10.0}}))
    text = card.write_card(work, model, tmp_path / "MODEL_CARD.md", tmp_path / "images", samples=False).read_text()
    assert "(lr 0.0001, 10% single frames, the objects weighted as before)" in text
    # Without the round neither line appears.
    (model / "build.json").write_text(json.dumps({"dit_step": 1200, "dit_phases": [2000, 2400, 1200],
                                                  "recipe": {**recipe, "vae_long_steps": 0}}))
    text = card.write_card(work, model, tmp_path / "MODEL_CARD.md", tmp_path / "images", samples=False).read_text()
    assert "fourth phase" not in text and "whole VAE" not in text and "last phase" not in text
    # The object-weighted phase after the fourth: its own steps and weight.
    (model / "build.json").write_text(json.dumps({"dit_step": 600, "dit_phases": [2000, 2400, 1200, 900, 600],
                                                  "recipe": {**recipe, "dit_objects_steps": 600, "dit_objects_lr": 2e-4,
                                                             "dit_object_weight": 10.0}}))
    text = card.write_card(work, model, tmp_path / "MODEL_CARD.md", tmp_path / "images", samples=False).read_text()
    assert "- DiT fourth phase: 900 more steps" in text
    assert ("- DiT last phase: 600 more steps from the previous phase's EMA weights on the shipped VAE's latents, at the "
            "same timestep settings, lr 0.0002, with the latent cells that stand out from their surroundings (objects) "
            "weighted 11x in the loss") in text


def test_card_counts_the_objects_stage_rounds(card, tmp_path):
    work, model = tmp_path / "work", tmp_path / "model"
    (model / "dit").mkdir(parents=True)
    work.mkdir()
    (work / "build.json").write_text(json.dumps({"command": ["python", "build.py"], "device": "cpu", "seconds": {}}))
    recipe = {"decoder_steps": 600, "objects_steps": 800, "objects_rounds": 3, "objects_lr": 1e-4, "object_weight": 10.0}
    (model / "build.json").write_text(json.dumps({"dit_step": 10, "recipe": recipe}))
    text = card.write_card(work, model, tmp_path / "MODEL_CARD.md", tmp_path / "images", samples=False).read_text()
    assert "Then 3 rounds of 800 more steps of the decoder alone (lr 0.0001)" in text and "weighted 11x in the L1" in text
    (model / "build.json").write_text(json.dumps({"dit_step": 10, "recipe": {**recipe, "objects_rounds": 1}}))
    text = card.write_card(work, model, tmp_path / "MODEL_CARD.md", tmp_path / "images", samples=False).read_text()
    assert "Then 800 more steps of the decoder alone" in text and "rounds of" not in text
