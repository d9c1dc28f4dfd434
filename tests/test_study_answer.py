"""The study's stated answer, its honest lines, where a study goes and the resolution rule for photos: all from
numbers given here, no training."""

import pytest
import yaml

from cnnarena.errors import UserError
from cnnarena.models.photo_resolution import PHOTO_MIN, choose
from cnnarena.study.answer import contenders, paragraph, time_spent
from cnnarena.study.config import build_study_config, check_same_study, study_dir_for
from cnnarena.study.stats import verdict


def _row(model, family, acc, seconds=150.0, **extra):
    return {"model": model, "family": family, "accuracy": acc, "accuracy_std": None, "macro_f1": acc,
            "train_seconds": seconds, "params": 1_000 if family == "custom" else 3_000_000, "model_file_mb": 0.3,
            "latency_ms": 0.5, "train_memory_mb": 40.0, "seeds": 1, "run_dir": f"runs/{model}", **extra}


def _comparison(table, p_value=0.0004, **extra):
    return {"table": table, "ranked_by": "accuracy", "machine": "cpu (Test CPU, 2 cores)",
            "mcnemar": {"a": table[0]["model"], "b": table[-1]["model"], "n": 1000, "a_right_b_wrong": 60,
                        "a_wrong_b_right": 20, "p_value": p_value},
            "anytime": {"budget_seconds": 150.0, "still_improving": [], "crossings": []}, **extra}


def test_the_answer_names_the_winning_approach_the_margin_significance_budget_machine_and_costs():
    spent = time_spent([{"epoch": 1, "phase": "frozen", "epoch_seconds": 60.0, "feature_seconds": 48.0,
                         "val_seconds": 2.0},
                        {"epoch": 2, "phase": "fine-tune", "epoch_seconds": 80.0, "val_seconds": 2.0}])
    assert spent == {"caches": 48.0, "frozen": 12.0, "fine_tune": 80.0, "training": 0.0, "validation": 4.0,
                     "epochs_frozen": 1, "epochs_fine_tune": 1, "epochs": 2}
    table = [_row("fast", "custom", 0.9273), _row("simple-2conv", "custom", 0.9065),
             _row("efficientnet_lite0", "pretrained", 0.8750, input_px=48, time_spent=spent)]
    assert [r["model"] for r in contenders(table)] == ["fast", "efficientnet_lite0"]  # the best of each approach
    text = paragraph(_comparison(table))
    assert text.startswith("Training from scratch won: fast reached 92.73% test accuracy, 5.23 points above "
                           "efficientnet_lite0 (fine-tuning an ImageNet-pretrained network, 87.50%).")
    assert "p < 0.001, significant at the 5% level" in text
    assert "Each model had 150 s of training on cpu (Test CPU, 2 cores)." in text
    assert ("efficientnet_lite0 at 48 px trained 150 s (48 s computing feature caches, 12 s training the head on "
            "the frozen backbone for 1 epoch, 80 s fine-tuning for 1 epoch), plus 4.0 s validating") in text
    assert "3,000,000 parameters, a 0.3 MB file, 0.50 ms per image at batch 1, 40 MB peak training memory" in text


def test_the_answer_says_no_clear_winner_a_tie_and_what_could_change_it():
    table = [_row("efficientnet_lite0", "pretrained", 0.91), _row("fast", "custom", 0.90)]
    text = paragraph(_comparison(table, p_value=0.2, anytime={"budget_seconds": 60.0, "still_improving": ["fast"],
                                                              "crossings": [{"a": "fast", "b": "efficientnet_lite0",
                                                                             "seconds": [30.0]}]},
                                 fraction_curves={"efficientnet_lite0": {"0.01": 0.6, "0.1": 0.8, "1": 0.91},
                                                  "fast": {"0.01": 0.3, "0.1": 0.7, "1": 0.90}},
                                 fraction_train_sizes={"0.01": 480, "0.1": 4800, "1": 48000}))
    assert text.startswith("No clear winner: fine-tuning an ImageNet-pretrained network led, but not significantly")
    assert "not significant at the 5% level" in text
    assert "fast was still improving when stopped, so more time could narrow the gap" in text
    assert "their validation curves cross at 30 s, so which one leads depends on the time given" in text
    assert "efficientnet_lite0 led on test accuracy at every training-set size tried (480, 4,800, 48,000 images)" \
        in text
    against = _comparison([_row("fast", "custom", 0.92), _row("lite0", "pretrained", 0.90)], p_value=0.001)
    against["mcnemar"].update(a_right_b_wrong=20, a_wrong_b_right=60)  # seed 0 disagrees with the mean's ranking
    assert paragraph(against).startswith("No clear winner")
    tie = paragraph(_comparison([_row("a", "custom", 0.9), _row("b", "pretrained", 0.9)], p_value=1.0))
    assert tie.startswith("A tie: a (training a custom CNN from scratch) and b (fine-tuning")
    catch_up = paragraph(_comparison([_row("fast", "custom", 0.92), _row("lite0", "pretrained", 0.90)],
                                     fraction_curves={"fast": {"0.01": 0.5, "0.1": 0.85, "1": 0.92},
                                                      "lite0": {"0.01": 0.7, "0.1": 0.80, "1": 0.90}},
                                     fraction_train_sizes={"0.01": 480, "0.1": 4800, "1": 48000}))
    assert "with 480 training images (1% of them) lite0 led by 20.00 points; fast catches up from 4,800" in catch_up


def test_no_line_compares_training_times_under_an_equal_budget():
    rows = [_row("fast", "custom", 0.93, 130.0), _row("lite0", "pretrained", 0.90, 125.0)]
    equal = " ".join(verdict(rows, None, equal_budget=True))
    assert "as long" not in equal and "Fastest to train" not in equal
    assert "as long (130 s vs 125 s)" in " ".join(verdict(rows, None, equal_budget=False))


def test_photos_get_at_least_128_px_up_to_the_backbone_and_the_budget():
    per_image = {224: 1.0, 192: 0.75, 160: 0.5, 128: 0.33}  # seconds of one epoch at each size, say
    epoch = lambda size: per_image.get(size, 0.33 * (size / 128) ** 2)  # noqa: E731
    assert choose(28, 224, None, epoch) is None  # small images: the small-image rule
    assert choose(393, 224, None, epoch).size == 224
    assert choose(150, 224, None, epoch).size == PHOTO_MIN
    fitted = choose(524, 224, 2.0, epoch)  # 3 epochs must fit: 160 px (1.5 s) is the largest
    assert fitted.size == 160 and "3 epochs fit the 2 s budget" in fitted.reason
    assert choose(524, 224, 0.5, epoch).size == PHOTO_MIN  # one epoch at 128 fits: never below 128
    tight = choose(524, 224, 0.2, epoch)
    assert tight.size < PHOTO_MIN and "cannot hold one epoch at 128 px" in tight.reason


def test_a_study_goes_to_studies_data_name_and_refuses_another_studys_directory(tmp_path):
    assert str(study_dir_for("auto")) == "studies/default"
    assert str(study_dir_for("/data/RealWaste/")) == "studies/RealWaste"
    assert str(study_dir_for("labels.csv")) == "studies/labels"
    assert str(study_dir_for("hf:user/beans")) == "studies/beans"
    assert build_study_config({}, {"data": "digits", "models": ["fast"]}).out == "studies/digits"
    out = tmp_path / "s"
    out.mkdir()
    (out / "study.yaml").write_text(yaml.safe_dump({"data": "digits", "models": ["fast"], "overrides": {}}))
    before = (out / "study.yaml").read_bytes()
    check_same_study(build_study_config({}, {"data": "digits", "models": ["fast"], "out": str(out)}))  # resumes
    with pytest.raises(UserError, match=r"holds another study \(data 'digits', not 'fashion-mnist'; models fast, "
                                        r"not simple-2conv\)"):
        check_same_study(build_study_config({}, {"data": "fashion-mnist", "models": ["simple-2conv"],
                                                 "out": str(out)}))
    assert (out / "study.yaml").read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["study.yaml"]


def test_a_layer_spec_given_by_absolute_path_gets_a_safe_folder_inside_the_study(tmp_path):
    from cnnarena.study.runner import final_jobs, lr_jobs

    spec = tmp_path / "specs" / "net.yaml"
    spec.parent.mkdir()
    spec.write_text("layers:\n  - conv: 8\n  - flatten\n")
    out = tmp_path / "study"
    cfg = build_study_config({}, {"data": "digits", "models": [str(spec), "fast"], "lrs": [0.01], "out": str(out)})
    dirs = [job.run_dir for job in final_jobs(cfg, "digits", out / "split.json", {})]
    dirs += [job.run_dir for job in lr_jobs(cfg, "digits", out / "split.json")]
    assert sorted(str(d.relative_to(out)) for d in dirs) == ["lr/net/lr=0.01", "runs/fast/f=1-s=0",
                                                             "runs/net/f=1-s=0"]
    other = tmp_path / "other" / "net.yaml"
    other.parent.mkdir()
    other.write_text(spec.read_text())
    with pytest.raises(UserError, match="would share the folder runs/net"):
        build_study_config({}, {"data": "digits", "models": [str(spec), str(other)]})


def test_input_sizes_give_every_resolution_of_a_backbone_the_lr_comparison():
    cfg = build_study_config({}, {"data": "digits", "models": ["efficientnet_lite0", "fast"], "input_sizes": [32, 48],
                                  "lr_models": ["efficientnet_lite0", "fast"], "lrs": [0.01]})
    assert cfg.models == ["efficientnet_lite0@32px", "efficientnet_lite0@48px", "fast"]
    assert cfg.lr_models == ["efficientnet_lite0@32px", "efficientnet_lite0@48px", "fast"]
    assert cfg.overrides["efficientnet_lite0@48px"] == {"input_size": 48}  # digits are no files: no image_size
    with pytest.raises(UserError, match="--lr-models names 'resnet'"):
        build_study_config({}, {"data": "digits", "models": ["efficientnet_lite0"], "input_sizes": [32],
                                "lr_models": ["resnet"]})


def test_masking_covers_an_empty_user_name():
    from cnnarena.masking import mask_secrets

    assert mask_secrets("redis://:hunter2@host:6379") == "redis://:***@host:6379"
